//! `palisade init`: the pod's init step. Installs the iptables rules that send the pod's
//! inbound TCP to palisade's inbound listener and the app's outbound TCP to its outbound
//! listener, in the current network namespace (the init container needs NET_ADMIN and
//! NET_RAW, nothing else).
//!
//! Flags are validated before anything runs; [`rules`] turns them into a plan (a pure
//! function), `--dry-run` prints it as shell, otherwise [`apply`] runs it with the iptables
//! binaries of the detected (or forced) backend.

use std::process::ExitCode;

use anyhow::{Result, bail};
use palisade_proxy::outbound::Cidr;

mod apply;
mod rules;

use rules::{Backend, Family, Settings};

/// Arguments of `palisade init`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Port of palisade's inbound listener (inbound TCP is redirected there).
    #[arg(long, default_value_t = 15006, value_parser = port)]
    inbound_port: u16,
    /// Port of palisade's outbound listener (the app's outbound TCP is redirected there).
    #[arg(long, default_value_t = 15001, value_parser = port)]
    outbound_port: u16,
    /// palisade's admin port: never redirected (the kubelet probes it directly).
    #[arg(long, default_value_t = 15020, value_parser = port)]
    admin_port: u16,
    /// The uid palisade runs as: its own connections are never redirected.
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// Inbound ports left alone, comma-separated (e.g. `22,9100`).
    #[arg(long, value_delimiter = ',', value_parser = port)]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = port)]
    exclude_outbound_ports: Vec<u16>,
    /// Outbound destination ranges left alone, comma-separated (e.g. `169.254.169.254/32`).
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<Cidr>,
    /// iptables backend; detected when not given (the one that already holds rules).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// IPv4 rules only (for nodes without IPv6).
    #[arg(long)]
    no_ipv6: bool,
    /// Print the commands instead of running them.
    #[arg(long)]
    dry_run: bool,
    /// Remove palisade's chains and jumps (and nothing else).
    #[arg(long)]
    uninstall: bool,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let settings = settings(&args)?;
    let families: &[Family] = if args.no_ipv6 {
        &[Family::V4]
    } else {
        &[Family::V4, Family::V6]
    };
    let (backend, why) = match args.backend {
        Some(backend) => (backend, "forced by --backend"),
        None => apply::detect(families)?,
    };
    let plan = if args.uninstall {
        rules::uninstall(backend, families)
    } else {
        rules::install(&settings, backend, families)
    };
    if args.dry_run {
        println!("# palisade init: iptables backend {backend} ({why})");
        for step in &plan {
            println!("{step}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(%backend, reason = why, uninstall = args.uninstall, "applying iptables rules");
    apply::execute(&plan)?;
    tracing::info!(%backend, "iptables rules {}", if args.uninstall { "removed" } else { "installed" });
    Ok(ExitCode::SUCCESS)
}

/// The flags as [`Settings`], or what is wrong with them.
fn settings(args: &Args) -> Result<Settings> {
    if args.inbound_port == args.outbound_port {
        bail!(
            "--inbound-port and --outbound-port are both {}: they must differ",
            args.inbound_port
        );
    }
    if args.no_ipv6
        && let Some(cidr) = args.exclude_outbound_cidrs.iter().find(|c| !c.is_ipv4())
    {
        bail!("--exclude-outbound-cidrs {cidr} is IPv6, but --no-ipv6 installs no IPv6 rules");
    }
    Ok(Settings {
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        proxy_uid: args.proxy_uid,
        exclude_inbound_ports: args.exclude_inbound_ports.clone(),
        exclude_outbound_ports: args.exclude_outbound_ports.clone(),
        exclude_outbound_cidrs: args.exclude_outbound_cidrs.clone(),
        admin_port: args.admin_port,
    })
}

/// A TCP port, 1 to 65535.
fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{text:?} is not a port (1-65535)")),
        Ok(port) => Ok(port),
    }
}
