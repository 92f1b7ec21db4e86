//! Peer identity step: SPIFFE IDs and the principal patterns rules are written with.
//!
//! Takes in the single URI SAN of a peer's leaf certificate (from the proxy's TLS step) or a
//! principal string from a policy document, and passes on a validated [`SpiffeId`] or
//! [`PrincipalPattern`]. `authorize` then asks [`PrincipalPattern::matches`].
//!
//! The accepted syntax is the SPIFFE ID specification's, with no leniency:
//! `spiffe://<trust-domain>/<segment>(/<segment>)*` where
//!
//! - the scheme is exactly `spiffe` (lower-case);
//! - the trust domain is 1..=255 bytes of `a-z 0-9 . - _` (so no upper case, port,
//!   userinfo or percent-encoding);
//! - the path is non-empty, each segment is non-empty, is not `.` or `..`, and is made of
//!   `A-Z a-z 0-9 . - _` (so no query, fragment, percent-encoding or trailing slash);
//! - the whole ID is at most 2048 bytes.
//!
//! `spiffe://cluster.local.evil.com/...` parses: it is simply a *different* trust domain from
//! `cluster.local`, and trust domains are compared for equality, never by prefix.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID accepted, in bytes (SPIFFE ID specification, section 2.3).
pub const MAX_ID_LEN: usize = 2048;

/// The longest trust domain accepted, in bytes (SPIFFE ID specification, section 2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";

/// A parsed SPIFFE ID: `spiffe://<trust-domain>/<path>`.
///
/// Lower-case trust domain; no port, userinfo, query, fragment or percent-encoding; path
/// non-empty with no empty or dot segments. Two IDs are equal exactly when their strings are
/// equal (the syntax admits a single spelling of each ID, so no case folding is needed).
///
/// # Security
///
/// The only way to build a `SpiffeId` is [`SpiffeId::parse`] (or [`FromStr`]), so holding one
/// proves the string was checked. Compare trust domains with `==` on
/// [`SpiffeId::trust_domain`]; never with a prefix test.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: String,
    /// Byte offset of the `/` that starts the path (the end of the trust domain).
    path_start: usize,
}

/// Why a string is not a valid SPIFFE ID or principal pattern.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("empty SPIFFE ID")]
    Empty,
    /// The string is longer than [`MAX_ID_LEN`].
    #[error("SPIFFE ID is {len} bytes long, more than the maximum of {MAX_ID_LEN}")]
    TooLong {
        /// Length of the rejected string in bytes.
        len: usize,
    },
    /// The string does not start with `spiffe://` (the scheme is case-sensitive here).
    #[error("SPIFFE ID must start with \"spiffe://\" (lower-case scheme)")]
    Scheme,
    /// Nothing between `spiffe://` and the path.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("trust domain is {len} bytes long, more than the maximum of {MAX_TRUST_DOMAIN_LEN}")]
    TrustDomainTooLong {
        /// Length of the rejected trust domain in bytes.
        len: usize,
    },
    /// The authority has userinfo (`spiffe://user@td/...`).
    #[error("trust domain must not contain userinfo ('@')")]
    Userinfo,
    /// The authority has a port (`spiffe://td:443/...`).
    #[error("trust domain must not contain a port (':')")]
    Port,
    /// The trust domain has an upper-case letter.
    #[error("trust domain must be lower-case, found {found:?}")]
    UpperCaseTrustDomain {
        /// The offending character.
        found: char,
    },
    /// The trust domain has a character outside `a-z 0-9 . - _`.
    #[error(
        "trust domain characters are limited to lower-case letters, digits, '.', '-' and '_', found {found:?}"
    )]
    TrustDomainChar {
        /// The offending character.
        found: char,
    },
    /// The string has a `?`.
    #[error("SPIFFE ID must not contain a query ('?')")]
    Query,
    /// The string has a `#`.
    #[error("SPIFFE ID must not contain a fragment ('#')")]
    Fragment,
    /// The string has a `%`.
    #[error("SPIFFE ID must not contain percent-encoding ('%')")]
    PercentEncoded,
    /// The path is missing or is only `/`.
    #[error(
        "SPIFFE ID has no path (expected e.g. spiffe://<trust-domain>/ns/<namespace>/sa/<account>)"
    )]
    MissingPath,
    /// The path has an empty segment (`//`).
    #[error("path has an empty segment ('//')")]
    EmptySegment,
    /// The path ends with `/`.
    #[error("path must not end with '/'")]
    TrailingSlash,
    /// The path has a `.` or `..` segment.
    #[error("path must not contain '.' or '..' segments")]
    DotSegment,
    /// A path segment has a character outside `A-Z a-z 0-9 . - _`.
    #[error("path characters are limited to letters, digits, '.', '-' and '_', found {found:?}")]
    PathChar {
        /// The offending character.
        found: char,
    },
    /// A principal pattern uses `*` other than as `spiffe://<td>/*` or
    /// `spiffe://<td>/ns/<namespace>/*`.
    #[error(
        "'*' is only allowed as spiffe://<trust-domain>/* (whole trust domain) or spiffe://<trust-domain>/ns/<namespace>/* (whole namespace)"
    )]
    Wildcard,
}

/// A principal in a rule: an exact ID, `spiffe://td/ns/<ns>/*`, or `spiffe://td/*`.
///
/// # Security
///
/// Trust domains and namespaces are compared for equality: `spiffe://cluster.local/*` does
/// not match `spiffe://cluster.local.evil.com/...`, and `spiffe://td/ns/web/*` does not match
/// `spiffe://td/ns/web-admin/...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalPattern {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// `spiffe://<trust_domain>/ns/<namespace>/*`: every ID in `trust_domain` whose path starts
    /// with `/ns/<namespace>/` (followed by one or more segments, e.g. `/sa/<account>`).
    Namespace {
        /// The trust domain, e.g. `cluster.local`.
        trust_domain: String,
        /// The Kubernetes namespace, e.g. `web`.
        namespace: String,
    },
    /// `spiffe://<trust-domain>/*`: every ID in this trust domain.
    TrustDomain(String),
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Parses and validates a SPIFFE ID (see the module documentation for the exact syntax).
    ///
    /// Errors name the first problem found, reading left to right.
    pub fn parse(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: s.len() });
        }
        let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(SpiffeIdError::Scheme)?;
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        check_trust_domain(trust_domain)?;
        check_path(path)?;
        Ok(SpiffeId {
            id: s.to_owned(),
            path_start: SCHEME_PREFIX.len() + trust_domain.len(),
        })
    }

    /// The whole ID, e.g. `spiffe://cluster.local/ns/web/sa/frontend`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME_PREFIX.len()..self.path_start]
    }

    /// The path, starting with `/`, e.g. `/ns/web/sa/frontend`.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// The namespace when the path has the Kubernetes form `/ns/<ns>/sa/<sa>` exactly.
    pub fn namespace(&self) -> Option<&str> {
        self.kubernetes_parts().map(|(ns, _)| ns)
    }

    /// The service account when the path has the Kubernetes form `/ns/<ns>/sa/<sa>` exactly.
    pub fn service_account(&self) -> Option<&str> {
        self.kubernetes_parts().map(|(_, sa)| sa)
    }

    fn kubernetes_parts(&self) -> Option<(&str, &str)> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// Whether the path is `/ns/<namespace>/` followed by at least one segment.
    fn is_in_namespace(&self, namespace: &str) -> bool {
        self.path()
            .strip_prefix("/ns/")
            .and_then(|rest| rest.strip_prefix(namespace))
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

// === impl PrincipalPattern ===

impl PrincipalPattern {
    /// Parses a principal as written in a rule.
    ///
    /// `*` is allowed only as the whole last segment of `spiffe://<td>/*` or
    /// `spiffe://<td>/ns/<namespace>/*`; any other use is [`SpiffeIdError::Wildcard`].
    /// `unauthenticated` is not a SPIFFE pattern: the policy document layer handles it.
    pub fn parse(s: &str) -> Result<PrincipalPattern, SpiffeIdError> {
        if !s.contains('*') {
            return SpiffeId::parse(s).map(PrincipalPattern::Exact);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: s.len() });
        }
        let Some(rest) = s.strip_prefix(SCHEME_PREFIX) else {
            // `SPIFFE://td/*` is a scheme mistake; a bare `*` is a wildcard mistake.
            return Err(if s.contains("://") {
                SpiffeIdError::Scheme
            } else {
                SpiffeIdError::Wildcard
            });
        };
        let rest = rest.strip_suffix("/*").ok_or(SpiffeIdError::Wildcard)?;
        if rest.contains('*') {
            return Err(SpiffeIdError::Wildcard);
        }
        if !rest.contains('/') {
            check_trust_domain(rest)?;
            return Ok(PrincipalPattern::TrustDomain(rest.to_owned()));
        }
        // `spiffe://td/ns/<ns>` must itself be a valid ID; then only its shape is checked.
        let id = SpiffeId::parse(&s[..s.len() - "/*".len()])?;
        let mut segments = id.path()[1..].split('/');
        match (segments.next(), segments.next(), segments.next()) {
            (Some("ns"), Some(namespace), None) => Ok(PrincipalPattern::Namespace {
                trust_domain: id.trust_domain().to_owned(),
                namespace: namespace.to_owned(),
            }),
            _ => Err(SpiffeIdError::Wildcard),
        }
    }

    /// Whether `id` is one of the principals this pattern names.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            PrincipalPattern::Exact(exact) => exact == id,
            PrincipalPattern::Namespace {
                trust_domain,
                namespace,
            } => id.trust_domain() == trust_domain && id.is_in_namespace(namespace),
            PrincipalPattern::TrustDomain(trust_domain) => id.trust_domain() == trust_domain,
        }
    }

    /// The trust domain this pattern is confined to.
    pub fn trust_domain(&self) -> &str {
        match self {
            PrincipalPattern::Exact(id) => id.trust_domain(),
            PrincipalPattern::Namespace { trust_domain, .. } => trust_domain,
            PrincipalPattern::TrustDomain(trust_domain) => trust_domain,
        }
    }

    /// True if every ID matched by `other` is matched by `self` (for shadowing warnings).
    ///
    /// Every pattern covers itself.
    pub fn covers(&self, other: &PrincipalPattern) -> bool {
        if self.trust_domain() != other.trust_domain() {
            return false;
        }
        match (self, other) {
            (PrincipalPattern::TrustDomain(_), _) => true,
            (
                PrincipalPattern::Namespace { namespace, .. },
                PrincipalPattern::Namespace {
                    namespace: other_namespace,
                    ..
                },
            ) => namespace == other_namespace,
            (PrincipalPattern::Namespace { .. }, PrincipalPattern::Exact(id)) => self.matches(id),
            (PrincipalPattern::Exact(id), PrincipalPattern::Exact(other_id)) => id == other_id,
            _ => false,
        }
    }
}

impl fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalPattern::Exact(id) => write!(f, "{id}"),
            PrincipalPattern::Namespace {
                trust_domain,
                namespace,
            } => write!(f, "{SCHEME_PREFIX}{trust_domain}/ns/{namespace}/*"),
            PrincipalPattern::TrustDomain(trust_domain) => {
                write!(f, "{SCHEME_PREFIX}{trust_domain}/*")
            }
        }
    }
}

impl FromStr for PrincipalPattern {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PrincipalPattern::parse(s)
    }
}

// === validation ===

/// The characters that are never allowed anywhere, named so errors say what they mean.
fn uri_delimiter(c: char) -> Option<SpiffeIdError> {
    match c {
        '?' => Some(SpiffeIdError::Query),
        '#' => Some(SpiffeIdError::Fragment),
        '%' => Some(SpiffeIdError::PercentEncoded),
        _ => None,
    }
}

fn check_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    if trust_domain.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    for c in trust_domain.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            '@' => return Err(SpiffeIdError::Userinfo),
            ':' => return Err(SpiffeIdError::Port),
            'A'..='Z' => return Err(SpiffeIdError::UpperCaseTrustDomain { found: c }),
            _ => {
                return Err(uri_delimiter(c).unwrap_or(SpiffeIdError::TrustDomainChar { found: c }));
            }
        }
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong {
            len: trust_domain.len(),
        });
    }
    Ok(())
}

/// `path` is empty or starts with `/`.
fn check_path(path: &str) -> Result<(), SpiffeIdError> {
    let Some(segments) = path.strip_prefix('/').filter(|p| !p.is_empty()) else {
        return Err(SpiffeIdError::MissingPath);
    };
    let mut segments = segments.split('/').peekable();
    while let Some(segment) = segments.next() {
        for c in segment.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                _ => return Err(uri_delimiter(c).unwrap_or(SpiffeIdError::PathChar { found: c })),
            }
        }
        match segment {
            "" if segments.peek().is_none() => return Err(SpiffeIdError::TrailingSlash),
            "" => return Err(SpiffeIdError::EmptySegment),
            "." | ".." => return Err(SpiffeIdError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
