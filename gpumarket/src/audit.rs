//! `gpumarket audit`: re-verifies every signed heartbeat in a range of a shard's commands
//! with the evidence it carries (`api::reports::check_evidence`), so the usage a bill rests
//! on can be checked from the log alone, by anyone who holds it.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use contract::codec::{decode, CommandRecord};
use contract::Command;
use engine_service::Topics;
use eventlog::LogConfig;

use crate::common::ShardArgs;

/// Re-verify the signature and content of every signed heartbeat in a range of a shard's
/// commands; print the count and each failure (exit status 1 when any failed).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    place: ShardArgs,
    /// The first command offset to check.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// The offset to stop before (default: the end of the log).
    #[arg(long)]
    to: Option<u64>,
}

/// Commands read per call.
const BATCH: usize = 4_096;

pub fn run(args: Args) -> Result<()> {
    let place = args.place.checked()?;
    let topics = Topics::with_prefix(&place.topic_prefix);
    let mut log = eventlog::open(&place.log, &LogConfig::default())
        .with_context(|| format!("opening the log {}", place.log))?;
    let end = log.end_offset(&topics.commands, place.shard)?;
    let to = args.to.map_or(end, |t| t.min(end));
    let (mut offset, mut checked, mut failed) = (args.from, 0u64, 0u64);
    let mut shown = Instant::now();
    let mut out = std::io::stdout().lock();
    while offset < to {
        let records = log.read(&topics.commands, place.shard, offset, BATCH, Duration::ZERO)?;
        if records.is_empty() {
            break;
        }
        for record in records.into_iter().take_while(|r| r.offset < to) {
            offset = record.offset + 1;
            let stamped: CommandRecord = decode(record.schema, &record.payload)
                .with_context(|| format!("command {} cannot be decoded", record.offset))?;
            let Command::SignedHeartbeat(beat) = &stamped.command else {
                continue;
            };
            checked += 1;
            if let Err(why) = api::reports::check_evidence(beat) {
                failed += 1;
                writeln!(
                    out,
                    "FAILED command {}: provider {} node {} report {}: {why}",
                    record.offset, beat.provider, beat.node, beat.sequence
                )?;
            }
        }
        if shown.elapsed() > Duration::from_secs(2) {
            shown = Instant::now();
            eprintln!("audit: at command {offset} of {to}, {checked} heartbeats checked");
        }
    }
    writeln!(
        out,
        "commands {}..{offset} of shard {}: {checked} signed heartbeats, {} verified, {failed} failed",
        args.from,
        place.shard,
        checked - failed
    )?;
    if failed > 0 {
        bail!("{failed} of {checked} signed heartbeats failed verification");
    }
    Ok(())
}
