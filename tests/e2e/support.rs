//! Helpers for running the `palisade` binary in tests: bounded runs, and a child process that
//! is always stopped by its PID.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use palisade_proxy::pki::{Ca, SvidOptions, write_identity};

/// The identity of the proxy under test in the single-proxy tests.
pub(crate) const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";
/// The identity of the allowed caller.
pub(crate) const CLIENT_ID: &str = "spiffe://cluster.local/ns/web/sa/frontend";

/// The policy of the single-proxy tests: `CLIENT_ID` may `GET /api/v1/items/{id}`.
pub(crate) const CATALOG_POLICY: &str = r#"apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: orders-api, namespace: shop }
spec:
  rules:
    - name: catalog-read
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/api/v1/items/{id}"]
"#;

/// The binary under test, built by cargo for this test run.
pub(crate) fn palisade() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_palisade"));
    command.current_dir(repo());
    command.env("PALISADE_LOG", "info");
    command
}

/// The repository root (where `examples/` lives).
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `command` to completion, killing it after `limit`.
pub(crate) fn run(mut command: Command, limit: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("palisade starts");
    let guard = Guard(Some(child));
    wait_bounded(guard, limit)
}

fn wait_bounded(mut guard: Guard, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        let child = guard.0.as_mut().expect("child");
        if child.try_wait().expect("try_wait").is_some() {
            let child = guard.0.take().expect("child");
            return child.wait_with_output().expect("output");
        }
        assert!(
            Instant::now() < deadline,
            "palisade did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Text of stdout and stderr.
pub(crate) fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A child process killed (by its PID) when dropped.
pub(crate) struct Guard(pub(crate) Option<Child>);

impl Guard {
    /// Sends SIGTERM and waits (bounded) for the exit; returns the output.
    pub(crate) fn terminate(mut self, limit: Duration) -> Output {
        let child = self.0.as_mut().expect("child");
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
        wait_bounded(self, limit)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a tool is on PATH. Under `CI=true` a missing tool fails the test; elsewhere the
/// test skips with a printed reason.
pub(crate) fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required in CI (CI=true) but is not installed");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// One test's certificates (a fresh CA) and policy file, in a temporary directory.
pub(crate) struct Identities {
    /// The temporary directory holding everything; removed when dropped.
    pub(crate) dir: tempfile::TempDir,
    /// `SERVER_ID`'s identity directory (`tls.crt`, `tls.key`, `ca.crt`); its certificate
    /// also names 127.0.0.1, which curl checks.
    pub(crate) server: PathBuf,
    /// `CLIENT_ID`'s identity directory.
    pub(crate) client: PathBuf,
    /// `policy` written to `policy.yaml`.
    pub(crate) policy: PathBuf,
}

/// Issues the server and client identities from a new CA and writes `policy`.
pub(crate) fn identities(policy: &str) -> Identities {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster.local").expect("ca");
    let server_options = SvidOptions {
        ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        ..SvidOptions::default()
    };
    let server = dir.path().join("server");
    let client = dir.path().join("client");
    let svid = ca.issue_svid(SERVER_ID, &server_options).expect("svid");
    write_identity(&server, &svid, ca.bundle_pem()).expect("write");
    let svid = ca
        .issue_svid(CLIENT_ID, &SvidOptions::default())
        .expect("svid");
    write_identity(&client, &svid, ca.bundle_pem()).expect("write");
    let policy = write(dir.path(), "policy.yaml", policy);
    Identities {
        dir,
        server,
        client,
        policy,
    }
}

/// The lines `output` (a child's piped stdout or stderr) writes, read on a thread of their
/// own until it closes.
pub(crate) fn lines_of(output: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (at most `limit`) for a line containing `needle`; returns it.
pub(crate) fn wait_line(lines: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line containing {needle:?} within {limit:?}"),
        }
    }
}

/// The `listen=` address of a log line that contains `key` (e.g. "inbound listening").
pub(crate) fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    if !line.contains(key) {
        return None;
    }
    let start = line.find("listen=")? + "listen=".len();
    line[start..].split_whitespace().next()?.parse().ok()
}
