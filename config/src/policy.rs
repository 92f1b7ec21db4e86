//! The compiled policy and `decide`: the authorize step's only question.
//!
//! Takes a [`NormalizedPath`], a method and a [`Peer`] and returns a [`Decision`] naming the
//! rule that allowed the request or why it was denied. A [`Policy`] is built only by
//! [`compile`](crate::compile), is immutable and cheap to clone (one `Arc`), so the proxy can
//! hold it in an `ArcSwap` and swap it on reload.
//!
//! `decide` is one route-trie lookup plus a scan of that route's entries; a no-route denial
//! adds one hash lookup and a short binary search for the nearest template
//! ([`nearest`](self::nearest)). Its cost does not grow with the number of rules, and it
//! allocates nothing.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::compile::{self, LoadOptions, Loaded};
use crate::location::LoadError;
use crate::normalize::NormalizedPath;
use crate::spiffe::{PrincipalPattern, SpiffeId};

mod nearest;

pub(crate) use nearest::Nearest;

/// An immutable, compiled policy. Clone is one reference-count increment.
///
/// # Security
///
/// Default deny: a request is allowed only when a rule names the peer and allows the method on
/// a template matching the request's normalized path. The trie finds the most specific
/// matching route; it carries the entries of its own templates and of every template that
/// covers it (`/admin/{*rest}` covers `/admin/health`), so rules add up as an allowlist
/// should. Two templates that only partly overlap (`/a/{x}/c`, `/a/b/{y}`) are not merged:
/// the more specific one (literal before parameter, segment by segment) decides.
#[derive(Clone)]
pub struct Policy {
    pub(crate) inner: Arc<Inner>,
}

/// Who is asking: the verified SPIFFE ID of the peer, or nobody (plaintext under
/// `mtls: permissive`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A peer that presented a valid client certificate with this SPIFFE ID.
    Spiffe(SpiffeId),
    /// A plaintext peer (only possible under `mtls: permissive`).
    Unauthenticated,
}

/// `spec.mode` of a policy, `mode` of a rule, and the [`Denial::mode`] of each denial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Denied requests are refused (403). The default.
    Enforce,
    /// Denied requests are logged and counted as "would deny", then forwarded anyway.
    Audit,
}

/// `spec.mtls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsMode {
    /// Only mTLS connections with a valid client certificate are accepted. The default.
    Strict,
    /// Plaintext is also accepted; its peer is [`Peer::Unauthenticated`].
    Permissive,
}

/// The answer of [`Policy::decide`] and [`Policy::authorize_peer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'p> {
    /// The request is allowed.
    Allow(Permit<'p>),
    /// The request is denied, and why.
    Deny(Denial<'p>),
}

/// Which rule allowed a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permit<'p> {
    /// The allowing rule's name.
    pub rule: &'p str,
    /// The template that matched, as the rule wrote it (empty for opaque ports).
    pub template: &'p str,
    /// Whether the rule allows a WebSocket upgrade on this route (`upgrade: websocket`).
    pub upgrade: bool,
}

/// Why a request was denied, and whether the denial is enforced ([`Denial::mode`]).
///
/// # Security
///
/// A denial whose `mode` is [`Mode::Audit`] is forwarded (logged and counted as "would
/// deny"); only [`Mode::Enforce`] denials are refused. A denial on a matched route
/// ([`MethodNotAllowed`](Denial::MethodNotAllowed), [`PeerNotAllowed`](Denial::PeerNotAllowed))
/// is audit only when every rule with an entry on that route is in audit mode (a rule's
/// `mode`, or its document's `spec.mode`); [`NoRoute`](Denial::NoRoute) and
/// [`PeerNotAdmitted`](Denial::PeerNotAdmitted) follow the policy's `spec.mode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial<'p> {
    /// No template matches the path; `nearest` is the closest template, if any.
    NoRoute {
        /// The template sharing the longest literal prefix with the path.
        nearest: Option<&'p str>,
        /// The policy's `spec.mode`.
        mode: Mode,
    },
    /// A template matches but no rule on it allows this method.
    MethodNotAllowed {
        /// The matched template.
        template: &'p str,
        /// The nearest rule on that route (one that names the peer, if any).
        rule: &'p str,
        /// Audit when every rule on the route is in audit mode.
        mode: Mode,
    },
    /// Template and method match but the peer is not among the rule's principals.
    PeerNotAllowed {
        /// The matched template.
        template: &'p str,
        /// The first rule that allows the method on that route.
        rule: &'p str,
        /// Audit when every rule on the route is in audit mode.
        mode: Mode,
    },
    /// Opaque port: no identity-only rule admits the peer.
    PeerNotAdmitted {
        /// The policy's `spec.mode`.
        mode: Mode,
    },
}

pub(crate) struct Inner {
    pub(crate) router: matchit::Router<usize>,
    pub(crate) routes: Vec<Route>,
    pub(crate) rules: Vec<Rule>,
    /// Indexes into `rules` of the rules without `to` (opaque ports).
    pub(crate) identity_rules: Vec<usize>,
    /// The literal prefixes of the routes, for the nearest template of a no-route denial.
    pub(crate) nearest: Nearest,
    pub(crate) mode: Mode,
    pub(crate) mtls: MtlsMode,
    pub(crate) opaque_ports: Vec<u16>,
    pub(crate) version: String,
}

/// One trie node: every (rule, methods) that applies to one canonical template.
pub(crate) struct Route {
    pub(crate) entries: Vec<Entry>,
    /// The mode of this route's denials: audit only when every entry's rule is in audit mode.
    pub(crate) mode: Mode,
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) rule: usize,
    /// Shared with the other entries and the nearest-template index naming the same written
    /// template.
    pub(crate) template: Arc<str>,
    pub(crate) methods: Methods,
    pub(crate) upgrade: bool,
}

pub(crate) struct Rule {
    pub(crate) name: Box<str>,
    pub(crate) principals: Principals,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Methods {
    Any,
    /// Shared by every entry of one `to` (one allocation per `to`, not per template).
    List(Arc<[Box<str>]>),
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Principals {
    pub(crate) unauthenticated: bool,
    pub(crate) patterns: Vec<PrincipalPattern>,
}

// === impl Policy ===

impl Policy {
    /// Loads files and directories (a directory: every `*.yaml` / `*.yml` inside it, sorted,
    /// not recursive) as one policy. All documents must agree on `mode` and `mtls`.
    ///
    /// Returns every error found, each with file, line, column and field path; warnings come
    /// with the loaded policy.
    pub fn load<P: AsRef<Path>>(paths: &[P], opts: &LoadOptions) -> Result<Loaded, LoadError> {
        compile::load(paths, opts)
    }

    /// Loads one source text (multi-document YAML); `source_name` is what diagnostics print as
    /// the file.
    pub fn from_yaml(
        source_name: &str,
        text: &str,
        opts: &LoadOptions,
    ) -> Result<Loaded, LoadError> {
        compile::from_sources(&[(source_name.to_owned(), text.to_owned())], opts)
    }

    /// Decides one request: `method` exactly as received (methods are case-sensitive), `path`
    /// from [`normalize`](crate::normalize()), and the peer's identity.
    ///
    /// # Security
    ///
    /// Only the normalized path takes part (never the query or the authority), and the
    /// caller must forward exactly the path it authorized.
    pub fn decide(&self, method: &str, path: &NormalizedPath, peer: &Peer) -> Decision<'_> {
        let inner = &*self.inner;
        let Ok(matched) = inner.router.at(path.as_str()) else {
            return Decision::Deny(Denial::NoRoute {
                nearest: inner.nearest.find(path.as_str()),
                mode: inner.mode,
            });
        };
        let Some(route) = inner.routes.get(*matched.value) else {
            return Decision::Deny(Denial::NoRoute {
                nearest: None,
                mode: inner.mode,
            });
        };
        let mut method_match: Option<&Entry> = None;
        let mut peer_match: Option<&Entry> = None;
        for entry in &route.entries {
            let rule = &inner.rules[entry.rule];
            let admits = rule.principals.admit(peer);
            if entry.methods.allow(method) {
                if admits {
                    return Decision::Allow(Permit {
                        rule: &rule.name,
                        template: &entry.template,
                        upgrade: entry.upgrade,
                    });
                }
                method_match.get_or_insert(entry);
            } else if admits {
                peer_match.get_or_insert(entry);
            }
        }
        if let Some(entry) = method_match {
            return Decision::Deny(Denial::PeerNotAllowed {
                template: &entry.template,
                rule: &inner.rules[entry.rule].name,
                mode: route.mode,
            });
        }
        match peer_match.or(route.entries.first()) {
            Some(entry) => Decision::Deny(Denial::MethodNotAllowed {
                template: &entry.template,
                rule: &inner.rules[entry.rule].name,
                mode: route.mode,
            }),
            None => Decision::Deny(Denial::NoRoute {
                nearest: None,
                mode: inner.mode,
            }),
        }
    }

    /// Authorizes a connection to an opaque (non-HTTP) port: allowed when an identity-only
    /// rule (a rule without `to`) names the peer.
    pub fn authorize_peer(&self, peer: &Peer) -> Decision<'_> {
        let inner = &*self.inner;
        for &i in &inner.identity_rules {
            let rule = &inner.rules[i];
            if rule.principals.admit(peer) {
                return Decision::Allow(Permit {
                    rule: &rule.name,
                    template: "",
                    upgrade: false,
                });
            }
        }
        Decision::Deny(Denial::PeerNotAdmitted {
            mode: self.inner.mode,
        })
    }

    /// `spec.mode` (default [`Mode::Enforce`]): the mode of no-route and opaque-port
    /// denials and of rules without their own `mode`. Whether one denial is enforced is its
    /// [`Denial::mode`] (see [`Decision::is_audit_denied`]), not this.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// `spec.mtls` (default [`MtlsMode::Strict`]).
    pub fn mtls(&self) -> MtlsMode {
        self.inner.mtls
    }

    /// `spec.opaquePorts` of all documents, sorted, without duplicates.
    pub fn opaque_ports(&self) -> &[u16] {
        &self.inner.opaque_ports
    }

    /// A short hex hash of all loaded source names and bytes; changes whenever they do.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// Number of rules in the policy.
    pub fn rule_count(&self) -> usize {
        self.inner.rules.len()
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.inner.version)
            .field("rules", &self.inner.rules.len())
            .field("routes", &self.inner.routes.len())
            .field("mode", &self.inner.mode)
            .field("mtls", &self.inner.mtls)
            .finish()
    }
}

// === impl Methods ===

impl Methods {
    fn allow(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::List(list) => list.iter().any(|m| **m == *method),
        }
    }

    /// `true` if every method allowed by `other` is allowed by `self`.
    pub(crate) fn covers(&self, other: &Methods) -> bool {
        match (self, other) {
            (Methods::Any, _) => true,
            (Methods::List(_), Methods::Any) => false,
            (Methods::List(_), Methods::List(theirs)) => theirs.iter().all(|m| self.allow(m)),
        }
    }
}

// === impl Principals ===

impl Principals {
    fn admit(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Unauthenticated => self.unauthenticated,
            Peer::Spiffe(id) => self.patterns.iter().any(|p| p.matches(id)),
        }
    }

    /// `true` if every peer admitted by `other` is admitted by `self`.
    pub(crate) fn covers(&self, other: &Principals) -> bool {
        (self.unauthenticated || !other.unauthenticated)
            && other
                .patterns
                .iter()
                .all(|theirs| self.patterns.iter().any(|ours| ours.covers(theirs)))
    }
}

// === impl Peer ===

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Spiffe(id) => id.fmt(f),
            Peer::Unauthenticated => f.write_str("unauthenticated"),
        }
    }
}

// === impl Decision ===

impl Decision<'_> {
    /// `true` for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// `true` for a denial in audit mode: forward the request, log it and count it as "would
    /// deny". `false` for allows and for enforced denials (refuse those with 403).
    pub fn is_audit_denied(&self) -> bool {
        matches!(self, Decision::Deny(d) if d.mode() == Mode::Audit)
    }

    /// The allowing rule, or the nearest rule of a denial.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Allow(p) => Some(p.rule),
            Decision::Deny(
                Denial::MethodNotAllowed { rule, .. } | Denial::PeerNotAllowed { rule, .. },
            ) => Some(rule),
            Decision::Deny(Denial::NoRoute { .. } | Denial::PeerNotAdmitted { .. }) => None,
        }
    }

    /// The matched template (for metrics labels); never a raw path.
    pub fn route(&self) -> Option<&str> {
        match self {
            Decision::Allow(p) if !p.template.is_empty() => Some(p.template),
            Decision::Allow(_) => None,
            Decision::Deny(
                Denial::MethodNotAllowed { template, .. } | Denial::PeerNotAllowed { template, .. },
            ) => Some(template),
            Decision::Deny(Denial::NoRoute { .. } | Denial::PeerNotAdmitted { .. }) => None,
        }
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow(p) if p.template.is_empty() => {
                write!(f, "allowed by rule {} (identity-only rule)", p.rule)
            }
            Decision::Allow(p) => {
                write!(f, "allowed by rule {} (route {})", p.rule, p.template)?;
                if p.upgrade {
                    f.write_str(", websocket upgrade allowed")?;
                }
                Ok(())
            }
            Decision::Deny(d) => d.fmt(f),
        }
    }
}

// === impl Denial ===

impl Denial<'_> {
    /// Whether this denial is enforced ([`Mode::Enforce`]: refuse) or audit only
    /// ([`Mode::Audit`]: forward, log and count as "would deny"). See [`Denial`] for which mode
    /// each kind of denial takes.
    pub fn mode(&self) -> Mode {
        match self {
            Denial::NoRoute { mode, .. }
            | Denial::MethodNotAllowed { mode, .. }
            | Denial::PeerNotAllowed { mode, .. }
            | Denial::PeerNotAdmitted { mode } => *mode,
        }
    }
}

impl fmt::Display for Denial<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NoRoute {
                nearest: Some(t), ..
            } => {
                write!(f, "denied: no route matches (nearest: {t})")
            }
            Denial::NoRoute { nearest: None, .. } => {
                f.write_str("denied: no route matches (the policy has no routes)")
            }
            Denial::MethodNotAllowed { template, rule, .. } => write!(
                f,
                "denied: route {template} exists but rule {rule} does not allow this method"
            ),
            Denial::PeerNotAllowed { template, rule, .. } => write!(
                f,
                "denied: rule {rule} allows this method on {template} but not this peer"
            ),
            Denial::PeerNotAdmitted { .. } => {
                f.write_str("denied: no identity-only rule (rule without `to`) admits this peer")
            }
        }
    }
}

#[cfg(test)]
mod tests;
