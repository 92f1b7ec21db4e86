//! Settings of the inbound side: where to listen, where the app is, which policy and TLS
//! configuration to use, and every limit and timeout.
//!
//! This module only holds values. Nothing here reads the environment or a file: the CLI
//! (`palisade proxy`) builds an [`InboundConfig`] and hands it to
//! [`Inbound::bind`](crate::inbound::Inbound::bind). The policy and the TLS server
//! configuration sit behind an [`ArcSwap`] so that a reload can swap them while connections
//! are being served; each connection reads them once, when it is accepted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_config::{Policy, SpiffeId};

/// Default inbound listen address: every interface, port 15006.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 15006);

/// Default app port on loopback.
pub const DEFAULT_APP_PORT: u16 = 8080;

/// Default cap on requests in flight on one inbound listener ([`Limits::max_requests_in_flight`]).
///
/// High enough that only overload reaches it (100 busy h2 connections at their default 100
/// streams each), low enough to bound what a flood can hold: each request in flight keeps
/// its buffers and usually an app connection (a file descriptor), a few tens of KiB.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 10_000;

/// Everything the inbound side needs. Build it with [`InboundConfig::new`], which fills in
/// the documented defaults, then change fields as needed.
#[derive(Clone)]
pub struct InboundConfig {
    /// Address the inbound listener binds. Default [`DEFAULT_LISTEN`] (`0.0.0.0:15006`).
    pub listen: SocketAddr,
    /// Where requests go after they are allowed.
    pub app: AppConfig,
    /// The compiled policy; a reload swaps the pointer. Each request reads the current one.
    pub policy: Arc<ArcSwap<Policy>>,
    /// The TLS server configuration (SVID, client-certificate verifier, ALPN `h2`,
    /// `http/1.1`); a certificate rotation swaps it. Each handshake reads the current one.
    pub tls: Arc<ArcSwap<rustls::ServerConfig>>,
    /// This proxy's own SPIFFE ID, written as `By=` in `x-forwarded-client-cert`.
    pub own_id: SpiffeId,
    /// Size and count limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// The app behind the proxy, always on a loopback (or otherwise local) address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConfig {
    /// The app's IP address. Default `127.0.0.1`.
    pub ip: IpAddr,
    /// The app's port for connections that were not redirected by iptables (a redirected
    /// connection goes to the port its client connected to). Default [`DEFAULT_APP_PORT`]
    /// (8080).
    pub port: u16,
    /// Ports on which the app speaks h2c (HTTP/2 with prior knowledge, e.g. gRPC).
    /// Requests to other ports are forwarded over HTTP/1.1. Default: none.
    pub h2c_ports: Vec<u16>,
}

/// Size and count limits. Every field has a safe default ([`Limits::default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) in bytes; HTTP/1 reads no further
    /// (at least 8 KiB, hyper's floor), h2 advertises it as `SETTINGS_MAX_HEADER_LIST_SIZE`.
    /// Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1 request. Default 100.
    pub max_headers: usize,
    /// Most concurrent h2 streams per connection. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// Most streams a client may reset before the server accepts them (CVE-2023-44487,
    /// Rapid Reset); past it the connection gets GOAWAY. Default 20.
    pub h2_max_pending_accept_reset_streams: usize,
    /// Most streams the server resets because of client errors (CVE-2025-8671,
    /// MadeYouReset); past it the connection gets GOAWAY. Default 64.
    pub h2_max_local_error_reset_streams: usize,
    /// Most requests in flight on the listener at once, over all connections (a request is
    /// in flight until its response body ends). Past it a request is answered at once with
    /// 503 `service_unavailable`, never queued. At least 1. Default
    /// [`DEFAULT_MAX_REQUESTS_IN_FLIGHT`] (10 000).
    pub max_requests_in_flight: usize,
}

/// Timeouts. Every field has a safe default ([`Timeouts::default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Permissive mode: time for a client to send its first byte, so the proxy can tell TLS
    /// from plaintext. Default 5 s.
    pub detect: Duration,
    /// Time for the TLS handshake to complete. Default 10 s.
    pub handshake: Duration,
    /// HTTP/1: time to receive a complete request head, also while a kept-alive connection
    /// waits for its next request (slowloris). Default 10 s.
    pub header_read: Duration,
    /// An HTTP connection with no request in flight for this long is closed (h2: GOAWAY).
    /// h2 clients are also pinged every half of this and dropped when a ping goes
    /// unanswered for [`Timeouts::header_read`]; pooled app connections idle this long are
    /// closed too. Default 60 s.
    pub idle: Duration,
    /// A request body must deliver a chunk at least this often, or the request fails and
    /// the app sees its body end with an error (slow POST). Default 30 s.
    pub body_progress: Duration,
    /// Time to connect to the app. Past it the answer is 503 (the app is not accepting:
    /// overloaded). Default 1 s.
    pub upstream_connect: Duration,
    /// Time for the app to send response headers. Past it the answer is 504. Default 15 s.
    pub upstream_response: Duration,
    /// On shutdown, time for in-flight requests to finish before connections are closed.
    /// Default 20 s.
    pub drain: Duration,
}

// === impl InboundConfig ===

impl InboundConfig {
    /// A configuration with the defaults documented on each field for everything but the
    /// policy, the TLS configuration and the own identity.
    pub fn new(policy: Policy, tls: Arc<rustls::ServerConfig>, own_id: SpiffeId) -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            app: AppConfig::default(),
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            tls: Arc::new(ArcSwap::new(tls)),
            own_id,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
        }
    }
}

// === impl AppConfig ===

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_APP_PORT,
            h2c_ports: Vec::new(),
        }
    }
}

impl AppConfig {
    /// The app's socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// true when `port` is declared to speak h2c.
    pub fn speaks_h2c(&self, port: u16) -> bool {
        self.h2c_ports.contains(&port)
    }
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            h2_max_concurrent_streams: 100,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 64,
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
        }
    }
}

// === impl Timeouts ===

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            detect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            body_progress: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(1),
            upstream_response: Duration::from_secs(15),
            drain: Duration::from_secs(20),
        }
    }
}
