//! Step 2 of a connection: mutual TLS with SPIFFE identities.
//!
//! Takes the pod's SVID files ([`Identity::load`]) and the accepted trust domains
//! ([`TrustDomains`]) and passes on rustls configs: [`server_config`] for the inbound listener
//! (client certificate required) and [`client_config`] for outbound connections. After a
//! handshake, [`peer_id`] names the peer; a failed handshake has a [`HandshakeFailure`] reason
//! for logs and metrics.
//!
//! - [`identity`]: the SVID files, parsed and checked.
//! - [`verify`]: the SPIFFE certificate verifiers and [`peer_id`].
//! - [`failure`]: why a handshake failed, as a metric label.
//! - [`server`] / [`client`]: the rustls configs.
//!
//! Cryptography is rustls's `ring` provider, passed explicitly to every config: palisade never
//! installs a process-wide default provider.

use std::sync::Arc;

use palisade_config::SpiffeId;

use rustls::crypto::CryptoProvider;

pub mod client;
pub mod failure;
pub mod identity;
pub mod server;
pub mod verify;

pub use client::{ClientOptions, client_config, server_name};
pub use failure::HandshakeFailure;
pub use identity::{Identity, IdentityError, IdentityPaths};
pub use server::server_config;
pub use verify::{
    SpiffeClientVerifier, SpiffeServerVerifier, TrustDomainError, TrustDomains, peer_id,
};

/// A TLS config could not be built from an [`Identity`].
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration (protocol versions, ticketer).
    #[error("cannot build the tls configuration")]
    Config(#[source] rustls::Error),
    /// The client certificate verifier could not be built from the trust bundle.
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The identity's leaf lacks the clientAuth extended key usage, so it cannot originate
    /// mutual TLS.
    #[error(
        "the identity {id} has no clientAuth extended key usage and cannot originate mutual tls"
    )]
    NoClientAuth {
        /// The identity's SPIFFE ID.
        id: SpiffeId,
    },
}

/// The crypto provider of every palisade TLS config.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
