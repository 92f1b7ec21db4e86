//! `palisade proxy`'s telemetry seen by real consumers: a real Prometheus (Debian
//! `prometheus`) scrapes the admin port and answers a query; `promtool check metrics` accepts
//! the exposition; a real OTLP/HTTP receiver (Python, decoding with the `opentelemetry-proto`
//! package) receives the spans; with the collector down requests still succeed and the
//! dropped spans are counted. Every process is stopped by its PID; every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{
    CATALOG_POLICY, CLIENT_ID, Guard, Identities, SERVER_ID, identities, lines_of, logged_addr,
    palisade, require_tool, write,
};

/// The OTLP/HTTP receiver: decodes each ExportTraceServiceRequest with the official
/// protobuf definitions and prints every span as one JSON line.
const RECEIVER: &str = r#"
import http.server, json, sys
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            service = ""
            for kv in resource.resource.attributes:
                if kv.key == "service.name":
                    service = kv.value.string_value
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {}
                    for kv in span.attributes:
                        v = kv.value
                        attributes[kv.key] = v.string_value if v.HasField("string_value") else v.int_value
                    print(json.dumps({
                        "path": self.path,
                        "content_type": self.headers.get("content-type"),
                        "service": service,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": attributes,
                    }), flush=True)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A tiny app on 127.0.0.1 answering `ok` plus the `traceparent` it got; runs until the
/// test process ends (its thread holds only a listener).
fn start_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut traceparent = String::from("-");
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                        if let Some(value) =
                            header.to_ascii_lowercase().strip_prefix("traceparent:")
                        {
                            traceparent = value.trim().to_owned();
                        }
                    }
                    let body = format!("ok traceparent={traceparent}");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A running `palisade proxy` and the addresses it logged.
struct Proxy {
    guard: Guard,
    inbound: SocketAddr,
    admin: SocketAddr,
}

/// Starts `palisade proxy` on free ports with `extra` arguments and `env`.
fn start_proxy(setup: &Identities, app: SocketAddr, extra: &[&str], env: &[(&str, &str)]) -> Proxy {
    let mut command = palisade();
    command
        .args([
            "proxy",
            "--inbound",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(["--drain", "5s", "--workers", "1", "--no-reload"])
        .arg("--app")
        .arg(app.to_string())
        .arg("--identity-dir")
        .arg(&setup.server)
        .arg("--policy")
        .arg(&setup.policy)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("palisade proxy starts");
    let lines = lines_of(child.stderr.take().expect("stderr"));
    let guard = Guard(Some(child));
    let (mut inbound, mut admin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while inbound.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("palisade proxy logs its inbound and admin addresses");
        inbound = inbound.or_else(|| logged_addr(&line, "inbound listening"));
        admin = admin.or_else(|| logged_addr(&line, "admin listening"));
    }
    // Keep draining stderr so that the proxy never blocks on a full pipe.
    std::thread::spawn(move || lines.iter().for_each(drop));
    Proxy {
        guard,
        inbound: inbound.expect("inbound"),
        admin: admin.expect("admin"),
    }
}

/// curl with the client identity: (status, body).
fn call(setup: &Identities, url: &str, headers: &[&str]) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(setup.client.join("ca.crt"))
        .arg("--cert")
        .arg(setup.client.join("tls.crt"))
        .arg("--key")
        .arg(setup.client.join("tls.key"));
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (status.parse().unwrap_or(0), body.to_owned())
}

/// Plain GET with curl (admin port, Prometheus API): (status, body).
fn plain_get(url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (status.parse().unwrap_or(0), body.to_owned())
}

/// A port that was free a moment ago (for tools that cannot report the port they bound).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Polls `check` every 200 ms until it returns `Some`, at most `limit`.
fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of the first sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Whether python3 can decode OTLP (the `opentelemetry-proto` package). Under `CI=true` a
/// missing package fails the test; elsewhere the test skips with a printed reason.
fn require_otlp_python() -> bool {
    if !require_tool("python3") {
        return false;
    }
    let found = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 package opentelemetry-proto is required in CI (CI=true) but is not installed"
        );
        eprintln!("skipping: python3 package opentelemetry-proto is not installed");
    }
    found
}

#[test]
fn prometheus_scrapes_the_admin_port_and_promtool_accepts_the_exposition() {
    if !(require_tool("curl") && require_tool("prometheus") && require_tool("promtool")) {
        return;
    }
    let setup = identities(CATALOG_POLICY);
    let app = start_app();
    let proxy = start_proxy(&setup, app, &[], &[]);
    let base = format!("https://127.0.0.1:{}", proxy.inbound.port());
    for id in 1..=3 {
        let (status, _) = call(&setup, &format!("{base}/api/v1/items/{id}"), &[]);
        assert_eq!(status, 200);
    }
    let (status, _) = call(&setup, &format!("{base}/admin/secret"), &[]);
    assert_eq!(status, 403);

    let admin = format!("http://{}", proxy.admin);
    assert_eq!(plain_get(&format!("{admin}/ready")).0, 200);
    assert_eq!(plain_get(&format!("{admin}/live")).0, 200);
    let (status, status_json) = plain_get(&format!("{admin}/status"));
    assert_eq!(status, 200);
    let status_json: serde_json::Value = serde_json::from_str(&status_json).expect("json");
    assert_eq!(status_json["identity"]["spiffe_id"], SERVER_ID);

    // promtool lints the exposition as a scraper without OpenMetrics sees it.
    let (status, exposition) = plain_get(&format!("{admin}/metrics"));
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scrapes it (OpenMetrics, negotiated) and answers queries.
    let data = setup.dir.path().join("prometheus");
    let config = write(
        setup.dir.path(),
        "prometheus.yml",
        &format!(
            "global: {{ scrape_interval: 1s, scrape_timeout: 1s }}\n\
             scrape_configs:\n  - job_name: palisade\n    static_configs:\n      - targets: ['{}']\n",
            proxy.admin
        ),
    );
    let port = free_port();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let prometheus = Guard(Some(prometheus));
    let query = |q: &str| -> Option<f64> {
        let url = format!(
            "http://127.0.0.1:{port}/api/v1/query?query={}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace('=', "%3D")
                .replace(' ', "%20")
        );
        let (status, body) = plain_get(&url);
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let allowed = wait_for(Duration::from_secs(45), || {
        query(r#"sum(palisade_requests_total{decision="allow",route="/api/v1/items/{id}",peer_sa="frontend"})"#)
            .filter(|v| *v == 3.0)
    });
    assert_eq!(
        allowed,
        Some(3.0),
        "Prometheus did not see the allowed requests"
    );
    let denied = query(r#"sum(palisade_requests_total{decision="deny",status_class="4xx"})"#);
    assert_eq!(denied, Some(1.0));
    let expiry = query("palisade_certificate_expiry_timestamp_seconds");
    assert!(expiry.is_some_and(|t| t > 1.7e9), "{expiry:?}");
    drop(prometheus);
    drop(proxy.guard);
}

#[test]
fn ready_turns_unready_on_sigterm_before_the_drain_ends() {
    if !require_tool("curl") {
        return;
    }
    let setup = identities(CATALOG_POLICY);
    // An app that accepts and never answers keeps a request in flight through the drain.
    let stuck = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = stuck.local_addr().expect("addr");
    let proxy = start_proxy(&setup, app, &[], &[]);
    let admin = format!("http://{}", proxy.admin);
    assert_eq!(plain_get(&format!("{admin}/ready")).0, 200);
    let url = format!("https://127.0.0.1:{}/api/v1/items/1", proxy.inbound.port());
    let client = setup.client.clone();
    let in_flight = std::thread::spawn(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
            .arg("--cacert")
            .arg(client.join("ca.crt"))
            .arg("--cert")
            .arg(client.join("tls.crt"))
            .arg("--key")
            .arg(client.join("tls.key"))
            .arg(url)
            .output()
    });
    // Wait until the request has reached the app.
    stuck.set_nonblocking(false).expect("blocking accept");
    let (_held, _) = stuck.accept().expect("the proxy connects to the app");
    let pid = proxy.guard.0.as_ref().expect("child").id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let unready = wait_for(Duration::from_secs(5), || {
        (plain_get(&format!("{admin}/ready")).0 == 503).then_some(())
    });
    assert!(unready.is_some(), "/ready still answers 200 after SIGTERM");
    assert_eq!(plain_get(&format!("{admin}/live")).0, 200);
    drop(proxy.guard);
    let _ = in_flight.join();
}

/// Starts the Python OTLP receiver; returns its guard, port and the lines it prints.
fn start_receiver() -> (Guard, u16, mpsc::Receiver<String>) {
    let mut child = Command::new("python3")
        .args(["-u", "-c", RECEIVER])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let rx = lines_of(child.stdout.take().expect("stdout"));
    let guard = Guard(Some(child));
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the receiver prints its port");
    let port = first
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .expect("a port");
    (guard, port, rx)
}

#[test]
fn spans_reach_a_real_otlp_receiver_with_the_callers_parent() {
    if !(require_tool("curl") && require_otlp_python()) {
        return;
    }
    let (receiver, port, spans) = start_receiver();
    let setup = identities(CATALOG_POLICY);
    let app = start_app();
    let endpoint = format!("http://127.0.0.1:{port}");
    let proxy = start_proxy(
        &setup,
        app,
        // Parent-based: the caller's sampled flag decides, not the ratio.
        &["--trace-sample-ratio", "0"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "orders-sidecar"),
        ],
    );
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let (status, body) = call(
        &setup,
        &format!(
            "https://127.0.0.1:{}/api/v1/items/42?token=x",
            proxy.inbound.port()
        ),
        &[&format!("traceparent: 00-{trace_id}-{parent}-01")],
    );
    assert_eq!(status, 200, "{body}");
    let forwarded = body
        .strip_prefix("ok traceparent=")
        .expect("the app's answer");
    assert!(
        forwarded.starts_with(&format!("00-{trace_id}-")),
        "{forwarded}"
    );

    let line = spans
        .recv_timeout(Duration::from_secs(15))
        .expect("a span reaches the receiver");
    let span: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(span["path"], "/v1/traces");
    assert_eq!(span["content_type"], "application/x-protobuf");
    assert_eq!(span["service"], "orders-sidecar");
    assert_eq!(span["trace_id"], trace_id);
    assert_eq!(span["parent_span_id"], parent);
    assert_eq!(
        forwarded,
        format!("00-{trace_id}-{}-01", span["span_id"].as_str().expect("id"))
    );
    assert_eq!(span["kind"], 2, "server span");
    assert_eq!(span["name"], "GET /api/v1/items/{id}");
    let attributes = &span["attributes"];
    assert_eq!(attributes["http.request.method"], "GET");
    assert_eq!(attributes["url.path"], "/api/v1/items/42");
    assert_eq!(attributes["http.route"], "/api/v1/items/{id}");
    assert_eq!(attributes["http.response.status_code"], 200);
    // curl negotiates h2 by ALPN.
    assert_eq!(attributes["network.protocol.version"], "2");
    assert_eq!(attributes["palisade.decision"], "allow");
    assert_eq!(attributes["palisade.rule"], "catalog-read");
    assert_eq!(attributes["palisade.peer.id"], CLIENT_ID);
    drop(proxy.guard);
    drop(receiver);
}

#[test]
fn collector_down_requests_succeed_and_dropped_spans_are_counted() {
    if !require_tool("curl") {
        return;
    }
    let setup = identities(CATALOG_POLICY);
    let app = start_app();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let proxy = start_proxy(
        &setup,
        app,
        &["--trace-sample-ratio", "1", "--trace-queue", "1"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", closed.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
        ],
    );
    let base = format!("https://127.0.0.1:{}", proxy.inbound.port());
    for id in 0..10 {
        let started = Instant::now();
        let (status, body) = call(&setup, &format!("{base}/api/v1/items/{id}"), &[]);
        assert_eq!(status, 200, "{body}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    let admin = format!("http://{}/metrics", proxy.admin);
    let dropped = wait_for(Duration::from_secs(15), || {
        let (_, text) = plain_get(&admin);
        sample(&text, "palisade_trace_spans_dropped_total").filter(|n| *n >= 1.0)
    });
    assert!(dropped.is_some(), "no dropped spans counted");
    drop(proxy.guard);
}
