//! Two "pods" in network namespaces joined by a veth pair, each with an app, `palisade proxy`
//! (as uid 1337) and the rules of `palisade init`: transparent mutual TLS between them.
//!
//! App A is curl (a plain HTTP client); app B is a small Python HTTP server that echoes what
//! it received. The test shows that A's plain call to B's address arrives at B with A's
//! identity in XFCC, over IPv4 and IPv6; that the bytes on the veth are TLS (tcpdump, with a
//! plaintext call as the control that the capture sees plaintext when there is some); that
//! B's policy denies; that an unmeshed destination is passed through or refused per config;
//! and that palisade's own connections are not captured again (iptables counters).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_proxy::pki::{Ca, SvidOptions, write_identity};

use crate::init::{Netns, require_root, sh};
use crate::support::{Guard, text, write};

const A_ID: &str = "spiffe://cluster.local/ns/a/sa/client";
const B_ID: &str = "spiffe://cluster.local/ns/b/sa/server";
const A4: &str = "10.77.0.1";
const B4: &str = "10.77.0.2";
const A6: &str = "fd77::1";
const B6: &str = "fd77::2";
const PLAIN_PORT: &str = "9090";
const LIMIT: Duration = Duration::from_secs(15);

const POLICY: &str = r#"apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: b, namespace: b }
spec:
  rules:
    - name: a-reads-items
      from: { principals: ["spiffe://cluster.local/ns/a/sa/client"] }
      to:
        - methods: [GET]
          paths: ["/api/v1/items/{id}"]
"#;

/// App B: answers every GET and DELETE with what it saw, on each port given (dual stack).
const APP: &str = r#"
import http.server, socket, sys, threading
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        xfcc = self.headers.get("x-forwarded-client-cert", "-")
        port = self.server.server_address[1]
        body = ("app-b:%d saw %s %s xfcc=%s" % (port, self.command, self.path, xfcc)).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_DELETE = do_GET
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
servers = [Server(("::", int(port)), Echo) for port in sys.argv[1:]]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
"#;

/// Identity files and the policy, readable by uid 1337.
struct Files {
    _dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    policy: PathBuf,
    app: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster.local").expect("ca");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (path, id) in [(&a, A_ID), (&b, B_ID)] {
        let svid = ca.issue_svid(id, &SvidOptions::default()).expect("svid");
        write_identity(path, &svid, ca.bundle_pem()).expect("write identity");
    }
    let policy = write(dir.path(), "policy.yaml", POLICY);
    let app = write(dir.path(), "app.py", APP);
    // palisade runs as uid 1337: let it read the files (test keys only).
    sh(Command::new("chmod").args(["-R", "a+rX"]).arg(dir.path()));
    Files {
        _dir: dir,
        a,
        b,
        policy,
        app,
    }
}

/// Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses.
fn pods() -> (Netns, Netns) {
    let a = Netns::new("mesh-a");
    let b = Netns::new("mesh-b");
    let (va, vb) = (
        format!("pa{}", std::process::id()),
        format!("pb{}", std::process::id()),
    );
    sh(Command::new("ip").args([
        "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name,
    ]));
    for (ns, dev, v4, v6) in [(&a, &va, A4, A6), (&b, &vb, B4, B6)] {
        ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
        ns.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            dev,
            "nodad",
        ]);
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }
    (a, b)
}

/// Starts `argv` in `netns` with piped output.
fn spawn(netns: &Netns, argv: &[&str]) -> Guard {
    let mut command = netns.command(argv);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    Guard(Some(command.spawn().expect("process starts")))
}

/// Waits (bounded) until something listens on TCP `port` in `netns`.
fn wait_listening(netns: &Netns, port: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = netns.exec(&["ss", "-Hltn", &format!("sport = :{port}")]);
        if !out.trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port} in {}",
            netns.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `palisade proxy` in `netns` as uid 1337, with the transparent outbound listener.
fn start_palisade(netns: &Netns, identity: &Path, policy: &Path, extra: &[&str]) -> Guard {
    let (identity, policy) = (
        identity.to_str().expect("path"),
        policy.to_str().expect("path"),
    );
    let mut argv = vec![
        "setpriv",
        "--reuid",
        "1337",
        "--regid",
        "1337",
        "--clear-groups",
        env!("CARGO_BIN_EXE_palisade"),
        "proxy",
        "--policy",
        policy,
        "--identity-dir",
        identity,
        "--no-reload",
        "--inbound",
        "[::]:15006",
        "--app",
        "127.0.0.1:8080",
        "--drain",
        "1s",
        "--outbound-listen",
        "[::]:15001",
        "--mesh-cidr",
        "10.77.0.0/24,fd77::/64",
        "--mesh-port",
        "8080,8081",
    ];
    argv.extend(extra);
    let mut command = netns.command(&argv);
    command.env("PALISADE_LOG", "info");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let guard = Guard(Some(command.spawn().expect("palisade starts")));
    wait_listening(netns, "15006");
    wait_listening(netns, "15001");
    guard
}

/// curl inside `netns` (as root: an app, so its traffic is captured). Returns (exit code,
/// body).
fn curl(netns: &Netns, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["curl", "-sS", "-g", "--max-time", "10"];
    argv.extend(args);
    let output = netns.command(&argv).output().expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// tcpdump on `dev` in `netns`, writing `pcap`; returns once it is capturing.
fn start_capture(netns: &Netns, dev: &str, pcap: &Path) -> Guard {
    let pcap = pcap.to_str().expect("path");
    let mut guard = spawn(
        netns,
        &[
            "tcpdump",
            "--immediate-mode",
            "-i",
            dev,
            "-n",
            "-U",
            "-w",
            pcap,
            "tcp",
        ],
    );
    let stderr = guard
        .0
        .as_mut()
        .and_then(|c| c.stderr.take())
        .expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(LIMIT).expect("tcpdump started capturing");
    guard
}

/// The nat-table packet counter of the first rule in `chain` whose text contains `needle`.
fn counter(netns: &Netns, iptables: &str, chain: &str, needle: &str) -> u64 {
    let listing = netns.exec(&[iptables, "-t", "nat", "-L", chain, "-v", "-n", "-x"]);
    listing
        .lines()
        .find(|line| line.contains(needle))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|packets| packets.parse().ok())
        .unwrap_or_else(|| panic!("no rule with {needle:?} in {chain}:\n{listing}"))
}

fn stderr_of(output: &Output) -> String {
    text(output).1
}

#[test]
fn transparent_mtls_between_two_pods() {
    if !require_root(&[
        "ip",
        "ss",
        "curl",
        "python3",
        "tcpdump",
        "setpriv",
        "iptables",
        "ip6tables",
    ]) {
        return;
    }
    let files = files();
    let (a, b) = pods();
    let init = |netns: &Netns, args: &[&str]| {
        let mut argv = vec![env!("CARGO_BIN_EXE_palisade"), "init"];
        argv.extend(args);
        let output = netns.command(&argv).output().expect("init runs");
        assert!(output.status.success(), "init: {}", stderr_of(&output));
    };
    init(&a, &[]);
    // B's plain port stays reachable without palisade: the unmeshed destination.
    init(&b, &["--exclude-inbound-ports", PLAIN_PORT]);

    let app = files.app.to_str().expect("path");
    let _app_b = spawn(&b, &["python3", app, "8080", "8081", PLAIN_PORT]);
    wait_listening(&b, "8080");
    wait_listening(&b, "8081");
    wait_listening(&b, PLAIN_PORT);
    let palisade_b = start_palisade(&b, &files.b, &files.policy, &[]);
    let palisade_a = start_palisade(&a, &files.a, &files.policy, &["--unmeshed", "pass-through"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("veth.pcap");
    let vb = format!("pb{}", std::process::id());
    let capture = start_capture(&b, &vb, &pcap);

    // Meshed, IPv4 and IPv6: A's identity arrives at B.
    let secret4 = "/api/v1/items/secret-v4";
    let (code, body) = curl(&a, &[&format!("http://{B4}:8080{secret4}")]);
    assert_eq!(code, 0, "{body}");
    assert_eq!(
        body,
        format!("app-b:8080 saw GET {secret4} xfcc=By={B_ID};URI={A_ID}")
    );
    let secret6 = "/api/v1/items/secret-v6";
    let (code, body) = curl(&a, &[&format!("http://[{B6}]:8080{secret6}")]);
    assert_eq!(code, 0, "{body}");
    assert_eq!(
        body,
        format!("app-b:8080 saw GET {secret6} xfcc=By={B_ID};URI={A_ID}")
    );
    // B's inbound side forwards to the port A meant (its original destination).
    let (code, body) = curl(
        &a,
        &[&format!("http://[{B6}]:8081/api/v1/items/other-port")],
    );
    assert_eq!(code, 0, "{body}");
    assert_eq!(
        body,
        format!("app-b:8081 saw GET /api/v1/items/other-port xfcc=By={B_ID};URI={A_ID}")
    );

    // B's policy denies what no rule allows.
    let (code, body) = curl(
        &a,
        &["-X", "DELETE", &format!("http://{B4}:8080/api/v1/items/1")],
    );
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"error\":\"forbidden\""), "{body}");

    // Unmeshed destination (port outside --mesh-port), passed through in plaintext.
    let (code, body) = curl(&a, &[&format!("http://{B4}:{PLAIN_PORT}/plain-control")]);
    assert_eq!(code, 0, "{body}");
    assert_eq!(body, "app-b:9090 saw GET /plain-control xfcc=-");

    // Every app connection was redirected once; palisade's own connections returned early.
    for (iptables, connections) in [("iptables", 3), ("ip6tables", 2)] {
        let redirected = counter(&a, iptables, "PALISADE_OUTPUT", "redir ports 15001");
        assert_eq!(
            redirected, connections,
            "{iptables}: app connections redirected"
        );
        let own = counter(&a, iptables, "PALISADE_OUTPUT", "owner UID match 1337");
        assert_eq!(
            own, connections,
            "{iptables}: palisade's own connections exempted"
        );
    }

    // The veth carried TLS: none of the meshed paths in cleartext, the plaintext control is.
    let capture = capture.terminate(LIMIT);
    assert!(capture.status.success() || capture.status.code().is_none());
    let dump = sh(Command::new("tcpdump")
        .args(["-r"])
        .arg(&pcap)
        .args(["-n", "-A"]));
    assert!(
        dump.contains("GET /plain-control"),
        "the capture saw no plaintext at all:\n{dump}"
    );
    for secret in [
        secret4,
        secret6,
        "/api/v1/items/1",
        "x-forwarded-client-cert",
    ] {
        assert!(
            !dump.contains(secret),
            "{secret} crossed the veth in cleartext"
        );
    }
    let tls_packets = sh(Command::new("tcpdump")
        .args(["-r"])
        .arg(&pcap)
        .args(["-n", "tcp port 8080 and greater 100"]));
    assert!(
        tls_packets.lines().count() >= 4,
        "no meshed traffic captured:\n{tls_packets}"
    );

    let a_log = stderr_of(&palisade_a.terminate(LIMIT));
    assert_eq!(
        a_log.matches("outbound connection meshed").count(),
        4,
        "{a_log}"
    );
    assert!(a_log.contains(&format!("peer.id={B_ID}")), "{a_log}");
    assert!(
        a_log.contains("outbound connection passed through"),
        "{a_log}"
    );
    assert!(!a_log.contains("refused"), "{a_log}");

    // Refuse instead: the unmeshed call fails, the meshed one still works.
    let palisade_a = start_palisade(&a, &files.a, &files.policy, &["--unmeshed", "refuse"]);
    let (code, body) = curl(&a, &[&format!("http://{B4}:{PLAIN_PORT}/plain-refused")]);
    assert_ne!(code, 0, "an unmeshed destination was reached: {body}");
    let (code, body) = curl(&a, &[&format!("http://{B4}:8080/api/v1/items/2")]);
    assert_eq!(code, 0, "{body}");
    assert!(body.ends_with(&format!("URI={A_ID}")), "{body}");
    let a_log = stderr_of(&palisade_a.terminate(LIMIT));
    assert!(
        a_log.contains("reason=\"unmeshed\"") || a_log.contains("reason=unmeshed"),
        "{a_log}"
    );

    let b_log = stderr_of(&palisade_b.terminate(LIMIT));
    assert!(b_log.contains("inbound listening"), "{b_log}");
}

/// The demo's mesh on 127.0.0.1 (no root): app A's plain call through palisade's outbound
/// side (fixed destination) arrives as `frontend` and meets the policy.
#[test]
fn demo_routes_app_a_through_the_outbound_side() {
    let mut command = crate::support::palisade();
    command.arg("demo");
    let output = crate::support::run(command, Duration::from_secs(60));
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("app A via palisade outbound"))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[0].contains("200 ok")
            && rows[0].contains("app saw GET /api/v1/items/7 from ns/web/sa/frontend"),
        "{}",
        rows[0]
    );
    assert!(rows[1].contains("403 forbidden"), "{}", rows[1]);
    assert!(
        stdout.contains("palisade outbound http://127.0.0.1:"),
        "{stdout}"
    );
}
