//! Why a handshake failed: one small enum for logs and metric labels.
//!
//! Takes the `rustls::Error` (or the `io::Error` tokio-rustls wraps it in) of a failed
//! handshake and passes on a [`HandshakeFailure`]. The verifiers in [`super::verify`] put their
//! own reasons inside the rustls error so that they come back out here unchanged.

use std::io;
use std::sync::Arc;

use rustls::{CertificateError, InvalidMessage, OtherError};

/// Why a handshake failed, small enough to be a metric label ([`HandshakeFailure::as_label`]).
///
/// The verifiers of [`super::verify`] report their own rejections inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`;
/// [`HandshakeFailure::of`] recovers the reason from any rustls error and
/// [`HandshakeFailure::of_io`] from the `io::Error` tokio-rustls returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HandshakeFailure {
    /// The peer presented no certificate.
    #[error("peer presented no certificate")]
    NoCertificate,
    /// The chain does not lead to a trust anchor of the bundle (unknown or rogue CA, bad
    /// signature).
    #[error("peer certificate is not trusted by the bundle")]
    Untrusted,
    /// A certificate of the chain has expired.
    #[error("peer certificate has expired")]
    Expired,
    /// A certificate of the chain is not valid yet.
    #[error("peer certificate is not valid yet")]
    NotYetValid,
    /// Any other certificate defect (bad encoding, CA as leaf, unsupported algorithm).
    #[error("peer certificate is malformed or unusable")]
    BadCertificate,
    /// The leaf has no URI SAN (DNS-only or CN-only certificates).
    #[error("peer certificate has no SPIFFE ID")]
    NoSpiffeId,
    /// The leaf has more than one URI SAN.
    #[error("peer certificate has more than one URI SAN")]
    MultipleUriSans,
    /// The URI SAN is not a valid SPIFFE ID as written (userinfo, upper case, port, …).
    #[error("peer certificate URI SAN is not a valid SPIFFE ID")]
    InvalidSpiffeId,
    /// The SPIFFE ID belongs to a trust domain that is not accepted.
    #[error("peer SPIFFE ID is in a foreign trust domain")]
    ForeignTrustDomain,
    /// The client certificate lacks the clientAuth extended key usage.
    #[error("peer certificate lacks the clientAuth extended key usage")]
    MissingClientAuthEku,
    /// The server certificate lacks the serverAuth extended key usage.
    #[error("peer certificate lacks the serverAuth extended key usage")]
    MissingServerAuthEku,
    /// The server's SPIFFE ID is valid but not the one this connection expects.
    #[error("peer SPIFFE ID is not the expected one")]
    UnexpectedPeerId,
    /// The peer aborted the handshake with an alert (it refused us).
    #[error("peer aborted the handshake")]
    PeerAlert,
    /// The peer does not speak TLS (e.g. plaintext HTTP to a strict mTLS port).
    #[error("peer does not speak tls")]
    NotTls,
    /// Any other TLS failure (no common version, cipher suite or ALPN protocol, bad message).
    #[error("tls protocol failure")]
    Protocol,
    /// The transport failed (reset, early close, timeout) before TLS said anything.
    #[error("transport failed during the handshake")]
    Io,
}

// === impl HandshakeFailure ===

impl HandshakeFailure {
    /// A stable snake_case label for metrics (`reason="foreign_trust_domain"`).
    pub fn as_label(&self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Untrusted => "untrusted",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::NotYetValid => "not_yet_valid",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::NoSpiffeId => "no_spiffe_id",
            HandshakeFailure::MultipleUriSans => "multiple_uri_sans",
            HandshakeFailure::InvalidSpiffeId => "invalid_spiffe_id",
            HandshakeFailure::ForeignTrustDomain => "foreign_trust_domain",
            HandshakeFailure::MissingClientAuthEku => "missing_client_auth_eku",
            HandshakeFailure::MissingServerAuthEku => "missing_server_auth_eku",
            HandshakeFailure::UnexpectedPeerId => "unexpected_peer_id",
            HandshakeFailure::PeerAlert => "peer_alert",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Io => "io",
        }
    }

    /// The reason behind a rustls error.
    pub fn of(error: &rustls::Error) -> HandshakeFailure {
        match error {
            rustls::Error::NoCertificatesPresented => HandshakeFailure::NoCertificate,
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::Other(OtherError(inner)) => inner
                    .downcast_ref::<HandshakeFailure>()
                    .copied()
                    .unwrap_or(HandshakeFailure::BadCertificate),
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    HandshakeFailure::Untrusted
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    HandshakeFailure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    HandshakeFailure::NotYetValid
                }
                _ => HandshakeFailure::BadCertificate,
            },
            rustls::Error::AlertReceived(_) => HandshakeFailure::PeerAlert,
            rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
                HandshakeFailure::NotTls
            }
            _ => HandshakeFailure::Protocol,
        }
    }

    /// The reason behind an error from a tokio-rustls `accept` or `connect`.
    pub fn of_io(error: &io::Error) -> HandshakeFailure {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map_or(HandshakeFailure::Io, HandshakeFailure::of)
    }

    /// This reason as the rustls error a verifier returns (recoverable with
    /// [`HandshakeFailure::of`]).
    pub(super) fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [HandshakeFailure; 16] = [
        HandshakeFailure::NoCertificate,
        HandshakeFailure::Untrusted,
        HandshakeFailure::Expired,
        HandshakeFailure::NotYetValid,
        HandshakeFailure::BadCertificate,
        HandshakeFailure::NoSpiffeId,
        HandshakeFailure::MultipleUriSans,
        HandshakeFailure::InvalidSpiffeId,
        HandshakeFailure::ForeignTrustDomain,
        HandshakeFailure::MissingClientAuthEku,
        HandshakeFailure::MissingServerAuthEku,
        HandshakeFailure::UnexpectedPeerId,
        HandshakeFailure::PeerAlert,
        HandshakeFailure::NotTls,
        HandshakeFailure::Protocol,
        HandshakeFailure::Io,
    ];

    #[test]
    fn own_rejections_survive_the_rustls_error() {
        for failure in ALL {
            let error = failure.into_rustls();
            assert_eq!(HandshakeFailure::of(&error), failure);
            let io = io::Error::new(io::ErrorKind::InvalidData, error);
            assert_eq!(HandshakeFailure::of_io(&io), failure);
        }
    }

    #[test]
    fn labels_are_distinct_snake_case() {
        let mut labels: Vec<&str> = ALL.iter().map(HandshakeFailure::as_label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ALL.len());
        for label in labels {
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
        }
    }

    #[test]
    fn classifies_rustls_errors() {
        let table = [
            (
                rustls::Error::NoCertificatesPresented,
                HandshakeFailure::NoCertificate,
            ),
            (
                CertificateError::UnknownIssuer.into(),
                HandshakeFailure::Untrusted,
            ),
            (
                CertificateError::BadSignature.into(),
                HandshakeFailure::Untrusted,
            ),
            (CertificateError::Expired.into(), HandshakeFailure::Expired),
            (
                CertificateError::NotValidYet.into(),
                HandshakeFailure::NotYetValid,
            ),
            (
                CertificateError::BadEncoding.into(),
                HandshakeFailure::BadCertificate,
            ),
            (
                CertificateError::Other(OtherError(Arc::new(io::Error::other("x")))).into(),
                HandshakeFailure::BadCertificate,
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
                HandshakeFailure::PeerAlert,
            ),
            (
                rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType),
                HandshakeFailure::NotTls,
            ),
            (
                rustls::Error::NoApplicationProtocol,
                HandshakeFailure::Protocol,
            ),
        ];
        for (error, expected) in table {
            assert_eq!(HandshakeFailure::of(&error), expected, "{error:?}");
        }
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(HandshakeFailure::of_io(&eof), HandshakeFailure::Io);
    }
}
