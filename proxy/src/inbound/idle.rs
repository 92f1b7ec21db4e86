//! The idle timeout of one HTTP connection: closed (gracefully: h2 GOAWAY, HTTP/1 close)
//! once it has had no request in flight for the idle time.
//!
//! Takes the connection's requests (each holds an [`InFlight`] guard until its response
//! body is done); passes on a signal, [`Activity::idle`], that completes when the
//! connection has been idle long enough. Keep-alive traffic such as h2 PINGs does not count
//! as activity. HTTP/1 connections are also bounded by the header-read timeout while they
//! wait for the next request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::ResponseBody;
use super::overload::Permit;

/// Requests in flight on one connection and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` when the connection last became idle.
    idle_since_ms: AtomicU64,
}

/// Held while a request is in flight (until its response body is done or dropped).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

/// A response body that keeps its request in flight until it ends: on its connection (for
/// the idle timeout) and, once admitted, under the listener's cap.
#[derive(Debug)]
pub(crate) struct TrackedBody {
    inner: ResponseBody,
    _in_flight: InFlight,
    _permit: Option<Permit>,
}

// === impl Activity ===

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Marks a request as in flight until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Completes once no request has been in flight for `limit`.
    pub(crate) async fn idle(&self, limit: Duration) {
        loop {
            let check_at = if self.in_flight.load(Ordering::Acquire) == 0 {
                let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                self.start + since + limit
            } else {
                // Busy: look again later; a request ending restarts the idle clock.
                Instant::now() + limit
            };
            tokio::time::sleep_until(check_at).await;
            if self.in_flight.load(Ordering::Acquire) == 0 {
                let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                if Instant::now() >= self.start + since + limit {
                    return;
                }
            }
        }
    }
}

// === impl InFlight ===

impl Drop for InFlight {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(elapsed, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl TrackedBody ===

impl TrackedBody {
    pub(crate) fn new(inner: ResponseBody, in_flight: InFlight, permit: Option<Permit>) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
            _permit: permit,
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
