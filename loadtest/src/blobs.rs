//! `loadtest blobs`: one large blob up and down through a running market's `/blobs` on
//! loopback: throughput each way, and the server's resident memory before, at its peak
//! during each transfer, and after (sampled from `/proc/<server-pid>/status` every 20 ms),
//! so a body that is buffered instead of streamed shows as growth near its size.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use api_client::mutations::{CreateApiKey, CreateApiKeyVariables};
use api_client::types::Role;
use api_client::{Id, MutationBuilder};
use contract::Digest;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A file holding an admin API key (a trader key for the transfer is made with it).
    #[arg(long)]
    api_key_file: PathBuf,
    /// The server's process id (`gpumarket up` or `api`), whose memory is sampled.
    #[arg(long)]
    server_pid: u32,
    /// The blob's size in MiB.
    #[arg(long, default_value_t = 1_024)]
    mib: u64,
    /// The account the transfer's trader key acts for.
    #[arg(long, default_value_t = 6_000_000)]
    account: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    direction: &'static str,
    bytes: u64,
    seconds: f64,
    mb_per_sec: f64,
    server_rss_before_mib: f64,
    server_rss_peak_mib: f64,
    server_rss_growth_mib: f64,
}

/// Deterministic bytes that do not compress: a counter run through a cheap mixer.
struct Generated {
    left: u64,
    state: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading the memory of process {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Runs `transfer` while sampling the server's RSS; the seconds it took and the peak.
fn sampled<T>(pid: u32, transfer: impl FnOnce() -> Result<T>) -> Result<(T, f64, u64)> {
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)?));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let result = transfer();
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler does not panic");
    Ok((result?, seconds, peak.load(Ordering::Relaxed)))
}

pub fn run(args: &Args) -> Result<()> {
    let admin_key = std::fs::read_to_string(&args.api_key_file)
        .with_context(|| format!("reading {}", args.api_key_file.display()))?;
    let admin = api_client::Client::new(&args.url, admin_key.trim());
    let key = admin
        .run(&CreateApiKey::build(CreateApiKeyVariables {
            role: Role::Trader,
            account: Some(Id::new(args.account.to_string())),
            label: "loadtest blobs".to_owned(),
        }))
        .context("creating a trader key")?
        .create_api_key
        .key;
    let trader = api_client::Client::new(&args.url, &key).with_timeout(Duration::from_secs(3_600));
    let bytes = args.mib << 20;
    let mut reports = Vec::new();

    let before = rss_kib(args.server_pid)?;
    let body = Generated {
        left: bytes,
        state: 42,
    };
    eprintln!("uploading {} MiB…", args.mib);
    let (stored, seconds, peak) = sampled(args.server_pid, || {
        Ok(trader.put_blob(api_client::BlobBody::sized(body, bytes), None, None)?)
    })?;
    if stored.size != bytes {
        bail!("the server stored {} bytes of {bytes}", stored.size);
    }
    reports.push(report("upload", bytes, seconds, before, peak));

    let before = rss_kib(args.server_pid)?;
    eprintln!("downloading {}…", stored.cid);
    let (digest, seconds, peak) = sampled(args.server_pid, || {
        let mut response = trader.get_blob(&stored.cid)?;
        let mut hasher = Sha256::new();
        let read = std::io::copy(&mut response, &mut hasher)?;
        if read != bytes {
            bail!("read {read} bytes of {bytes}");
        }
        Ok(Digest::from_sha256(hasher.finalize().into()))
    })?;
    if digest.cid() != stored.cid {
        bail!(
            "the bytes read back have digest {digest}, not {}",
            stored.cid
        );
    }
    reports.push(report("download", bytes, seconds, before, peak));

    for r in &reports {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!(
                "{:<8} {:>6} MiB in {:>6.2} s: {:>7.1} MB/s; server RSS {:.0} MiB, peak {:.0} MiB (+{:.1} MiB)",
                r.direction,
                r.bytes >> 20,
                r.seconds,
                r.mb_per_sec,
                r.server_rss_before_mib,
                r.server_rss_peak_mib,
                r.server_rss_growth_mib
            );
        }
    }
    Ok(())
}

fn report(direction: &'static str, bytes: u64, seconds: f64, before: u64, peak: u64) -> Report {
    let mib = |kib: u64| kib as f64 / 1_024.0;
    Report {
        direction,
        bytes,
        seconds,
        mb_per_sec: bytes as f64 / 1e6 / seconds,
        server_rss_before_mib: mib(before),
        server_rss_peak_mib: mib(peak),
        server_rss_growth_mib: mib(peak.saturating_sub(before)),
    }
}
