//! Step 2b of a connection: who is the peer? SPIFFE verification of certificates.
//!
//! Takes the certificate chain a peer presents during the handshake and either rejects it with
//! a typed [`HandshakeFailure`] or lets the handshake finish; afterwards [`peer_id`] passes on
//! the peer's [`SpiffeId`].
//!
//! Both verifiers first run rustls's webpki path validation (chain to the trust bundle, validity
//! period, signatures, key usage), then the SPIFFE rules: the leaf has exactly one URI SAN, it
//! parses as a SPIFFE ID exactly as written, its trust domain is one of the accepted ones, and
//! the leaf explicitly carries the extended key usage for its role (clientAuth for peers
//! connecting to us, serverAuth for peers we connect to). DNS names and the subject CN play no
//! part.

use std::sync::Arc;

use palisade_config::{SpiffeId, SpiffeIdError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::{HandshakeFailure, TlsError};

/// The trust domains whose SPIFFE IDs are accepted from peers (e.g. `cluster.local`).
///
/// Never empty. Each entry is a valid SPIFFE trust domain (lower-case, no port or userinfo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustDomains(Arc<[String]>);

/// A trust domain list that cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TrustDomainError {
    /// No trust domain was given: no peer could ever be accepted.
    #[error("no trust domain given")]
    Empty,
    /// An entry is not a valid SPIFFE trust domain.
    #[error("invalid trust domain {domain:?}")]
    Invalid {
        /// The entry as given.
        domain: String,
        /// Why the SPIFFE parser refused it.
        #[source]
        source: SpiffeIdError,
    },
    /// An entry parses only as something else (it has a path, or is not in canonical form).
    #[error("trust domain {domain:?} is not in canonical form (lower-case name, no path)")]
    NotCanonical {
        /// The entry as given.
        domain: String,
    },
}

/// Verifies client certificates on the inbound server: webpki chain checks, then SPIFFE.
///
/// A client certificate is mandatory. No CA names are sent as hints: in a mesh every peer has
/// exactly one SVID, and the bundle's subject names stay private.
///
/// # Security
///
/// A peer is accepted only if all hold: the chain verifies to a bundle certificate and every
/// certificate is within its validity period (webpki); the leaf has exactly one URI SAN; that
/// SAN parses as a SPIFFE ID and is already in canonical form (no case folding or other
/// normalization is applied, so `spiffe://CLUSTER.LOCAL/…` is refused, not folded); its trust
/// domain is in the accepted set by exact comparison (`cluster.local.evil.com` and
/// `cluster.local@evil` are not `cluster.local`); the leaf's extended key usage extension
/// exists and lists clientAuth (a leaf without the extension is refused, although webpki alone
/// would accept it). DNS SANs and the subject are ignored.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    trust: TrustDomains,
}

/// Verifies server certificates on outbound connections: webpki chain checks, then SPIFFE
/// instead of DNS names, and optionally one exact expected SPIFFE ID.
///
/// # Security
///
/// The same rules as [`SpiffeClientVerifier`] with serverAuth in place of clientAuth. The
/// `ServerName` given to `connect` is not checked at all: without `expected`, any server of an
/// accepted trust domain is accepted, so set `expected` wherever the destination's identity
/// is known.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    trust: TrustDomains,
    expected: Option<SpiffeId>,
}

/// The role a certificate must be valid for.
#[derive(Clone, Copy, Debug)]
enum Role {
    Client,
    Server,
}

/// The verified peer's SPIFFE ID once the handshake is done, from either side of a connection.
///
/// Pass a `&rustls::ServerConnection` or `&rustls::ClientConnection` (they deref to
/// [`CommonState`]); with tokio-rustls, `stream.get_ref().1`. Returns `None` before the
/// handshake completes or if the peer sent no certificate.
///
/// # Security
///
/// This only reads the URI SAN; it relies on the connection's verifier having checked chain,
/// trust domain and key usage. Use it only with configs built by this module. On a resumed
/// session the certificate is the one verified in the original handshake.
pub fn peer_id(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let uri = single_uri_san(&cert).ok()?;
    SpiffeId::parse(uri).ok()
}

// === impl TrustDomains ===

impl TrustDomains {
    /// Validates and collects trust domains; duplicates are dropped.
    pub fn new<I, S>(domains: I) -> Result<TrustDomains, TrustDomainError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut accepted: Vec<String> = Vec::new();
        for domain in domains {
            let domain = domain.as_ref();
            let probe = format!("spiffe://{domain}/_");
            match SpiffeId::parse(&probe) {
                Ok(id) if id.trust_domain() == domain => {}
                Ok(_) => {
                    return Err(TrustDomainError::NotCanonical {
                        domain: domain.to_owned(),
                    });
                }
                Err(source) => {
                    return Err(TrustDomainError::Invalid {
                        domain: domain.to_owned(),
                        source,
                    });
                }
            }
            if !accepted.iter().any(|d| d == domain) {
                accepted.push(domain.to_owned());
            }
        }
        if accepted.is_empty() {
            return Err(TrustDomainError::Empty);
        }
        Ok(TrustDomains(accepted.into()))
    }

    /// Only the trust domain of `id`.
    pub fn of(id: &SpiffeId) -> TrustDomains {
        TrustDomains(vec![id.trust_domain().to_owned()].into())
    }

    /// Whether `trust_domain` is accepted. Exact, case-sensitive comparison.
    pub fn contains(&self, trust_domain: &str) -> bool {
        self.0.iter().any(|d| d == trust_domain)
    }

    /// The accepted trust domains, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

// === impl SpiffeClientVerifier ===

impl SpiffeClientVerifier {
    /// A verifier for peers chaining to `roots` with an ID in `trust`.
    pub fn new(
        roots: Arc<RootCertStore>,
        trust: TrustDomains,
        provider: &Arc<CryptoProvider>,
    ) -> Result<SpiffeClientVerifier, TlsError> {
        let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .clear_root_hint_subjects()
            .build()
            .map_err(TlsError::Verifier)?;
        Ok(SpiffeClientVerifier { webpki, trust })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| purpose_error(e, Role::Client))?;
        spiffe_id(end_entity, &self.trust, Role::Client).map_err(HandshakeFailure::into_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

// === impl SpiffeServerVerifier ===

impl SpiffeServerVerifier {
    /// A verifier for servers chaining to `roots` with an ID in `trust` and, if `expected` is
    /// given, exactly that ID.
    pub fn new(
        roots: Arc<RootCertStore>,
        trust: TrustDomains,
        expected: Option<SpiffeId>,
        provider: &CryptoProvider,
    ) -> SpiffeServerVerifier {
        SpiffeServerVerifier {
            roots,
            algorithms: provider.signature_verification_algorithms,
            trust,
            expected,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    /// The server name is not checked: the SPIFFE ID is the server's name.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )
        .map_err(|e| purpose_error(e, Role::Server))?;
        let id = spiffe_id(end_entity, &self.trust, Role::Server)
            .map_err(HandshakeFailure::into_rustls)?;
        if self
            .expected
            .as_ref()
            .is_some_and(|expected| *expected != id)
        {
            return Err(HandshakeFailure::UnexpectedPeerId.into_rustls());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// webpki reports a missing EKU as `InvalidPurpose`, which does not say which role; name it.
fn purpose_error(error: rustls::Error, role: Role) -> rustls::Error {
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => role.missing_eku().into_rustls(),
        other => other,
    }
}

/// The SPIFFE rules for a leaf that already passed webpki validation.
fn spiffe_id(
    leaf: &CertificateDer<'_>,
    trust: &TrustDomains,
    role: Role,
) -> Result<SpiffeId, HandshakeFailure> {
    let (_, cert) =
        X509Certificate::from_der(leaf).map_err(|_| HandshakeFailure::BadCertificate)?;
    let uri = single_uri_san(&cert)?;
    let id = SpiffeId::parse(uri).map_err(|_| HandshakeFailure::InvalidSpiffeId)?;
    // Accept only the canonical form: a parser that normalized (e.g. lower-cased) would
    // otherwise let a differently written ID through as someone else's.
    if id.as_str() != uri {
        return Err(HandshakeFailure::InvalidSpiffeId);
    }
    if !trust.contains(id.trust_domain()) {
        return Err(HandshakeFailure::ForeignTrustDomain);
    }
    let eku = cert
        .extended_key_usage()
        .map_err(|_| HandshakeFailure::BadCertificate)?;
    let present = eku.is_some_and(|eku| match role {
        Role::Client => eku.value.client_auth,
        Role::Server => eku.value.server_auth,
    });
    if !present {
        return Err(role.missing_eku());
    }
    Ok(id)
}

/// The one URI SAN of a certificate.
fn single_uri_san<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a str, HandshakeFailure> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| HandshakeFailure::BadCertificate)?;
    let mut uris = san.into_iter().flat_map(|san| {
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
    });
    match (uris.next(), uris.next()) {
        (None, _) => Err(HandshakeFailure::NoSpiffeId),
        (Some(uri), None) => Ok(uri),
        (Some(_), Some(_)) => Err(HandshakeFailure::MultipleUriSans),
    }
}

// === impl Role ===

impl Role {
    fn missing_eku(self) -> HandshakeFailure {
        match self {
            Role::Client => HandshakeFailure::MissingClientAuthEku,
            Role::Server => HandshakeFailure::MissingServerAuthEku,
        }
    }
}
