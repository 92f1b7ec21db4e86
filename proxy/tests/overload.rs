//! Overload protection end to end: the inbound listener's cap on requests in flight, with
//! palisade on 127.0.0.1:0, per-test rcgen certificates, an app that answers only when the
//! test lets it, and hyper clients over mutual TLS (HTTP/1.1 and h2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use palisade_proxy::inbound::Stats;
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
    let first = tokio::spawn({
        let h1 = h1.clone();
        let addr = proxy.addr;
        async move { send(addr, &h1, get("/api/v1/items")).await }
    });
    app.wait_for(1).await;

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
