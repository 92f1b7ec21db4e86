//! The outbound side's telemetry and lifecycle with real parts on 127.0.0.1 (no root): an
//! app's TCP connections through palisade's outbound listener (fixed destination) to a
//! peer that speaks mutual TLS with its own SVID and echoes; the admin port's `/metrics`
//! text, the JSON access-log lines, the idle timeout closing a silent connection, and the
//! drain on shutdown.
//!
//! In-process (the library, as `palisade proxy` runs it): the binary gives the outbound
//! side its telemetry through `src/cmd/outbound_args.rs`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_config::SpiffeId;
use palisade_proxy::admin::{Admin, AdminConfig, AdminState, Readiness};
use palisade_proxy::outbound::{Destinations, Outbound, OutboundConfig, Running, Upstream};
use palisade_proxy::pki::{Ca, SvidOptions, write_identity};
use palisade_proxy::telemetry::{AccessLogConfig, Telemetry, TelemetryConfig, TelemetryTasks};
use palisade_proxy::tls::{Identity, TrustDomains, server_config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const APP_ID: &str = "spiffe://cluster.local/ns/web/sa/frontend";
const PEER_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";
const STRANGER: &str = "spiffe://cluster.local/ns/other/sa/stranger";
const LIMIT: Duration = Duration::from_secs(10);

/// Certificates of one test.
struct Pki {
    ca: Ca,
    dir: tempfile::TempDir,
}

/// What the access log wrote.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

/// Telemetry with the access log on, the admin port serving its `/metrics`.
struct Observed {
    telemetry: Telemetry,
    tasks: TelemetryTasks,
    sink: Sink,
    admin: Admin,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            ca: Ca::new("cluster.local").expect("ca"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn identity(&self, id: &str) -> Identity {
        let svid = self
            .ca
            .issue_svid(id, &SvidOptions::default())
            .expect("svid");
        let dir = self.dir.path().join(id.replace(['/', ':'], "_"));
        let paths = write_identity(&dir, &svid, self.ca.bundle_pem()).expect("identity files");
        Identity::load(&paths).expect("identity loads")
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("sink").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Observed {
    async fn start() -> Observed {
        let sink = Sink::default();
        let config = TelemetryConfig {
            access_log: AccessLogConfig {
                enabled: true,
                ..AccessLogConfig::default()
            },
            ..TelemetryConfig::default()
        };
        let (telemetry, tasks) =
            Telemetry::start(config, Box::new(sink.clone())).expect("telemetry starts");
        let state = AdminState {
            telemetry: telemetry.clone(),
            status: None,
            readiness: Readiness::default(),
        };
        let listen = "127.0.0.1:0".parse().expect("addr");
        let admin = Admin::spawn(&AdminConfig { listen }, state)
            .await
            .expect("admin starts");
        Observed {
            telemetry,
            tasks,
            sink,
            admin,
        }
    }

    /// The admin port's `/metrics` (Prometheus text), over a real HTTP/1.1 connection.
    async fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(self.admin.local_addr())
            .await
            .expect("admin connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut response = Vec::new();
        tokio::time::timeout(LIMIT, stream.read_to_end(&mut response))
            .await
            .expect("metrics in time")
            .expect("metrics read");
        let response = String::from_utf8_lossy(&response).into_owned();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// Waits (bounded) until `/metrics` has every line of `expected`; returns the text.
    async fn metrics_with(&self, expected: &[&str]) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = self.metrics().await;
            if expected.iter().all(|line| has_sample(&text, line)) {
                return text;
            }
            let missing: Vec<_> = expected
                .iter()
                .filter(|line| !has_sample(&text, line))
                .collect();
            assert!(Instant::now() < deadline, "missing {missing:?} in:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes the queued access-log lines and returns them, parsed.
    async fn finish(self) -> Vec<Value> {
        self.admin.shutdown().await;
        self.tasks.finish(LIMIT).await;
        let bytes = self.sink.0.lock().expect("sink").clone();
        let text = String::from_utf8(bytes).expect("utf-8 log");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect()
    }
}

/// Whether `text` has the sample line `line` (name, labels and value).
fn has_sample(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// A meshed peer: mutual TLS with `id`'s SVID (client certificates verified), echoing what
/// it reads until the client closes.
async fn echo_peer(pki: &Pki, id: &str) -> SocketAddr {
    let identity = pki.identity(id);
    let config = server_config(&identity, &TrustDomains::of(identity.id())).expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (mut read, mut write) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    addr
}

/// An outbound listener presenting the app's identity, for the peer at `peer` that must be
/// `expected`, with the given idle and drain times.
async fn outbound(
    pki: &Pki,
    telemetry: &Telemetry,
    peer: SocketAddr,
    expected: &str,
    idle: Duration,
    drain: Duration,
) -> Running {
    let destinations = Destinations::Fixed(Upstream {
        addr: peer,
        expected: Some(SpiffeId::parse(expected).expect("id")),
    });
    let listen = "127.0.0.1:0".parse().expect("addr");
    let mut config = OutboundConfig::new(listen, destinations, pki.identity(APP_ID));
    config.timeouts.idle = idle;
    config.timeouts.drain = drain;
    Outbound::bind_observed(config, telemetry.clone())
        .await
        .expect("outbound binds")
        .spawn()
}

/// Writes `bytes` through `stream` and reads the same number back.
async fn echo(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, bytes);
}

/// Reads until the other side closes (bounded); returns how long that took.
async fn closed(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(LIMIT, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was not closed");
    started.elapsed()
}

fn line<'a>(lines: &'a [Value], outcome: &str, reason: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["outcome"] == outcome && l["reason"] == reason)
        .unwrap_or_else(|| panic!("no {outcome}/{reason} line in {lines:#?}"))
}

#[tokio::test]
async fn outbound_connections_are_counted_and_logged() {
    let pki = Pki::new();
    let observed = Observed::start().await;
    let peer = echo_peer(&pki, PEER_ID).await;
    let hour = Duration::from_secs(3600);
    let good = outbound(&pki, &observed.telemetry, peer, PEER_ID, hour, LIMIT).await;
    // Expects another identity than the peer's: the handshake must fail.
    let wrong = outbound(&pki, &observed.telemetry, peer, STRANGER, hour, LIMIT).await;

    let mut app = TcpStream::connect(good.local_addr())
        .await
        .expect("connect");
    echo(&mut app, b"hello, peer").await;
    echo(&mut app, b"again").await;
    app.shutdown().await.expect("app closes");
    closed(&mut app).await;

    let mut refused = TcpStream::connect(wrong.local_addr())
        .await
        .expect("connect");
    let _ = refused.write_all(b"secret-payload").await;
    closed(&mut refused).await;

    let meshed = r#"outcome="meshed",peer_namespace="shop",peer_sa="orders""#;
    let text = observed
        .metrics_with(&[
            r#"palisade_outbound_connections_total{outcome="meshed",reason="",peer_namespace="shop",peer_sa="orders"} 1"#,
            r#"palisade_outbound_connections_total{outcome="failed",reason="handshake",peer_namespace="other",peer_sa="stranger"} 1"#,
            r#"palisade_outbound_tls_handshake_failures_total{reason="unexpected_peer_id"} 1"#,
            &format!("palisade_outbound_sent_bytes_total{{{meshed}}} 16"),
            &format!("palisade_outbound_received_bytes_total{{{meshed}}} 16"),
            r#"palisade_outbound_connect_duration_seconds_count{outcome="meshed"} 1"#,
            r#"palisade_outbound_connect_duration_seconds_count{outcome="failed"} 1"#,
            r#"palisade_outbound_connections_closed_total{reason="closed"} 1"#,
            "palisade_outbound_connections_open 0",
        ])
        .await;
    // Bounded labels: no address or port of either side is a label value.
    for addr in [peer, good.local_addr(), wrong.local_addr()] {
        assert!(!text.contains(&addr.to_string()), "{addr} in:\n{text}");
    }
    assert!(
        text.contains("# TYPE palisade_outbound_connections_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE palisade_outbound_connect_duration_seconds histogram"),
        "{text}"
    );

    good.shutdown().await;
    wrong.shutdown().await;
    let lines = observed.finish().await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let ok = line(&lines, "meshed", "closed");
    assert_eq!(ok["direction"], "outbound");
    assert_eq!(ok["destination"], peer.to_string());
    assert_eq!(ok["peer_id"], PEER_ID);
    assert_eq!(ok["expected_peer_id"], PEER_ID);
    assert_eq!(ok["bytes_sent"], 16);
    assert_eq!(ok["bytes_received"], 16);
    assert_eq!(ok["tls_resumed"], false);
    assert!(ok["connect_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{ok}");
    assert!(
        ok["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{ok}"
    );
    let failed = line(&lines, "failed", "handshake");
    assert_eq!(failed["peer_id"], Value::Null);
    assert_eq!(failed["expected_peer_id"], STRANGER);
    assert_eq!(failed["bytes_sent"], 0);
    let all = serde_json::to_string(&lines).expect("json");
    for secret in ["hello, peer", "secret-payload", "PRIVATE KEY", "BEGIN"] {
        assert!(!all.contains(secret), "{secret} in the access log: {all}");
    }
}

#[tokio::test]
async fn a_silent_outbound_connection_is_closed_after_the_idle_timeout() {
    let pki = Pki::new();
    let observed = Observed::start().await;
    let peer = echo_peer(&pki, PEER_ID).await;
    let idle = Duration::from_millis(400);
    let running = outbound(&pki, &observed.telemetry, peer, PEER_ID, idle, LIMIT).await;

    let mut silent = TcpStream::connect(running.local_addr())
        .await
        .expect("connect");
    let mut chatty = TcpStream::connect(running.local_addr())
        .await
        .expect("connect");
    // From before the echo: the proxy's idle clock starts at its last byte of that exchange,
    // which is before the echo's reply reaches this side.
    let silent_since = Instant::now();
    echo(&mut silent, b"once").await;
    // The chatty connection keeps talking for longer than the idle timeout, more often.
    let keep_talking = tokio::spawn(async move {
        for _ in 0..8 {
            echo(&mut chatty, b"tick").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        chatty
    });
    closed(&mut silent).await;
    let after = silent_since.elapsed();
    assert!(
        after >= idle,
        "closed after {after:?}, before the idle timeout"
    );
    // Still open and carrying bytes, well past the idle timeout of the silent one.
    let mut chatty = keep_talking.await.expect("chatty connection");
    echo(&mut chatty, b"still here").await;

    observed
        .metrics_with(&[
            r#"palisade_outbound_connections_closed_total{reason="idle_timeout"} 1"#,
            "palisade_outbound_connections_open 1",
        ])
        .await;
    drop(chatty);
    running.shutdown().await;
    let lines = observed.finish().await;
    let idled = line(&lines, "meshed", "idle_timeout");
    assert_eq!(idled["bytes_sent"], 4);
    assert_eq!(idled["bytes_received"], 4);
}

#[tokio::test]
async fn shutdown_drains_open_outbound_connections_then_closes_them() {
    let pki = Pki::new();
    let observed = Observed::start().await;
    let peer = echo_peer(&pki, PEER_ID).await;
    let drain = Duration::from_millis(800);
    let hour = Duration::from_secs(3600);
    let running = outbound(&pki, &observed.telemetry, peer, PEER_ID, hour, drain).await;
    let addr = running.local_addr();

    let mut finishing = TcpStream::connect(addr).await.expect("connect");
    let mut lingering = TcpStream::connect(addr).await.expect("connect");
    echo(&mut finishing, b"before").await;
    echo(&mut lingering, b"before").await;

    let started = Instant::now();
    running.drain();
    // No new connections once draining.
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting while draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Open connections still carry bytes while draining, and may finish.
    echo(&mut finishing, b"during the drain").await;
    finishing.shutdown().await.expect("close");
    closed(&mut finishing).await;
    // The other one is still open when the drain time is up: closed.
    closed(&mut lingering).await;
    running.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= drain,
        "shutdown took {took:?}, less than the drain time"
    );

    observed
        .metrics_with(&[
            r#"palisade_outbound_connections_closed_total{reason="closed"} 1"#,
            r#"palisade_outbound_connections_closed_total{reason="drain_timeout"} 1"#,
            "palisade_outbound_connections_open 0",
        ])
        .await;
    let lines = observed.finish().await;
    let cut = line(&lines, "meshed", "drain_timeout");
    assert_eq!(cut["bytes_sent"], 6);
    let done = line(&lines, "meshed", "closed");
    assert_eq!(done["bytes_sent"], 22);
}

#[tokio::test]
async fn a_connection_still_connecting_when_the_drain_ends_is_recorded() {
    let pki = Pki::new();
    let observed = Observed::start().await;
    // A peer that accepts TCP and never answers the TLS handshake.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer = silent.local_addr().expect("addr");
    let (accepted, mut reached) = tokio::sync::mpsc::channel(1);
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
            let _ = accepted.try_send(());
        }
    });
    let hour = Duration::from_secs(3600);
    let drain = Duration::from_millis(300);
    let running = outbound(&pki, &observed.telemetry, peer, PEER_ID, hour, drain).await;

    let mut app = TcpStream::connect(running.local_addr())
        .await
        .expect("connect");
    app.write_all(b"hello").await.expect("write");
    tokio::time::timeout(LIMIT, reached.recv())
        .await
        .expect("palisade reached the peer");
    running.shutdown().await;
    closed(&mut app).await;

    observed
        .metrics_with(&[
            r#"palisade_outbound_connections_total{outcome="failed",reason="drain_timeout",peer_namespace="shop",peer_sa="orders"} 1"#,
            "palisade_outbound_connections_open 0",
        ])
        .await;
    let lines = observed.finish().await;
    let cut = line(&lines, "failed", "drain_timeout");
    assert_eq!(cut["destination"], peer.to_string());
    assert_eq!(cut["peer_id"], Value::Null);
    hold.abort();
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Waits (bounded) until something accepts on `addr`.
fn wait_accepting(addr: SocketAddr) {
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 exchange over a fresh connection to `addr` (blocking, bounded).
fn http(addr: SocketAddr, head: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream.write_all(head.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// An app answering every request `200 app-ok` and closing.
fn plain_app() -> SocketAddr {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(LIMIT));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\napp-ok",
                );
            });
        }
    });
    addr
}

/// `palisade proxy` A's outbound side (fixed destination) to `palisade proxy` B's inbound:
/// A's `/metrics` shows the meshed connection, its access log (stdout) has a line per
/// connection, and on SIGTERM a connection still open is closed at the end of `--drain`.
#[test]
fn the_binary_records_and_drains_its_outbound_side() {
    let pki = Pki::new();
    let policy = pki.dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        r#"apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: orders, namespace: shop }
spec:
  rules:
    - name: read
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to: [{ methods: [GET], paths: ["/api/v1/items/{id}"] }]
"#,
    )
    .expect("policy");
    let files = |id: &str| {
        let svid = pki
            .ca
            .issue_svid(id, &SvidOptions::default())
            .expect("svid");
        let dir = pki.dir.path().join(id.replace(['/', ':'], "_"));
        write_identity(&dir, &svid, pki.ca.bundle_pem()).expect("identity files");
        dir
    };
    let (b_dir, a_dir) = (files(PEER_ID), files(APP_ID));
    let app = plain_app();
    let (b_inbound, a_admin, a_outbound) = (free_addr(), free_addr(), free_addr());

    let mut b = crate::support::palisade();
    b.args(["proxy", "--no-reload", "--admin", "127.0.0.1:0"])
        .arg("--policy")
        .arg(&policy)
        .arg("--identity-dir")
        .arg(&b_dir)
        .args([
            "--inbound",
            &b_inbound.to_string(),
            "--app",
            &app.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _b = crate::support::Guard(Some(b.spawn().expect("proxy b starts")));
    let mut a = crate::support::palisade();
    a.args(["proxy", "--no-reload", "--access-log", "--drain", "1s"])
        .arg("--policy")
        .arg(&policy)
        .arg("--identity-dir")
        .arg(&a_dir)
        .args(["--inbound", "127.0.0.1:0", "--app", &app.to_string()])
        .args(["--admin", &a_admin.to_string()])
        .arg("--outbound-fixed")
        .arg(format!("{a_outbound}={b_inbound},{PEER_ID}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let a = crate::support::Guard(Some(a.spawn().expect("proxy a starts")));
    wait_accepting(b_inbound);
    // Ready once the outbound listener serves (probing it would count a connection).
    let deadline = Instant::now() + LIMIT;
    loop {
        if std::net::TcpStream::connect(a_admin).is_ok() {
            let ready = http(
                a_admin,
                "GET /ready HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
            );
            if ready.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "proxy a not ready");
        std::thread::sleep(Duration::from_millis(20));
    }

    let response = http(
        a_outbound,
        "GET /api/v1/items/1 HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("app-ok"), "{response}");
    let scrape = || {
        http(
            a_admin,
            "GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
    };
    let wait_for = |expected: &[&str]| {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = scrape();
            if expected.iter().all(|line| has_sample(&text, line)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "missing {expected:?} in:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(&[
        r#"palisade_outbound_connections_total{outcome="meshed",reason="",peer_namespace="shop",peer_sa="orders"} 1"#,
        r#"palisade_outbound_connections_closed_total{reason="closed"} 1"#,
    ]);

    // A connection the app keeps open (a request head never finished) when SIGTERM comes.
    let mut lingering = std::net::TcpStream::connect(a_outbound).expect("connect");
    lingering
        .write_all(b"GET /api/v1/items/2 HTTP/1.1\r\n")
        .expect("write");
    wait_for(&[
        r#"palisade_outbound_connections_total{outcome="meshed",reason="",peer_namespace="shop",peer_sa="orders"} 2"#,
        "palisade_outbound_connections_open 1",
    ]);
    let started = Instant::now();
    let output = a.terminate(LIMIT);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        took >= Duration::from_secs(1),
        "exited after {took:?}, before --drain"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    let outbound: Vec<Value> = lines
        .into_iter()
        .filter(|l| l["direction"] == "outbound")
        .collect();
    assert_eq!(outbound.len(), 2, "{stdout}");
    let done = line(&outbound, "meshed", "closed");
    assert_eq!(done["peer_id"], PEER_ID);
    assert_eq!(done["destination"], b_inbound.to_string());
    let cut = line(&outbound, "meshed", "drain_timeout");
    assert_eq!(cut["bytes_sent"], 30);
}
