//! `palisade explain --policy P --peer ID "GET /api/v1/items/%34%32?x=1"`: the same two calls
//! the proxy makes for a request (normalize, then decide), printed with the reason.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use palisade_config::{LoadOptions, Peer, Policy, SpiffeId, normalize};

/// Arguments of `palisade explain`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Policy files or directories, loaded as one set (as the proxy loads them).
    #[arg(long = "policy", required = true)]
    policies: Vec<PathBuf>,
    /// The caller: a SPIFFE ID, or `unauthenticated` for a plaintext peer.
    #[arg(long)]
    peer: String,
    /// The request: "METHOD TARGET", e.g. "GET /api/v1/items/42?x=1".
    request: String,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let loaded = match Policy::load(&args.policies, &LoadOptions::default()) {
        Ok(loaded) => loaded,
        Err(error) => {
            for diagnostic in &error.diagnostics {
                eprintln!("{diagnostic}");
            }
            bail!("the policy does not load");
        }
    };
    let peer = parse_peer(&args.peer)?;
    let (method, target) = args
        .request
        .split_once(' ')
        .context("the request must be \"METHOD TARGET\", e.g. \"GET /api/v1/items/42\"")?;
    let target = target.trim();
    println!("request:    {method} {target}");
    println!("peer:       {}", args.peer);
    println!(
        "policy:     version {} ({} rules)",
        loaded.policy.version(),
        loaded.policy.rule_count()
    );
    let normalized = match normalize(target) {
        Ok(normalized) => normalized,
        Err(error) if error.is_denied_form() => {
            println!("normalized: (none)");
            println!("decision:   deny (403)");
            println!("reason:     {error}");
            return Ok(ExitCode::from(1));
        }
        Err(error) => {
            println!("normalized: (rejected)");
            println!("decision:   bad request (400)");
            println!("reason:     {error}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("normalized: {}", normalized.path());
    if let Some(query) = normalized.query() {
        println!("query:      {query} (forwarded untouched, not part of the decision)");
    }
    let decision = loaded.policy.decide(method, normalized.path(), &peer);
    let verdict = if decision.is_allowed() {
        "allow"
    } else if decision.is_audit_denied() {
        "deny, audit only (forwarded)"
    } else {
        "deny (403)"
    };
    println!("decision:   {verdict}");
    if let Some(rule) = decision.rule() {
        println!("rule:       {rule}");
    }
    if let Some(route) = decision.route() {
        println!("route:      {route}");
    }
    println!("reason:     {decision}");
    if decision.is_audit_denied() {
        println!("mode:       audit (the proxy would forward it and log a would-deny)");
    }
    Ok(if decision.is_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_peer(text: &str) -> Result<Peer> {
    if text == "unauthenticated" {
        return Ok(Peer::Unauthenticated);
    }
    let id = SpiffeId::parse(text).with_context(|| format!("--peer {text:?}"))?;
    Ok(Peer::Spiffe(id))
}
