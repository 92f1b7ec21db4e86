//! Request IDs: one per request, set by the first layer of the stack, sent to the app as
//! `x-request-id` and returned in every error body.
//!
//! An ID is a per-process random prefix and a counter (`3f9a0c1d7e2b4a55-1c`): unique within
//! the process, unlikely to repeat across restarts, and cheap (no lock, no syscall, one
//! allocation: the header value that every later copy shares).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;

/// The ID of one request. Cloning it shares the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

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
        // Built from hex digits and '-' only (or a static stand-in): always visible ASCII.
        self.0.to_str().unwrap_or("-")
    }

    /// Stands in where a request has no ID (a layer ran outside the stack).
    pub(crate) fn unknown() -> Self {
        RequestId(HeaderValue::from_static("-"))
    }

    /// The ID as the `x-request-id` value (shares the bytes, no copy).
    pub(crate) fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
        // `<16 hex digits>-<up to 16 hex digits>`, written without a formatter.
        let mut text = [0u8; 33];
        hex_into(self.prefix, &mut text[..16]);
        text[16] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        hex_into(n, &mut text[17..17 + digits]);
        let bytes = Bytes::copy_from_slice(&text[..17 + digits]);
        // Hex digits and '-' are always a valid header value.
        RequestId(
            HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static("-")),
        )
    }
}

/// Writes the low `out.len()` hex digits of `n` into `out`, most significant first.
fn hex_into(mut n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(n & 0xf) as usize];
        n >>= 4;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefix_dash_counter_in_lower_hex() {
        let ids = RequestIds {
            prefix: 0x3f9a_0c1d_7e2b_4a55,
            next: AtomicU64::new(1),
        };
        assert_eq!(ids.next().as_str(), "3f9a0c1d7e2b4a55-1");
        ids.next.store(0x1c, Ordering::Relaxed);
        assert_eq!(ids.next().as_str(), "3f9a0c1d7e2b4a55-1c");
        ids.next.store(u64::MAX, Ordering::Relaxed);
        let last = ids.next();
        assert_eq!(last.as_str(), "3f9a0c1d7e2b4a55-ffffffffffffffff");
        assert_eq!(last.header_value(), "3f9a0c1d7e2b4a55-ffffffffffffffff");
        ids.next.store(0, Ordering::Relaxed);
        assert_eq!(ids.next().as_str(), "3f9a0c1d7e2b4a55-0");
    }
}
