//! `palisade import openapi SPEC`: propose a policy from an OpenAPI 3.0/3.1 spec (YAML or
//! JSON), one rule per operation; prints the policy YAML to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use palisade_config::authoring::{ImportOptions, import_openapi};

/// Arguments of `palisade import`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    source: Source,
}

#[derive(Debug, clap::Subcommand)]
enum Source {
    /// An OpenAPI 3.0/3.1 spec (YAML or JSON).
    Openapi(OpenApiArgs),
}

#[derive(Debug, clap::Args)]
struct OpenApiArgs {
    /// The spec file.
    spec: PathBuf,
    /// A caller allowed on operations without their own `x-palisade-principals` (repeatable).
    #[arg(long = "principal")]
    principals: Vec<String>,
    /// `metadata.name` of the policy (default: the spec's `info.title`).
    #[arg(long)]
    name: Option<String>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let Source::Openapi(args) = args.source;
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let options = ImportOptions {
        principals: args.principals,
        name: args.name,
    };
    match import_openapi(&args.spec.display().to_string(), &text, &options) {
        Ok(policy) => {
            print!("{policy}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("palisade: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
