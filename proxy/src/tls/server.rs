//! Step 2a of an inbound connection: the TLS server config.
//!
//! Takes the pod's [`Identity`] and the accepted [`TrustDomains`] and passes on the
//! `rustls::ServerConfig` the inbound listener accepts with (via `tokio_rustls::TlsAcceptor`).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ServerSessionMemoryCache;
use rustls::sign::SingleCertAndKey;

use super::{Identity, SpiffeClientVerifier, TlsError, TrustDomains, provider};

/// ALPN protocols the inbound listener offers, preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Stateful TLS 1.2 session-ID cache entries per config (TLS 1.3 uses stateless tickets).
const SESSION_CACHE_ENTRIES: usize = 256;

/// The inbound server config: present `identity`, require a client certificate that passes
/// [`SpiffeClientVerifier`] for `trust`.
///
/// Settings:
/// - TLS 1.3 and 1.2, rustls's `ring` cipher suites and key exchange groups (no weak suites);
/// - ALPN `h2`, `http/1.1` ([`ALPN_PROTOCOLS`]): a client offering neither fails the handshake
///   (RFC 7301); a client offering no ALPN gets none and speaks HTTP/1.1 or opaque bytes;
/// - resumption: stateless TLS 1.3 tickets from a rotating ticketer, and a small TLS 1.2
///   session cache; no 0-RTT early data (replayable).
///
/// # Security
///
/// Each call builds a fresh ticketer and session cache, so a session can only be resumed
/// against the config (identity, bundle, trust domains) that verified it: after a reload that
/// drops a CA or trust domain, its peers must do a full handshake and are refused. A resumed
/// session keeps the peer identity verified in its original handshake; the ticketer bounds
/// that to its ticket lifetime (12 hours).
pub fn server_config(
    identity: &Identity,
    trust: &TrustDomains,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = SpiffeClientVerifier::new(identity.roots().clone(), trust.clone(), &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            identity.certified_key().clone(),
        )));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}
