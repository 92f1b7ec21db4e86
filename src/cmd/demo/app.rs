//! The demo's example app: a plain HTTP/1.1 server on 127.0.0.1 that answers every request
//! with what it received (method, path and query, and the caller palisade vouched for), so
//! the demo can show exactly what reached it.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The running example app.
pub(super) struct App {
    pub(super) addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Starts the app on 127.0.0.1 (a free port).
pub(super) async fn start() -> Result<App> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(answer);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(App { addr, task })
}

impl App {
    /// Stops accepting; open connections end with the process.
    pub(super) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let caller = request
        .headers()
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok())
        .and_then(|xfcc| xfcc.split(';').find_map(|kv| kv.strip_prefix("URI=")))
        .unwrap_or("-")
        .to_owned();
    let body = serde_json::json!({
        "app": "orders",
        "method": request.method().as_str(),
        "target": request.uri().to_string(),
        "caller": caller,
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
