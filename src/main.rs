//! The `palisade` binary: one executable, one subcommand per job.
#![forbid(unsafe_code)]

use clap::Parser;

/// palisade: a transparent mTLS and L7 API-policy sidecar proxy.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
