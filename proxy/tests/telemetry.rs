//! Telemetry with real parts: the inbound side in-process behind mTLS with real hyper
//! clients, metric values after requests, access-log lines, spans exported over OTLP/HTTP to
//! a local receiver that decodes them with the OpenTelemetry protobuf definitions, and the
//! admin port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use palisade_config::{Policy, SpiffeId};
use palisade_proxy::admin::{
    Admin, AdminConfig, AdminState, OPENMETRICS, PROMETHEUS_TEXT, Readiness,
};
use palisade_proxy::config::InboundConfig;
use palisade_proxy::inbound::Inbound;
use palisade_proxy::pki::SvidOptions;
use palisade_proxy::reload::{ReloadConfig, Reloader};
use palisade_proxy::telemetry::{
    AccessLogConfig, Telemetry, TelemetryConfig, TelemetryTasks, TraceConfig,
};
use palisade_proxy::tls::{Identity, TrustDomains, server_config};
use prost::Message;
use serde_json::Value;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

struct Observed {
    proxy: Proxy,
    telemetry: Telemetry,
    tasks: TelemetryTasks,
    log: Captured,
}

/// The inbound side (enforce mode) with `telemetry` in front of `app`.
async fn start(pki: &Pki, app: SocketAddr, config: TelemetryConfig) -> Observed {
    start_in(pki, app, config, "enforce").await
}

/// The inbound side with the policy in `mode` and `telemetry` in front of `app`.
async fn start_in(pki: &Pki, app: SocketAddr, config: TelemetryConfig, mode: &str) -> Observed {
    start_with(pki, app, config, policy(mode, "strict", "")).await
}

/// The inbound side enforcing `policy`, with `telemetry` in front of `app`.
async fn start_with(
    pki: &Pki,
    app: SocketAddr,
    config: TelemetryConfig,
    policy: Policy,
) -> Observed {
    let identity =
        Identity::load(&pki.identity_files_with(SERVER_ID, &SvidOptions::default())).unwrap();
    let tls = server_config(&identity, &TrustDomains::new([TD]).unwrap()).unwrap();
    let mut inbound = InboundConfig::new(policy, tls, SpiffeId::parse(SERVER_ID).unwrap());
    inbound.listen = "127.0.0.1:0".parse().unwrap();
    inbound.app.ip = app.ip();
    inbound.app.port = app.port();
    inbound.timeouts.drain = Duration::from_secs(5);
    let log = Captured::default();
    let (telemetry, tasks) = Telemetry::start(config, Box::new(log.clone())).unwrap();
    let bound = Inbound::bind_observed(inbound, telemetry.clone())
        .await
        .unwrap();
    let addr = bound.local_addr();
    Observed {
        proxy: Proxy {
            running: bound.spawn(),
            addr,
        },
        telemetry,
        tasks,
        log,
    }
}

fn logging() -> TelemetryConfig {
    TelemetryConfig {
        access_log: AccessLogConfig {
            enabled: true,
            ..AccessLogConfig::default()
        },
        ..TelemetryConfig::default()
    }
}

fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(target);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

fn metrics_text(telemetry: &Telemetry) -> String {
    telemetry.metrics().expect("metrics on").render()
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_decision_and_peer() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let observed = start(&pki, app.addr, TelemetryConfig::default()).await;
    let addr = observed.proxy.addr;
    let frontend = Via::Tls(pki.client(FRONTEND, &[b"http/1.1"]));
    let stranger = Via::Tls(pki.client(STRANGER, &[b"h2"]));

    for id in ["1", "2", "3"] {
        let reply = send(addr, &frontend, get(&format!("/api/v1/items/{id}"))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = send(addr, &frontend, request("DELETE", "/api/v1/items/1", &[])).await;
    reply.assert_error(403, "forbidden");
    let reply = send(addr, &stranger, get("/api/v1/items/1")).await;
    reply.assert_error(403, "forbidden");
    let reply = send(addr, &frontend, get("/nowhere/at/all")).await;
    reply.assert_error(403, "forbidden");
    let reply = send(addr, &frontend, get("/api/v1/items/%2F")).await;
    reply.assert_error(400, "bad_request");
    // A client without a certificate: a failed handshake, counted by reason.
    let (_, closed) = raw_exchange(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(closed);

    let telemetry = &observed.telemetry;
    let expected = [
        (
            r#"palisade_requests_total{direction="inbound",method="GET",route="/api/v1/items/{id}",status_class="2xx",decision="allow",peer_namespace="web",peer_sa="frontend"}"#,
            3.0,
        ),
        (
            r#"palisade_requests_total{direction="inbound",method="DELETE",route="/api/v1/items/{id}",status_class="4xx",decision="deny",peer_namespace="web",peer_sa="frontend"}"#,
            1.0,
        ),
        (
            r#"palisade_requests_total{direction="inbound",method="GET",route="/api/v1/items/{id}",status_class="4xx",decision="deny",peer_namespace="other",peer_sa="stranger"}"#,
            1.0,
        ),
        (
            r#"palisade_requests_total{direction="inbound",method="GET",route="",status_class="4xx",decision="deny",peer_namespace="web",peer_sa="frontend"}"#,
            1.0,
        ),
        (
            r#"palisade_requests_total{direction="inbound",method="GET",route="",status_class="4xx",decision="invalid",peer_namespace="web",peer_sa="frontend"}"#,
            1.0,
        ),
        (
            r#"palisade_request_duration_seconds_count{direction="inbound",method="GET",route="/api/v1/items/{id}",status_class="2xx",decision="allow"}"#,
            3.0,
        ),
        (
            r#"palisade_tls_handshake_failures_total{reason="not_tls"}"#,
            1.0,
        ),
        ("palisade_connections_accepted_total", 8.0),
    ];
    let ok = eventually(|| {
        let text = metrics_text(telemetry);
        expected
            .iter()
            .all(|(series, value)| sample(&text, series) == Some(*value))
    })
    .await;
    let text = metrics_text(telemetry);
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    assert!(ok);
    // Raw paths never become labels.
    assert!(!text.contains("/api/v1/items/1"), "{text}");
    assert!(!text.contains("nowhere"), "{text}");
    observed.proxy.running.shutdown().await;
    let text = metrics_text(telemetry);
    assert_eq!(
        sample(&text, "palisade_connections_open"),
        Some(0.0),
        "{text}"
    );
}

#[tokio::test]
async fn access_log_lines_say_why_and_carry_no_secrets() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let observed = start(&pki, app.addr, logging()).await;
    let addr = observed.proxy.addr;
    let frontend = Via::Tls(pki.client(FRONTEND, &[b"h2"]));
    let secrets = [
        ("authorization", "Bearer secret-bearer-7f3a"),
        ("cookie", "session=secret-cookie-91bd"),
        ("x-api-key", "secret-apikey-c0de"),
        ("proxy-authorization", "Basic c2VjcmV0LXByb3h5"),
    ];
    let allowed = send(
        addr,
        &frontend,
        request(
            "GET",
            "/api/v1/items/42?access_token=secret-query-5e5e&x=1",
            &secrets,
        ),
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK);
    let denied = send(
        addr,
        &frontend,
        request(
            "DELETE",
            "/api/v1/items/42?token=secret-query-d00d",
            &secrets,
        ),
    )
    .await;
    let denied_id = denied.assert_error(403, "forbidden");
    let malformed = send(addr, &frontend, get("/api/v1/%00items")).await;
    malformed.assert_error(400, "bad_request");
    let mut order = request("POST", "/api/v1/orders", &[]);
    *order.body_mut() = Full::new(Bytes::from_static(b"{\"item\":42,\"count\":3}"));
    let ordered = send(addr, &frontend, order).await;
    assert_eq!(ordered.status, StatusCode::OK);

    observed.proxy.running.shutdown().await;
    observed.tasks.finish(LIMIT).await;
    let text = observed.log.text();
    for secret in [
        "secret-bearer",
        "secret-cookie",
        "secret-apikey",
        "c2VjcmV0LXByb3h5",
        "secret-query",
        "access_token",
        "BEGIN",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the access log:\n{text}"
        );
    }
    let lines = observed.log.lines();
    assert_eq!(lines.len(), 4, "{text}");
    // Body bytes as read from the client: none for a refused request, all of a forwarded one.
    assert_eq!(lines[1]["bytes_in"], 0, "{text}");
    assert_eq!(lines[3]["method"], "POST", "{text}");
    assert_eq!(lines[3]["bytes_in"], 21, "{text}");

    let allow = &lines[0];
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["method"], "GET");
    assert_eq!(allow["path"], "/api/v1/items/42");
    assert_eq!(allow["route"], "/api/v1/items/{id}");
    assert_eq!(allow["rule"], "catalog-read");
    assert_eq!(allow["peer_id"], FRONTEND);
    assert_eq!(allow["protocol"], "HTTP/2.0");
    assert!(allow["bytes_out"].as_u64().unwrap() > 0, "{allow}");
    assert!(allow["duration_ms"].as_f64().unwrap() >= allow["response_ms"].as_f64().unwrap());
    assert!(allow["timestamp"].as_str().unwrap().ends_with('Z'));

    let deny = &lines[1];
    assert_eq!(deny["decision"], "deny");
    assert_eq!(deny["status"], 403);
    assert_eq!(deny["request_id"], denied_id.as_str());
    assert_eq!(deny["path"], "/api/v1/items/42");
    // The same words `palisade explain` prints.
    assert_eq!(
        deny["reason"],
        "denied: route /api/v1/items/{id} exists but rule catalog-read does not allow this method"
    );

    let invalid = &lines[2];
    assert_eq!(invalid["decision"], "invalid");
    assert_eq!(invalid["status"], 400);
    assert!(invalid["path"].is_null(), "{invalid}");
    assert!(
        invalid["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed request target"),
        "{invalid}"
    );
}

#[tokio::test]
async fn access_log_samples_successes_but_keeps_every_refusal() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let mut config = logging();
    config.access_log.sample_ratio = 0.0;
    let observed = start(&pki, app.addr, config).await;
    let frontend = Via::Tls(pki.client(FRONTEND, &[b"http/1.1"]));
    for _ in 0..3 {
        let reply = send(observed.proxy.addr, &frontend, get("/api/v1/items/1")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = send(observed.proxy.addr, &frontend, get("/api/v2")).await;
    reply.assert_error(403, "forbidden");
    observed.proxy.running.shutdown().await;
    observed.tasks.finish(LIMIT).await;
    let lines = observed.log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["decision"], "deny");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("denied: no route matches (nearest: "),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn audit_mode_counts_and_logs_would_be_denials() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let config = TelemetryConfig {
        access_log: AccessLogConfig {
            enabled: true,
            sample_ratio: 0.0,
            ..AccessLogConfig::default()
        },
        ..TelemetryConfig::default()
    };
    let observed = start_in(&pki, app.addr, config, "audit").await;
    let frontend = Via::Tls(pki.client(FRONTEND, &[b"http/1.1"]));
    let reply = send(
        observed.proxy.addr,
        &frontend,
        request("DELETE", "/api/v1/items/9", &[]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "audit mode forwards");
    let series = r#"palisade_requests_total{direction="inbound",method="DELETE",route="/api/v1/items/{id}",status_class="2xx",decision="audit_deny",peer_namespace="web",peer_sa="frontend"}"#;
    let telemetry = observed.telemetry.clone();
    assert!(eventually(|| sample(&metrics_text(&telemetry), series) == Some(1.0)).await);
    observed.proxy.running.shutdown().await;
    observed.tasks.finish(LIMIT).await;
    // Sampled out as a success, yet logged: a would-be denial is always logged.
    let lines = observed.log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["decision"], "audit_deny");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(
        lines[0]["reason"],
        "denied: route /api/v1/items/{id} exists but rule catalog-read does not allow this method"
    );
}

/// A per-rule `mode: audit` forwards the denials of its own route only: the rest of the
/// policy stays enforced. Both show in metrics and access logs with their decision.
#[tokio::test]
async fn per_rule_audit_forwards_its_route_and_enforces_the_rest() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let preview = r#"    - name: reports-preview
      mode: audit
      from: { principals: ["spiffe://cluster.local/ns/ops/sa/debug"] }
      to:
        - methods: [GET]
          paths: ["/api/v1/reports/{id}"]"#;
    let observed = start_with(
        &pki,
        app.addr,
        logging(),
        policy("enforce", "strict", preview),
    )
    .await;
    let frontend = Via::Tls(pki.client(FRONTEND, &[b"http/1.1"]));
    let audited = send(
        observed.proxy.addr,
        &frontend,
        request("GET", "/api/v1/reports/7", &[]),
    )
    .await;
    assert_eq!(
        audited.status,
        StatusCode::OK,
        "the audit rule's route forwards"
    );
    let denied = send(
        observed.proxy.addr,
        &frontend,
        request("DELETE", "/api/v1/items/9", &[]),
    )
    .await;
    assert_eq!(
        denied.status,
        StatusCode::FORBIDDEN,
        "enforced rules still refuse"
    );
    let audit_series = r#"palisade_requests_total{direction="inbound",method="GET",route="/api/v1/reports/{id}",status_class="2xx",decision="audit_deny",peer_namespace="web",peer_sa="frontend"}"#;
    let deny_series = r#"palisade_requests_total{direction="inbound",method="DELETE",route="/api/v1/items/{id}",status_class="4xx",decision="deny",peer_namespace="web",peer_sa="frontend"}"#;
    let telemetry = observed.telemetry.clone();
    assert!(
        eventually(|| {
            let text = metrics_text(&telemetry);
            sample(&text, audit_series) == Some(1.0) && sample(&text, deny_series) == Some(1.0)
        })
        .await,
        "{}",
        metrics_text(&telemetry)
    );
    observed.proxy.running.shutdown().await;
    observed.tasks.finish(LIMIT).await;
    let lines = observed.log.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["decision"], "audit_deny");
    assert_eq!(lines[0]["route"], "/api/v1/reports/{id}");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[1]["decision"], "deny");
    assert_eq!(lines[1]["status"], 403);
}

/// A local OTLP/HTTP receiver: decodes every ExportTraceServiceRequest and passes its spans
/// on.
async fn otlp_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Span>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        assert_eq!(request.uri().path(), "/v1/traces");
                        assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        for spans in export.resource_spans {
                            for scope in spans.scope_spans {
                                for span in scope.spans {
                                    let _ = tx.send(span);
                                }
                            }
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attribute(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn spans_continue_the_callers_trace_and_reach_the_collector() {
    let (collector, mut spans) = otlp_receiver().await;
    let pki = Pki::new();
    let app = Oracle::start().await;
    let mut trace = TraceConfig::new(format!("http://{collector}/v1/traces"));
    // Parent-based: the caller's sampled flag decides, whatever the ratio for new traces.
    trace.sample_ratio = 0.0;
    trace.flush_interval = Duration::from_millis(50);
    let config = TelemetryConfig {
        trace: Some(trace),
        ..logging()
    };
    let observed = start(&pki, app.addr, config).await;
    let frontend = Via::Tls(pki.client(FRONTEND, &[b"http/1.1"]));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent}-01");
    let reply = send(
        observed.proxy.addr,
        &frontend,
        request(
            "GET",
            "/api/v1/items/42?q=1",
            &[
                ("traceparent", traceparent.as_str()),
                ("tracestate", "vendor=abc"),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // The app gets the same trace, with palisade's span as the parent.
    let seen = reply.seen();
    let forwarded = seen.header("traceparent").expect("traceparent to the app");
    let fields: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(fields[1], trace_id, "{forwarded}");
    assert_ne!(fields[2], parent, "{forwarded}");
    assert_eq!(fields[3], "01");
    assert_eq!(seen.header("tracestate"), Some("vendor=abc"));

    let span = tokio::time::timeout(LIMIT, spans.recv())
        .await
        .expect("a span within the limit")
        .expect("receiver open");
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), parent);
    assert_eq!(hex(&span.span_id), fields[2]);
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span.name, "GET /api/v1/items/{id}");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/api/v1/items/42"),
        ("http.route", "/api/v1/items/{id}"),
        ("network.protocol.version", "1.1"),
        ("palisade.decision", "allow"),
        ("palisade.rule", "catalog-read"),
        ("palisade.peer.id", FRONTEND),
    ] {
        assert_eq!(
            string_attribute(&span, key).as_deref(),
            Some(value),
            "{key}: {span:?}"
        );
    }
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        Some(&any_value::Value::IntValue(200))
    );
    // The access-log line names the same trace.
    observed.proxy.running.shutdown().await;
    observed.tasks.finish(LIMIT).await;
    let lines = observed.log.lines();
    assert_eq!(lines[0]["trace_id"], trace_id);

    // An unsampled caller: the context still reaches the app, nothing is exported.
    let unsampled = format!("00-{trace_id}-{parent}-00");
    let observed = start(&pki, app.addr, {
        let mut trace = TraceConfig::new(format!("http://{collector}/v1/traces"));
        trace.sample_ratio = 1.0;
        trace.flush_interval = Duration::from_millis(50);
        TelemetryConfig {
            trace: Some(trace),
            ..TelemetryConfig::default()
        }
    })
    .await;
    let reply = send(
        observed.proxy.addr,
        &frontend,
        request(
            "GET",
            "/api/v1/items/1",
            &[("traceparent", unsampled.as_str())],
        ),
    )
    .await;
    let forwarded = reply.seen().header("traceparent").unwrap().to_owned();
    assert!(
        forwarded.starts_with(&format!("00-{trace_id}-")),
        "{forwarded}"
    );
    assert!(forwarded.ends_with("-00"), "{forwarded}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        spans.try_recv().is_err(),
        "an unsampled request was exported"
    );
    observed.proxy.running.shutdown().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn collector_down_requests_succeed_and_drops_are_counted() {
    // A port nobody listens on.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let pki = Pki::new();
    let app = Oracle::start().await;
    let mut trace = TraceConfig::new(format!("http://{closed}/v1/traces"));
    trace.sample_ratio = 1.0;
    trace.queue = 2;
    trace.batch = 1;
    trace.timeout = Duration::from_millis(500);
    trace.flush_interval = Duration::from_millis(20);
    let config = TelemetryConfig {
        trace: Some(trace),
        ..TelemetryConfig::default()
    };
    let observed = start(&pki, app.addr, config).await;
    let frontend = Via::Tls(pki.client(FRONTEND, &[b"h2"]));
    for i in 0..20 {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            send(
                observed.proxy.addr,
                &frontend,
                get(&format!("/api/v1/items/{i}")),
            ),
        )
        .await
        .expect("requests do not wait for the collector");
        assert_eq!(reply.status, StatusCode::OK);
    }
    let telemetry = observed.telemetry.clone();
    let dropped = || {
        sample(
            &metrics_text(&telemetry),
            "palisade_trace_spans_dropped_total",
        )
    };
    let mut counted = false;
    for _ in 0..100 {
        if dropped().is_some_and(|n| n >= 1.0) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "{:?}", dropped());
    observed.proxy.running.shutdown().await;
}

async fn admin_get(addr: SocketAddr, path: &str) -> (StatusCode, String, String) {
    admin_get_accepting(addr, path, "*/*").await
}

async fn admin_get_accepting(
    addr: SocketAddr,
    path: &str,
    accept: &str,
) -> (StatusCode, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", "admin")
        .header("accept", accept)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn admin_serves_probes_metrics_and_what_is_in_force() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(
        &policy_file,
        POLICY
            .replace("{mode}", "enforce")
            .replace("{mtls}", "strict")
            .replace("{extra}", ""),
    )
    .unwrap();
    let mut reload = ReloadConfig::new(vec![policy_file], pki.identity_files(SERVER_ID));
    reload.watch = false;
    reload.sighup = false;
    reload.interval = None;
    let reloader = Reloader::load(reload).unwrap();
    let status = reloader.status();
    let (telemetry, _tasks) = Telemetry::start(
        TelemetryConfig {
            status: Some(status.clone()),
            ..TelemetryConfig::default()
        },
        Box::new(std::io::sink()),
    )
    .unwrap();
    let readiness = Readiness::default();
    let admin = Admin::spawn(
        &AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
        },
        AdminState {
            telemetry,
            status: Some(status.clone()),
            readiness: readiness.clone(),
        },
    )
    .await
    .unwrap();
    let addr = admin.local_addr();

    assert_eq!(
        admin_get(addr, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    readiness.set_ready();
    assert_eq!(admin_get(addr, "/ready").await.0, StatusCode::OK);
    assert_eq!(admin_get(addr, "/live").await.0, StatusCode::OK);
    assert_eq!(admin_get(addr, "/nope").await.0, StatusCode::NOT_FOUND);

    // What Prometheus sends.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (code, content_type, text) = admin_get_accepting(addr, "/metrics", accept).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(content_type, OPENMETRICS);
    let snapshot = status.snapshot();
    assert_eq!(
        sample(&text, "palisade_certificate_expiry_timestamp_seconds"),
        Some(snapshot.identity.not_after as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"palisade_reloads_total{kind="policy"}"#),
        Some(1.0)
    );
    assert!(text.ends_with("# EOF\n"));
    let (_, content_type, text) = admin_get(addr, "/metrics").await;
    assert_eq!(content_type, PROMETHEUS_TEXT);
    assert!(
        text.contains("# TYPE palisade_reloads_total counter"),
        "{text}"
    );

    let (code, content_type, body) = admin_get(addr, "/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["policy"]["version"], snapshot.policy.version.as_str());
    assert_eq!(json["identity"]["spiffe_id"], SERVER_ID);
    assert_eq!(json["identity"]["not_after"], snapshot.identity.not_after);
    assert!(!body.contains("PRIVATE KEY"), "{body}");

    readiness.set_unready();
    assert_eq!(
        admin_get(addr, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    admin.shutdown().await;
}
