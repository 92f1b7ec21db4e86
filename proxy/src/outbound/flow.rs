//! Step 4 of an outbound connection: the bytes, both ways, until either side closes, the
//! connection has been idle too long, or the drain time after shutdown is up.
//!
//! Takes the app's socket and the connected destination; passes on how the connection
//! ended ([`CloseReason`]). The app's socket is wrapped in [`Metered`], which counts what is
//! actually copied (each read from the app is sent, each write to the app was received)
//! and notes when a byte last moved: one [`Flow`] per connection that the idle timeout, the
//! access log and the byte counters read. A copied chunk costs a few atomic operations;
//! nothing here takes a lock.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::listen::Shutdown;
use crate::telemetry::metrics::{CloseReason, OutboundBytes};

/// The bytes of one carried connection and when one last moved.
#[derive(Debug)]
pub(crate) struct Flow {
    start: Instant,
    sent: AtomicU64,
    received: AtomicU64,
    /// Milliseconds after `start` when a byte last moved either way.
    last_ms: AtomicU64,
    /// The Prometheus counters of this connection's peer (telemetry on).
    counters: Option<OutboundBytes>,
}

/// The app's side of a carried connection, counting what crosses it.
#[derive(Debug)]
pub(crate) struct Metered<S> {
    inner: S,
    flow: Arc<Flow>,
}

/// Copies bytes between `app` and `upstream` until one of them closes, nothing moves for
/// `idle`, or the listener's drain time is up.
pub(crate) async fn carry<A, U>(
    app: A,
    upstream: &mut U,
    flow: Arc<Flow>,
    idle: Duration,
    mut shutdown: Shutdown,
) -> CloseReason
where
    A: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut app = Metered {
        inner: app,
        flow: flow.clone(),
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut app, upstream) => match copied {
            Ok(_) => CloseReason::Closed,
            // Either side hanging up hard; there is nobody to tell.
            Err(_) => CloseReason::Error,
        },
        () = flow.idle(idle) => CloseReason::IdleTimeout,
        () = shutdown.closing() => CloseReason::DrainTimeout,
    }
}

// === impl Flow ===

impl Flow {
    /// A flow starting now; `counters` are the peer's byte counters, if recorded.
    pub(crate) fn new(counters: Option<OutboundBytes>) -> Arc<Flow> {
        Arc::new(Flow {
            start: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            counters,
        })
    }

    /// Bytes copied from the app to the destination so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes copied from the destination to the app so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn moved(
        &self,
        total: &AtomicU64,
        n: usize,
        counter: Option<&prometheus_client::metrics::counter::Counter>,
    ) {
        let n = n as u64;
        total.fetch_add(n, Ordering::Relaxed);
        if let Some(counter) = counter {
            counter.inc_by(n);
        }
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Completes once no byte has moved either way for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + limit;
            if Instant::now() >= deadline {
                return;
            }
            // A byte moving meanwhile pushes the deadline on; look again then.
            tokio::time::sleep_until(deadline).await;
        }
    }
}

// === impl Metered ===

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            let flow = &self.flow;
            flow.moved(&flow.sent, n, flow.counters.as_ref().map(|c| &c.sent));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            let flow = &self.flow;
            flow.moved(
                &flow.received,
                n,
                flow.counters.as_ref().map(|c| &c.received),
            );
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn idle_counts_from_the_last_byte() {
        let flow = Flow::new(None);
        tokio::time::sleep(Duration::from_millis(60)).await;
        flow.moved(&flow.sent, 3, None);
        let moved = Instant::now();
        flow.idle(Duration::from_millis(100)).await;
        // Not 100 ms from the start: 100 ms from the byte (less the millisecond rounding).
        assert!(
            moved.elapsed() >= Duration::from_millis(98),
            "{:?}",
            moved.elapsed()
        );
        assert_eq!(flow.sent(), 3);
    }

    #[tokio::test]
    async fn metered_counts_what_crosses_both_ways() {
        let (app, mut peer) = tokio::io::duplex(64);
        let flow = Flow::new(None);
        let mut metered = Metered {
            inner: app,
            flow: flow.clone(),
        };
        peer.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        metered.read_exact(&mut buf).await.unwrap();
        metered.write_all(b"hi there").await.unwrap();
        let mut back = [0u8; 8];
        peer.read_exact(&mut back).await.unwrap();
        assert_eq!((flow.sent(), flow.received()), (5, 8));
    }
}
