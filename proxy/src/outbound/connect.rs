//! Step 3 of an outbound connection: connect to where [`route`](super::route) said.
//!
//! Takes a [`Route`](super::Route) target and passes on a connected stream: a mutual-TLS
//! session with a meshed peer whose SPIFFE ID was verified, or a plain TCP connection for a
//! pass-through destination.
//!
//! One `rustls::ClientConfig` is built per expectation (any ID in the trust domains, or one
//! exact ID) when the listener starts, and reused for every connection: its session cache
//! is what lets a second connection to the same peer resume instead of doing a full
//! handshake.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use palisade_config::SpiffeId;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Destinations, OutboundConfig, OutboundTimeouts, Upstream};
use crate::tls::{ClientOptions, TlsError, client_config, peer_id, server_name};

/// Connects to meshed peers (mutual TLS) and pass-through destinations (plain TCP).
pub(crate) struct Connector {
    /// Keyed by the expected SPIFFE ID (`None`: any ID in the trust domains).
    configs: HashMap<Option<SpiffeId>, Arc<ClientConfig>>,
    timeouts: OutboundTimeouts,
}

/// A mutual-TLS session with a meshed peer, and who the peer proved to be.
pub(crate) struct Meshed {
    pub(crate) stream: TlsStream<TcpStream>,
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
        let mut configs = HashMap::new();
        for expected in expectations {
            if configs.contains_key(&expected) {
                continue;
            }
            let options = ClientOptions {
                expected: expected.clone(),
                ..ClientOptions::new(config.trust.clone())
            };
            configs.insert(expected, client_config(&config.identity, &options)?);
        }
        Ok(Connector {
            configs,
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

    /// Mutual TLS to `upstream`, its SPIFFE ID verified.
    pub(crate) async fn mesh(&self, upstream: &Upstream) -> Result<Meshed, ConnectError> {
        let addr = upstream.addr;
        let config = self
            .config_for(&upstream.expected)
            .ok_or(ConnectError::NoConfig(addr))?;
        let tcp = self.plain(addr).await?;
        let connector = TlsConnector::from(config);
        let stream = tokio::time::timeout(
            self.timeouts.handshake,
            connector.connect(server_name(addr.ip()), tcp),
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

    /// The config built for `expected`; never a weaker one.
    fn config_for(&self, expected: &Option<SpiffeId>) -> Option<Arc<ClientConfig>> {
        self.configs.get(expected).cloned()
    }
}
