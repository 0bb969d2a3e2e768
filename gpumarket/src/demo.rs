//! `gpumarket up --demo`: simulated providers (the provider agent with its simulated GPU
//! source, labelled as such in every report) in several GPU classes and regions, and bidding
//! bots that buy short leases and end them, so the dashboard shows a live market at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use provider_agent::config::{Config, Offer, Simulated};
use serde_json::json;
use tracing::{info, warn};

use crate::common::{gql, key_file, spawn_part, Part};

/// (class, region, GPUs, VRAM GB, price per GPU-hour, vendor, interconnect).
const NODES: [(&str, &str, u32, u32, &str, &str, &str); 5] = [
    ("H100-80GB", "eu-west", 8, 80, "2.40", "nvidia", "nvswitch"),
    ("H100-80GB", "us-east", 4, 80, "2.25", "nvidia", "nvlink"),
    ("A100-80GB", "us-east", 8, 80, "1.60", "nvidia", "nvlink"),
    (
        "RTX4090-24GB",
        "eu-central",
        4,
        24,
        "0.45",
        "nvidia",
        "pcie",
    ),
    (
        "MI300X-192GB",
        "us-west",
        8,
        192,
        "2.10",
        "amd",
        "infinity_fabric",
    ),
];

const BOTS: u64 = 3;

/// A small xorshift generator: the demo needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn start(dir: &Path, db: &str, url: &str, stop: &Arc<AtomicBool>) -> Result<Vec<Part>> {
    let demo = dir.join("demo");
    std::fs::create_dir_all(&demo)?;
    let mut parts = Vec::new();
    let http = reqwest::blocking::Client::new();
    let admin = std::fs::read_to_string(dir.join("admin.key"))?;
    for (i, (class, region, gpus, vram_gb, price, vendor, interconnect)) in
        NODES.into_iter().enumerate()
    {
        let account = 101 + i as u64;
        let key_path = demo.join(format!("provider-{account}.key"));
        let key = key_file(
            db,
            &key_path,
            api::auth::Role::Provider,
            Some(account),
            "demo provider",
        )?;
        // Providers are paid on the devnet: an address derived for each.
        let payout = cosmos_bridge::keys::EscrowKey::from_mnemonic(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
            &format!("demo-provider-{account}"),
            "cosmos",
        )?;
        gql(
            &http,
            url,
            &key,
            "mutation($a: String!) { setPayoutAddress(address: $a) }",
            json!({"a": payout.address().to_string()}),
        )?;
        let config = Config {
            api_url: url.to_owned(),
            api_key_file: key_path,
            node: format!("sim-{region}-{}", i + 1),
            class: class.to_owned(),
            region: region.to_owned(),
            source: "simulated".to_owned(),
            interval_secs: 5,
            state_dir: demo.join(format!("provider-{account}")),
            outbox_capacity: 10_000,
            simulated: Simulated {
                name: class.to_owned(),
                count: gpus,
                vram_mb: u64::from(vram_gb) * 1024,
            },
            offer: Some(Offer {
                price: price.to_owned(),
                gpus: None,
                vram_gb,
                interconnect: interconnect.to_owned(),
                vendor: vendor.to_owned(),
                hours_ahead: 720,
                max_temperature_c: 90.0,
                max_ecc_errors: 0,
            }),
        };
        let stop = stop.clone();
        parts.push(spawn_part("demo provider", move || {
            let interval = Duration::from_secs(config.interval_secs);
            let mut agent = provider_agent::Agent::open(config)?;
            let mut registered = false;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if !registered {
                    registered = agent.register().is_ok();
                }
                if let Err(e) = agent.step() {
                    warn!(error = %e, "demo provider step failed");
                }
                sleep_unless(&stop, interval.saturating_sub(started.elapsed()));
            }
            Ok(())
        })?);
    }
    for bot in 1..=BOTS {
        let key = key_file(
            db,
            &demo.join(format!("bot-{bot}.key")),
            api::auth::Role::Trader,
            Some(bot),
            "demo bot",
        )?;
        let balance = gql(&http, url, &key, "{ balance { available } }", json!({}))?;
        if balance["balance"]["available"]
            .as_str()
            .is_none_or(|a| a.parse::<f64>().unwrap_or(0.0) < 1_000.0)
        {
            gql(
                &http,
                url,
                &admin,
                "mutation($a: ID!) { creditDeposit(account: $a, amount: \"100000\") { amount } }",
                json!({"a": bot.to_string()}),
            )?;
        }
        let (stop, url) = (stop.clone(), url.to_owned());
        parts.push(spawn_part("demo bot", move || {
            let http = reqwest::blocking::Client::new();
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
            let mut rng = Rng(seed | 1);
            let mut last_end = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let (class, _, _, _, price, _, _) = NODES[rng.below(NODES.len() as u64) as usize];
                let cents: u64 = price.replace('.', "").parse().unwrap_or(100);
                let bid = format!("{:.2}", (cents + rng.below(30)) as f64 / 100.0);
                let client_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
                let placed = gql(&http, &url, &key,
                    "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { orderId fills { leaseId } } }",
                    json!({"i": {"market": class, "clientOrderId": client_id.to_string(), "price": bid,
                                 "gpus": 1 + rng.below(2), "timeInForce": "IOC", "bid": {"hours": 1}}}));
                match placed {
                    // Each lease runs a short job on the provider's node, through its agent.
                    Ok(order) => {
                        for fill in order["placeOrder"]["fills"].as_array().into_iter().flatten() {
                            let job = gql(&http, &url, &key,
                                "mutation($l: ID!, $a: [String!]!) { submitJob(leaseId: $l, command: \"sh\", args: $a) }",
                                json!({"l": fill["leaseId"].to_string(),
                                       "a": ["-c", "echo \"demo job on GPUs $CUDA_VISIBLE_DEVICES\"; sleep 2; echo done"]}));
                            if let Err(e) = job {
                                warn!(error = %e, "demo bot job refused");
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "demo bot order refused"),
                }
                // Now and then, end the leases the bot holds: usage is billed and providers earn.
                if last_end.elapsed() > Duration::from_secs(15) {
                    last_end = Instant::now();
                    // Leases whose job has not started yet are `created`, started ones `running`.
                    let mut held = Vec::new();
                    for status in ["created", "running"] {
                        let leases = gql(&http, &url, &key,
                            "query($s: String!) { leases(role: BUYER, status: $s, first: 100) { edges { node { id } } } }",
                            json!({"s": status}));
                        held.extend(leases.ok().and_then(|l| l["leases"]["edges"].as_array().cloned()).unwrap_or_default());
                    }
                    for edge in held {
                        let used = format!("0.{:02}", 5 + rng.below(40));
                        let _ = gql(&http, &url, &key,
                            "mutation($l: ID!, $h: String!) { endLease(leaseId: $l, hoursUsed: $h) { leaseId } }",
                            json!({"l": edge["node"]["id"].to_string(), "h": used}));
                    }
                }
                sleep_unless(&stop, Duration::from_millis(300 + rng.below(700)));
            }
            Ok(())
        })?);
    }
    info!(
        providers = NODES.len(),
        bots = BOTS,
        "demo running: simulated providers and bidding bots"
    );
    Ok(parts)
}
