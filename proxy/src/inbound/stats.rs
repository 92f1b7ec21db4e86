//! Counters of the inbound side, plain atomics read by tests and embedders. Always on, even
//! with telemetry disabled; the labelled Prometheus metrics are
//! [`telemetry::metrics`](crate::telemetry::metrics). Every counter only goes up, except
//! [`Stats::connections_open`].

use std::sync::atomic::{AtomicU64, Ordering};

/// What the inbound side has seen since it started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections currently open (accepted, not yet closed).
    pub connections_open: AtomicU64,
    /// Permissive mode: connections detected as TLS.
    pub detected_tls: AtomicU64,
    /// Permissive mode: connections detected as plaintext.
    pub detected_plaintext: AtomicU64,
    /// Permissive mode: connections closed because detection timed out or failed.
    pub detect_failures: AtomicU64,
    /// TLS handshakes that failed or timed out (including every rejected client certificate).
    pub handshake_failures: AtomicU64,
    /// Requests the policy allowed.
    pub requests_allowed: AtomicU64,
    /// Requests denied (403).
    pub requests_denied: AtomicU64,
    /// Audit mode: requests the policy would have denied, forwarded anyway.
    pub requests_audit_denied: AtomicU64,
    /// Requests with a target that cannot be normalized (400).
    pub requests_malformed: AtomicU64,
    /// Requests with ambiguous framing (400, connection closed).
    pub requests_bad_framing: AtomicU64,
    /// Requests the app refused, did not answer in time, or failed (502/503/504).
    pub upstream_failures: AtomicU64,
    /// Requests refused because the listener had its most requests in flight (503).
    pub requests_overloaded: AtomicU64,
    /// Opaque-port connections admitted and proxied.
    pub opaque_admitted: AtomicU64,
    /// Opaque-port connections refused by policy.
    pub opaque_denied: AtomicU64,
}

// === impl Stats ===

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn decr(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}
