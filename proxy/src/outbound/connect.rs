//! Step 3 of an outbound connection: connect to where [`route`](super::route) said.
//!
//! Takes a [`Route`](super::Route) target and passes on a connected stream: a mutual-TLS
//! session with a meshed peer whose SPIFFE ID was verified, or a plain TCP connection for a
//! pass-through destination.
//!
//! One `rustls::ClientConfig` is built per expectation (any ID in the trust domains, or one
//! exact ID) and reused for every connection: its session cache is what lets a second
//! connection to the same peer resume instead of doing a full handshake. When the pod's
//! identity rotates, the configs are rebuilt once, for the next connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use palisade_config::SpiffeId;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::detect::Protocol;
use super::{Destinations, OutboundConfig, OutboundTimeouts, Upstream};
use crate::send_io::SendIo;
use crate::tls::{
    ClientOptions, HandshakeFailure, Identity, TlsError, TrustDomains, client_config, peer_id,
    server_name,
};

/// Connects to meshed peers (mutual TLS) and pass-through destinations (plain TCP).
pub(crate) struct Connector {
    identity: Arc<ArcSwap<Identity>>,
    trust: TrustDomains,
    /// Every expectation a route can carry.
    expectations: Vec<Option<SpiffeId>>,
    configs: ArcSwap<Configs>,
    timeouts: OutboundTimeouts,
}

/// The client configs of one identity.
struct Configs {
    identity: Arc<Identity>,
    /// Keyed by the expected SPIFFE ID (`None`: any ID in the trust domains) and the
    /// protocol (which ALPN to offer).
    by_expected: HashMap<(Option<SpiffeId>, Protocol), Arc<ClientConfig>>,
}

/// A mutual-TLS session with a meshed peer, and who the peer proved to be.
pub(crate) struct Meshed {
    pub(crate) stream: TlsStream<SendIo<TcpStream>>,
    pub(crate) peer: SpiffeId,
    pub(crate) resumed: bool,
}

/// Connecting to the destination failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The destination.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// TCP connect did not complete in time.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// The TLS handshake failed: the peer is not who it must be, or does not speak mTLS.
    #[error("tls handshake with {addr} failed")]
    Handshake {
        /// The peer.
        addr: SocketAddr,
        /// Why (a verifier error names the unexpected SPIFFE ID).
        #[source]
        source: io::Error,
    },
    /// The TLS handshake did not complete in time.
    #[error("tls handshake with {0} timed out")]
    HandshakeTimeout(SocketAddr),
    /// The handshake completed without a SPIFFE ID (cannot happen with palisade's verifier;
    /// checked anyway).
    #[error("{0} presented no spiffe id")]
    NoPeerIdentity(SocketAddr),
    /// No client config was built for the expectation of this upstream (cannot happen:
    /// every upstream the config can route to gets one when the listener starts).
    #[error("no tls client config for {0}")]
    NoConfig(SocketAddr),
    /// The TLS client config could not be rebuilt for a rotated identity.
    #[error("cannot build the tls client config for the rotated identity")]
    Tls(#[source] TlsError),
}

// === impl ConnectError ===

impl ConnectError {
    /// A short label for metrics (`reason` of a failed connection): `connect`,
    /// `connect_timeout`, `handshake`, `handshake_timeout`, `no_spiffe_id` or `tls_config`.
    pub fn as_label(&self) -> &'static str {
        match self {
            ConnectError::Connect { .. } => "connect",
            ConnectError::ConnectTimeout(_) => "connect_timeout",
            ConnectError::Handshake { .. } => "handshake",
            ConnectError::HandshakeTimeout(_) => "handshake_timeout",
            ConnectError::NoPeerIdentity(_) => "no_spiffe_id",
            ConnectError::NoConfig(_) | ConnectError::Tls(_) => "tls_config",
        }
    }

    /// Why the TLS handshake failed, as a metric label
    /// ([`HandshakeFailure::as_label`], `timeout` or `no_spiffe_id`); `None` when the
    /// failure was not the handshake's.
    pub fn handshake_failure(&self) -> Option<&'static str> {
        match self {
            ConnectError::Handshake { source, .. } => {
                Some(HandshakeFailure::of_io(source).as_label())
            }
            ConnectError::HandshakeTimeout(_) => Some("timeout"),
            ConnectError::NoPeerIdentity(_) => Some("no_spiffe_id"),
            _ => None,
        }
    }
}

// === impl Connector ===

impl Connector {
    /// Builds one client config per expectation `config` can need.
    pub(crate) fn new(config: &OutboundConfig) -> Result<Connector, TlsError> {
        let mut expectations: Vec<Option<SpiffeId>> = Vec::new();
        match &config.destinations {
            Destinations::Fixed(upstream) => expectations.push(upstream.expected.clone()),
            Destinations::Transparent(rules) => {
                expectations.push(None);
                expectations.extend(rules.explicit.iter().map(|u| u.expected.clone()));
            }
        }
        expectations.dedup();
        let identity = config.identity.load_full();
        let configs = Configs::build(identity, &config.trust, &expectations)?;
        Ok(Connector {
            identity: config.identity.clone(),
            trust: config.trust.clone(),
            expectations,
            configs: ArcSwap::from_pointee(configs),
            timeouts: config.timeouts.clone(),
        })
    }

    /// Plain TCP to `addr`.
    pub(crate) async fn plain(&self, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(self.timeouts.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::ConnectTimeout(addr))?
            .map_err(|source| ConnectError::Connect { addr, source })?;
        // Small writes (a request line, a TLS record) must not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|source| ConnectError::Connect { addr, source })?;
        Ok(stream)
    }

    /// Mutual TLS to `upstream`, its SPIFFE ID verified, offering the ALPN of `protocol`.
    pub(crate) async fn mesh(
        &self,
        upstream: &Upstream,
        protocol: Protocol,
    ) -> Result<Meshed, ConnectError> {
        let addr = upstream.addr;
        let config = self
            .config_for(&upstream.expected, protocol)?
            .ok_or(ConnectError::NoConfig(addr))?;
        let tcp = self.plain(addr).await?;
        let connector = TlsConnector::from(config);
        let stream = tokio::time::timeout(
            self.timeouts.handshake,
            connector.connect(server_name(addr.ip()), SendIo(tcp)),
        )
        .await
        .map_err(|_| ConnectError::HandshakeTimeout(addr))?
        .map_err(|source| ConnectError::Handshake { addr, source })?;
        let (_, session) = stream.get_ref();
        let peer = peer_id(session).ok_or(ConnectError::NoPeerIdentity(addr))?;
        let resumed = matches!(
            session.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        Ok(Meshed {
            stream,
            peer,
            resumed,
        })
    }

    /// The config built for `expected` with the identity in force; never a weaker one.
    fn config_for(
        &self,
        expected: &Option<SpiffeId>,
        protocol: Protocol,
    ) -> Result<Option<Arc<ClientConfig>>, ConnectError> {
        let identity = self.identity.load_full();
        let mut configs = self.configs.load_full();
        if !Arc::ptr_eq(&configs.identity, &identity) {
            tracing::info!(identity = %identity.id(), "outbound: identity rotated, new tls client configs");
            let built = Configs::build(identity, &self.trust, &self.expectations)
                .map_err(ConnectError::Tls)?;
            configs = Arc::new(built);
            self.configs.store(configs.clone());
        }
        Ok(configs
            .by_expected
            .get(&(expected.clone(), protocol))
            .cloned())
    }
}

// === impl Configs ===

impl Configs {
    fn build(
        identity: Arc<Identity>,
        trust: &TrustDomains,
        expectations: &[Option<SpiffeId>],
    ) -> Result<Configs, TlsError> {
        let mut by_expected = HashMap::new();
        for expected in expectations {
            for protocol in [Protocol::Opaque, Protocol::H2] {
                let alpn = match protocol {
                    Protocol::H2 => vec![b"h2".to_vec()],
                    Protocol::Opaque => Vec::new(),
                };
                let options = ClientOptions {
                    expected: expected.clone(),
                    alpn,
                    ..ClientOptions::new(trust.clone())
                };
                let config = client_config(&identity, &options)?;
                by_expected.insert((expected.clone(), protocol), config);
            }
        }
        Ok(Configs {
            identity,
            by_expected,
        })
    }
}
