//! Overload protection end to end: the inbound listener's cap on requests in flight, with
//! palisade on 127.0.0.1:0, per-test rcgen certificates, an app that answers only when the
//! test lets it, and hyper clients over mutual TLS (HTTP/1.1 and h2); the refusals' metrics
//! and access-log lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use palisade_config::SpiffeId;
use palisade_proxy::config::InboundConfig;
use palisade_proxy::inbound::{Inbound, Stats};
use palisade_proxy::pki::SvidOptions;
use palisade_proxy::telemetry::{AccessLogConfig, Telemetry, TelemetryConfig};
use palisade_proxy::tls::{Identity, TrustDomains, server_config};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

const H1: &[&[u8]] = &[b"http/1.1"];
const H2: &[&[u8]] = &[b"h2"];

/// An HTTP/1.1 app that holds every request until the test hands out a place with
/// [`GatedApp::release`], then answers 200.
struct GatedApp {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    task: JoinHandle<()>,
}

impl GatedApp {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let task = tokio::spawn({
            let (received, gate) = (received.clone(), gate.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (received, gate) = (received.clone(), gate.clone());
                    let service = hyper::service::service_fn(move |_request| {
                        received.fetch_add(1, Ordering::SeqCst);
                        let gate = gate.clone();
                        async move {
                            gate.acquire().await.unwrap().forget();
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                        }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service),
                    );
                }
            }
        });
        Self {
            addr,
            received,
            gate,
            task,
        }
    }

    /// Requests the app has received so far (answered or held).
    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Lets `n` more requests be answered.
    fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Waits (bounded) until the app has received `n` requests.
    async fn wait_for(&self, n: usize) {
        let reached = tokio::time::timeout(LIMIT, async {
            while self.received() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "the app got {} requests, not {n}",
            self.received()
        );
    }
}

impl Drop for GatedApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `GET /api/v1/items` through the proxy at `addr` and returns once `app` holds it:
/// the one request in flight.
async fn hold_one(addr: SocketAddr, via: &Via, app: &GatedApp) -> JoinHandle<Reply> {
    let first = tokio::spawn({
        let via = via.clone();
        async move { send(addr, &via, get("/api/v1/items")).await }
    });
    app.wait_for(1).await;
    first
}

/// The inbound side (enforce mode) in front of `app` with a cap of one request in flight,
/// recording into `telemetry`.
async fn start_observed(pki: &Pki, app: SocketAddr, telemetry: Telemetry) -> Proxy {
    let identity =
        Identity::load(&pki.identity_files_with(SERVER_ID, &SvidOptions::default())).unwrap();
    let tls = server_config(&identity, &TrustDomains::new([TD]).unwrap()).unwrap();
    let policy = policy("enforce", "strict", "");
    let mut config = InboundConfig::new(policy, tls, SpiffeId::parse(SERVER_ID).unwrap());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.app.ip = app.ip();
    config.app.port = app.port();
    config.timeouts.drain = Duration::from_secs(5);
    config.limits.max_requests_in_flight = 1;
    let inbound = Inbound::bind_observed(config, telemetry).await.unwrap();
    let addr = inbound.local_addr();
    Proxy {
        running: inbound.spawn(),
        addr,
    }
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn requests_past_the_cap_get_503_at_once_and_the_cap_frees_up() {
    let pki = Pki::new();
    let app = GatedApp::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |c| {
        c.limits.max_requests_in_flight = 1;
    })
    .await;
    let h1 = Via::Tls(pki.client(FRONTEND, H1));
    let h2 = Via::Tls(pki.client(FRONTEND, H2));

    // The app holds the first request: it is the one request in flight.
    let first = hold_one(proxy.addr, &h1, &app).await;

    // Past the cap, over either protocol: 503 JSON with a request ID, answered at once
    // (the first request is still held), and never sent to the app.
    let refused = send(proxy.addr, &h1, get("/api/v1/items")).await;
    let id = refused.assert_error(503, "service_unavailable");
    assert_eq!(refused.headers["x-request-id"], id.as_str());
    send(proxy.addr, &h2, get("/api/v1/items"))
        .await
        .assert_error(503, "service_unavailable");
    assert!(!first.is_finished());
    assert_eq!(app.received(), 1);
    assert_eq!(Stats::get(&proxy.running.stats().requests_overloaded), 2);

    // Once the first response has ended, its place is free again.
    app.release(3);
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "body: {:?}", first.body);
    assert_eq!(
        send(proxy.addr, &h1, get("/api/v1/items")).await.status,
        200
    );
    assert_eq!(
        send(proxy.addr, &h2, get("/api/v1/items")).await.status,
        200
    );
    assert_eq!(app.received(), 3);
    assert_eq!(Stats::get(&proxy.running.stats().requests_overloaded), 2);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn refusals_are_counted_and_logged_like_any_request() {
    let pki = Pki::new();
    let app = GatedApp::start().await;
    let log = Captured::default();
    let config = TelemetryConfig {
        access_log: AccessLogConfig {
            enabled: true,
            ..AccessLogConfig::default()
        },
        ..TelemetryConfig::default()
    };
    let (telemetry, tasks) = Telemetry::start(config, Box::new(log.clone())).unwrap();
    let proxy = start_observed(&pki, app.addr, telemetry.clone()).await;
    let h1 = Via::Tls(pki.client(FRONTEND, H1));
    let h2 = Via::Tls(pki.client(FRONTEND, H2));

    let first = hold_one(proxy.addr, &h1, &app).await;
    let refused_h1 = send(
        proxy.addr,
        &h1,
        get("/api/v1/items?token=secret-query-5e1f"),
    )
    .await
    .assert_error(503, "service_unavailable");
    let delete = Request::builder()
        .method("DELETE")
        .uri("/api/v1/items/7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let refused_h2 = send(proxy.addr, &h2, delete)
        .await
        .assert_error(503, "service_unavailable");
    app.release(1);
    assert_eq!(first.await.unwrap().status, 200);

    // Counted as requests: no route, decision `invalid` (none was made), status class 5xx.
    let expected = [
        (
            r#"palisade_requests_total{direction="inbound",method="GET",route="",status_class="5xx",decision="invalid",peer_namespace="web",peer_sa="frontend"}"#,
            1.0,
        ),
        (
            r#"palisade_requests_total{direction="inbound",method="DELETE",route="",status_class="5xx",decision="invalid",peer_namespace="web",peer_sa="frontend"}"#,
            1.0,
        ),
        (
            r#"palisade_request_duration_seconds_count{direction="inbound",method="GET",route="",status_class="5xx",decision="invalid"}"#,
            1.0,
        ),
        (
            r#"palisade_requests_total{direction="inbound",method="GET",route="/api/v1/items",status_class="2xx",decision="allow",peer_namespace="web",peer_sa="frontend"}"#,
            1.0,
        ),
    ];
    let metrics = telemetry.metrics().expect("metrics on");
    let counted = eventually(|| {
        let text = metrics.render();
        expected
            .iter()
            .all(|(series, value)| sample(&text, series) == Some(*value))
    })
    .await;
    let text = metrics.render();
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    assert!(counted);
    assert_eq!(Stats::get(&proxy.running.stats().requests_overloaded), 2);

    // One access-log line each, saying why, with the request ID the client got.
    proxy.running.shutdown().await;
    tasks.finish(LIMIT).await;
    let lines = log.lines();
    let line = |id: &str| {
        lines
            .iter()
            .find(|line| line["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id} in {lines:?}"))
            .clone()
    };
    for (id, method, protocol) in [
        (&refused_h1, "GET", "HTTP/1.1"),
        (&refused_h2, "DELETE", "HTTP/2.0"),
    ] {
        let line = line(id);
        assert_eq!(line["status"], 503, "{line}");
        assert_eq!(line["decision"], "invalid", "{line}");
        assert_eq!(
            line["reason"], "overloaded: 1 requests in flight, the most this listener takes",
            "{line}"
        );
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["protocol"], protocol, "{line}");
        assert_eq!(line["peer_id"], FRONTEND, "{line}");
        assert_eq!(line["direction"], "inbound", "{line}");
        assert!(line["path"].is_null() && line["route"].is_null(), "{line}");
        assert_eq!(line["bytes_in"], 0, "{line}");
        let body = format!(r#"{{"error":"service_unavailable","request_id":"{id}"}}"#);
        assert_eq!(line["bytes_out"], body.len(), "{line}");
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(!log.text().contains("secret-query"), "{}", log.text());
}
