//! The admin server: a listener of its own (default `0.0.0.0:15020`) for the kubelet's probes,
//! Prometheus and the operator.
//!
//! Takes an [`AdminConfig`] and [`AdminState`] (the telemetry's metrics, the reload status
//! and the [`Readiness`] flag the CLI flips); passes on, over plain HTTP/1.1:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric: OpenMetrics text when the `Accept` field asks for it (Prometheus does), else the Prometheus text format 0.0.4 |
//! | `GET /ready` | 200 `ready` once serving; 503 before, and from the moment shutdown starts |
//! | `GET /live` | 200 `live` while the process runs |
//! | `GET /status` | JSON of what is in force: policy version and load time, identity and its expiry, the last reload errors — **loopback peers only** (403 otherwise) |
//! | `GET /app-health/<container>/<livez\|readyz\|startupz>` | the app's own probe, checked on loopback ([`probe`]); only the configured paths, GET only |
//!
//! Anything else is 404; methods other than GET and HEAD are 405.
//!
//! # Security
//!
//! The port is plaintext and unauthenticated: in a pod the kubelet probes it on the pod IP.
//! It shows nothing secret: metrics carry route templates and peer namespaces; `/status`,
//! which names files and identities, answers loopback peers only (`kubectl exec` or
//! `kubectl port-forward`, which connects from loopback inside the pod).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::reload::StatusHandle;
use crate::telemetry::Telemetry;

pub mod probe;

pub use probe::{APP_PROBES_ENV, AppProbes, AppProbesError};

/// Default admin listen address: every interface, port 15020.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 15020);

/// The OpenMetrics content type `/metrics` answers with when the scraper accepts it
/// (Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The Prometheus text content type `/metrics` answers with otherwise.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the admin server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Listen address. Default [`DEFAULT_ADMIN_LISTEN`].
    pub listen: SocketAddr,
}

/// What the admin server shows.
#[derive(Clone, Debug, Default)]
pub struct AdminState {
    /// Rendered on `/metrics` (nothing when disabled).
    pub telemetry: Telemetry,
    /// Shown on `/status`.
    pub status: Option<StatusHandle>,
    /// Answered on `/ready`.
    pub readiness: Readiness,
}

/// Whether the proxy wants traffic. Starts unready; clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

/// A running admin server.
#[derive(Debug)]
pub struct Admin {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The admin server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address cannot be bound.
    #[error("cannot bind the admin listener on {1}")]
    Bind(#[source] std::io::Error, SocketAddr),
}

// === impl AdminConfig ===

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN,
        }
    }
}

// === impl Readiness ===

impl Readiness {
    /// Ready: `/ready` answers 200.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Unready: `/ready` answers 503 (first thing on SIGTERM, so endpoints drop the pod
    /// while it drains).
    pub fn set_unready(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// The current state.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

// === impl Admin ===

impl Admin {
    /// Binds `config.listen` and serves on a new task, with no app probes. Must be called
    /// within a tokio runtime.
    pub async fn spawn(config: &AdminConfig, state: AdminState) -> Result<Admin, AdminError> {
        Admin::spawn_with_probes(config, state, AppProbes::default()).await
    }

    /// Like [`Admin::spawn`], and answers the app's probes at their `/app-health/` paths.
    pub async fn spawn_with_probes(
        config: &AdminConfig,
        state: AdminState,
        probes: AppProbes,
    ) -> Result<Admin, AdminError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| AdminError::Bind(e, config.listen))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| AdminError::Bind(e, config.listen))?;
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::new(state), probes, stop));
        Ok(Admin {
            local_addr,
            shutdown,
            task,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes open admin connections.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    probes: AppProbes,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, remote)) = accepted else { continue };
                let state = state.clone();
                let probes = probes.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        let probes = probes.clone();
                        async move {
                            let (method, path, headers) = (request.method(), request.uri().path(), request.headers());
                            if probes.get(path).is_some() && method != Method::GET {
                                return Ok::<_, Infallible>(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
                            }
                            if method == Method::GET
                                && let Some((status, body)) = probes.run(path, headers.get(USER_AGENT)).await
                            {
                                return Ok(text(status, body));
                            }
                            Ok(answer(&state, remote, method, path, headers))
                        }
                    });
                    let served = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(error) = served {
                        tracing::debug!(%error, "admin connection ended");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    connections.shutdown().await;
}

/// One admin request.
fn answer(
    state: &AdminState,
    remote: SocketAddr,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/metrics" => {
            let openmetrics = headers
                .get_all(ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            let (body, content_type) = match (state.telemetry.metrics(), openmetrics) {
                (Some(metrics), true) => (metrics.render(), OPENMETRICS),
                (Some(metrics), false) => (metrics.render_prometheus(), PROMETHEUS_TEXT),
                (None, true) => ("# EOF\n".to_owned(), OPENMETRICS),
                (None, false) => (String::new(), PROMETHEUS_TEXT),
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        "/ready" if state.readiness.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/live" => text(StatusCode::OK, "live\n"),
        "/status" if !remote.ip().to_canonical().is_loopback() => text(
            StatusCode::FORBIDDEN,
            "/status answers loopback clients only\n",
        ),
        "/status" => {
            let body = match &state.status {
                Some(status) => serde_json::to_string_pretty(&*status.snapshot())
                    .unwrap_or_else(|_| "{}".to_owned()),
                None => "{}".to_owned(),
            };
            let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(remote: &str, method: Method, path: &str) -> StatusCode {
        let state = AdminState::default();
        let remote: SocketAddr = remote.parse().unwrap_or(DEFAULT_ADMIN_LISTEN);
        answer(&state, remote, &method, path, &HeaderMap::new()).status()
    }

    #[test]
    fn status_answers_loopback_clients_only() {
        assert_eq!(
            status_of("127.0.0.1:5000", Method::GET, "/status"),
            StatusCode::OK
        );
        assert_eq!(
            status_of("[::1]:5000", Method::GET, "/status"),
            StatusCode::OK
        );
        assert_eq!(
            status_of("[::ffff:127.0.0.1]:5000", Method::GET, "/status"),
            StatusCode::OK
        );
        for remote in ["10.0.0.7:5000", "[fd00::7]:5000", "[::ffff:10.0.0.7]:5000"] {
            assert_eq!(
                status_of(remote, Method::GET, "/status"),
                StatusCode::FORBIDDEN,
                "{remote}"
            );
        }
        // Probes and metrics answer everyone (the kubelet comes from the pod IP).
        assert_eq!(
            status_of("10.0.0.7:5000", Method::GET, "/live"),
            StatusCode::OK
        );
        assert_eq!(
            status_of("10.0.0.7:5000", Method::GET, "/metrics"),
            StatusCode::OK
        );
        assert_eq!(
            status_of("10.0.0.7:5000", Method::GET, "/ready"),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn only_get_and_head_and_known_paths() {
        assert_eq!(
            status_of("127.0.0.1:1", Method::POST, "/ready"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status_of("127.0.0.1:1", Method::GET, "/x"),
            StatusCode::NOT_FOUND
        );
    }
}
