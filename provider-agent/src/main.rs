//! `provider-agent`: `init` (key and config template), `run` (report every interval),
//! `status` (GPUs, current telemetry, outbox).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use provider_agent::config::Config;
use provider_agent::{keys, Agent};
use serde_json::json;
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "provider-agent",
    version,
    about = "Reports a GPU node to the gpumarket API"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a node folder: the node key (0600) and an `agent.toml` to edit.
    Init {
        /// The folder to create.
        #[arg(long, default_value = "./agent")]
        dir: PathBuf,
        #[arg(long, default_value = "node-1")]
        node: String,
        #[arg(long, default_value = "H100-80GB")]
        class: String,
        #[arg(long, default_value = "eu-west")]
        region: String,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api_url: String,
        /// `auto`, `nvml` or `simulated`.
        #[arg(long, default_value = "auto")]
        source: String,
    },
    /// Register the node and report every interval until SIGTERM or Ctrl-C.
    Run {
        #[arg(long, default_value = "./agent/agent.toml")]
        config: PathBuf,
        /// Send one report and stop.
        #[arg(long)]
        once: bool,
    },
    /// Show the GPUs, a current sample, the outbox, the jobs, and the node's asks and leases in
    /// the market (when the API answers), as JSON.
    Status {
        #[arg(long, default_value = "./agent/agent.toml")]
        config: PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Init {
            dir,
            node,
            class,
            region,
            api_url,
            source,
        } => {
            let path = dir.join("agent.toml");
            if path.exists() {
                bail!("{} exists already: not overwriting it", path.display());
            }
            std::fs::create_dir_all(&dir)?;
            let key = keys::load_or_create(&dir.join("state").join("node.key"))?;
            let config = Config {
                api_url,
                api_key_file: PathBuf::from("provider.key"),
                node,
                class,
                region,
                source,
                interval_secs: provider_agent::config::DEFAULT_INTERVAL_SECS,
                state_dir: PathBuf::from("state"),
                outbox_capacity: 10_000,
                simulated: Default::default(),
                sandbox: Default::default(),
                offer: None,
                wrong_frames: None,
            };
            provider_agent::durable::write_atomic(
                &path,
                toml::to_string_pretty(&config)?.as_bytes(),
                0o644,
            )?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "wrote {}", path.display())?;
            writeln!(
                out,
                "node public key: {}",
                keys::hex(key.verifying_key().as_bytes())
            )?;
            // The agent refuses a key file others can read: the umask makes it 0600.
            writeln!(
                out,
                "put the provider's API key in {} with mode 0600:\n  (umask 077; gpumarket keys create --role provider --account N > {})",
                dir.join("provider.key").display(),
                dir.join("provider.key").display()
            )?;
            Ok(())
        }
        Cmd::Run { config, once } => {
            let config = Config::load(&config)?;
            let interval = Duration::from_secs(config.interval_secs);
            let mut agent = Agent::open(config)?;
            if let Err(e) = agent.register() {
                // The outbox keeps reports until the API is back; registration is retried.
                warn!(error = %e, "registering the node failed; retrying with the next report");
            }
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, Arc::clone(&stop))?;
            }
            let mut registered = false;
            loop {
                let started = Instant::now();
                if !registered {
                    registered = agent.register().is_ok();
                }
                let step = agent.step()?;
                info!(?step, "reported");
                if once {
                    return Ok(());
                }
                while started.elapsed() < interval {
                    if stop.load(Ordering::Relaxed) {
                        info!("stopping");
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Cmd::Status { config } => {
            let config = Config::load(&config)?;
            let mut source = provider_agent::open_source(&config)?;
            let gpus = source.discover()?;
            let readings = source.sample()?;
            let outbox =
                provider_agent::report::Outbox::open(&config.state_dir, config.outbox_capacity)?;
            let runner = provider_agent::jobs::Runner::open(
                &config.state_dir,
                provider_agent::jobs::Vendor::Nvidia,
                &config.sandbox,
            )?;
            let jobs = runner.jobs()?;
            // What the market says about the node, when the API answers (and the key is
            // readable by its owner only, as the agent wants it).
            let market = match keys::read_private(&config.api_key_file) {
                Err(e) => json!({"unavailable": e.to_string()}),
                Ok(key) => {
                    let client = provider_agent::client::Client::new(&config.api_url, key.trim());
                    let on_node = |status| {
                        client.leases(status).map(|page| {
                            page.leases
                                .into_iter()
                                .filter(|l| l.node == config.node)
                                .map(|l| {
                                    json!({"lease": l.id, "gpus": l.gpus, "hours": l.hours,
                                                "ends_at": l.ends_at, "job": l.job.is_some()})
                                })
                                .collect::<Vec<_>>()
                        })
                    };
                    match (
                        client.open_asks(&config.node),
                        on_node("created"),
                        on_node("running"),
                    ) {
                        (Ok(asks), Ok(created), Ok(running)) => json!({
                            "asks": asks
                                .iter()
                                .map(|(order, filled, open)| json!({"order": order, "filled": filled, "open": open}))
                                .collect::<Vec<_>>(),
                            "leases_created": created,
                            "leases_running": running,
                        }),
                        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                            json!({"unavailable": e.to_string()})
                        }
                    }
                }
            };
            let status = json!({
                "node": config.node,
                "class": config.class,
                "source": source.kind(),
                "gpus": gpus,
                "readings": readings,
                "outbox": outbox.len()?,
                "sandbox": runner.sandbox().map_or_else(|e| e.to_string(), |()| "bubblewrap works".to_owned()),
                "jobs": jobs
                    .iter()
                    .map(|j| json!({"lease": j.lease, "gpus": j.gpus, "status": j.status,
                                    "deadline_ms": j.deadline_ms, "lease_ended": j.lease_ended,
                                    "outputs": j.outputs, "outputs_refused": j.outputs_refused}))
                    .collect::<Vec<_>>(),
                "market": market,
            });
            writeln!(
                std::io::stdout().lock(),
                "{}",
                serde_json::to_string_pretty(&status)?
            )?;
            Ok(())
        }
    }
}
