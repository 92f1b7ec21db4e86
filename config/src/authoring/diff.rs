//! `palisade diff`: what a policy change newly allows and no longer allows.
//!
//! Takes the two policies and the documents they were compiled from. From every rule of both
//! sides it derives probes: a sample peer per principal pattern plus, per trust domain, an
//! outsider no rule names (and `unauthenticated`); every listed method plus the common ones;
//! and each path template instantiated with sample values (plus its literal text). Every probe is
//! decided under both policies; a probe that reaches the app only under the new one widens
//! access, one that reaches it only under the old one narrows it. A denial in audit mode
//! (per policy or per rule) reaches the app: it is forwarded and only logged. The result is
//! concrete example requests per peer.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::document::Document;
use crate::normalize::normalize;
use crate::policy::{Decision, Peer, Policy};
use crate::spiffe::{PrincipalPattern, SpiffeId};
use crate::template::{Segment, Template};

/// Methods every diff tries (besides those the rules list): `"*"` and unlisted methods.
const WILDCARD_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// The `method` of a probe of an opaque port (identity-only rules).
pub const OPAQUE: &str = "(opaque port)";
/// The service-account and namespace name used for sample peers of wildcard principals.
const SAMPLE_NAME: &str = "palisade-diff-sample";

/// The sample requests a diff decides under both policies.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    peers: BTreeSet<String>,
    methods: BTreeSet<String>,
    paths: BTreeSet<String>,
}

/// One example request whose decision differs between the two policies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    /// The peer: a SPIFFE ID (a sample one for wildcard principals) or `unauthenticated`.
    pub peer: String,
    /// The method, or [`OPAQUE`] for an opaque-port connection.
    pub method: String,
    /// The example path (empty for opaque ports).
    pub path: String,
    /// The old policy's decision, in words.
    pub before: String,
    /// The new policy's decision, in words.
    pub after: String,
}

/// What the change does to access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No probe changed its decision.
    Unchanged,
    /// Some probes are now denied, none newly allowed.
    Narrows,
    /// At least one probe is newly allowed.
    Widens,
}

/// The result of [`diff`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyDiff {
    /// Requests that reach the app under the new policy and were refused under the old one.
    pub newly_allowed: Vec<Change>,
    /// Requests that reached the app under the old policy and are refused under the new one.
    pub no_longer_allowed: Vec<Change>,
}

/// Decides every probe under `old` and `new` and returns the requests whose decision changed.
///
/// # Security
///
/// The probes are derived from the rules of both sides, so every rule that was added, removed
/// or changed is exercised with at least one request per (sample peer, method, template).
/// Probes are examples, not a proof: a change visible only on a path no template spells out
/// (e.g. `/a/b/c` between partly overlapping `/a/{x}/c` and `/a/b/{y}`) or only for a peer no
/// principal pattern names exactly is not guaranteed to be reported.
pub fn diff(old: &Policy, new: &Policy, probes: &Probes) -> PolicyDiff {
    let mut result = PolicyDiff::default();
    for peer_text in &probes.peers {
        let Some(peer) = peer_of(peer_text) else {
            continue;
        };
        let before = old.authorize_peer(&peer);
        let after = new.authorize_peer(&peer);
        record(
            &mut result,
            peer_text,
            OPAQUE,
            "",
            outcome(&before),
            outcome(&after),
        );
        for method in &probes.methods {
            for path in &probes.paths {
                let Ok(target) = normalize(path) else {
                    continue;
                };
                let before = old.decide(method, target.path(), &peer);
                let after = new.decide(method, target.path(), &peer);
                record(
                    &mut result,
                    peer_text,
                    method,
                    path,
                    outcome(&before),
                    outcome(&after),
                );
            }
        }
    }
    result
}

/// Whether the request reaches the app (allowed, or denied in audit mode), and the decision
/// in words.
fn outcome(decision: &Decision<'_>) -> (bool, String) {
    if decision.is_audit_denied() {
        (true, format!("forwarded in audit mode ({decision})"))
    } else {
        (decision.is_allowed(), decision.to_string())
    }
}

fn record(
    result: &mut PolicyDiff,
    peer: &str,
    method: &str,
    path: &str,
    before: (bool, String),
    after: (bool, String),
) {
    if before.0 == after.0 {
        return;
    }
    let change = Change {
        peer: peer.to_owned(),
        method: method.to_owned(),
        path: path.to_owned(),
        before: before.1,
        after: after.1,
    };
    if after.0 {
        result.newly_allowed.push(change);
    } else {
        result.no_longer_allowed.push(change);
    }
}

fn peer_of(text: &str) -> Option<Peer> {
    if text == "unauthenticated" {
        return Some(Peer::Unauthenticated);
    }
    SpiffeId::parse(text).ok().map(Peer::Spiffe)
}

// === impl Probes ===

impl Probes {
    /// Collects probes from the rules of the given documents (call once per side).
    pub fn add_documents(&mut self, documents: &[Document]) {
        // Requests no rule was written for: what audit mode forwards and enforcing refuses.
        self.peers.insert("unauthenticated".to_owned());
        self.methods
            .extend(WILDCARD_METHODS.iter().map(|m| (*m).to_owned()));
        for document in documents {
            for rule in &document.spec.rules {
                for principal in &rule.principals.value {
                    self.add_principal(&principal.value);
                }
                for to in rule.to.iter().flat_map(|to| to.value.iter()) {
                    for method in &to.methods.value {
                        if method.value != "*" {
                            self.methods.insert(method.value.clone());
                        }
                    }
                    for path in &to.paths.value {
                        self.add_template(&path.value);
                    }
                }
            }
        }
    }

    fn add_principal(&mut self, text: &str) {
        if text == "unauthenticated" {
            self.peers.insert(text.to_owned());
            return;
        }
        let Ok(pattern) = PrincipalPattern::parse(text) else {
            return;
        };
        // An outsider of the trust domain (a sample namespace and service account).
        self.peers.insert(format!(
            "spiffe://{}/ns/{SAMPLE_NAME}/sa/{SAMPLE_NAME}",
            pattern.trust_domain()
        ));
        let sample = match pattern {
            PrincipalPattern::Exact(id) => id.as_str().to_owned(),
            PrincipalPattern::Namespace {
                trust_domain,
                namespace,
            } => format!("spiffe://{trust_domain}/ns/{namespace}/sa/{SAMPLE_NAME}"),
            PrincipalPattern::TrustDomain(td) => {
                format!("spiffe://{td}/ns/{SAMPLE_NAME}/sa/{SAMPLE_NAME}")
            }
        };
        self.peers.insert(sample);
    }

    fn add_template(&mut self, text: &str) {
        let Ok(template) = Template::parse(text) else {
            return;
        };
        self.paths.insert(instantiate(&template));
        // The template's own text, when it is a plain path: catches literal sibling routes.
        if template
            .segments()
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
        {
            self.paths.insert(text.to_owned());
        }
    }

    /// The number of requests a diff decides under each policy.
    pub fn len(&self) -> usize {
        self.peers.len() * (self.methods.len() * self.paths.len() + 1)
    }

    /// True when there is nothing to probe.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// A concrete path matched by `template`: `{id}` → `sample-id`, `{*rest}` → `sample-rest/more`.
fn instantiate(template: &Template) -> String {
    let mut out = String::new();
    for segment in template.segments() {
        out.push('/');
        match segment {
            Segment::Literal(text) => out.push_str(text),
            Segment::Param(name) => {
                out.push_str("sample-");
                out.push_str(name);
            }
            Segment::CatchAll(name) => {
                out.push_str("sample-");
                out.push_str(name);
                out.push_str("/more");
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

// === impl PolicyDiff ===

impl PolicyDiff {
    /// Widens if anything is newly allowed, else narrows if anything is no longer allowed.
    pub fn verdict(&self) -> Verdict {
        if !self.newly_allowed.is_empty() {
            Verdict::Widens
        } else if !self.no_longer_allowed.is_empty() {
            Verdict::Narrows
        } else {
            Verdict::Unchanged
        }
    }
}

#[cfg(test)]
mod tests;
