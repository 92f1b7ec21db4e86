//! The inbound side end to end, with real parts: per-test rcgen certificates, palisade on
//! 127.0.0.1:0, an oracle app that echoes what it received, hyper/h2/curl clients and raw
//! sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use palisade_proxy::inbound::Stats;
use support::*;

const H1: &[&[u8]] = &[b"http/1.1"];
const H2: &[&[u8]] = &[b"h2"];

fn request(method: Method, target: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(target)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn allow_deny_matrix_over_h1_and_h2() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    for alpn in [H1, H2] {
        let frontend = Via::Tls(pki.client(FRONTEND, alpn));
        let ops = Via::Tls(pki.client(OPS, alpn));
        let stranger = Via::Tls(pki.client(STRANGER, alpn));
        let cases: Vec<(&Via, Method, &str, u16)> = vec![
            (&frontend, Method::GET, "/api/v1/items", 200),
            (&frontend, Method::GET, "/api/v1/items/42", 200),
            (&frontend, Method::HEAD, "/api/v1/items/42", 200),
            (&frontend, Method::POST, "/api/v1/orders", 200),
            (&frontend, Method::DELETE, "/api/v1/items/42", 403),
            (&frontend, Method::GET, "/api/v1/items/42/x", 403),
            (&frontend, Method::GET, "/api/v1/orders", 403),
            (&frontend, Method::GET, "/admin", 403),
            (&ops, Method::GET, "/api/v1/items/7", 200),
            (&ops, Method::POST, "/api/v1/orders", 403),
            (&stranger, Method::GET, "/api/v1/items", 403),
        ];
        for (via, method, target, status) in cases {
            let body = if method == Method::POST { "{}" } else { "" };
            let reply = send(proxy.addr, via, request(method.clone(), target, body)).await;
            assert_eq!(
                reply.status.as_u16(),
                status,
                "{alpn:?} {method} {target}: {:?}",
                reply.body
            );
            if status == 403 {
                let id = reply.assert_error(403, "forbidden");
                assert_eq!(reply.headers["x-request-id"], id.as_str());
            } else if method != Method::HEAD {
                let seen = reply.seen();
                assert_eq!(seen.method, method.as_str());
                assert_eq!(seen.target, target);
                assert_eq!(seen.body, body);
            }
        }
    }
    let stats = proxy.running.stats();
    assert_eq!(Stats::get(&stats.requests_allowed), 10);
    assert_eq!(Stats::get(&stats.requests_denied), 12);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn app_receives_the_normalized_path_and_the_original_query() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    for alpn in [H1, H2] {
        let frontend = Via::Tls(pki.client(FRONTEND, alpn));
        for (sent, received) in [
            ("/api/v1/items/%34%32", "/api/v1/items/42"),
            ("/api/v1//items/./x/../42", "/api/v1/items/42"),
            (
                "/api/v1/items/42?q=%2Fa%20b&x=..&",
                "/api/v1/items/42?q=%2Fa%20b&x=..&",
            ),
            ("/api/%76%31/items?page=2", "/api/v1/items?page=2"),
        ] {
            let reply = send(proxy.addr, &frontend, get(sent)).await;
            assert_eq!(reply.status, 200, "{alpn:?} {sent}: {:?}", reply.body);
            assert_eq!(reply.seen().target, received, "{alpn:?} {sent}");
        }
        // Authorized on the normalized path, not the raw one.
        let reply = send(proxy.addr, &frontend, get("/api/v1/items/42/../../orders")).await;
        reply.assert_error(403, "forbidden");
    }
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn malformed_targets_get_400_and_denied_forms_403() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    let frontend = Via::Tls(pki.client(FRONTEND, H1));
    for target in [
        "/api/v1/items/a%2Fb",
        "/api/v1/items/%5C",
        "/api/v1/items/%zz",
        "/api/v1/items/%00",
    ] {
        let reply = send(proxy.addr, &frontend, get(target)).await;
        reply.assert_error(400, "bad_request");
    }
    let options = Request::builder()
        .method(Method::OPTIONS)
        .uri("*")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(proxy.addr, &frontend, options)
        .await
        .assert_error(403, "forbidden");
    let stats = proxy.running.stats();
    assert_eq!(Stats::get(&stats.requests_malformed), 4);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn strips_spoofable_and_hop_by_hop_headers_and_sets_xfcc() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    for alpn in [H1, H2] {
        let frontend = Via::Tls(pki.client(FRONTEND, alpn));
        let mut builder = Request::get("/api/v1/items/42")
            .header(
                "x-forwarded-client-cert",
                "By=evil;URI=spiffe://cluster.local/ns/admin/sa/root",
            )
            .header("x-original-url", "/admin")
            .header("x-rewrite-url", "/admin")
            .header("x-http-method-override", "DELETE")
            .header("x-method-override", "DELETE")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-request-id", "chosen-by-client")
            .header("x-envoy-original-path", "/admin")
            .header("x-kept", "yes");
        if alpn == H1 {
            builder = builder
                .header("connection", "x-secret")
                .header("x-secret", "hop")
                .header("keep-alive", "timeout=5")
                .header("upgrade", "h2c")
                .header("http2-settings", "AAMAAABkAAQAAP__")
                .header("proxy-authorization", "Basic Zm9vOmJhcg==");
        }
        let reply = send(
            proxy.addr,
            &frontend,
            builder.body(Full::new(Bytes::new())).unwrap(),
        )
        .await;
        assert_eq!(reply.status, 200, "{alpn:?}: {:?}", reply.body);
        let seen = reply.seen();
        assert_eq!(
            seen.headers["x-forwarded-client-cert"],
            vec![format!("By={SERVER_ID};URI={FRONTEND}")]
        );
        for name in [
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-method-override",
            "x-forwarded-for",
            "x-envoy-original-path",
            "x-secret",
            "keep-alive",
            "upgrade",
            "http2-settings",
            "proxy-authorization",
        ] {
            assert!(
                seen.header(name).is_none(),
                "{alpn:?}: {name} reached the app"
            );
        }
        assert_eq!(seen.header("x-kept"), Some("yes"));
        let id = seen.header("x-request-id").unwrap();
        assert_ne!(id, "chosen-by-client");
        assert_eq!(reply.headers["x-request-id"], id);
        // The app's own hop-by-hop fields do not reach the client either.
        assert!(reply.headers.get("x-app-hop").is_none(), "{alpn:?}");
    }
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn permissive_mode_serves_plaintext_peers_as_unauthenticated() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", HEALTH_RULE),
        app.addr,
        |_| {},
    )
    .await;
    let reply = send(proxy.addr, &Via::Plain, get("/healthz")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.seen().header("x-forwarded-client-cert").is_none());
    send(proxy.addr, &Via::Plain, get("/api/v1/items"))
        .await
        .assert_error(403, "forbidden");
    // A spoofed XFCC from a plaintext peer is removed, not trusted.
    let spoofed = Request::get("/healthz")
        .header("x-forwarded-client-cert", format!("URI={FRONTEND}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(proxy.addr, &Via::Plain, spoofed).await;
    assert!(reply.seen().header("x-forwarded-client-cert").is_none());
    // TLS peers keep working on the same port.
    let frontend = Via::Tls(pki.client(FRONTEND, H2));
    assert_eq!(
        send(proxy.addr, &frontend, get("/api/v1/items"))
            .await
            .status,
        200
    );
    let stats = proxy.running.stats();
    assert_eq!(Stats::get(&stats.detected_plaintext), 3);
    assert_eq!(Stats::get(&stats.detected_tls), 1);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn permissive_detection_is_bounded() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", HEALTH_RULE),
        app.addr,
        |c| {
            c.timeouts.detect = Duration::from_millis(200);
        },
    )
    .await;
    let (_, closed) = raw_exchange(proxy.addr, b"").await;
    assert!(
        closed,
        "a silent client must be dropped after the detect timeout"
    );
    assert_eq!(Stats::get(&proxy.running.stats().detect_failures), 1);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn strict_mode_refuses_plaintext() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    let (answer, closed) =
        raw_exchange(proxy.addr, b"GET /api/v1/items HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(closed);
    assert!(!answer.contains("HTTP/1.1 200"), "{answer}");
    assert_eq!(Stats::get(&proxy.running.stats().handshake_failures), 1);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn audit_mode_forwards_would_be_denials() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("audit", "strict", ""), app.addr, |_| {}).await;
    let stranger = Via::Tls(pki.client(STRANGER, H1));
    let reply = send(
        proxy.addr,
        &stranger,
        request(Method::DELETE, "/api/v1/items/42", ""),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.seen().method, "DELETE");
    // Malformed targets are still refused: there is no checked path to forward.
    send(proxy.addr, &stranger, get("/a%2Fb"))
        .await
        .assert_error(400, "bad_request");
    let stats = proxy.running.stats();
    assert_eq!(Stats::get(&stats.requests_audit_denied), 1);
    assert_eq!(Stats::get(&stats.requests_denied), 0);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn app_down_is_502_and_slow_app_is_504() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let down = {
        let gone = Oracle::start().await;
        gone.addr
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tune = |c: &mut palisade_proxy::config::InboundConfig| {
        c.timeouts.upstream_response = Duration::from_millis(300);
    };
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), down, tune).await;
    let frontend = Via::Tls(pki.client(FRONTEND, H1));
    send(proxy.addr, &frontend, get("/api/v1/items"))
        .await
        .assert_error(502, "bad_gateway");
    proxy.running.shutdown().await;

    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, tune).await;
    let slow = Request::get("/api/v1/items")
        .header("x-oracle-sleep-ms", "3000")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(proxy.addr, &frontend, slow)
        .await
        .assert_error(504, "gateway_timeout");
    assert_eq!(Stats::get(&proxy.running.stats().upstream_failures), 1);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_over_h1_and_h2() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    let addr = proxy.addr;
    let in_flight: Vec<_> = [H1, H2]
        .into_iter()
        .map(|alpn| {
            let via = Via::Tls(pki.client(FRONTEND, alpn));
            tokio::spawn(async move {
                let slow = Request::get("/api/v1/items")
                    .header("x-oracle-sleep-ms", "700")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                send(addr, &via, slow).await
            })
        })
        .collect();
    // Let both requests reach the app, then shut down under them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(Stats::get(&proxy.running.stats().connections_open), 2);
    let started = std::time::Instant::now();
    tokio::time::timeout(LIMIT, proxy.running.shutdown())
        .await
        .expect("drain is bounded");
    assert!(started.elapsed() < Duration::from_secs(3));
    for request in in_flight {
        let reply = request.await.unwrap();
        assert_eq!(
            reply.status, 200,
            "in-flight request lost: {:?}",
            reply.body
        );
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn drain_is_bounded_by_the_drain_timeout() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |c| {
        c.timeouts.drain = Duration::from_millis(300);
    })
    .await;
    let addr = proxy.addr;
    let via = Via::Tls(pki.client(FRONTEND, H1));
    let stuck = tokio::spawn(async move {
        let slow = Request::get("/api/v1/items")
            .header("x-oracle-sleep-ms", "5000")
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(addr, &via, slow).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    proxy.running.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    stuck.abort();
}
