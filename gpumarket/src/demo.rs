//! `gpumarket up --demo`: simulated providers (the provider agent with its simulated GPU
//! source, labelled as such in every report) in several GPU classes and regions, and bidding
//! bots that buy short leases and end them, so the dashboard shows a live market at once;
//! and a render farm (`render_farm`) whose buyer renders an animation across its providers.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use api_client::mutations::{
    BondVariables, CreditDeposit, CreditDepositVariables, EndLease, EndLeaseVariables, PlaceOrder,
    PlaceOrderVariables, PostBond, SetPayoutAddress, SetPayoutAddressVariables, SubmitJob,
    SubmitJobVariables,
};
use api_client::queries::{BalanceQuery, BondsQuery, BondsVariables, LeasesQuery, LeasesVariables};
use api_client::types::{BidInput, JobInput, LeaseRole, PlaceOrderInput, TimeInForce};
use api_client::{Client, Id, MutationBuilder, QueryBuilder, U64};
use provider_agent::config::{Config, Offer, Simulated};
use provider_agent::sandbox::SandboxConfig;
use rust_decimal::Decimal;
use tracing::{info, warn};

use crate::common::{key_file, spawn_part, Part};

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

/// The render farm's market, its providers and the buyer of its render job.
pub const RENDER_MARKET: &str = "L40S-48GB";
/// (region, price per GPU-hour, dishonest): the cheapest spoils every frame it renders
/// (`wrong_frames`), so verification has someone to catch.
const FARM: [(&str, &str, bool); 3] = [
    ("eu-west", "0.90", false),
    ("us-east", "0.95", false),
    ("eu-central", "0.80", true),
];
/// The farm's agents report every 2 s: a frame task's turnaround is a few reports.
const FARM_INTERVAL_SECS: u64 = 2;

const BOTS: u64 = 3;

/// The bond per GPU of the demo's markets.
pub const BOND_PER_GPU: &str = "25";
/// What each demo provider posts: enough for its GPUs several times over, so a slash or
/// two leave it able to offer them.
const DEMO_BOND: &str = "1000";

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

pub(crate) fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the demo's providers and bots. Every one is set up and checked first (its keys,
/// its payout address, each provider's agent opened and registered), and only then do any
/// run: a part that cannot start is an error here, before `up` says it is up, naming the
/// part and why.
pub fn start(dir: &Path, db: &str, url: &str, stop: &Arc<AtomicBool>) -> Result<Vec<Part>> {
    let demo = dir.join("demo");
    std::fs::create_dir_all(&demo)?;
    let uid_block = {
        use std::hash::{Hash, Hasher};
        let mut hash = std::hash::DefaultHasher::new();
        demo.canonicalize()?.hash(&mut hash);
        SandboxConfig::default().uid_base + (hash.finish() % 4_096) as u32 * 256
    };
    let mut agents = Vec::new();
    let admin = Client::new(url, std::fs::read_to_string(dir.join("admin.key"))?.trim());
    let farm = FARM.into_iter().map(|(region, price, lies)| {
        let node = (RENDER_MARKET, region, 2, 48, price, "nvidia", "pcie");
        (node, lies.then_some(NonZeroU32::MIN), FARM_INTERVAL_SECS)
    });
    let nodes = NODES.into_iter().map(|node| (node, None, 5)).chain(farm);
    for (
        i,
        ((class, region, gpus, vram_gb, price, vendor, interconnect), wrong_frames, interval),
    ) in nodes.enumerate()
    {
        let account = 101 + i as u64;
        let key_path = demo.join(format!("provider-{account}.key"));
        let part = format!("demo provider {account} ({})", key_path.display());
        let key = key_file(
            db,
            &key_path,
            api::auth::Role::Provider,
            Some(account),
            "demo provider",
        )
        .with_context(|| part.clone())?;
        // Providers are paid on the devnet: an address derived for each.
        let payout = cosmos_bridge::keys::EscrowKey::from_mnemonic(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
            &format!("demo-provider-{account}"),
            "cosmos",
        )?;
        let provider = Client::new(url, &key);
        provider
            .run(&SetPayoutAddress::build(SetPayoutAddressVariables {
                address: payout.address().to_string(),
            }))
            .with_context(|| format!("{part}: setting its payout address"))?;
        // Its bond, once: the credit has an idempotency key, and a restart finds the bond.
        let bonds = provider
            .run(&BondsQuery::build(BondsVariables {
                provider: Id::new(account.to_string()),
            }))
            .with_context(|| format!("{part}: reading its bond"))?;
        if !bonds.bonds.iter().any(|b| b.market == class) {
            admin
                .run(&CreditDeposit::build(CreditDepositVariables {
                    account: Id::new(account.to_string()),
                    amount: DEMO_BOND.to_owned(),
                    idempotency_key: Some(format!("{}", 1_700_000 + account)),
                }))
                .with_context(|| format!("{part}: funding its bond"))?;
            provider
                .run(&PostBond::build(BondVariables {
                    market: class.to_owned(),
                    amount: DEMO_BOND.to_owned(),
                }))
                .with_context(|| format!("{part}: posting its bond"))?;
        }
        let config = Config {
            api_url: url.to_owned(),
            api_key_file: key_path,
            node: format!("sim-{region}-{}", i + 1),
            class: class.to_owned(),
            region: region.to_owned(),
            source: "simulated".to_owned(),
            interval_secs: interval,
            state_dir: demo.join(format!("provider-{account}")),
            outbox_capacity: 10_000,
            simulated: Simulated {
                name: class.to_owned(),
                count: gpus,
                vram_mb: u64::from(vram_gb) * 1024,
            },
            // Every node of the demo shares this host: each gets uids of its own (a job's
            // uid is swept when it stops, which must not reach another node's job), and so
            // does each demo: its data directory picks one of 4,096 blocks of 256 uids, so
            // two demos on one host (the tests run two at once) do not kill each other's
            // jobs, and a restarted demo sweeps its own.
            sandbox: SandboxConfig {
                uid_base: uid_block + 16 * i as u32,
                ..SandboxConfig::default()
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
            wrong_frames,
        };
        let interval = Duration::from_secs(config.interval_secs);
        let agent = provider_agent::Agent::open(config).with_context(|| part.clone())?;
        if let Err(e) = agent.jobs.sandbox() {
            warn!(error = %e, "{part}: its leases run no jobs (`apt-get install bubblewrap`)");
        }
        agent
            .register()
            .with_context(|| format!("{part}: registering its node"))?;
        agents.push((agent, interval));
    }
    let busybox = static_busybox();
    if busybox.is_none() {
        info!(
            "no static /bin/busybox: the demo's jobs run on the providers' base system; \
               `apt-get install busybox-static` makes them run from an OCI image"
        );
    }
    let mut bots = Vec::new();
    for bot in 1..=BOTS {
        let key = key_file(
            db,
            &demo.join(format!("bot-{bot}.key")),
            api::auth::Role::Trader,
            Some(bot),
            "demo bot",
        )?;
        let client = Client::new(url, &key);
        let balance = client
            .run(&BalanceQuery::build(()))
            .with_context(|| format!("demo bot {bot}: reading its balance"))?;
        if balance.balance.available < Decimal::from(1_000) {
            admin.run(&CreditDeposit::build(CreditDepositVariables {
                account: Id::new(bot.to_string()),
                amount: "100000".to_owned(),
                idempotency_key: None,
            }))?;
        }
        // Its jobs' files, by digest: an image built here and a scene to read.
        let files = match &busybox {
            Some(busybox) => {
                let image = provider_agent::files::busybox_image(busybox, DEMO_APPLETS);
                for blob in [image.config, image.layer] {
                    client.put_blob(blob.into(), None, None)?;
                }
                let manifest = client.put_blob(image.manifest.into(), None, None)?;
                let scene = client.put_blob(
                    format!("demo scene of bot {bot}\n").into_bytes().into(),
                    None,
                    None,
                )?;
                Some((manifest.cid, scene.cid))
            }
            None => None,
        };
        bots.push((client, files));
    }
    let farm_buyer = crate::render_farm::buyer(db, &demo, &admin, url)?;
    let mut parts = Vec::new();
    for (mut agent, interval) in agents {
        let stop = stop.clone();
        parts.push(spawn_part("demo provider", move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if let Err(e) = agent.step() {
                    warn!(error = %e, "demo provider step failed");
                }
                sleep_unless(&stop, interval.saturating_sub(started.elapsed()));
            }
            Ok(())
        })?);
    }
    for (client, files) in bots {
        let stop = stop.clone();
        parts.push(spawn_part("demo bot", move || {
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
            let mut rng = Rng(seed | 1);
            let mut last_end = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let (class, _, _, _, price, _, _) = NODES[rng.below(NODES.len() as u64) as usize];
                let cents: u64 = price.replace('.', "").parse().unwrap_or(100);
                let bid = format!("{:.2}", (cents + rng.below(30)) as f64 / 100.0);
                let client_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
                // Every other bid is for two hours from providers with a score of 700 or
                // more, which the demo's providers earn as the reputation projection scores
                // them (a new provider starts at 730).
                let bid_terms = if rng.below(2) == 0 {
                    BidInput::new(U64(1))
                } else {
                    BidInput {
                        min_reputation: Some(U64(700)),
                        ..BidInput::new(U64(2))
                    }
                };
                let placed = client.run(&PlaceOrder::build(PlaceOrderVariables {
                    input: PlaceOrderInput {
                        market: class.to_owned(),
                        client_order_id: client_id.to_string(),
                        price: bid,
                        gpus: U64(1 + rng.below(2)),
                        time_in_force: TimeInForce::Ioc,
                        bid: Some(bid_terms),
                        ask: None,
                    },
                }));
                match placed {
                    // Each lease runs a short job on the provider's node, through its agent.
                    Ok(order) => {
                        for fill in order.place_order.fills {
                            let (image, inputs, script) = match &files {
                                Some((image, scene)) => (
                                    Some(image.clone()),
                                    vec![JobInput { cid: scene.clone(), path: "scene.txt".to_owned() }],
                                    "cat /job/in/scene.txt; mkdir -p /job/out; \
                                     echo \"frame rendered on GPUs $CUDA_VISIBLE_DEVICES\" > /job/out/frame.txt; \
                                     sleep 2; echo done",
                                ),
                                None => (None, Vec::new(), "echo \"demo job on GPUs $CUDA_VISIBLE_DEVICES\"; sleep 2; echo done"),
                            };
                            let job = client.run(&SubmitJob::build(SubmitJobVariables {
                                lease_id: Id::new(fill.lease_id.0.to_string()),
                                command: "sh".to_owned(),
                                args: vec!["-c".to_owned(), script.to_owned()],
                                image,
                                inputs,
                            }));
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
                        let leases = client.run(&LeasesQuery::build(LeasesVariables {
                            role: LeaseRole::Buyer,
                            status: status.to_owned(),
                            first: U64(100),
                        }));
                        held.extend(leases.map(|l| l.leases.nodes).unwrap_or_default());
                    }
                    for lease in held {
                        let _ = client.run(&EndLease::build(EndLeaseVariables {
                            lease_id: Id::new(lease.id.0.to_string()),
                        }));
                    }
                }
                sleep_unless(&stop, Duration::from_millis(300 + rng.below(700)));
            }
            Ok(())
        })?);
    }
    if let Some(buyer) = farm_buyer {
        let stop = stop.clone();
        parts.push(spawn_part("demo render buyer", move || buyer.run(&stop))?);
    }
    info!(
        providers = NODES.len() + FARM.len(),
        bots = BOTS,
        "demo running: simulated providers and bidding bots"
    );
    Ok(parts)
}

/// What the demo's image links to busybox.
const DEMO_APPLETS: &[&str] = &["sh", "cat", "mkdir", "echo", "sleep"];

/// `/bin/busybox`, if it is a static one (Debian's `busybox-static`): an image of it needs no
/// libraries. An ELF file with a program interpreter (`PT_INTERP`) is dynamic.
fn static_busybox() -> Option<Vec<u8>> {
    let elf = std::fs::read("/bin/busybox").ok()?;
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let (offset, size, count) = (
        usize::try_from(u64_at(0x20)?).ok()?,
        u16_at(0x36)?,
        u16_at(0x38)?,
    );
    let dynamic = (0..usize::from(count)).any(|i| {
        let at = offset + i * usize::from(size);
        elf.get(at..at + 4) == Some(&3u32.to_le_bytes()[..])
    });
    (!dynamic).then_some(elf)
}
