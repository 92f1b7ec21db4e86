//! What live reload has done, for the admin port and the metrics: the policy and identity in
//! force (version, load time, sources), and every reload that succeeded or failed.
//!
//! The reload task is the only writer; readers take a [`StatusHandle::snapshot`], an
//! `Arc<ReloadStatus>` that never changes under them. A snapshot costs one atomic load, so a
//! metrics scrape or an admin page can take one per request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

/// Failure kind of a policy that does not load (parse, validation or read error).
pub const POLICY_INVALID: &str = "policy_invalid";

/// Failure kind prefix of identity reloads; the rest is
/// [`IdentityError::as_label`](crate::tls::IdentityError::as_label), e.g.
/// `identity_key_mismatch`, `identity_expired`, `identity_untrusted`, `identity_read`.
pub const IDENTITY_PREFIX: &str = "identity_";

/// Failure kind of new identity files whose SPIFFE ID differs from the one in force (a pod's
/// identity does not change while it runs; such files are a mistake of the issuer).
pub const IDENTITY_ID_CHANGED: &str = "identity_id_changed";

/// Failure kind of an identity from which no TLS server config can be built.
pub const IDENTITY_TLS_CONFIG: &str = "identity_tls_config";

/// Everything reload knows, as of one moment. Serializes to the JSON the admin port shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadStatus {
    /// The policy.
    pub policy: PolicyStatus,
    /// The pod's identity (SVID and trust bundle).
    pub identity: IdentityStatus,
}

/// The policy in force and the history of its reloads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyStatus {
    /// [`Policy::version`](palisade_config::Policy::version) of the policy in force.
    pub version: String,
    /// Its number of rules.
    pub rules: usize,
    /// When it was loaded, unix seconds.
    pub loaded_at: u64,
    /// The files and directories it is loaded from.
    pub paths: Vec<PathBuf>,
    /// Successful loads, the one at start-up included.
    pub loads: u64,
    /// Failed reloads by kind ([`POLICY_INVALID`]).
    pub failures: BTreeMap<String, u64>,
    /// The most recent failure, if any (also after a later success: compare `at` with
    /// `loaded_at`).
    pub last_error: Option<ReloadFailure>,
}

/// The identity in force and the history of its reloads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdentityStatus {
    /// A short hex hash of the certificate chain and trust bundle in force (never of the key).
    pub version: String,
    /// The pod's SPIFFE ID.
    pub spiffe_id: String,
    /// When the chain stops being valid (its earliest notAfter), unix seconds.
    pub not_after: i64,
    /// When it was loaded, unix seconds.
    pub loaded_at: u64,
    /// The certificate chain file.
    pub chain: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// The trust bundle file.
    pub bundle: PathBuf,
    /// Successful loads, the one at start-up included.
    pub loads: u64,
    /// Failed reloads by kind (`identity_<label>`, [`IDENTITY_ID_CHANGED`],
    /// [`IDENTITY_TLS_CONFIG`]).
    pub failures: BTreeMap<String, u64>,
    /// The most recent failure, if any.
    pub last_error: Option<ReloadFailure>,
}

/// One failed reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReloadFailure {
    /// The failure kind, as counted.
    pub kind: String,
    /// What was wrong: for a policy, its diagnostics (`file:line:column: field: message`),
    /// one a line; for an identity, the error and its causes. Never key material.
    pub message: String,
    /// When, unix seconds.
    pub at: u64,
}

/// A cheap, shareable view of the [`ReloadStatus`]; clones share the same status.
#[derive(Clone, Debug, Default)]
pub struct StatusHandle(Arc<ArcSwap<ReloadStatus>>);

// === impl ReloadStatus ===

impl ReloadStatus {
    /// Every failure count, policy and identity together, by kind: the samples of
    /// `palisade_reload_failures_total{kind}`.
    pub fn failures(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.policy
            .failures
            .iter()
            .chain(&self.identity.failures)
            .map(|(kind, count)| (kind.as_str(), *count))
    }

    /// How many failures of `kind` there were (0 if none).
    pub fn failures_of(&self, kind: &str) -> u64 {
        self.failures()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }
}

// === impl StatusHandle ===

impl StatusHandle {
    /// The status as of now. Never blocks the reload task, and the reload task never blocks it.
    pub fn snapshot(&self) -> Arc<ReloadStatus> {
        self.0.load_full()
    }

    /// Applies `change` to a copy of the status and publishes it.
    pub(crate) fn update(&self, change: impl Fn(&mut ReloadStatus)) {
        self.0.rcu(|current| {
            let mut next = ReloadStatus::clone(current);
            change(&mut next);
            next
        });
    }
}

/// Counts one failure of `kind` and keeps it as the last error.
pub(crate) fn record_failure(
    failures: &mut std::collections::BTreeMap<String, u64>,
    last_error: &mut Option<ReloadFailure>,
    kind: &str,
    message: &str,
) {
    *failures.entry(kind.to_owned()).or_default() += 1;
    *last_error = Some(ReloadFailure {
        kind: kind.to_owned(),
        message: message.to_owned(),
        at: unix_now(),
    });
}

/// Now, unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_add_up_by_kind_across_policy_and_identity() {
        let handle = StatusHandle::default();
        let before = handle.snapshot();
        handle.update(|s| {
            let policy = &mut s.policy;
            record_failure(
                &mut policy.failures,
                &mut policy.last_error,
                POLICY_INVALID,
                "a",
            );
            record_failure(
                &mut policy.failures,
                &mut policy.last_error,
                POLICY_INVALID,
                "b",
            );
            let identity = &mut s.identity;
            let kind = "identity_expired";
            record_failure(&mut identity.failures, &mut identity.last_error, kind, "c");
        });
        let status = handle.snapshot();
        assert_eq!(before.failures().count(), 0, "a snapshot does not change");
        let all: Vec<_> = status.failures().collect();
        assert_eq!(all, [(POLICY_INVALID, 2), ("identity_expired", 1)]);
        assert_eq!(status.failures_of(POLICY_INVALID), 2);
        assert_eq!(status.failures_of("identity_read"), 0);
        let last = status
            .policy
            .last_error
            .as_ref()
            .map(|e| e.message.as_str());
        assert_eq!(last, Some("b"));
    }
}
