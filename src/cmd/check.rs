//! `palisade check FILE|DIR...`: validate policies and run their `tests:` before they ship.
//!
//! Each FILE is checked on its own; a DIR stands for the policy files directly inside it, each
//! checked on its own. With `--together`, all of them are loaded as one policy set, exactly as
//! the proxy loads a mounted ConfigMap (so cross-document conflicts show up).
//! Exit status: 0 valid (warnings allowed), 1 invalid or a failing expectation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use palisade_config::check::run_tests;
use palisade_config::{Diagnostic, LoadOptions, Policy, Severity, policy_files};
use serde::Serialize;

/// Arguments of `palisade check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Policy files or directories of policy files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format: `human` (one finding per line) or `json` (for CI annotations).
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Load every given file as one policy set, as the proxy does.
    #[arg(long)]
    together: bool,
    /// The mesh's trust domain: principals outside it get a warning.
    #[arg(long)]
    trust_domain: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Human,
    Json,
}

/// What `check` found for one policy set.
#[derive(Debug, Serialize)]
struct Report {
    source: String,
    valid: bool,
    rules: usize,
    tests: usize,
    diagnostics: Vec<Diagnostic>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let options = LoadOptions {
        trust_domain: args.trust_domain.clone(),
    };
    let sets = policy_sets(&args.paths, args.together)?;
    let reports: Vec<Report> = sets.iter().map(|set| check_set(set, &options)).collect();
    let all_valid = reports.iter().all(|r| r.valid);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Human => print_human(&reports),
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Expands the arguments into the sets of files that are loaded together.
fn policy_sets(paths: &[PathBuf], together: bool) -> Result<Vec<Vec<PathBuf>>> {
    if together {
        return Ok(vec![paths.to_vec()]);
    }
    let mut sets = Vec::new();
    for path in paths {
        if path.is_dir() {
            let files =
                policy_files(path).with_context(|| format!("reading {}", path.display()))?;
            for file in files {
                sets.push(vec![file]);
            }
        } else {
            sets.push(vec![path.clone()]);
        }
    }
    Ok(sets)
}

fn check_set(set: &[PathBuf], options: &LoadOptions) -> Report {
    let source = set
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match Policy::load(set, options) {
        Err(error) => Report {
            source,
            valid: false,
            rules: 0,
            tests: 0,
            diagnostics: error.diagnostics,
        },
        Ok(loaded) => {
            let failures = run_tests(&loaded);
            let mut diagnostics = loaded.warnings.clone();
            diagnostics.extend(failures.iter().map(|f| f.to_diagnostic()));
            Report {
                source,
                valid: failures.is_empty(),
                rules: loaded.policy.rule_count(),
                tests: loaded.tests.len(),
                diagnostics,
            }
        }
    }
}

fn print_human(reports: &[Report]) {
    for report in reports {
        for diagnostic in &report.diagnostics {
            println!("{diagnostic}");
        }
        let errors = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = report.diagnostics.len() - errors;
        if report.valid {
            println!(
                "ok: {}: {} rules, {} tests passed, {warnings} warnings",
                report.source, report.rules, report.tests
            );
        } else {
            println!(
                "invalid: {}: {errors} errors, {warnings} warnings",
                report.source
            );
        }
    }
}
