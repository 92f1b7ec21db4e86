//! HTTP step 4, forward — the HTTP/1.1 connections to the app: one small idle set shared by
//! every client connection, h1 and h2 alike.
//!
//! Takes an app address; passes on a [`Lease`]: a connection ready for one request. The
//! lease rides in the app's response body ([`LeasedBody`]) and goes back to the idle set
//! the moment that body has been read to its end, so a client connection holds an app
//! connection only while one of its requests is in flight (an idle client costs no app
//! connection). A body that is dropped early, a 101 upgrade or a failed exchange never
//! comes back: hyper closes that connection.
//!
//! Per request this is one uncontended lock to take a connection and one to put it back;
//! hyper-util's pooled client also hashes a pool key, builds its connect future, and for
//! HTTP/1 spawns a task per request to wait for the connection to come back.
//!
//! The idle set is bounded: at most [`MAX_IDLE`] connections (the oldest is closed first),
//! and a connection left idle for one to two idle timeouts is closed by a reaper task
//! that wakes once per idle timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ForwardError;
use crate::inbound::body::ProgressBody;
use crate::send_io::SendIo;

/// At most this many idle app connections are kept (all app ports together).
pub(crate) const MAX_IDLE: usize = 128;

/// The HTTP/1.1 connections to the app. Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub(crate) struct Http1Pool(Arc<Inner>);

/// One app connection, ready for one request, until it is released or dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    sender: SendRequest<ProgressBody>,
    addr: SocketAddr,
    /// Taken from the idle set (it may have been closed by the app in the meantime), not
    /// just connected.
    reused: bool,
    pool: Http1Pool,
}

/// The app's response body; returns its connection to the idle set once read to the end.
#[derive(Debug)]
pub(crate) struct LeasedBody {
    inner: Incoming,
    lease: Option<Lease>,
}

#[derive(Debug)]
struct Inner {
    idle: Mutex<Vec<Idle>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// The reaper is started with the first connection (inside the runtime), once.
    reaping: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    addr: SocketAddr,
    sender: SendRequest<ProgressBody>,
    /// Already idle when the reaper last looked: closed at its next look.
    seen: bool,
}

// === impl Http1Pool ===

impl Http1Pool {
    /// An empty pool; connections take at most `connect_timeout` to open and are closed
    /// after one to two `idle_timeout`s unused.
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self(Arc::new(Inner {
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            idle_timeout,
            reaping: AtomicBool::new(false),
        }))
    }

    /// The most recently used idle connection to `addr` that is still open, else a new one.
    pub(crate) async fn checkout(&self, addr: SocketAddr) -> Result<Lease, ForwardError> {
        while let Some(sender) = self.take_idle(addr) {
            let mut lease = Lease {
                sender,
                addr,
                reused: true,
                pool: self.clone(),
            };
            // An HTTP/1 connection is ready again once hyper has read the previous
            // response to its end; that is usually already the case. An error means the
            // app closed it while idle: try the next one.
            if lease.sender.ready().await.is_ok() {
                return Ok(lease);
            }
        }
        // Boxed: connecting is rare once the pool is warm, and its future would otherwise
        // make every request's future larger.
        Box::pin(self.connect(addr)).await
    }

    /// A new connection to `addr`: refused → [`ForwardError::Refused`], not within the
    /// connect timeout → [`ForwardError::ConnectTimeout`].
    pub(crate) async fn connect(&self, addr: SocketAddr) -> Result<Lease, ForwardError> {
        let limit = self.0.connect_timeout;
        let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Err(_) => return Err(ForwardError::ConnectTimeout),
            Ok(Err(error)) if error.kind() == io::ErrorKind::TimedOut => {
                return Err(ForwardError::ConnectTimeout);
            }
            Ok(Err(error)) => return Err(ForwardError::Refused(error.into())),
            Ok(Ok(stream)) => stream,
        };
        stream
            .set_nodelay(true)
            .map_err(|error| ForwardError::Refused(error.into()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(SendIo(stream)))
            .await
            .map_err(|error| ForwardError::Upstream(error.into()))?;
        tokio::spawn(async move {
            // Upgrades: after a 101 the connection's bytes belong to the tunnel.
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(error = %error, "app connection ended");
            }
        });
        if !self.0.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(&self.0)));
        }
        Ok(Lease {
            sender,
            addr,
            reused: false,
            pool: self.clone(),
        })
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<SendRequest<ProgressBody>> {
        let mut idle = self.0.lock();
        while let Some(at) = idle.iter().rposition(|idle| idle.addr == addr) {
            let taken = idle.remove(at);
            if !taken.sender.is_closed() {
                return Some(taken.sender);
            }
        }
        None
    }

    fn release(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let mut idle = self.0.lock();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            addr: lease.addr,
            sender: lease.sender,
            seen: false,
        });
    }
}

impl Inner {
    /// The idle set; a panic while it was held cannot leave it inconsistent (every change
    /// is one `Vec` call), so a poisoned lock is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes connections that stayed idle between two looks, one look per idle timeout,
/// until the pool is gone.
async fn reap(pool: Weak<Inner>) {
    let Some(period) = pool.upgrade().map(|pool| pool.idle_timeout) else {
        return;
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let closed: Vec<Idle> = {
            let mut idle = pool.lock();
            let (closed, kept) = idle
                .drain(..)
                .partition(|idle| idle.seen || idle.sender.is_closed());
            *idle = kept;
            for idle in idle.iter_mut() {
                idle.seen = true;
            }
            closed
        };
        // Dropped outside the lock.
        drop(closed);
    }
}

// === impl Lease ===

impl Lease {
    /// Taken from the idle set rather than just connected: a request it could not send
    /// may be retried on a new connection.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// The connection's request sender.
    pub(crate) fn sender(&mut self) -> &mut SendRequest<ProgressBody> {
        &mut self.sender
    }

    /// Puts the connection back into the idle set (if it is still open).
    fn release(self) {
        let pool = self.pool.clone();
        pool.release(self);
    }
}

// === impl LeasedBody ===

impl LeasedBody {
    /// `inner`, the response that arrived on `lease`'s connection.
    pub(crate) fn new(inner: Incoming, lease: Lease) -> Self {
        let mut body = Self {
            inner,
            lease: Some(lease),
        };
        body.release_if_ended();
        body
    }

    fn release_if_ended(&mut self) {
        if self.inner.is_end_stream()
            && let Some(lease) = self.lease.take()
        {
            lease.release();
        }
    }
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            // A failed body leaves the connection unusable: hyper closes it.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            Poll::Ready(Some(Ok(_))) => this.release_if_ended(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    const SECOND: Duration = Duration::from_secs(1);

    /// A listener that accepts and holds connections (an HTTP/1 handshake sends nothing),
    /// counting them.
    async fn app() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        (addr, accepted)
    }

    fn idle_count(pool: &Http1Pool) -> usize {
        pool.0.lock().len()
    }

    #[tokio::test]
    async fn released_connections_are_reused() {
        let (addr, accepted) = app().await;
        let pool = Http1Pool::new(SECOND, 60 * SECOND);
        let first = pool.checkout(addr).await.unwrap();
        assert!(!first.reused());
        first.release();
        let again = pool.checkout(addr).await.unwrap();
        assert!(again.reused());
        assert_eq!(idle_count(&pool), 0);
        // A lease dropped without release (a body cut short) is not reused.
        drop(again);
        let fresh = pool.checkout(addr).await.unwrap();
        assert!(!fresh.reused());
        for _ in 0..100 {
            if accepted.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_set_is_bounded() {
        let (addr, _) = app().await;
        let pool = Http1Pool::new(SECOND, 60 * SECOND);
        let mut leases = Vec::new();
        for _ in 0..=MAX_IDLE {
            leases.push(pool.connect(addr).await.unwrap());
        }
        for lease in leases {
            lease.release();
        }
        assert_eq!(idle_count(&pool), MAX_IDLE);
    }

    #[tokio::test]
    async fn idle_connections_are_reaped() {
        let (addr, _) = app().await;
        let idle_timeout = Duration::from_millis(50);
        let pool = Http1Pool::new(SECOND, idle_timeout);
        pool.connect(addr).await.unwrap().release();
        assert_eq!(idle_count(&pool), 1);
        for _ in 0..100 {
            if idle_count(&pool) == 0 {
                break;
            }
            tokio::time::sleep(idle_timeout).await;
        }
        assert_eq!(idle_count(&pool), 0);
    }

    #[tokio::test]
    async fn refused_connections_are_told_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = Http1Pool::new(SECOND, 60 * SECOND);
        let refused = pool.checkout(addr).await.unwrap_err();
        assert!(matches!(refused, ForwardError::Refused(_)), "{refused:?}");
    }
}
