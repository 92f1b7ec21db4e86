//! The inbound side: every request that reaches the app has come through this module.
//!
//! One connection, top to bottom (see [`serve`] for the connection steps and [`stack`] for
//! the HTTP layers):
//!
//! accept → detect (permissive) → TLS (peer = SPIFFE ID) → HTTP/1.1 or h2 (ALPN) →
//! overload cap → request ID → [`framing`] → [`authorize`] (normalize + decide) → [`headers`] →
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
use hyper::server::conn::{http1, http2};
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
mod overload;
pub mod request_id;
pub mod respond;
pub mod serve;
pub mod stack;
pub mod stats;
mod streams;
mod tunnel;
mod wakers;

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

/// The HTTP server settings of one listener, from its limits and timeouts, in the three
/// forms a connection may need: HTTP/1.1 and h2 when ALPN has told the protocol, `auto`
/// (either, told apart by the client's preface) for plaintext connections. The h2 form is
/// made per connection ([`Shared::http2`]): its executor runs that connection's streams
/// ([`streams`]).
///
/// A connection served by `auto` is sized for the state of both protocols, and its HTTP/1
/// read buffer grows to 16 KiB (the preface bytes `auto` read first are handed back as a
/// separate read, and hyper then reserves 8 KiB more); one served by `http1` or `http2`
/// carries only its own state and an 8 KiB read buffer, which keeps an idle mutual-TLS
/// connection smaller.
pub(crate) struct HttpServer {
    pub(crate) http1: http1::Builder,
    pub(crate) auto: auto::Builder<TokioExecutor>,
}

/// What every connection of one [`Inbound`] shares.
pub(crate) struct Shared {
    pub(crate) config: InboundConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) ids: Arc<request_id::RequestIds>,
    pub(crate) http: HttpServer,
    pub(crate) requests: overload::RequestLimit,
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
            http: HttpServer::new(&config),
            requests: overload::RequestLimit::new(config.limits.max_requests_in_flight),
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

/// Applies the HTTP/1.1 settings to hyper's `http1::Builder` or to `auto`'s view of its own
/// (two types with the same methods): written once, so that the forms cannot drift apart.
macro_rules! http1_settings {
    ($builder:expr, $config:expr) => {{
        let config: &InboundConfig = $config;
        let limits = &config.limits;
        $builder
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(config.timeouts.header_read)
            // hyper reads at most this much while looking for the end of the head.
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers);
    }};
}

/// Applies the h2 settings to hyper's `http2::Builder` or to `auto`'s view of its own.
macro_rules! http2_settings {
    ($builder:expr, $config:expr) => {{
        let config: &InboundConfig = $config;
        let limits = &config.limits;
        $builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
            .keep_alive_interval(config.timeouts.idle / 2)
            .keep_alive_timeout(config.timeouts.header_read);
    }};
}

// === impl HttpServer ===

impl HttpServer {
    /// The HTTP/1.1 and h2 server settings, from the configured limits and timeouts.
    fn new(config: &InboundConfig) -> Self {
        let mut http1 = http1::Builder::new();
        http1_settings!(http1, config);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        http1_settings!(auto.http1(), config);
        http2_settings!(auto.http2(), config);
        Self { http1, auto }
    }
}

// === impl Shared ===

impl Shared {
    /// The h2 server of one connection, with the listener's settings, whose streams go to
    /// `executor`.
    pub(crate) fn http2(
        &self,
        executor: streams::StreamExecutor,
    ) -> http2::Builder<streams::StreamExecutor> {
        let mut http2 = http2::Builder::new(executor);
        http2_settings!(http2, &self.config);
        http2
    }
}
