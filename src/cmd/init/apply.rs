//! Running a plan from [`super::rules`] against the real iptables binaries, and finding out
//! which backend (nft or legacy) the node uses.
//!
//! Detection follows what mesh init steps do: the backend that already holds rules in this
//! network namespace wins (the node's kube-proxy or CNI chose it, and rules split across two
//! backends would both apply in an order nobody chose); with no rules anywhere, the backend
//! the plain `iptables` binary points at.

use std::process::{Command as Process, Output};

use anyhow::{Context, Result, bail};

use super::rules::{Backend, Command, Family, Step};

/// Most copies of one jump `--uninstall` deletes before it gives up (a bound, not a limit
/// anyone meets: install adds one).
const MAX_COPIES: usize = 64;

/// The backend whose `-save` shows rules, else the one `iptables` is; `families` are the
/// address families that will be touched.
pub(crate) fn detect(families: &[Family]) -> Result<(Backend, &'static str)> {
    for backend in [Backend::Legacy, Backend::Nft] {
        let mut rules = 0;
        for &family in families {
            if let Ok(output) = Process::new(backend.save_program(family)).output()
                && output.status.success()
            {
                rules += String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|line| line.starts_with("-A "))
                    .count();
            }
        }
        if rules > 0 {
            return Ok((backend, "it already holds rules"));
        }
    }
    if let Ok(output) = Process::new("iptables").arg("-V").output() {
        let version = String::from_utf8_lossy(&output.stdout);
        if version.contains("nf_tables") {
            return Ok((Backend::Nft, "iptables is iptables-nft"));
        }
        if version.contains("legacy") {
            return Ok((Backend::Legacy, "iptables is iptables-legacy"));
        }
    }
    for backend in [Backend::Nft, Backend::Legacy] {
        if Process::new(backend.program(Family::V4))
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok((backend, "it is the only one installed"));
        }
    }
    bail!("no iptables found: install iptables (iptables-nft or iptables-legacy)")
}

/// Runs `plan` in order; stops at the first command that fails and says which and why.
pub(crate) fn execute(plan: &[Step]) -> Result<()> {
    for step in plan {
        match step {
            Step::Run(command) => run(command)?,
            Step::Unless { check, then } => {
                if !succeeds(check)? {
                    run(then)?;
                }
            }
            Step::While { check, then } => {
                let mut removed = 0;
                while succeeds(check)? {
                    if removed == MAX_COPIES {
                        bail!("`{then}` still finds the rule after {MAX_COPIES} deletions");
                    }
                    run(then)?;
                    removed += 1;
                }
            }
            Step::If { check, then } => {
                if succeeds(check)? {
                    for command in then {
                        run(command)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn spawn(command: &Command) -> Result<Output> {
    Process::new(&command.program)
        .args(&command.args)
        .output()
        .with_context(|| format!("cannot run {}", command.program))
}

fn run(command: &Command) -> Result<()> {
    let output = spawn(command)?;
    if !output.status.success() {
        bail!(
            "`{command}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn succeeds(command: &Command) -> Result<bool> {
    Ok(spawn(command)?.status.success())
}
