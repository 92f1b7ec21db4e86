//! The `palisade` binary: one executable, one subcommand per job.
//!
//! Everything here is the edge: argument parsing, printing, exit codes. The work happens in
//! `palisade-config` (what is allowed) and `palisade-proxy` (moving bytes).
#![forbid(unsafe_code)]

mod cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// palisade: a transparent mTLS and L7 API-policy sidecar proxy.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate policy files and run their `tests:` expectations (exit 0 valid, 1 invalid).
    Check(cmd::check::Args),
    /// Show how one request is normalized and decided, and why.
    Explain(cmd::explain::Args),
    /// Run a local mesh on 127.0.0.1 with generated certificates and the example policy.
    Demo(cmd::demo::Args),
    /// Run the sidecar: mutual TLS in, policy enforced, requests forwarded to the app.
    Proxy(cmd::proxy::Args),
    /// Install the pod's iptables rules: inbound TCP to palisade, the app's outbound TCP too.
    Init(cmd::init::Args),
    /// Run the mutating admission webhook that adds palisade to new pods (deploy/README.md).
    Inject(cmd::inject::Args),
    /// Propose a policy from the proxy's access log (or list what the current policy would deny).
    Learn(cmd::learn::Args),
    /// Propose a policy from an API description (`palisade import openapi SPEC`).
    Import(cmd::import::Args),
    /// What a policy change newly allows and no longer allows (exit 0 same, 1 narrows, 2 widens).
    Diff(cmd::diff::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Check(args) => cmd::check::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Init(args) => cmd::init::run(args),
        Command::Inject(args) => cmd::inject::run(args),
        Command::Learn(args) => cmd::learn::run(args),
        Command::Import(args) => cmd::import::run(args),
        Command::Diff(args) => cmd::diff::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("palisade: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr as text; `PALISADE_LOG` sets the filter (default `info`), e.g.
/// `PALISADE_LOG=palisade_proxy=debug`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
