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
    let stats = proxy.running.stats();
    assert!(eventually(|| Stats::get(&stats.handshake_failures) == 1).await);
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
    let stats = proxy.running.stats();
    proxy.running.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(Stats::get(&stats.connections_open), 0);
    stuck.abort();
}

/// Extra rules for raw-socket tests: plaintext peers may GET `/healthz` and POST `/upload`.
const RAW_RULES: &str = r#"    - name: health
      from: { principals: [unauthenticated] }
      to:
        - methods: [GET]
          paths: ["/healthz"]
    - name: upload
      from: { principals: [unauthenticated] }
      to:
        - methods: [POST]
          paths: ["/upload"]"#;

#[tokio::test]
async fn ambiguous_framing_gets_400_and_the_connection_closes() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", RAW_RULES),
        app.addr,
        |_| {},
    )
    .await;
    let smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Smuggled: yes\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "two different content-lengths",
            format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd{smuggled}"
            ),
        ),
        (
            "content-length list",
            format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd{smuggled}"
            ),
        ),
        (
            "obfuscated transfer-encoding",
            format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "transfer-encoding list",
            format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two transfer-encodings",
            format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "obs-fold",
            format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "HTTP/1.0 with transfer-encoding",
            format!(
                "POST /upload HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "bare CR",
            format!("GET /healthz HTTP/1.1\rHost: x\r\n\r\n{smuggled}"),
        ),
        (
            "GET with content-length",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello{smuggled}"),
        ),
        (
            "GET with transfer-encoding",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "HEAD with a body",
            format!("HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx{smuggled}"),
        ),
    ];
    for (name, raw) in cases {
        let (answer, closed) = raw_exchange(proxy.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{name}: {answer:?}");
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{name}: {answer:?}");
        assert!(closed, "{name}: connection left open");
    }
}

/// hyper drops the `Content-Length` of a request that also has `Transfer-Encoding: chunked`
/// before palisade sees the request, reads the body as chunked and closes the connection
/// after the response: RFC 9112 §6.1 allows exactly this instead of a 400. What matters is
/// that nothing can hide behind the body.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", RAW_RULES),
        app.addr,
        |_| {},
    )
    .await;
    for head in [
        "Content-Length: 45\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 45",
    ] {
        let raw = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let (answer, closed) = raw_exchange(proxy.addr, raw.as_bytes()).await;
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{head}: {answer:?}");
        assert!(closed, "{head}: connection left open");
        let (_, echo) = answer.split_once("\r\n\r\n").unwrap();
        let seen: serde_json::Value = serde_json::from_str(echo).unwrap();
        assert_eq!(seen["target"], "/upload", "{head}");
        assert_eq!(seen["body"], "abc", "{head}: body read as chunked");
        assert!(seen["headers"].get("content-length").is_none(), "{head}");
    }
}

/// httparse reads a bare LF as a line end (RFC 9112 §2.2 allows it); palisade writes the
/// request to the app with CRLF, so the app cannot read it differently.
#[tokio::test]
async fn bare_lf_is_read_as_a_line_end_and_rewritten() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", RAW_RULES),
        app.addr,
        |_| {},
    )
    .await;
    let (answer, _) = raw_exchange(
        proxy.addr,
        b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer:?}");
}

#[tokio::test]
async fn slowloris_is_cut_off_by_the_header_read_timeout() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", RAW_RULES),
        app.addr,
        |c| c.timeouts.header_read = Duration::from_millis(400),
    )
    .await;
    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Trickle one header byte at a time; the head is never finished.
    let mut closed = false;
    for _ in 0..40 {
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    assert!(closed, "slow header sender was not cut off");
    assert!(started.elapsed() < Duration::from_secs(3));
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn slow_request_body_is_cut_off() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", RAW_RULES),
        app.addr,
        |c| c.timeouts.body_progress = Duration::from_millis(300),
    )
    .await;
    let started = std::time::Instant::now();
    let (answer, _) = raw_exchange(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a few bytes",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        answer.contains(r#""error":"request_timeout""#),
        "{answer:?}"
    );
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn h2_reset_flood_is_bounded() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |c| {
        c.limits.h2_max_pending_accept_reset_streams = 10;
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.client(FRONTEND, H2));
    let tls = connector
        .connect(palisade_proxy::tls::server_name(proxy.addr.ip()), tcp)
        .await
        .unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    // Open streams and cancel each at once (CVE-2023-44487): the server must end the
    // connection long before the flood does.
    let mut sent = 0;
    let flood = async {
        for _ in 0..10_000 {
            let Ok(ready) = client.clone().ready().await else {
                break;
            };
            client = ready;
            let request = Request::get("https://orders.shop/api/v1/items/1")
                .body(())
                .unwrap();
            let Ok((response, mut stream)) = client.send_request(request, true) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            drop(response);
            sent += 1;
            if sent % 8 == 0 {
                // Let the connection task write the frames, as a real attacker's would.
                tokio::task::yield_now().await;
            }
        }
    };
    tokio::time::timeout(LIMIT, flood)
        .await
        .expect("flood bounded");
    let ended = tokio::time::timeout(LIMIT, connection)
        .await
        .expect("connection ends")
        .unwrap();
    println!("sent {sent} streams; the app saw {}", app.served());
    assert!(sent < 10_000, "server accepted the whole flood");
    assert!(app.served() < 100, "the flood reached the app");
    let error = ended.expect_err("server should end the connection with GOAWAY");
    assert!(error.is_go_away() || error.is_io(), "{error:?}");
    // The proxy still serves others.
    let frontend = Via::Tls(pki.client(FRONTEND, H2));
    assert_eq!(
        send(proxy.addr, &frontend, get("/api/v1/items"))
            .await
            .status,
        200
    );
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn curl_over_h1_and_h2_with_client_certificates() {
    if !have_tool("curl") {
        return;
    }
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    let bundle = pki.bundle_path();
    let frontend = pki.identity_files(FRONTEND);
    let stranger = pki.identity_files(STRANGER);
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let reply = curl(
            proxy.addr,
            &bundle,
            Some(&frontend),
            "/api/v1/items/%34%32?a=1",
            &[flag],
        )
        .await;
        assert!(reply.ok, "{flag}: {reply:?}");
        assert_eq!(
            (reply.status, reply.version.as_str()),
            (200, version),
            "{reply:?}"
        );
        let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(seen["target"], "/api/v1/items/42?a=1");
        assert_eq!(
            seen["headers"]["x-forwarded-client-cert"][0],
            format!("By={SERVER_ID};URI={FRONTEND}")
        );

        let reply = curl(
            proxy.addr,
            &bundle,
            Some(&stranger),
            "/api/v1/items",
            &[flag],
        )
        .await;
        assert_eq!(reply.status, 403, "{reply:?}");
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"], "forbidden");

        // No client certificate: the handshake fails, nothing reaches the app.
        let served = app.served();
        let reply = curl(proxy.addr, &bundle, None, "/api/v1/items", &[flag]).await;
        assert!(!reply.ok && reply.status == 0, "{reply:?}");
        assert_eq!(app.served(), served);
    }
    proxy.running.shutdown().await;
}

type Tunnel = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// Sends `GET <target>` with `Upgrade: websocket` over mTLS HTTP/1.1: the status, and on 101
/// the tunnel.
async fn open_tunnel(pki: &Pki, proxy: &Proxy, target: &str) -> (u16, Option<Tunnel>) {
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.client(FRONTEND, H1));
    let tls = connector
        .connect(palisade_proxy::tls::server_name(proxy.addr.ip()), tcp)
        .await
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    let request = Request::get(target)
        .header("host", "orders.shop")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    if status != 101 {
        return (status, None);
    }
    let upgraded = tokio::time::timeout(LIMIT, hyper::upgrade::on(response))
        .await
        .unwrap()
        .unwrap();
    (status, Some(hyper_util::rt::TokioIo::new(upgraded)))
}

/// Writes `ping` into `tunnel` and returns the 4 bytes that come back.
async fn ping(tunnel: &mut Tunnel) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tunnel.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(LIMIT, tunnel.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// [`open_tunnel`], then one [`ping`] through it.
async fn try_upgrade(pki: &Pki, proxy: &Proxy, target: &str) -> (u16, Option<String>) {
    match open_tunnel(pki, proxy, target).await {
        (status, Some(mut tunnel)) => (status, Some(ping(&mut tunnel).await)),
        (status, None) => (status, None),
    }
}

#[tokio::test]
async fn upgrades_are_tunnelled_only_where_a_rule_allows_them() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    assert_eq!(
        try_upgrade(&pki, &proxy, "/ws").await,
        (101, Some("ping".to_owned()))
    );
    // No upgrade permission on this route: the app sees a plain GET and answers it.
    assert_eq!(
        try_upgrade(&pki, &proxy, "/api/v1/items").await,
        (200, None)
    );
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_open_tunnels_then_closes_them() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let app = Oracle::start().await;
    let drain = Duration::from_millis(400);
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |c| {
        c.timeouts.drain = drain;
    })
    .await;
    let (status, tunnel) = open_tunnel(&pki, &proxy, "/ws").await;
    assert_eq!(status, 101);
    let mut tunnel = tunnel.unwrap();
    assert_eq!(ping(&mut tunnel).await, "ping");
    let stats = proxy.running.stats();
    // The tunnel is the connection: it stays open (and counted) after the upgrade.
    assert_eq!(Stats::get(&stats.connections_open), 1);
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(proxy.running.shutdown());
    // During the drain the tunnel still carries bytes...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ping(&mut tunnel).await, "ping");
    // ...and when the drain time is up it is closed.
    let mut buf = [0u8; 1];
    let ended = tokio::time::timeout(LIMIT, tunnel.read(&mut buf))
        .await
        .expect("the drain closes the tunnel");
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    tokio::time::timeout(LIMIT, shutdown)
        .await
        .expect("drain is bounded")
        .unwrap();
    assert!(started.elapsed() >= drain);
    assert_eq!(Stats::get(&stats.connections_open), 0);
}

#[tokio::test]
async fn opaque_ports_admit_peers_by_identity_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A TCP echo app, not HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let text = format!(
        r#"
apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: {{ name: db, namespace: shop }}
spec:
  mtls: strict
  opaquePorts: [{port}]
  rules:
    - name: db-clients
      from: {{ principals: ["{FRONTEND}"] }}
"#,
        port = app.port()
    );
    let loaded = palisade_config::Policy::from_yaml("db.yaml", &text, &Default::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let pki = Pki::new();
    let proxy = start_proxy(&pki, loaded.policy, app, |_| {}).await;
    for (id, admitted) in [(FRONTEND, true), (STRANGER, false)] {
        let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(pki.client(id, &[]));
        let mut tls = connector
            .connect(palisade_proxy::tls::server_name(proxy.addr.ip()), tcp)
            .await
            .unwrap();
        tls.write_all(b"SELECT 1").await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(LIMIT, async {
            let mut chunk = [0u8; 64];
            while buf.len() < 8 {
                match tls.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok());
        assert_eq!(buf == b"SELECT 1", admitted, "{id}: {buf:?}");
    }
    let stats = proxy.running.stats();
    assert_eq!(Stats::get(&stats.opaque_admitted), 1);
    assert_eq!(Stats::get(&stats.opaque_denied), 1);
    proxy.running.shutdown().await;
    echo.abort();
}

#[tokio::test]
async fn trailers_cross_the_proxy_to_h1_and_h2c_apps() {
    let pki = Pki::new();
    for h2c in [false, true] {
        let app = if h2c {
            Oracle::start_h2c().await
        } else {
            Oracle::start().await
        };
        let port = app.addr.port();
        let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |c| {
            if h2c {
                c.app.h2c_ports = vec![port];
            }
        })
        .await;
        for alpn in [H1, H2] {
            let frontend = Via::Tls(pki.client(FRONTEND, alpn));
            let request = Request::post("/api/v1/orders")
                .header("te", "trailers")
                .header("content-type", "application/grpc")
                .body(Full::new(Bytes::from_static(b"order")))
                .unwrap();
            let reply = send(proxy.addr, &frontend, request).await;
            assert_eq!(reply.status, 200, "{alpn:?}: {:?}", reply.body);
            let seen = reply.seen();
            assert_eq!(seen.body, "order");
            let expected_target = if h2c {
                // An h2 server sees :scheme and :authority too.
                format!("http://127.0.0.1:{port}/api/v1/orders")
            } else {
                "/api/v1/orders".to_owned()
            };
            assert_eq!(seen.target, expected_target);
            assert_eq!(seen.header("te"), Some("trailers"), "{alpn:?}");
            let status = reply
                .trailers
                .as_ref()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                status.as_deref(),
                Some("0"),
                "h2c app {h2c}, client {alpn:?}"
            );
        }
        proxy.running.shutdown().await;
    }
}

#[tokio::test]
async fn idle_connections_are_closed_but_busy_ones_are_not() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |c| {
        c.timeouts.idle = Duration::from_millis(300);
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.client(FRONTEND, H2));
    let tls = connector
        .connect(palisade_proxy::tls::server_name(proxy.addr.ip()), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    // A request that takes longer than the idle timeout completes.
    let slow = Request::get("https://orders.shop/api/v1/items")
        .header("x-oracle-sleep-ms", "700")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, sender.send_request(slow))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // Then, with nothing in flight, the server closes the connection.
    let started = std::time::Instant::now();
    tokio::time::timeout(LIMIT, connection)
        .await
        .expect("idle connection closed")
        .unwrap()
        .ok();
    assert!(started.elapsed() < Duration::from_secs(3));
    let stats = proxy.running.stats();
    assert!(eventually(|| Stats::get(&stats.connections_open) == 0).await);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", RAW_RULES),
        app.addr,
        |c| {
            c.limits.max_header_bytes = 16 * 1024;
            c.limits.max_headers = 20;
        },
    )
    .await;
    let big = "a".repeat(20 * 1024);
    let (answer, closed) = raw_exchange(
        proxy.addr,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(closed);
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (answer, closed) = raw_exchange(
        proxy.addr,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(closed);

    // h2: the header list limit is advertised and enforced; the app never sees the request.
    let frontend = Via::Tls(pki.client(FRONTEND, H2));
    let request = Request::get("/api/v1/items")
        .header("x-big", big)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let outcome = tokio::time::timeout(LIMIT, try_send(proxy.addr, &frontend, request))
        .await
        .unwrap();
    assert_eq!(outcome, Ok(431));
    assert_eq!(app.served(), 0);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn peers_without_an_acceptable_spiffe_id_never_reach_the_app() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    // Same CA, foreign trust domains; then a trusted-looking ID from a CA not in the bundle.
    let rogue = Pki::new();
    let clients = [
        pki.client("spiffe://cluster.local.evil.com/ns/web/sa/frontend", H1),
        pki.client("spiffe://evil.example/ns/web/sa/frontend", H1),
        rogue.client(FRONTEND, H1),
    ];
    for config in &clients {
        let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let name = palisade_proxy::tls::server_name(proxy.addr.ip());
        // With TLS 1.3 the client may finish before the server rejects its certificate:
        // the failure then shows on first use.
        if let Ok(tls) = connector.connect(name, tcp).await {
            let io = hyper_util::rt::TokioIo::new(tls);
            if let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await {
                tokio::spawn(conn);
                let request = Request::get("/api/v1/items")
                    .header("host", "orders.shop")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let outcome = tokio::time::timeout(LIMIT, sender.send_request(request))
                    .await
                    .unwrap();
                assert!(outcome.is_err(), "rejected peer got an answer: {outcome:?}");
            }
        }
    }
    assert_eq!(app.served(), 0);
    let stats = proxy.running.stats();
    let failures = || Stats::get(&stats.handshake_failures) == clients.len() as u64;
    assert!(eventually(failures).await, "{stats:?}");
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn serve_runs_until_its_shutdown_future_completes() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let identity = pki.identity(SERVER_ID);
    let tls = palisade_proxy::tls::server_config(
        &identity,
        &palisade_proxy::tls::TrustDomains::new([TD]).unwrap(),
    )
    .unwrap();
    let mut config = palisade_proxy::config::InboundConfig::new(
        policy("enforce", "strict", ""),
        tls,
        palisade_config::SpiffeId::parse(SERVER_ID).unwrap(),
    );
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.app.port = app.addr.port();
    let inbound = palisade_proxy::inbound::Inbound::bind(config)
        .await
        .unwrap();
    let addr = inbound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(inbound.serve(async move {
        let _ = stopped.await;
    }));
    let frontend = Via::Tls(pki.client(FRONTEND, H2));
    assert_eq!(
        send(addr, &frontend, get("/api/v1/items")).await.status,
        200
    );
    stop.send(()).unwrap();
    tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// One raw h2 frame: 9-byte header, then the payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The error code of the first GOAWAY frame in `bytes`, a run of raw h2 frames.
fn goaway_code(bytes: &[u8]) -> Option<u32> {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let kind = bytes[at + 3];
        let payload = bytes.get(at + 9..at + 9 + len)?;
        if kind == 0x7 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
        at += 9 + len;
    }
    None
}

/// MadeYouReset (CVE-2025-8671): requests that make the *server* reset their streams (here
/// conflicting `content-length` fields, a stream error) must end in GOAWAY
/// ENHANCE_YOUR_CALM, not in an endless run of resets.
#[tokio::test]
async fn h2_server_side_reset_flood_is_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |c| {
        c.limits.h2_max_local_error_reset_streams = 10;
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.client(FRONTEND, H2));
    let tls = connector
        .connect(palisade_proxy::tls::server_name(proxy.addr.ip()), tcp)
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let received = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = tokio::time::timeout(LIMIT, reader.read_to_end(&mut bytes)).await;
        bytes
    });
    writer
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    writer.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    let mut sent = 0;
    for stream in (1..2_000u32).step_by(2) {
        // Static-table `GET`, `https`, `/`, then `content-length: 1` and `content-length: 2`
        // (literal, indexed name 28): a stream error the server answers with RST_STREAM.
        let block = [
            0x82, 0x87, 0x84, 0x0f, 0x0d, 0x01, b'1', 0x0f, 0x0d, 0x01, b'2',
        ];
        let burst = h2_frame(0x1, 0x4 | 0x1, stream, &block);
        if writer.write_all(&burst).await.is_err() {
            break;
        }
        sent += 1;
    }
    let bytes = received.await.unwrap();
    assert_eq!(
        goaway_code(&bytes),
        Some(0xb),
        "sent {sent} streams, got {} bytes",
        bytes.len()
    );
    assert!(app.served() < 100);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn silent_tls_clients_are_cut_off_by_the_handshake_timeout() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |c| {
        c.timeouts.handshake = Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    // Half a ClientHello record header, then silence.
    let (_, closed) = raw_exchange(proxy.addr, &[0x16, 0x03, 0x01]).await;
    assert!(closed);
    assert!(started.elapsed() < Duration::from_secs(2));
    let stats = proxy.running.stats();
    assert!(eventually(|| Stats::get(&stats.handshake_failures) == 1).await);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn app_connections_are_pooled() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    // Ten client connections, one after the other: one kept-alive connection to the app.
    for alpn in [H1, H2, H1, H2, H1, H2, H1, H2, H1, H2] {
        let frontend = Via::Tls(pki.client(FRONTEND, alpn));
        assert_eq!(
            send(proxy.addr, &frontend, get("/api/v1/items"))
                .await
                .status,
            200
        );
    }
    assert_eq!(app.served(), 10);
    assert_eq!(app.connections(), 1);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn permissive_mode_takes_plaintext_h2_with_prior_knowledge() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", HEALTH_RULE),
        app.addr,
        |_| {},
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (target, status) in [("/healthz", 200), ("/api/v1/items", 403)] {
        let request = Request::get(format!("http://orders.shop{target}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(LIMIT, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), status, "{target}");
        assert_eq!(response.version(), http::Version::HTTP_2);
    }
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn oversized_request_heads_are_refused_over_tls_http1() {
    // ALPN http/1.1 connections are served by hyper's HTTP/1 server directly (not `auto`):
    // the same head limits must hold there.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let app = Oracle::start().await;
    let proxy = start_proxy(
        &pki,
        policy("enforce", "permissive", RAW_RULES),
        app.addr,
        |c| {
            c.limits.max_header_bytes = 16 * 1024;
            c.limits.max_headers = 20;
        },
    )
    .await;
    let big = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    for extra in [big, many] {
        let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(pki.client(FRONTEND, H1));
        let mut tls = connector
            .connect(palisade_proxy::tls::server_name(proxy.addr.ip()), tcp)
            .await
            .unwrap();
        let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // Read until the proxy closes the connection; a reset after the answer is fine.
        let _ = tokio::time::timeout(LIMIT, tls.read_to_end(&mut answer))
            .await
            .expect("the connection stayed open");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    }
    assert_eq!(app.served(), 0);
    proxy.running.shutdown().await;
}
