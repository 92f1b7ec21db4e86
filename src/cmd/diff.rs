//! `palisade diff OLD NEW`: what a policy change newly allows and no longer allows, per peer,
//! as concrete example requests, with an exit status CI can act on.
//!
//! Exit status: 0 no change in access, 1 narrows only, 2 widens (possibly narrowing too),
//! 3 a policy could not be loaded.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use palisade_config::authoring::{Change, PolicyDiff, Probes, Verdict, diff};
use palisade_config::{LoadOptions, Policy, document};

/// Arguments of `palisade diff`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The policy in force (file or directory of policy files).
    old: PathBuf,
    /// The proposed policy (file or directory of policy files).
    new: PathBuf,
    /// Output format: `human` or `json`.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Human,
    Json,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    match compare(&args) {
        Ok(code) => Ok(code),
        Err(error) => {
            eprintln!("palisade: {error:#}");
            Ok(ExitCode::from(3))
        }
    }
}

fn compare(args: &Args) -> Result<ExitCode> {
    let old = load(&args.old)?;
    let new = load(&args.new)?;
    let mut probes = Probes::default();
    probes.add_documents(&documents(&args.old)?);
    probes.add_documents(&documents(&args.new)?);
    let result = diff(&old, &new, &probes);
    let verdict = result.verdict();
    match args.format {
        Format::Json => {
            let report = serde_json::json!({
                "verdict": verdict,
                "probes": probes.len(),
                "newly_allowed": result.newly_allowed,
                "no_longer_allowed": result.no_longer_allowed,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Format::Human => print_human(&result, verdict, probes.len()),
    }
    Ok(ExitCode::from(match verdict {
        Verdict::Unchanged => 0,
        Verdict::Narrows => 1,
        Verdict::Widens => 2,
    }))
}

fn print_human(result: &PolicyDiff, verdict: Verdict, probes: usize) {
    print_changes("newly allowed", &result.newly_allowed);
    print_changes("no longer allowed", &result.no_longer_allowed);
    let summary = match verdict {
        Verdict::Unchanged => "no change in access",
        Verdict::Narrows => "this change narrows access only",
        Verdict::Widens => "this change widens access",
    };
    println!("{summary} ({probes} example requests decided under both policies)");
}

fn print_changes(title: &str, changes: &[Change]) {
    if changes.is_empty() {
        return;
    }
    println!("{title}:");
    let mut peer = "";
    for change in changes {
        if change.peer != peer {
            peer = &change.peer;
            println!("  {peer}");
        }
        println!("    {} {}", change.method, change.path);
        println!("      before: {}", change.before);
        println!("      after:  {}", change.after);
    }
}

fn load(path: &Path) -> Result<Policy> {
    match Policy::load(&[path], &LoadOptions::default()) {
        Ok(loaded) => Ok(loaded.policy),
        Err(error) => {
            for diagnostic in &error.diagnostics {
                eprintln!("{diagnostic}");
            }
            anyhow::bail!("{} is not a valid policy", path.display())
        }
    }
}

/// The parsed documents behind `path` (for the probes), read the way `Policy::load` reads.
fn documents(path: &Path) -> Result<Vec<document::Document>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            let file = entry?.path();
            if matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(file);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        out.extend(document::parse(&file.display().to_string(), &text).0);
    }
    Ok(out)
}
