//! Step 0 of TLS: the pod's own identity (its X.509-SVID), read from files.
//!
//! Takes the three files an SVID issuer writes (certificate chain, private key, trust bundle)
//! and passes on an [`Identity`]: a key that matches its leaf certificate, a leaf with exactly
//! one SPIFFE ID, a chain that verifies against the bundle and is valid now. The server and
//! client configs ([`super::server_config`], [`super::client_config`]) are built from it.
//!
//! [`Identity::load`] is a pure function of the files, so a reload can call it again and keep
//! the last good [`Identity`] when it fails.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_config::{SpiffeId, SpiffeIdError};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::provider;

/// Where the identity files are. See [`IdentityPaths::in_dir`] for the file names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityPaths {
    /// PEM certificate chain: the leaf (SVID) first, then any intermediates.
    pub chain: PathBuf,
    /// PEM private key of the leaf (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM trust bundle: one or more CA certificates; peers must chain to one of them.
    pub bundle: PathBuf,
}

/// The pod's verified X.509-SVID: certificate chain, private key and trust bundle.
///
/// Cheap to clone. `Debug` prints the SPIFFE ID and expiry, never key material.
#[derive(Clone)]
pub struct Identity {
    id: SpiffeId,
    not_after: i64,
    client_auth: bool,
    certified_key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
}

/// Why the identity files could not be used. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM or holds no item of the expected kind.
    #[error("{}: no valid PEM {what} found", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected ("certificate", "private key").
        what: &'static str,
        /// The PEM parser's error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate is not valid X.509 DER.
    #[error("{}: certificate {index} is not valid X.509", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
    },
    /// The private key cannot be used for signing (unsupported algorithm or malformed).
    #[error("{}: unsupported or malformed private key", path.display())]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("{}: private key does not match the leaf certificate in {}", key.display(), chain.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The chain file.
        chain: PathBuf,
    },
    /// The leaf certificate has no URI SAN.
    #[error("{}: leaf certificate has no SPIFFE ID (no URI SAN)", path.display())]
    NoSpiffeId {
        /// The chain file.
        path: PathBuf,
    },
    /// The leaf certificate has more than one URI SAN.
    #[error("{}: leaf certificate has {count} URI SANs, an SVID has exactly one", path.display())]
    MultipleUriSans {
        /// The chain file.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// The leaf's URI SAN is not a valid SPIFFE ID.
    #[error("{}: leaf certificate URI SAN {uri:?} is not a valid SPIFFE ID", path.display())]
    InvalidSpiffeId {
        /// The chain file.
        path: PathBuf,
        /// The URI SAN as written.
        uri: String,
        /// The parser's reason.
        #[source]
        source: SpiffeIdError,
    },
    /// The leaf lacks an extended key usage the sidecar needs (it both serves and connects).
    #[error("{}: leaf certificate lacks the {eku} extended key usage", path.display())]
    MissingEku {
        /// The chain file.
        path: PathBuf,
        /// `clientAuth` or `serverAuth`.
        eku: &'static str,
    },
    /// A certificate of the chain has expired.
    #[error("{}: certificate {index} expired at unix time {not_after}", path.display())]
    Expired {
        /// The chain file.
        path: PathBuf,
        /// Position of the certificate in the chain, from 0 (the leaf).
        index: usize,
        /// Its notAfter, unix seconds.
        not_after: i64,
    },
    /// A certificate of the chain is not valid yet.
    #[error("{}: certificate {index} is not valid before unix time {not_before}", path.display())]
    NotYetValid {
        /// The chain file.
        path: PathBuf,
        /// Position of the certificate in the chain, from 0 (the leaf).
        index: usize,
        /// Its notBefore, unix seconds.
        not_before: i64,
    },
    /// A bundle certificate cannot be used as a trust anchor.
    #[error("{}: certificate {index} cannot be used as a trust anchor", path.display())]
    TrustAnchor {
        /// The bundle file.
        path: PathBuf,
        /// Position of the certificate in the bundle, from 0.
        index: usize,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// No verifier can be built from the bundle.
    #[error("{}: trust bundle is unusable", path.display())]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The chain does not verify against the trust bundle.
    #[error("{}: certificate chain is not trusted by the bundle {}", chain.display(), bundle.display())]
    Untrusted {
        /// The chain file.
        chain: PathBuf,
        /// The bundle file.
        bundle: PathBuf,
        /// The verifier's reason.
        #[source]
        source: rustls::Error,
    },
}

// === impl IdentityError ===

impl IdentityError {
    /// A stable snake_case label for metrics (`palisade_reload_failures_total{kind=…}`).
    pub fn as_label(&self) -> &'static str {
        match self {
            IdentityError::Read { .. } => "read",
            IdentityError::Pem { .. } => "pem",
            IdentityError::Certificate { .. } => "certificate",
            IdentityError::UnsupportedKey { .. } => "unsupported_key",
            IdentityError::KeyMismatch { .. } => "key_mismatch",
            IdentityError::NoSpiffeId { .. } => "no_spiffe_id",
            IdentityError::MultipleUriSans { .. } => "multiple_uri_sans",
            IdentityError::InvalidSpiffeId { .. } => "invalid_spiffe_id",
            IdentityError::MissingEku { .. } => "missing_eku",
            IdentityError::Expired { .. } => "expired",
            IdentityError::NotYetValid { .. } => "not_yet_valid",
            IdentityError::TrustAnchor { .. } => "trust_anchor",
            IdentityError::Bundle { .. } => "bundle",
            IdentityError::Untrusted { .. } => "untrusted",
        }
    }
}

// === impl IdentityPaths ===

impl IdentityPaths {
    /// Where palisade looks by default (the CSI volume of the sidecar).
    pub const DEFAULT_DIR: &'static str = "/var/run/palisade/identity";
    /// Chain file name inside an identity directory.
    pub const CHAIN_FILE: &'static str = "tls.crt";
    /// Key file name inside an identity directory.
    pub const KEY_FILE: &'static str = "tls.key";
    /// Trust bundle file name inside an identity directory.
    pub const BUNDLE_FILE: &'static str = "ca.crt";

    /// The files `tls.crt` (chain), `tls.key` and `ca.crt` (bundle) inside `dir`.
    ///
    /// These are the names cert-manager's csi-driver-spiffe writes by default (and those of a
    /// Kubernetes TLS secret), so its volume can be mounted at [`IdentityPaths::DEFAULT_DIR`]
    /// as is. Other issuers: set the fields.
    pub fn in_dir(dir: impl AsRef<Path>) -> IdentityPaths {
        let dir = dir.as_ref();
        IdentityPaths {
            chain: dir.join(Self::CHAIN_FILE),
            key: dir.join(Self::KEY_FILE),
            bundle: dir.join(Self::BUNDLE_FILE),
        }
    }
}

impl Default for IdentityPaths {
    /// [`IdentityPaths::in_dir`] of [`IdentityPaths::DEFAULT_DIR`].
    fn default() -> Self {
        IdentityPaths::in_dir(Self::DEFAULT_DIR)
    }
}

// === impl Identity ===

impl Identity {
    /// Reads and verifies the identity files.
    ///
    /// Checks, in order: each file parses; the key matches the leaf; the leaf has exactly one
    /// URI SAN and it is a valid SPIFFE ID; the leaf carries the serverAuth extended key usage
    /// (every sidecar serves inbound); every chain certificate is valid now; the chain
    /// verifies against the bundle (also for client use when the leaf carries clientAuth).
    ///
    /// The clientAuth extended key usage is only needed to originate mutual TLS (outbound);
    /// [`Identity::client_auth`] says whether the leaf has it, and
    /// [`client_config`](super::client_config) refuses an identity without it. SVIDs from
    /// csi-driver-spiffe and SPIRE carry both.
    ///
    /// # Security
    ///
    /// The trust bundle decides which peers are accepted; the accepted *trust domains* are a
    /// separate setting ([`super::TrustDomains`]).
    pub fn load(paths: &IdentityPaths) -> Result<Identity, IdentityError> {
        let provider = provider();
        let chain = read_certificates(&paths.chain)?;
        let bundle = read_certificates(&paths.bundle)?;
        let key = read_key(&paths.key)?;

        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|source| IdentityError::UnsupportedKey {
                path: paths.key.clone(),
                source,
            })?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        certified_key
            .keys_match()
            .map_err(|_| IdentityError::KeyMismatch {
                key: paths.key.clone(),
                chain: paths.chain.clone(),
            })?;

        let (id, client_auth) = leaf_spiffe_id(&paths.chain, &chain[0])?;
        let not_after = check_validity(&paths.chain, &chain)?;
        let roots = trust_anchors(&paths.bundle, bundle)?;
        verify_chain(paths, &chain, &roots, &provider, client_auth)?;

        Ok(Identity {
            id,
            not_after,
            client_auth,
            certified_key: Arc::new(certified_key),
            roots,
        })
    }

    /// The pod's SPIFFE ID (the leaf's URI SAN).
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Whether the leaf carries the clientAuth extended key usage, which originating mutual
    /// TLS (outbound) needs.
    pub fn client_auth(&self) -> bool {
        self.client_auth
    }

    /// The trust domain of [`Identity::id`].
    pub fn trust_domain(&self) -> &str {
        self.id.trust_domain()
    }

    /// The earliest notAfter of the chain, unix seconds: when this identity stops working.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The certificate chain as presented to peers: the leaf first, then intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified_key.cert
    }

    /// The trust bundle as a rustls root store.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// Chain and signing key, as the TLS configs present them.
    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id.as_str())
            .field("not_after", &self.not_after)
            .field("chain_len", &self.certified_key.cert.len())
            .field("trust_anchors", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let pem = read(path)?;
    let pem_error = |source| IdentityError::Pem {
        path: path.to_owned(),
        what: "certificate",
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(pem_error(rustls_pki_types::pem::Error::NoItemsFound));
    }
    for (index, cert) in certs.iter().enumerate() {
        X509Certificate::from_der(cert).map_err(|_| IdentityError::Certificate {
            path: path.to_owned(),
            index,
        })?;
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| IdentityError::Pem {
        path: path.to_owned(),
        what: "private key",
        source,
    })
}

/// The single URI SAN of the leaf as a SPIFFE ID (the leaf must carry serverAuth), and
/// whether it also carries clientAuth.
fn leaf_spiffe_id(
    path: &Path,
    leaf: &CertificateDer<'_>,
) -> Result<(SpiffeId, bool), IdentityError> {
    let bad_cert = || IdentityError::Certificate {
        path: path.to_owned(),
        index: 0,
    };
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| bad_cert())?;
    let uris: Vec<&str> = match cert.subject_alternative_name().map_err(|_| bad_cert())? {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let uri = match uris.as_slice() {
        [] => {
            return Err(IdentityError::NoSpiffeId {
                path: path.to_owned(),
            });
        }
        [uri] => *uri,
        many => {
            return Err(IdentityError::MultipleUriSans {
                path: path.to_owned(),
                count: many.len(),
            });
        }
    };
    let id = SpiffeId::parse(uri).map_err(|source| IdentityError::InvalidSpiffeId {
        path: path.to_owned(),
        uri: uri.to_owned(),
        source,
    })?;

    let eku = cert.extended_key_usage().map_err(|_| bad_cert())?;
    let (client_auth, server_auth) = eku.map_or((false, false), |eku| {
        (eku.value.client_auth, eku.value.server_auth)
    });
    if !server_auth {
        return Err(IdentityError::MissingEku {
            path: path.to_owned(),
            eku: "serverAuth",
        });
    }
    Ok((id, client_auth))
}

/// Every chain certificate must be valid now; returns the earliest notAfter.
fn check_validity(path: &Path, chain: &[CertificateDer<'_>]) -> Result<i64, IdentityError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut earliest = i64::MAX;
    for (index, der) in chain.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Certificate {
            path: path.to_owned(),
            index,
        })?;
        let validity = cert.validity();
        let not_before = validity.not_before.timestamp();
        let not_after = validity.not_after.timestamp();
        if now < not_before {
            return Err(IdentityError::NotYetValid {
                path: path.to_owned(),
                index,
                not_before,
            });
        }
        if now > not_after {
            return Err(IdentityError::Expired {
                path: path.to_owned(),
                index,
                not_after,
            });
        }
        earliest = earliest.min(not_after);
    }
    Ok(earliest)
}

fn trust_anchors(
    path: &Path,
    bundle: Vec<CertificateDer<'static>>,
) -> Result<Arc<RootCertStore>, IdentityError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in bundle.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|source| IdentityError::TrustAnchor {
                path: path.to_owned(),
                index,
                source,
            })?;
    }
    Ok(Arc::new(roots))
}

/// The chain must verify against the bundle for serverAuth, and for clientAuth when the leaf
/// carries it.
fn verify_chain(
    paths: &IdentityPaths,
    chain: &[CertificateDer<'static>],
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    client_auth: bool,
) -> Result<(), IdentityError> {
    let untrusted = |source| IdentityError::Untrusted {
        chain: paths.chain.clone(),
        bundle: paths.bundle.clone(),
        source,
    };
    let now = UnixTime::now();
    let (leaf, intermediates) = (&chain[0], &chain[1..]);

    if client_auth {
        let as_client =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|source| IdentityError::Bundle {
                    path: paths.bundle.clone(),
                    source,
                })?;
        as_client
            .verify_client_cert(leaf, intermediates, now)
            .map_err(untrusted)?;
    }

    let parsed = ParsedCertificate::try_from(leaf).map_err(untrusted)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )
    .map_err(untrusted)
}
