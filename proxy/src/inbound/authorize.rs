//! HTTP step 2, authorize: normalizes the request target once and asks the policy whether
//! this peer may call this method on this path.
//!
//! Takes a request and the connection's [`Peer`]; passes on an [`Authorized`] request, which
//! carries the [`RequestTarget`] that was checked (the only path [`forward`](super::forward)
//! can send to the app), or answers 403 / 400 through [`respond`](super::respond).
//!
//! In [`Mode::Audit`] a request the policy would deny is logged, counted and forwarded
//! anyway; a target that cannot be normalized is still refused (there is no checked path to
//! forward).
//!
//! One rule on top of `normalize`: a normalized path that still holds a double
//! percent-encoding (`%25` followed by two hex digits, e.g. `%252e%252e%252f`) is refused
//! with 400. `normalize` decodes once, so the path is canonical for palisade, but an app
//! that decodes a second time (a known habit of some frameworks and of proxies chained behind
//! the sidecar) would read `../` where palisade checked a harmless segment. The adversarial
//! suite (`tests/e2e/adversarial`) checks every forwarded path under that reading.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use palisade_config::{
    Decision, Mode, NormalizeError, Peer, Policy, RequestTarget, normalize, normalize_absolute,
};

use super::request_id::RequestId;
use super::respond::reject;
use super::stats::Stats;
use super::{ResponseBody, ResponseFuture};
use crate::telemetry::observe::Judgement;

/// A request the policy allowed (or, in audit mode, would have denied), with the target
/// that was checked.
#[derive(Debug)]
pub struct Authorized {
    /// The normalized path and the original query: what the app receives.
    pub(crate) target: RequestTarget,
    /// The matched rule allows a protocol upgrade (WebSocket) on this route.
    pub(crate) upgrade: bool,
    /// The request as received; its URI is never forwarded.
    pub(crate) request: Request<Incoming>,
    /// Who sent it.
    pub(crate) peer: Arc<Peer>,
    /// Its ID.
    pub(crate) id: RequestId,
}

/// The policy denied the request. Only this module builds it.
#[derive(Debug, thiserror::Error)]
#[error("denied by policy")]
pub struct Unauthorized(());

/// The request target could not be normalized, or holds a double percent-encoding. Only
/// this module builds it.
#[derive(Debug, thiserror::Error)]
#[error("malformed request target")]
pub struct Malformed(#[source] MalformedCause);

/// Why a request target is malformed.
#[derive(Debug, thiserror::Error)]
pub enum MalformedCause {
    /// `normalize` refused it.
    #[error(transparent)]
    Normalize(NormalizeError),
    /// The normalized path still holds `%25` and two hex digits, which a second decoding
    /// would turn into another escape.
    #[error("path contains a double percent-encoding (%25 and two hex digits)")]
    DoubleEncoded,
}

/// Layer for [`Authorize`].
#[derive(Clone)]
pub(crate) struct AuthorizeLayer {
    policy: Arc<ArcSwap<Policy>>,
    peer: Arc<Peer>,
    stats: Arc<Stats>,
}

/// Normalizes and decides, then calls the inner service with an [`Authorized`] request.
#[derive(Clone)]
pub(crate) struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
}

/// What the decision allows the request to do next.
enum Verdict {
    Forward { upgrade: bool },
    Deny,
}

// === impl AuthorizeLayer ===

impl AuthorizeLayer {
    pub(crate) fn new(policy: Arc<ArcSwap<Policy>>, peer: Peer, stats: Arc<Stats>) -> Self {
        Self {
            policy,
            peer: Arc::new(peer),
            stats,
        }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            layer: self.clone(),
        }
    }
}

// === impl Authorize ===

impl<S> tower::Service<Request<Incoming>> for Authorize<S>
where
    S: tower::Service<
            Authorized,
            Response = Response<ResponseBody>,
            Error = Infallible,
            Future = ResponseFuture,
        >,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> ResponseFuture {
        let id = request.extensions().get::<RequestId>().cloned();
        let id = id.unwrap_or_else(RequestId::unknown);
        let version = request.version();
        let stats = &self.layer.stats;
        let peer = &self.layer.peer;
        // Present when telemetry is on: what is decided here is also what gets recorded.
        let judgement = request.extensions().get::<Judgement>();

        let target = match normalize_target(&request) {
            Ok(target) if is_double_encoded(target.path().as_str()) => {
                Err(Malformed(MalformedCause::DoubleEncoded))
            }
            Ok(target) => Ok(target),
            Err(error) if error.is_denied_form() => {
                tracing::info!(request.id = %id, peer.id = %PeerDisplay(peer), method = %request.method(),
                    error = %error, "request denied");
                Stats::incr(&stats.requests_denied);
                if let Some(judgement) = judgement {
                    judgement.refused(true, &MalformedReason(&error));
                }
                let response = reject(&Unauthorized(()), &id, version);
                return Box::pin(async move { Ok(response) });
            }
            Err(error) => Err(Malformed(MalformedCause::Normalize(error))),
        };
        let target = match target {
            Ok(target) => target,
            Err(error) => {
                tracing::info!(request.id = %id, peer.id = %PeerDisplay(peer), method = %request.method(),
                    error = %error.0, "request rejected");
                Stats::incr(&stats.requests_malformed);
                if let Some(judgement) = judgement {
                    judgement.refused(false, &MalformedReason(&error.0));
                }
                let response = reject(&error, &id, version);
                return Box::pin(async move { Ok(response) });
            }
        };

        let verdict = {
            let policy = self.layer.policy.load();
            let decision = policy.decide(request.method().as_str(), target.path(), peer);
            let mode = enforcement(&decision);
            if let Some(judgement) = judgement {
                judgement.decided(&decision, mode, target.path());
            }
            judge(&decision, mode, &id, peer, request.method(), &target, stats)
        };
        match verdict {
            Verdict::Forward { upgrade } => {
                let authorized = Authorized {
                    target,
                    upgrade,
                    request,
                    peer: peer.clone(),
                    id,
                };
                self.inner.call(authorized)
            }
            Verdict::Deny => {
                let response = reject(&Unauthorized(()), &id, version);
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// Whether a denial is enforced or only audited: per rule, or the policy's `spec.mode` when
/// no route matched (see [`Denial::mode`](palisade_config::Denial::mode)). Allowing is the
/// same in both modes.
fn enforcement(decision: &Decision<'_>) -> Mode {
    match decision {
        Decision::Allow(_) => Mode::Enforce,
        Decision::Deny(denial) => denial.mode(),
    }
}

/// Turns a decision into what happens next, logging and counting it.
fn judge(
    decision: &Decision<'_>,
    mode: Mode,
    id: &RequestId,
    peer: &Peer,
    method: &http::Method,
    target: &RequestTarget,
    stats: &Stats,
) -> Verdict {
    let path = target.path().as_str();
    match (decision, mode) {
        (Decision::Allow(permit), _) => {
            tracing::debug!(request.id = %id, peer.id = %PeerDisplay(peer), %method, path,
                rule.name = permit.rule, "request allowed");
            Stats::incr(&stats.requests_allowed);
            Verdict::Forward {
                upgrade: permit.upgrade,
            }
        }
        (Decision::Deny(_), Mode::Audit) => {
            tracing::info!(request.id = %id, peer.id = %PeerDisplay(peer), %method, path,
                reason = %decision, "request would be denied (audit mode): forwarded");
            Stats::incr(&stats.requests_audit_denied);
            Verdict::Forward { upgrade: false }
        }
        (Decision::Deny(_), Mode::Enforce) => {
            tracing::info!(request.id = %id, peer.id = %PeerDisplay(peer), %method, path,
                reason = %decision, "request denied");
            Stats::incr(&stats.requests_denied);
            Verdict::Deny
        }
    }
}

/// Normalizes the request target as the client wrote it: origin-form (`/a?b`), absolute-form
/// (`http://h/a?b`, and what h2 pseudo-headers amount to, given to `normalize_absolute` in
/// parts), asterisk-form (`*`) or authority-form (`h:443`). `normalize` decides what each is
/// worth.
fn normalize_target(request: &Request<Incoming>) -> Result<RequestTarget, NormalizeError> {
    let uri = request.uri();
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, _, Some(origin)) => normalize(origin.as_str()),
        (Some(scheme), Some(authority), Some(path_and_query)) => {
            normalize_absolute(scheme.as_str(), authority.as_str(), path_and_query.as_str())
        }
        _ => normalize(&uri.to_string()),
    }
}

/// true when `path` holds `%25` followed by two hex digits: an escape that a second
/// percent-decoding would turn into another character (`%252f` → `%2f` → `/`).
fn is_double_encoded(path: &str) -> bool {
    path.as_bytes().windows(5).any(|w| {
        w[0] == b'%'
            && w[1] == b'2'
            && w[2] == b'5'
            && w[3].is_ascii_hexdigit()
            && w[4].is_ascii_hexdigit()
    })
}

/// The reason telemetry records for a target that is refused before any decision:
/// `malformed request target: <why>`.
struct MalformedReason<'a>(&'a dyn std::fmt::Display);

impl std::fmt::Display for MalformedReason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed request target: {}", self.0)
    }
}

/// Formats a peer for logs: its SPIFFE ID or `unauthenticated`.
pub(crate) struct PeerDisplay<'a>(pub(crate) &'a Peer);

impl std::fmt::Display for PeerDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Peer::Spiffe(id) => f.write_str(id.as_str()),
            Peer::Unauthenticated => f.write_str("unauthenticated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_double_encoding_only() {
        for (path, expected) in [
            ("/a/%252e%252e/b", true),
            ("/a/%252F", true),
            ("/a/x%2541", true),
            ("/a/100%25", false),
            ("/a/%25x1", false),
            ("/a/%2e", false),
            ("/a/b", false),
        ] {
            assert_eq!(is_double_encoded(path), expected, "{path}");
        }
    }
}
