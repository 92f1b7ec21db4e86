//! The inbound side: every request that reaches the app has come through this module.
//!
//! One connection, top to bottom (see [`serve`] for the connection steps and [`stack`] for
//! the HTTP layers):
//!
//! accept → detect (permissive) → TLS (peer = SPIFFE ID) → HTTP/1.1 or h2 (ALPN) →
//! request ID → [`framing`] → [`authorize`] (normalize + decide) → [`headers`] →
//! [`forward`] to the app; every 4xx/5xx palisade writes comes from [`respond`].
//!
//! Run it in-process with [`Inbound::bind`], then [`Inbound::serve`] (until a future
//! completes) or [`Inbound::spawn`] (a [`Running`] handle with `shutdown()`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config::InboundConfig;
use crate::listen::{ListenError, Listener, serve_until};
use crate::telemetry::Telemetry;

pub mod authorize;
pub mod body;
pub mod forward;
pub mod framing;
pub mod headers;
mod idle;
pub mod request_id;
pub mod respond;
pub mod serve;
pub mod stack;
pub mod stats;

pub use self::stats::Stats;

/// The body of every response palisade sends back: the app's, streamed, or palisade's own.
pub type ResponseBody = BoxBody<Bytes, hyper::Error>;

/// What every layer of the stack returns.
pub(crate) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> + Send>>;

/// A bound inbound listener with its configuration, ready to serve.
pub struct Inbound {
    listener: Listener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

/// A running inbound side (from [`Inbound::spawn`]). Dropping it starts the same drain as
/// [`Running::shutdown`](crate::listen::Running::shutdown) without waiting for it.
pub type Running = crate::listen::Running<Stats>;

/// Starting the inbound side failed.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The listen address cannot be bound.
    #[error("cannot start the inbound listener")]
    Listen(#[source] ListenError),
    /// The bound address cannot be read back.
    #[error("cannot read the inbound listener's address")]
    LocalAddr(#[source] std::io::Error),
}

/// What every connection of one [`Inbound`] shares.
pub(crate) struct Shared {
    pub(crate) config: InboundConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) ids: Arc<request_id::RequestIds>,
    pub(crate) http: auto::Builder<TokioExecutor>,
    pub(crate) clients: forward::Clients,
    pub(crate) telemetry: Telemetry,
}

// === impl Inbound ===

impl Inbound {
    /// Binds `config.listen` and prepares the HTTP server and the pooled app clients; no
    /// telemetry beyond [`Stats`].
    pub async fn bind(config: InboundConfig) -> Result<Self, InboundError> {
        Self::bind_observed(config, Telemetry::disabled()).await
    }

    /// As [`Inbound::bind`], recording metrics, spans and access-log lines into `telemetry`.
    pub async fn bind_observed(
        config: InboundConfig,
        telemetry: Telemetry,
    ) -> Result<Self, InboundError> {
        let listener = Listener::bind(config.listen)
            .await
            .map_err(InboundError::Listen)?;
        let local_addr = listener.local_addr().map_err(InboundError::LocalAddr)?;
        let shared = Arc::new(Shared {
            stats: Arc::new(Stats::default()),
            ids: Arc::new(request_id::RequestIds::new()),
            http: http_builder(&config),
            clients: forward::Clients::new(&config.timeouts),
            telemetry,
            config,
        });
        Ok(Self {
            listener,
            local_addr,
            shared,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters of this inbound side.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and drains: in-flight
    /// requests get up to the drain timeout to finish. Returns when every connection is
    /// closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Inbound {
            listener, shared, ..
        } = self;
        serve_until(
            |drain| serve::accept_loop(listener, shared, drain),
            shutdown,
        )
        .await;
    }

    /// Serves on a new task; stop it with
    /// [`Running::shutdown`](crate::listen::Running::shutdown).
    pub fn spawn(self) -> Running {
        let Inbound {
            listener,
            local_addr,
            shared,
        } = self;
        Running::spawn(local_addr, shared.stats.clone(), "inbound", |drain| {
            serve::accept_loop(listener, shared, drain)
        })
    }
}

/// The HTTP/1.1 and h2 server settings, from the configured limits.
fn http_builder(config: &InboundConfig) -> auto::Builder<TokioExecutor> {
    let limits = &config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(config.timeouts.header_read)
        // hyper reads at most this much while looking for the end of the head.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
        .keep_alive_interval(config.timeouts.idle / 2)
        .keep_alive_timeout(config.timeouts.header_read);
    builder
}
