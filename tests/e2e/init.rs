//! `palisade init` against the real iptables binaries, in network namespaces the tests
//! create: rules installed once, idempotent, removed exactly, for the nft and legacy
//! backends; `--dry-run` and bad flags without root.
//!
//! Also home of [`Netns`] and [`require_root`], which `mesh.rs` uses too.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{palisade, run, text};

const LIMIT: Duration = Duration::from_secs(30);

/// A network namespace, deleted when dropped (also when a test panics).
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    /// Creates `pal-<pid>-<tag>` with its loopback up.
    pub(crate) fn new(tag: &str) -> Netns {
        let name = format!("pal-{}-{tag}", std::process::id());
        // A namespace left over from a killed run of this PID would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(Command::new("ip").args(["netns", "add", &name]));
        let netns = Netns { name };
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// A command that runs `argv` inside the namespace.
    pub(crate) fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        command
    }

    /// Runs `argv` inside the namespace; it must succeed. Returns stdout.
    pub(crate) fn exec(&self, argv: &[&str]) -> String {
        sh(&mut self.command(argv))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `command`, which must succeed; returns stdout.
pub(crate) fn sh(command: &mut Command) -> String {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether this process may create network namespaces and change iptables (root, with `ip`
/// and the iptables binaries). Under `CI=true` a missing part fails the test; elsewhere the
/// test prints why it skips.
pub(crate) fn require_root(tools: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    let why = if !root {
        "not root (network namespaces and iptables need it)".to_owned()
    } else if !missing.is_empty() {
        format!("missing {}", missing.join(", "))
    } else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: this test must run, but: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

fn init(args: &[&str]) -> Output {
    let mut command = palisade();
    command.arg("init").args(args);
    run(command, LIMIT)
}

/// `palisade init` inside `netns`.
fn init_in(netns: &Netns, args: &[&str]) -> Output {
    let mut argv = vec![env!("CARGO_BIN_EXE_palisade"), "init"];
    argv.extend(args);
    run(netns.command(&argv), LIMIT)
}

/// The rules of the nat table for one `-save` binary: chain declarations and rules, without
/// counters and comments.
fn nat_rules(netns: &Netns, save: &str) -> Vec<String> {
    netns
        .exec(&[save, "-t", "nat"])
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with(':'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
        .collect()
}

fn palisade_lines(rules: &[String]) -> Vec<String> {
    rules
        .iter()
        .filter(|l| l.contains("PALISADE"))
        .cloned()
        .collect()
}

#[test]
fn dry_run_prints_the_exact_commands() {
    let output = init(&[
        "--dry-run",
        "--backend",
        "legacy",
        "--no-ipv6",
        "--proxy-uid",
        "2000",
        "--exclude-inbound-ports",
        "22,9100",
        "--exclude-outbound-ports",
        "5432",
        "--exclude-outbound-cidrs",
        "169.254.169.254/32",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let expected = "\
# palisade init: iptables backend legacy (forced by --backend)
iptables-legacy -t nat -n -L PALISADE_INBOUND >/dev/null 2>&1 || iptables-legacy -t nat -N PALISADE_INBOUND
iptables-legacy -t nat -F PALISADE_INBOUND
iptables-legacy -t nat -n -L PALISADE_OUTPUT >/dev/null 2>&1 || iptables-legacy -t nat -N PALISADE_OUTPUT
iptables-legacy -t nat -F PALISADE_OUTPUT
iptables-legacy -t nat -A PALISADE_INBOUND -p tcp --dport 15020 -j RETURN
iptables-legacy -t nat -A PALISADE_INBOUND -p tcp --dport 15006 -j RETURN
iptables-legacy -t nat -A PALISADE_INBOUND -p tcp --dport 15001 -j RETURN
iptables-legacy -t nat -A PALISADE_INBOUND -p tcp --dport 22 -j RETURN
iptables-legacy -t nat -A PALISADE_INBOUND -p tcp --dport 9100 -j RETURN
iptables-legacy -t nat -A PALISADE_INBOUND -p tcp -j REDIRECT --to-ports 15006
iptables-legacy -t nat -A PALISADE_OUTPUT -m owner --uid-owner 2000 -j RETURN
iptables-legacy -t nat -A PALISADE_OUTPUT -o lo -j RETURN
iptables-legacy -t nat -A PALISADE_OUTPUT -d 127.0.0.0/8 -j RETURN
iptables-legacy -t nat -A PALISADE_OUTPUT -p tcp --dport 5432 -j RETURN
iptables-legacy -t nat -A PALISADE_OUTPUT -d 169.254.169.254/32 -j RETURN
iptables-legacy -t nat -A PALISADE_OUTPUT -p tcp -j REDIRECT --to-ports 15001
iptables-legacy -t nat -C PREROUTING -p tcp -j PALISADE_INBOUND >/dev/null 2>&1 || iptables-legacy -t nat -A PREROUTING -p tcp -j PALISADE_INBOUND
iptables-legacy -t nat -C OUTPUT -p tcp -j PALISADE_OUTPUT >/dev/null 2>&1 || iptables-legacy -t nat -A OUTPUT -p tcp -j PALISADE_OUTPUT
";
    assert_eq!(stdout, expected);

    let output = init(&["--dry-run", "--uninstall", "--backend", "nft"]);
    let (stdout, _) = text(&output);
    assert!(output.status.success());
    assert!(stdout.contains(
        "while ip6tables-nft -t nat -C OUTPUT -p tcp -j PALISADE_OUTPUT >/dev/null 2>&1; \
         do ip6tables-nft -t nat -D OUTPUT -p tcp -j PALISADE_OUTPUT; done"
    ));
    assert!(!stdout.contains(" -A "), "{stdout}");
}

#[test]
fn bad_flags_are_refused_with_a_clear_error() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--exclude-inbound-ports", "0"],
            "\"0\" is not a port (1-65535)",
        ),
        (
            &["--exclude-outbound-ports", "22,http"],
            "\"http\" is not a port",
        ),
        (&["--inbound-port", "70000"], "\"70000\" is not a port"),
        (
            &["--exclude-outbound-cidrs", "10.0.0.1/8"],
            "did you mean 10.0.0.0/8?",
        ),
        (
            &["--exclude-outbound-cidrs", "10.0.0.0/33"],
            "prefix length must be at most 32",
        ),
        (
            &["--exclude-outbound-cidrs", "example.com"],
            "is not an address range",
        ),
        (
            &["--backend", "iptables"],
            "invalid value 'iptables' for '--backend",
        ),
        (&["--proxy-uid=-1"], "invalid value '-1' for '--proxy-uid"),
        (
            &["--inbound-port", "15001"],
            "--inbound-port and --outbound-port are both 15001",
        ),
        (
            &["--no-ipv6", "--exclude-outbound-cidrs", "fd00::/8"],
            "fd00::/8 is IPv6, but --no-ipv6",
        ),
    ];
    for (args, message) in cases {
        // --backend makes the failure independent of the iptables installed here; the
        // rules would be printed, not applied, if validation let the flags through.
        let mut all = vec!["--dry-run"];
        if !args.contains(&"--backend") {
            all.extend(["--backend", "nft"]);
        }
        all.extend(*args);
        let output = init(&all);
        let (stdout, stderr) = text(&output);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} printed rules: {stdout}");
    }
}

#[test]
fn installs_once_and_uninstalls_exactly_in_a_netns() {
    if !require_root(&["ip"]) {
        return;
    }
    let mut tested = 0;
    for backend in ["nft", "legacy"] {
        let (v4, v6) = (
            format!("iptables-{backend}-save"),
            format!("ip6tables-{backend}-save"),
        );
        let present = Command::new(&v4)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
            && Command::new(&v6)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
        if !present {
            eprintln!("backend {backend}: {v4} or {v6} not installed, not tested");
            continue;
        }
        tested += 1;
        let netns = Netns::new(&format!("init-{backend}"));
        // Something of the node's own, which palisade must leave alone.
        netns.exec(&[
            &format!("iptables-{backend}"),
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "-j",
            "RETURN",
        ]);
        let before_v4 = nat_rules(&netns, &v4);

        // Bad flags change nothing.
        let output = init_in(
            &netns,
            &[
                "--backend",
                backend,
                "--exclude-outbound-cidrs",
                "10.0.0.1/8",
            ],
        );
        assert!(!output.status.success());
        assert_eq!(
            nat_rules(&netns, &v4),
            before_v4,
            "{backend}: bad flags changed rules"
        );

        let output = init_in(
            &netns,
            &["--backend", backend, "--exclude-inbound-ports", "22"],
        );
        assert!(output.status.success(), "{backend}: {}", text(&output).1);
        let once_v4 = nat_rules(&netns, &v4);
        let once_v6 = nat_rules(&netns, &v6);
        let ours = palisade_lines(&once_v4);
        assert_eq!(
            ours.iter().filter(|l| l.starts_with(":PALISADE_")).count(),
            2,
            "{ours:#?}"
        );
        assert_eq!(
            ours.iter()
                .filter(|l| *l == "-A PREROUTING -p tcp -j PALISADE_INBOUND")
                .count(),
            1,
            "{ours:#?}"
        );
        assert_eq!(
            ours.iter()
                .filter(|l| *l == "-A OUTPUT -p tcp -j PALISADE_OUTPUT")
                .count(),
            1
        );
        assert!(
            ours.iter().any(
                |l| l.starts_with("-A PALISADE_INBOUND") && l.ends_with("--dport 22 -j RETURN")
            ),
            "{ours:#?}"
        );
        assert!(
            ours.iter()
                .any(|l| l.contains("--uid-owner 1337") && l.contains("RETURN")),
            "{ours:#?}"
        );
        assert!(
            ours.iter().any(|l| l.contains("REDIRECT --to-ports 15001")),
            "{ours:#?}"
        );
        let ours_v6 = palisade_lines(&once_v6);
        assert!(
            ours_v6.iter().any(|l| l.contains("::1/128")),
            "{ours_v6:#?}"
        );
        assert!(
            ours_v6
                .iter()
                .any(|l| l.contains("REDIRECT --to-ports 15006")),
            "{ours_v6:#?}"
        );

        // Detection picks the backend that now holds rules.
        let output = init_in(&netns, &["--dry-run"]);
        let (stdout, _) = text(&output);
        assert!(
            stdout.starts_with(&format!(
                "# palisade init: iptables backend {backend} (it already holds rules)"
            )),
            "{stdout}"
        );

        // Twice: the same single set.
        let output = init_in(
            &netns,
            &["--backend", backend, "--exclude-inbound-ports", "22"],
        );
        assert!(output.status.success(), "{backend}: {}", text(&output).1);
        assert_eq!(
            nat_rules(&netns, &v4),
            once_v4,
            "{backend}: second run changed ipv4 rules"
        );
        assert_eq!(
            nat_rules(&netns, &v6),
            once_v6,
            "{backend}: second run changed ipv6 rules"
        );

        // Uninstall: nothing of ours is left; the node's rule is.
        let output = init_in(&netns, &["--backend", backend, "--uninstall"]);
        assert!(output.status.success(), "{backend}: {}", text(&output).1);
        let after_v4 = nat_rules(&netns, &v4);
        assert!(palisade_lines(&after_v4).is_empty(), "{after_v4:#?}");
        assert!(palisade_lines(&nat_rules(&netns, &v6)).is_empty());
        assert_eq!(after_v4, before_v4);
        // Uninstalling again is a no-op, not an error.
        let output = init_in(&netns, &["--backend", backend, "--uninstall"]);
        assert!(output.status.success(), "{backend}: {}", text(&output).1);
    }
    if tested == 0 && std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: neither the nft nor the legacy iptables backend is installed");
    }
}
