//! `palisade learn --from-access-log FILE`: propose an allowlist from the proxy's JSON access
//! log (docs/telemetry.md), and with `--against CURRENT` list the observed calls the current
//! policy would deny. Reads the log line by line; memory stays bounded (see
//! `palisade_config::authoring::learn`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use palisade_config::authoring::{DeniedCalls, LearnOptions, Learner};
use palisade_config::{LoadOptions, Policy};

/// Arguments of `palisade learn`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The access log: JSON lines as `palisade proxy --access-log` writes them (`-` for stdin).
    #[arg(long = "from-access-log")]
    from_access_log: PathBuf,
    /// The policy in force: list the observed calls it would deny (instead of proposing one).
    #[arg(long)]
    against: Option<PathBuf>,
    /// `metadata.name` of the proposed policy.
    #[arg(long, default_value = "learned")]
    name: String,
    /// Distinct literal segments under one path position before they become `{id}`.
    #[arg(long, default_value_t = 64)]
    max_children: usize,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let reader: Box<dyn BufRead> = if args.from_access_log.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.from_access_log)
            .with_context(|| format!("opening {}", args.from_access_log.display()))?;
        Box::new(BufReader::new(file))
    };
    let current = match &args.against {
        Some(path) => match Policy::load(&[path], &LoadOptions::default()) {
            Ok(loaded) => Some(loaded.policy),
            Err(error) => {
                for diagnostic in &error.diagnostics {
                    eprintln!("{diagnostic}");
                }
                anyhow::bail!("{} is not a valid policy", path.display());
            }
        },
        None => None,
    };
    let mut learner = Learner::new(LearnOptions {
        max_children: args.max_children.max(1),
        name: args.name,
        ..LearnOptions::default()
    });
    let mut denied = DeniedCalls::new(10_000);
    let mut bad = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let line = line.context("reading the access log")?;
        if line.trim().is_empty() {
            continue;
        }
        match learner.observe_line(i as u64 + 1, &line) {
            Ok((record, _)) => {
                if let Some(policy) = &current {
                    denied.check(policy, &record);
                }
            }
            Err(error) => {
                bad += 1;
                if bad <= 5 {
                    eprintln!("palisade: {}: {error}", args.from_access_log.display());
                }
            }
        }
    }
    if bad > 5 {
        eprintln!("palisade: {bad} lines were not access-log lines");
    }
    let Some(_) = current else {
        print!("{}", learner.propose());
        return Ok(ExitCode::SUCCESS);
    };
    if denied.is_empty() {
        println!("the current policy allows every observed call");
        return Ok(ExitCode::SUCCESS);
    }
    println!("observed calls the current policy would deny:");
    for (peer, method, path, count, why) in denied.calls() {
        println!("  {peer} {method} {path} ({count} calls): {why}");
    }
    if denied.more > 0 {
        println!("  … and {} more calls not listed", denied.more);
    }
    Ok(ExitCode::FAILURE)
}
