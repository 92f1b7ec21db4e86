//! Step 2 of an outbound connection: the TLS client config.
//!
//! Takes the pod's [`Identity`] and what the server must prove ([`ClientOptions`]) and passes
//! on the `rustls::ClientConfig` for `tokio_rustls::TlsConnector`: it presents the SVID and
//! verifies the server's SPIFFE ID instead of a DNS name.

use std::net::IpAddr;
use std::sync::Arc;

use palisade_config::SpiffeId;
use rustls::ClientConfig;
use rustls::sign::SingleCertAndKey;
use rustls_pki_types::ServerName;

use super::{Identity, SpiffeServerVerifier, TlsError, TrustDomains, provider};

/// What an outbound connection requires of the server, and what it offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Trust domains the server's SPIFFE ID may be in.
    pub trust: TrustDomains,
    /// If set, the server must present exactly this SPIFFE ID.
    pub expected: Option<SpiffeId>,
    /// ALPN protocols to offer, preferred first; empty offers none (opaque TCP).
    pub alpn: Vec<Vec<u8>>,
}

/// The outbound client config: present `identity`, require a server certificate that passes
/// [`SpiffeServerVerifier`] for `options`.
///
/// TLS 1.3 and 1.2; in-memory session resumption (256 servers) keyed by the server name given
/// to `connect`, so use one name per peer, e.g. [`server_name`] of its address. SNI is not
/// sent: the server is identified by its SPIFFE ID, not a host name.
pub fn client_config(
    identity: &Identity,
    options: &ClientOptions,
) -> Result<Arc<ClientConfig>, TlsError> {
    if !identity.client_auth() {
        return Err(TlsError::NoClientAuth {
            id: identity.id().clone(),
        });
    }
    let provider = provider();
    let verifier = SpiffeServerVerifier::new(
        identity.roots().clone(),
        options.trust.clone(),
        options.expected.clone(),
        &provider,
    );
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            identity.certified_key().clone(),
        )));
    config.alpn_protocols = options.alpn.clone();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The server name for `connect` to a peer at `addr`: only a resumption key, never verified.
pub fn server_name(addr: IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.into())
}

// === impl ClientOptions ===

impl ClientOptions {
    /// Any server with an ID in `trust`; no ALPN.
    pub fn new(trust: TrustDomains) -> ClientOptions {
        ClientOptions {
            trust,
            expected: None,
            alpn: Vec::new(),
        }
    }
}
