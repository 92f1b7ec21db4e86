//! The rules `palisade init` installs, as data: a pure function of the flags, so every case
//! is a table test and `--dry-run` prints exactly what would run.
//!
//! Two chains per address family, in the `nat` table, like a mesh's init step (istio's
//! `istio-iptables`, linkerd's `proxy-init`):
//!
//! - `PALISADE_INBOUND`, jumped to from `PREROUTING`: TCP arriving at the pod returns early
//!   for the excluded ports (the admin port, palisade's own listeners, `--exclude-inbound-ports`)
//!   and is otherwise redirected to the inbound listener.
//! - `PALISADE_OUTPUT`, jumped to from `OUTPUT`: TCP the pod sends returns early when it
//!   comes from the proxy's uid (palisade's own connections must leave as they are, or they
//!   would loop back into it), goes out on loopback, or goes to an excluded port or range;
//!   the rest is redirected to the outbound listener.
//!
//! Installing creates the chains when missing, flushes and refills them, and adds each jump
//! only if `-C` says it is not there yet: running twice leaves one set of rules. Uninstalling
//! removes the jumps, then flushes and deletes the chains, and touches nothing else.

use std::fmt;

use palisade_proxy::outbound::Cidr;

/// Our chain for inbound TCP.
pub(crate) const INBOUND_CHAIN: &str = "PALISADE_INBOUND";
/// Our chain for the app's outbound TCP.
pub(crate) const OUTPUT_CHAIN: &str = "PALISADE_OUTPUT";

/// What the rules are made from (validated flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The inbound listener's port.
    pub(crate) inbound_port: u16,
    /// The outbound listener's port.
    pub(crate) outbound_port: u16,
    /// The proxy's uid: its own traffic is never redirected.
    pub(crate) proxy_uid: u32,
    /// Inbound ports left alone (palisade's own ports are added by [`rules`]).
    pub(crate) exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone.
    pub(crate) exclude_outbound_ports: Vec<u16>,
    /// Outbound destination ranges left alone (each family gets its own).
    pub(crate) exclude_outbound_cidrs: Vec<Cidr>,
    /// The admin port (health checks from the kubelet reach it directly).
    pub(crate) admin_port: u16,
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// Which iptables implementation the rules go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    /// `iptables-nft`: the iptables command line over nftables (most current distributions).
    Nft,
    /// `iptables-legacy`: the classic x_tables kernel interface.
    Legacy,
}

/// One iptables invocation: the binary and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Command {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
}

/// One step of a plan. The conditional forms are what make install and uninstall idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Run the command; failure stops the plan.
    Run(Command),
    /// Run `then` only if `check` fails (e.g. create a chain that does not exist yet, add a
    /// jump that `-C` cannot find).
    Unless { check: Command, then: Command },
    /// While `check` succeeds, run `then` (delete every copy of a jump).
    While { check: Command, then: Command },
    /// Run `then`, in order, only if `check` succeeds (flush and delete a chain that exists).
    If { check: Command, then: Vec<Command> },
}

// === impl Family ===

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    fn holds(self, cidr: &Cidr) -> bool {
        cidr.is_ipv4() == (self == Family::V4)
    }
}

// === impl Backend ===

impl Backend {
    /// The binary for `family`, e.g. `ip6tables-legacy`.
    pub(crate) fn program(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::Nft, Family::V4) => "iptables-nft",
            (Backend::Nft, Family::V6) => "ip6tables-nft",
            (Backend::Legacy, Family::V4) => "iptables-legacy",
            (Backend::Legacy, Family::V6) => "ip6tables-legacy",
        }
    }

    /// The `-save` binary for `family`, e.g. `iptables-nft-save`.
    pub(crate) fn save_program(self, family: Family) -> String {
        let program = self.program(family);
        match program.split_once('-') {
            Some((base, flavour)) => format!("{base}-{flavour}-save"),
            None => format!("{program}-save"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        })
    }
}

// === impl Command ===

impl Command {
    fn nat(program: &str, args: &[&str]) -> Command {
        let mut all = vec!["-t".to_owned(), "nat".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Command {
            program: program.to_owned(),
            args: all,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

// === impl Step ===

impl fmt::Display for Step {
    /// A line of POSIX shell with the same effect.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run(command) => write!(f, "{command}"),
            Step::Unless { check, then } => write!(f, "{check} >/dev/null 2>&1 || {then}"),
            Step::While { check, then } => {
                write!(f, "while {check} >/dev/null 2>&1; do {then}; done")
            }
            Step::If { check, then } => {
                write!(f, "if {check} >/dev/null 2>&1; then")?;
                for command in then {
                    write!(f, " {command};")?;
                }
                write!(f, " fi")
            }
        }
    }
}

/// The rules of our two chains for `family`, as `-A` argument lists (without `-t nat`).
pub(crate) fn rules(settings: &Settings, family: Family) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut rule = |parts: &[&str]| out.push(parts.iter().map(|p| (*p).to_owned()).collect());

    // Inbound: palisade's own ports and the excluded ones keep their destination.
    let mut inbound_excluded = vec![
        settings.admin_port,
        settings.inbound_port,
        settings.outbound_port,
    ];
    inbound_excluded.extend(&settings.exclude_inbound_ports);
    for port in dedup(inbound_excluded) {
        let port = port.to_string();
        rule(&[
            "-A",
            INBOUND_CHAIN,
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "RETURN",
        ]);
    }
    let to_inbound = settings.inbound_port.to_string();
    rule(&[
        "-A",
        INBOUND_CHAIN,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &to_inbound,
    ]);

    // Outbound: the proxy's own connections first, so nothing it sends is captured again.
    let uid = settings.proxy_uid.to_string();
    rule(&[
        "-A",
        OUTPUT_CHAIN,
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        "RETURN",
    ]);
    rule(&["-A", OUTPUT_CHAIN, "-o", "lo", "-j", "RETURN"]);
    rule(&["-A", OUTPUT_CHAIN, "-d", family.loopback(), "-j", "RETURN"]);
    for port in dedup(settings.exclude_outbound_ports.clone()) {
        let port = port.to_string();
        rule(&[
            "-A",
            OUTPUT_CHAIN,
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "RETURN",
        ]);
    }
    for cidr in settings
        .exclude_outbound_cidrs
        .iter()
        .filter(|c| family.holds(c))
    {
        let cidr = cidr.to_string();
        rule(&["-A", OUTPUT_CHAIN, "-d", &cidr, "-j", "RETURN"]);
    }
    let to_outbound = settings.outbound_port.to_string();
    rule(&[
        "-A",
        OUTPUT_CHAIN,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &to_outbound,
    ]);
    out
}

/// The jumps from the built-in chains into ours (arguments after `-A`/`-C`/`-D`).
const JUMPS: [[&str; 5]; 2] = [
    ["PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN],
    ["OUTPUT", "-p", "tcp", "-j", OUTPUT_CHAIN],
];

/// `op` (`-A`, `-C`, `-D`) followed by `jump`.
fn jump_command(program: &str, op: &str, jump: &[&str; 5]) -> Command {
    Command::nat(program, &[&[op], jump.as_slice()].concat())
}

/// The install plan for `families` on `backend`.
pub(crate) fn install(settings: &Settings, backend: Backend, families: &[Family]) -> Vec<Step> {
    let mut plan = Vec::new();
    for &family in families {
        let program = backend.program(family);
        for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
            plan.push(Step::Unless {
                check: Command::nat(program, &["-n", "-L", chain]),
                then: Command::nat(program, &["-N", chain]),
            });
            plan.push(Step::Run(Command::nat(program, &["-F", chain])));
        }
        for rule in rules(settings, family) {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            plan.push(Step::Run(Command::nat(program, &args)));
        }
        for jump in &JUMPS {
            plan.push(Step::Unless {
                check: jump_command(program, "-C", jump),
                then: jump_command(program, "-A", jump),
            });
        }
    }
    plan
}

/// The uninstall plan: our jumps (every copy), then our chains; nothing else.
pub(crate) fn uninstall(backend: Backend, families: &[Family]) -> Vec<Step> {
    let mut plan = Vec::new();
    for &family in families {
        let program = backend.program(family);
        for jump in &JUMPS {
            plan.push(Step::While {
                check: jump_command(program, "-C", jump),
                then: jump_command(program, "-D", jump),
            });
        }
        for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
            plan.push(Step::If {
                check: Command::nat(program, &["-n", "-L", chain]),
                then: vec![
                    Command::nat(program, &["-F", chain]),
                    Command::nat(program, &["-X", chain]),
                ],
            });
        }
    }
    plan
}

/// `ports` without repeats, in first-seen order.
fn dedup(ports: Vec<u16>) -> Vec<u16> {
    let mut seen = Vec::with_capacity(ports.len());
    for port in ports {
        if !seen.contains(&port) {
            seen.push(port);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn settings() -> Settings {
        Settings {
            inbound_port: 15006,
            outbound_port: 15001,
            proxy_uid: 1337,
            exclude_inbound_ports: vec![22, 15020],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec![
                "169.254.169.254/32".parse().unwrap(),
                "fd00:ec2::254/128".parse().unwrap(),
            ],
            admin_port: 15020,
        }
    }

    fn lines(rules: Vec<Vec<String>>) -> Vec<String> {
        rules.into_iter().map(|r| r.join(" ")).collect()
    }

    #[test]
    fn ipv4_rules_exempt_the_proxy_loopback_and_exclusions() {
        assert_eq!(
            lines(rules(&settings(), Family::V4)),
            [
                "-A PALISADE_INBOUND -p tcp --dport 15020 -j RETURN",
                "-A PALISADE_INBOUND -p tcp --dport 15006 -j RETURN",
                "-A PALISADE_INBOUND -p tcp --dport 15001 -j RETURN",
                "-A PALISADE_INBOUND -p tcp --dport 22 -j RETURN",
                "-A PALISADE_INBOUND -p tcp -j REDIRECT --to-ports 15006",
                "-A PALISADE_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A PALISADE_OUTPUT -o lo -j RETURN",
                "-A PALISADE_OUTPUT -d 127.0.0.0/8 -j RETURN",
                "-A PALISADE_OUTPUT -p tcp --dport 5432 -j RETURN",
                "-A PALISADE_OUTPUT -d 169.254.169.254/32 -j RETURN",
                "-A PALISADE_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
            ]
        );
    }

    #[test]
    fn ipv6_rules_take_only_ipv6_ranges() {
        let v6 = lines(rules(&settings(), Family::V6));
        assert!(v6.contains(&"-A PALISADE_OUTPUT -d ::1/128 -j RETURN".to_owned()));
        assert!(v6.contains(&"-A PALISADE_OUTPUT -d fd00:ec2::254/128 -j RETURN".to_owned()));
        assert!(
            !v6.iter()
                .any(|l| l.contains("169.254") || l.contains("127.0.0.0"))
        );
        // The proxy's uid comes before any redirect in both families.
        let uid = v6.iter().position(|l| l.contains("--uid-owner")).unwrap();
        let redirect = v6
            .iter()
            .position(|l| l.contains("--to-ports 15001"))
            .unwrap();
        assert!(uid < redirect);
        assert_eq!(
            v6.last().unwrap(),
            "-A PALISADE_OUTPUT -p tcp -j REDIRECT --to-ports 15001"
        );
    }

    #[test]
    fn install_is_idempotent_by_construction() {
        let plan = install(&settings(), Backend::Legacy, &[Family::V4]);
        let shell: Vec<String> = plan.iter().map(ToString::to_string).collect();
        // Chains are created only when missing, then always flushed before refilling.
        assert_eq!(
            shell[0],
            "iptables-legacy -t nat -n -L PALISADE_INBOUND >/dev/null 2>&1 \
             || iptables-legacy -t nat -N PALISADE_INBOUND"
        );
        assert_eq!(shell[1], "iptables-legacy -t nat -F PALISADE_INBOUND");
        // Every -A into a built-in chain is guarded by -C.
        for line in shell
            .iter()
            .filter(|l| l.contains("-A PREROUTING") || l.contains("-A OUTPUT"))
        {
            assert!(line.contains(" -C "), "unguarded jump: {line}");
        }
        assert_eq!(
            shell.iter().filter(|l| l.contains("-A PREROUTING")).count(),
            1
        );
        assert_eq!(shell.iter().filter(|l| l.contains("-A OUTPUT")).count(), 1);
        // Only our chains are flushed.
        for line in shell.iter().filter(|l| l.contains(" -F ")) {
            assert!(line.contains("PALISADE_"), "{line}");
        }
    }

    #[test]
    fn uninstall_touches_only_our_chains_and_jumps() {
        let plan = uninstall(Backend::Nft, &[Family::V4, Family::V6]);
        let shell: Vec<String> = plan.iter().map(ToString::to_string).collect();
        assert_eq!(
            shell,
            [
                "while iptables-nft -t nat -C PREROUTING -p tcp -j PALISADE_INBOUND >/dev/null 2>&1; \
                 do iptables-nft -t nat -D PREROUTING -p tcp -j PALISADE_INBOUND; done",
                "while iptables-nft -t nat -C OUTPUT -p tcp -j PALISADE_OUTPUT >/dev/null 2>&1; \
                 do iptables-nft -t nat -D OUTPUT -p tcp -j PALISADE_OUTPUT; done",
                "if iptables-nft -t nat -n -L PALISADE_INBOUND >/dev/null 2>&1; then \
                 iptables-nft -t nat -F PALISADE_INBOUND; iptables-nft -t nat -X PALISADE_INBOUND; fi",
                "if iptables-nft -t nat -n -L PALISADE_OUTPUT >/dev/null 2>&1; then \
                 iptables-nft -t nat -F PALISADE_OUTPUT; iptables-nft -t nat -X PALISADE_OUTPUT; fi",
                "while ip6tables-nft -t nat -C PREROUTING -p tcp -j PALISADE_INBOUND >/dev/null 2>&1; \
                 do ip6tables-nft -t nat -D PREROUTING -p tcp -j PALISADE_INBOUND; done",
                "while ip6tables-nft -t nat -C OUTPUT -p tcp -j PALISADE_OUTPUT >/dev/null 2>&1; \
                 do ip6tables-nft -t nat -D OUTPUT -p tcp -j PALISADE_OUTPUT; done",
                "if ip6tables-nft -t nat -n -L PALISADE_INBOUND >/dev/null 2>&1; then \
                 ip6tables-nft -t nat -F PALISADE_INBOUND; ip6tables-nft -t nat -X PALISADE_INBOUND; fi",
                "if ip6tables-nft -t nat -n -L PALISADE_OUTPUT >/dev/null 2>&1; then \
                 ip6tables-nft -t nat -F PALISADE_OUTPUT; ip6tables-nft -t nat -X PALISADE_OUTPUT; fi",
            ]
        );
    }

    #[test]
    fn backend_binaries() {
        assert_eq!(Backend::Nft.program(Family::V6), "ip6tables-nft");
        assert_eq!(
            Backend::Legacy.save_program(Family::V4),
            "iptables-legacy-save"
        );
        assert_eq!(Backend::Nft.save_program(Family::V6), "ip6tables-nft-save");
    }
}
