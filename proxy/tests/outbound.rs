//! The outbound side in-process on 127.0.0.1: app → palisade outbound (fixed destination,
//! mutual TLS) → palisade inbound (policy) → app; the peer's SPIFFE ID is verified; a
//! transparent listener reached directly refuses (loop guard).
//!
//! The transparent path (iptables redirect, pass-through and refusal of unmeshed
//! destinations) runs in network namespaces in `tests/e2e/mesh.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use palisade_config::SpiffeId;
use palisade_proxy::outbound::{
    Destinations, MeshRules, Outbound, OutboundConfig, Running, Stats, Unmeshed, Upstream,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An outbound listener on 127.0.0.1:0 presenting `id`, for `destinations`.
async fn start_outbound(pki: &Pki, id: &str, destinations: Destinations) -> Running {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = OutboundConfig::new(listen, destinations, pki.identity(id));
    config.timeouts.drain = Duration::from_secs(2);
    Outbound::bind(config).await.unwrap().spawn()
}

fn fixed(addr: SocketAddr, expected: &str) -> Destinations {
    Destinations::Fixed(Upstream {
        addr,
        expected: Some(SpiffeId::parse(expected).unwrap()),
    })
}

/// Waits (bounded) until `counter` reaches `value`.
async fn until(counter: &std::sync::atomic::AtomicU64, value: u64) {
    tokio::time::timeout(LIMIT, async {
        while Stats::get(counter) < value {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("counter reached");
}

/// Sends raw bytes and reads until the other side closes (bounded).
async fn closed_without_answer(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may already have closed; a write error is an answer too.
    let _ = stream
        .write_all(b"GET /api/v1/items HTTP/1.1\r\nhost: b\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(LIMIT, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was not closed");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn fixed_outbound_carries_the_apps_identity_to_the_peer() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let inbound = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    let outbound = start_outbound(&pki, FRONTEND, fixed(inbound.addr, SERVER_ID)).await;

    // The app speaks plain HTTP to its local outbound listener.
    let reply = send(outbound.local_addr(), &Via::Plain, get("/api/v1/items/42")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = reply.seen();
    assert_eq!(seen.target, "/api/v1/items/42");
    assert_eq!(
        seen.headers["x-forwarded-client-cert"],
        vec![format!("By={SERVER_ID};URI={FRONTEND}")]
    );

    // The peer's policy still applies to what comes through the outbound side.
    let denied = send(
        outbound.local_addr(),
        &Via::Plain,
        http::Request::delete("/api/v1/items/42")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    denied.assert_error(403, "forbidden");
    assert_eq!(app.served(), 1);

    let stats = outbound.stats();
    assert_eq!(Stats::get(&stats.meshed), 2);
    // One ClientConfig per expectation: the second connection resumed the first session.
    assert_eq!(Stats::get(&stats.resumed), 1);
    assert_eq!(Stats::get(&stats.failed), 0);
    outbound.shutdown().await;
    inbound.running.shutdown().await;
}

#[tokio::test]
async fn a_rotated_identity_is_presented_on_the_next_connection() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let inbound = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = OutboundConfig::new(
        listen,
        fixed(inbound.addr, SERVER_ID),
        pki.identity(FRONTEND),
    );
    // What a reloader holds: swapping it is a rotation.
    let identity = config.identity.clone();
    let outbound = Outbound::bind(config).await.unwrap().spawn();

    let xfcc = |reply: Reply| reply.seen().headers["x-forwarded-client-cert"].clone();
    let before = send(outbound.local_addr(), &Via::Plain, get("/api/v1/items/1")).await;
    assert_eq!(xfcc(before), vec![format!("By={SERVER_ID};URI={FRONTEND}")]);
    identity.store(std::sync::Arc::new(pki.identity(OPS)));
    let after = send(outbound.local_addr(), &Via::Plain, get("/api/v1/items/1")).await;
    assert_eq!(xfcc(after), vec![format!("By={SERVER_ID};URI={OPS}")]);
    outbound.shutdown().await;
    inbound.running.shutdown().await;
}

#[tokio::test]
async fn an_h2c_app_is_carried_as_h2() {
    let pki = Pki::new();
    let app = Oracle::start_h2c().await;
    let inbound = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |config| {
        config.app.h2c_ports = vec![app.addr.port()];
    })
    .await;
    let outbound = start_outbound(&pki, FRONTEND, fixed(inbound.addr, SERVER_ID)).await;

    // The app speaks HTTP/2 with prior knowledge to its local outbound listener.
    let tcp = TcpStream::connect(outbound.local_addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://orders.shop/api/v1/items/9")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // An h2 app sees the absolute form; the path is what matters.
    let target = json["target"].as_str().unwrap();
    assert!(target.ends_with("/api/v1/items/9"), "{target}");
    assert_eq!(
        json["headers"]["x-forwarded-client-cert"][0],
        format!("By={SERVER_ID};URI={FRONTEND}")
    );
    outbound.shutdown().await;
    inbound.running.shutdown().await;
}

#[tokio::test]
async fn refuses_a_peer_with_another_spiffe_id() {
    let pki = Pki::new();
    let app = Oracle::start().await;
    let inbound = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    // The inbound side is SERVER_ID; the outbound side expects someone else.
    let outbound = start_outbound(&pki, FRONTEND, fixed(inbound.addr, STRANGER)).await;

    let answer = closed_without_answer(outbound.local_addr()).await;
    assert_eq!(answer, "");
    let stats = outbound.stats();
    until(&stats.failed, 1).await;
    assert_eq!(Stats::get(&stats.meshed), 0);
    assert_eq!(app.served(), 0);
    outbound.shutdown().await;
    inbound.running.shutdown().await;
}

#[tokio::test]
async fn refuses_a_peer_outside_the_trust_domain() {
    let pki = Pki::new();
    let other = palisade_proxy::pki::Ca::new("other.example").unwrap();
    let app = Oracle::start().await;
    let inbound = start_proxy(&pki, policy("enforce", "strict", ""), app.addr, |_| {}).await;
    // An identity of a foreign CA and trust domain, which the peer does not trust either.
    let dir = tempfile::tempdir().unwrap();
    let svid = other
        .issue_svid(
            "spiffe://other.example/ns/web/sa/frontend",
            &Default::default(),
        )
        .unwrap();
    let paths = palisade_proxy::pki::write_identity(dir.path(), &svid, other.bundle_pem()).unwrap();
    let identity = palisade_proxy::tls::Identity::load(&paths).unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let destinations = Destinations::Fixed(Upstream {
        addr: inbound.addr,
        expected: None,
    });
    let outbound = Outbound::bind(OutboundConfig::new(listen, destinations, identity))
        .await
        .unwrap()
        .spawn();

    assert_eq!(closed_without_answer(outbound.local_addr()).await, "");
    until(&outbound.stats().failed, 1).await;
    assert_eq!(app.served(), 0);
    outbound.shutdown().await;
    inbound.running.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_peer_is_not_meshed() {
    let pki = Pki::new();
    // A destination that speaks plain HTTP, not mutual TLS.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = plain.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
    });
    let outbound = start_outbound(&pki, FRONTEND, fixed(plain_addr, SERVER_ID)).await;

    let answer = closed_without_answer(outbound.local_addr()).await;
    assert_eq!(
        answer, "",
        "plaintext must not reach the app through a meshed route"
    );
    until(&outbound.stats().failed, 1).await;
    outbound.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn transparent_listener_reached_directly_refuses_instead_of_looping() {
    let pki = Pki::new();
    for unmeshed in [Unmeshed::PassThrough, Unmeshed::Refuse] {
        let rules = MeshRules {
            cidrs: vec!["127.0.0.0/8".parse().unwrap()],
            unmeshed,
            ..MeshRules::default()
        };
        let outbound = start_outbound(&pki, FRONTEND, Destinations::Transparent(rules)).await;
        // No iptables redirect: the original destination is the listener itself.
        assert_eq!(closed_without_answer(outbound.local_addr()).await, "");
        let stats = outbound.stats();
        until(&stats.refused, 1).await;
        assert_eq!(Stats::get(&stats.meshed), 0);
        assert_eq!(Stats::get(&stats.passed_through), 0);
        outbound.shutdown().await;
    }
}

#[tokio::test]
async fn a_fixed_destination_that_is_the_listener_is_refused_at_start() {
    let pki = Pki::new();
    // A free port, so the listener and its destination can be the same address.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = OutboundConfig::new(addr, fixed(addr, SERVER_ID), pki.identity(FRONTEND));
    let error = Outbound::bind(config)
        .await
        .err()
        .expect("a loop is refused");
    assert_eq!(
        error.to_string(),
        format!("the outbound listener {addr} would forward to itself")
    );
}
