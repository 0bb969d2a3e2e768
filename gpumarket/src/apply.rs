//! `gpumarket apply`: a file of commands through a fresh in-process engine.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use contract::{Command, MarketId, OrderId, Timestamp};
use matching_engine::Engine;
use serde::Deserialize;

/// Apply a file of commands (JSON lines: `{"at": MS, "type": ..., ...}`) to a fresh
/// engine and print every command's events or rejection as JSON lines.
#[derive(clap::Args)]
pub struct Args {
    /// The command file; `-` reads standard input.
    commands: PathBuf,
    /// Print these markets' depth (best 10 levels) at the end.
    #[arg(long = "depth", value_name = "MARKET")]
    depth: Vec<MarketId>,
    /// Explain why these resting orders have not matched, at the end.
    #[arg(long = "explain", value_name = "ORDER_ID")]
    explain: Vec<u64>,
    /// Write the engine's snapshot here at the end.
    #[arg(long)]
    snapshot: Option<PathBuf>,
}

/// One line of a command file.
#[derive(Deserialize)]
struct Stamped {
    at: Timestamp,
    #[serde(flatten)]
    command: Command,
}

pub fn run(args: Args) -> Result<()> {
    let path = args.commands;
    let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        Box::new(BufReader::new(
            File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let mut engine = Engine::new();
    let mut events = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            continue;
        }
        let stamped: Stamped = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not a command", n + 1))?;
        events.clear();
        let result = engine.apply(stamped.at, &stamped.command, &mut events);
        let answer = match result {
            Ok(()) => serde_json::json!({ "line": n + 1, "events": events }),
            Err(rejection) => serde_json::json!({
                "line": n + 1,
                "events": events,
                "rejected": { "message": rejection.to_string(), "detail": rejection },
            }),
        };
        writeln!(out, "{answer}")?;
    }
    for market in &args.depth {
        let d = engine
            .depth(*market, 10)
            .with_context(|| format!("unknown market {market}"))?;
        writeln!(out, "{}", serde_json::json!({ "depth": d }))?;
    }
    for id in &args.explain {
        let why = engine.explain(OrderId(*id), 20)?;
        writeln!(out, "{}", serde_json::json!({ "explain": why }))?;
    }
    if let Some(path) = args.snapshot {
        std::fs::write(&path, engine.snapshot())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    out.flush()?;
    Ok(())
}
