//! Request IDs: one per request, set by the first layer of the stack, sent to the app as
//! `x-request-id` and returned in every error body.
//!
//! An ID is a per-process random prefix and a counter (`3f9a0c1d7e2b4a55-1c`): unique within
//! the process, unlikely to repeat across restarts, and cheap (no lock, no syscall).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

/// The ID of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

/// Hands out request IDs.
#[derive(Debug)]
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

// === impl RequestId ===

impl RequestId {
    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Stands in where a request has no ID (a layer ran outside the stack).
    pub(crate) fn unknown() -> Self {
        RequestId(Arc::from("-"))
    }

    pub(crate) fn header_value(&self) -> HeaderValue {
        // Only hex digits and '-': always a valid header value.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl RequestIds ===

impl RequestIds {
    pub(crate) fn new() -> Self {
        // RandomState is seeded from the OS once per process: a random prefix without a
        // new dependency.
        let prefix = RandomState::new().build_hasher().finish();
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        RequestId(format!("{:016x}-{n:x}", self.prefix).into())
    }
}

/// Layer for [`SetRequestId`].
#[derive(Clone, Debug)]
pub(crate) struct RequestIdLayer {
    ids: Arc<RequestIds>,
}

/// Gives each request a [`RequestId`] (as a request extension), then calls the inner service.
#[derive(Clone, Debug)]
pub(crate) struct SetRequestId<S> {
    inner: S,
    ids: Arc<RequestIds>,
}

// === impl RequestIdLayer ===

impl RequestIdLayer {
    pub(crate) fn new(ids: Arc<RequestIds>) -> Self {
        Self { ids }
    }
}

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> SetRequestId<S> {
        SetRequestId {
            inner,
            ids: self.ids.clone(),
        }
    }
}

// === impl SetRequestId ===

impl<S, B> tower::Service<http::Request<B>> for SetRequestId<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        request.extensions_mut().insert(self.ids.next());
        self.inner.call(request)
    }
}
