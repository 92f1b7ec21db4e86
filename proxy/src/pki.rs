//! A local certificate authority that issues SPIFFE X.509-SVIDs: the identities of
//! `palisade demo`'s local mesh, and of the tests and benches.
//!
//! Takes a trust domain and SPIFFE IDs and passes on PEM files in the layout
//! [`crate::tls::Identity::load`] reads ([`write_identity`]).
//!
//! # Not for production issuance
//!
//! Keys live in memory, there is no revocation, no key protection and no audit. In a cluster,
//! SVIDs come from cert-manager's csi-driver-spiffe or SPIRE. This module can also mint the
//! malformed certificates (several URI SANs, DNS-only, expired, missing EKU) that palisade
//! must refuse, which a real issuer never should.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::tls::IdentityPaths;

/// A certificate authority for one trust domain: a root, or an intermediate below one.
pub struct Ca {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    /// PEM of this CA's certificate if it is an intermediate, then of its parents below the
    /// root: what follows a leaf in a chain file.
    intermediates_pem: String,
    /// PEM of the root certificate: the trust bundle.
    root_pem: String,
}

/// How to issue an SVID. [`Default`] is a well-formed SVID valid for 24 hours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvidOptions {
    /// Write the SPIFFE ID as a URI SAN. `false` issues DNS-only or CN-only certificates.
    pub uri_san: bool,
    /// More URI SANs after the SPIFFE ID (any string; an SVID has none).
    pub extra_uri_sans: Vec<String>,
    /// DNS name SANs. palisade ignores them; they let tools that check host names (curl,
    /// browsers) talk to a palisade server, e.g. `localhost`.
    pub dns_names: Vec<String>,
    /// IP address SANs, ignored by palisade like [`SvidOptions::dns_names`] (e.g. 127.0.0.1
    /// for `curl https://127.0.0.1:…`).
    pub ip_addresses: Vec<IpAddr>,
    /// Subject common name; the subject is empty without one.
    pub common_name: Option<String>,
    /// Include the clientAuth extended key usage.
    pub client_auth: bool,
    /// Include the serverAuth extended key usage.
    pub server_auth: bool,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// An issued SVID: certificate chain and private key, PEM. `Debug` omits the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Svid {
    chain_pem: String,
    key_pem: String,
}

/// Issuing or writing certificates failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not build a key or certificate (e.g. a SAN that is not IA5).
    #[error("cannot generate certificate")]
    Generate(#[source] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Validity of CAs made here.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Back-dating of fresh certificates, for peers whose clocks run a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Writes an identity directory: `tls.crt` (chain), `tls.key` (mode 0600) and `ca.crt`
/// (bundle), as named by [`IdentityPaths::in_dir`]. Creates `dir` if needed. Each file is
/// written to a temporary name and renamed into place, so a reader never sees half a file.
pub fn write_identity(
    dir: &Path,
    svid: &Svid,
    bundle_pem: &str,
) -> Result<IdentityPaths, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let paths = IdentityPaths::in_dir(dir);
    write_file(&paths.chain, svid.chain_pem.as_bytes(), false)?;
    write_file(&paths.key, svid.key_pem.as_bytes(), true)?;
    write_file(&paths.bundle, bundle_pem.as_bytes(), false)?;
    Ok(paths)
}

// === impl Ca ===

impl Ca {
    /// A new root CA (ECDSA P-256, valid for a year) for `trust_domain`.
    ///
    /// The trust domain is not validated, so tests can mint IDs palisade must refuse.
    pub fn new(trust_domain: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let params = ca_params(&format!("palisade local root CA {trust_domain}"));
        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        Ok(Ca {
            trust_domain: trust_domain.to_owned(),
            issuer: Issuer::new(params, key),
            intermediates_pem: String::new(),
            root_pem: cert.pem(),
        })
    }

    /// A new intermediate CA signed by this one; its SVIDs' chains include it.
    pub fn intermediate(&self) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let params = ca_params(&format!(
            "palisade local intermediate CA {}",
            self.trust_domain
        ));
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::Generate)?;
        Ok(Ca {
            trust_domain: self.trust_domain.clone(),
            issuer: Issuer::new(params, key),
            intermediates_pem: format!("{}{}", cert.pem(), self.intermediates_pem),
            root_pem: self.root_pem.clone(),
        })
    }

    /// The trust domain this CA was made for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate, PEM: the trust bundle for peers of this CA. Concatenate the
    /// bundles of several CAs to trust them all (CA rotation with overlap).
    pub fn bundle_pem(&self) -> &str {
        &self.root_pem
    }

    /// Issues an SVID for `spiffe_id` (written verbatim as the URI SAN, even if it is not a
    /// valid SPIFFE ID) with a fresh ECDSA P-256 key.
    pub fn issue_svid(&self, spiffe_id: &str, options: &SvidOptions) -> Result<Svid, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &options.common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let uris = options
            .uri_san
            .then_some(spiffe_id)
            .into_iter()
            .chain(options.extra_uri_sans.iter().map(String::as_str));
        for uri in uris {
            let uri = Ia5String::try_from(uri).map_err(PkiError::Generate)?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        for name in &options.dns_names {
            let name = Ia5String::try_from(name.as_str()).map_err(PkiError::Generate)?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &options.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if options.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if options.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.not_before = options.not_before.into();
        params.not_after = options.not_after.into();
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::Generate)?;
        Ok(Svid {
            chain_pem: format!("{}{}", cert.pem(), self.intermediates_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("intermediate", &!self.intermediates_pem.is_empty())
            .finish_non_exhaustive()
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "palisade");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + CA_VALIDITY).into();
    params
}

// === impl SvidOptions ===

impl SvidOptions {
    /// A well-formed SVID valid from a few minutes ago for `lifetime`.
    pub fn valid_for(lifetime: Duration) -> SvidOptions {
        let now = SystemTime::now();
        SvidOptions {
            uri_san: true,
            extra_uri_sans: Vec::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            common_name: None,
            client_auth: true,
            server_auth: true,
            not_before: now - CLOCK_SKEW,
            not_after: now + lifetime,
        }
    }

    /// A well-formed SVID that expired an hour ago.
    pub fn expired() -> SvidOptions {
        let now = SystemTime::now();
        SvidOptions {
            not_before: now - Duration::from_secs(2 * 60 * 60),
            not_after: now - Duration::from_secs(60 * 60),
            ..SvidOptions::default()
        }
    }
}

impl Default for SvidOptions {
    fn default() -> Self {
        SvidOptions::valid_for(Duration::from_secs(24 * 60 * 60))
    }
}

// === impl Svid ===

impl Svid {
    /// The certificate chain, PEM: leaf first, then intermediates.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let error = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    // A stale temporary file would keep its old mode: start from none.
    let _ = std::fs::remove_file(&tmp);
    let mut file = options.open(&tmp).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)
}
