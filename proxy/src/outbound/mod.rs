//! The outbound side: the app's connections leave the pod through here.
//!
//! One connection, top to bottom (see [`serve`]):
//!
//! accept → original destination (`SO_ORIGINAL_DST`, transparent mode) → [`route`]
//! (meshed / pass through / refuse) → [`detect`] (h2 preface → ALPN `h2`) → connect
//! ([`connect`]: mutual TLS with the pod's SVID, the peer's SPIFFE ID verified) → bytes
//! copied both ways (L4: any protocol) until either side closes, nothing moves for the idle
//! timeout, or the drain after shutdown is over. Each connection is recorded (metrics, an
//! access-log line) when it ends.
//!
//! Two modes ([`Destinations`]): transparent, where `palisade init`'s iptables rules send the
//! app's outbound TCP to this listener, and fixed, where the listener stands for one peer
//! (the demo, a laptop, no root needed).
//!
//! Run it with [`Outbound::bind`] (or [`Outbound::bind_observed`] to record telemetry), then
//! [`Outbound::serve`] or [`Outbound::spawn`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;

use crate::listen::serve_until;
use crate::telemetry::Telemetry;
use crate::tls::TlsError;

pub mod cidr;
pub mod config;
pub mod connect;
pub mod detect;
mod flow;
mod observe;
pub mod route;
mod serve;

pub use self::cidr::{Cidr, CidrError};
pub use self::config::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_OUTBOUND_LISTEN, Destinations, MeshRules, OutboundConfig,
    OutboundTimeouts, Unmeshed, Upstream,
};
pub use self::connect::ConnectError;
pub use self::detect::Protocol;
pub use self::route::{Refusal, Route, route};

/// A bound outbound listener, ready to serve.
pub struct Outbound {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<serve::Shared>,
}

/// A running outbound listener (from [`Outbound::spawn`]). Dropping it starts the same
/// drain as [`Running::shutdown`](crate::listen::Running::shutdown) without waiting for it.
pub type Running = crate::listen::Running<Stats>;

/// What the outbound side has seen since it started. Counters only go up.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted from the app.
    pub connections_accepted: AtomicU64,
    /// Connections carried over mutual TLS to a meshed peer.
    pub meshed: AtomicU64,
    /// Of those, handshakes that resumed an earlier TLS session.
    pub resumed: AtomicU64,
    /// Connections passed through in plaintext (unmeshed destination).
    pub passed_through: AtomicU64,
    /// Connections refused (unmeshed destination with `Unmeshed::Refuse`, or a loop).
    pub refused: AtomicU64,
    /// Connections that failed: connect, handshake or peer-identity errors.
    pub failed: AtomicU64,
}

/// Starting the outbound side failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A TLS client config cannot be built from the identity.
    #[error("cannot build the outbound tls configuration")]
    Tls(#[source] TlsError),
    /// A fixed destination is the listener itself: every connection would connect to
    /// itself again.
    #[error("the outbound listener {0} would forward to itself")]
    Loop(SocketAddr),
}

// === impl Outbound ===

impl Outbound {
    /// Builds the TLS client configs (one per expected peer identity) and binds
    /// `config.listen`; no telemetry beyond [`Stats`].
    pub async fn bind(config: OutboundConfig) -> Result<Outbound, OutboundError> {
        Self::bind_observed(config, Telemetry::disabled()).await
    }

    /// As [`Outbound::bind`], recording metrics and access-log lines into `telemetry`.
    pub async fn bind_observed(
        config: OutboundConfig,
        telemetry: Telemetry,
    ) -> Result<Outbound, OutboundError> {
        let connector = connect::Connector::new(&config).map_err(OutboundError::Tls)?;
        let addr = config.listen;
        let listen = |source| OutboundError::Listen { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(listen)?;
        let local_addr = listener.local_addr().map_err(listen)?;
        if let Destinations::Fixed(upstream) = &config.destinations
            && is_self(upstream.addr, local_addr)
        {
            return Err(OutboundError::Loop(local_addr));
        }
        let shared = Arc::new(serve::Shared {
            config,
            connector,
            stats: Arc::new(Stats::default()),
            telemetry,
        });
        Ok(Outbound {
            listener,
            local_addr,
            shared,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters of this listener.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open connections
    /// the drain timeout to finish; those still open then are closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Outbound {
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
        let Outbound {
            listener,
            local_addr,
            shared,
        } = self;
        Running::spawn(local_addr, shared.stats.clone(), "outbound", |drain| {
            serve::accept_loop(listener, shared, drain)
        })
    }
}

/// Whether connecting to `target` surely reaches the listener bound to `local` (a listener on
/// every address is reached through loopback; a remote host on the same port is not us).
fn is_self(target: SocketAddr, local: SocketAddr) -> bool {
    let (target_ip, local_ip) = (target.ip().to_canonical(), local.ip().to_canonical());
    target.port() == local.port()
        && (target_ip == local_ip
            || (local_ip.is_unspecified()
                && (target_ip.is_loopback() || target_ip.is_unspecified())))
}

// === impl Stats ===

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::is_self;

    #[test]
    fn a_fixed_destination_may_not_be_the_listener() {
        let table = [
            ("127.0.0.1:7001", "127.0.0.1:7001", true),
            ("127.0.0.1:7001", "0.0.0.0:7001", true),
            ("[::1]:7001", "[::]:7001", true),
            ("127.0.0.2:7001", "127.0.0.1:7001", false),
            ("10.0.0.5:7001", "0.0.0.0:7001", false),
            ("[::ffff:127.0.0.1]:7001", "127.0.0.1:7001", true),
            ("127.0.0.1:15006", "127.0.0.1:7001", false),
            ("10.0.0.5:7001", "127.0.0.1:7001", false),
        ];
        for (target, local, expected) in table {
            assert_eq!(
                is_self(target.parse().unwrap(), local.parse().unwrap()),
                expected,
                "{target} from {local}"
            );
        }
    }
}
