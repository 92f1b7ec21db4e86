//! HTTP step 4, forward — the HTTP/1.1 connections to the app: one small idle set shared by
//! every client connection, h1 and h2 alike.
//!
//! Takes an app address; passes on a [`Lease`]: a connection ready for one request. The
//! lease rides in the app's response body ([`LeasedBody`]) and goes back to the idle set
//! the moment that body has been read to its end, so a client connection holds an app
//! connection only while one of its requests is in flight (an idle client costs no app
//! connection). A body that is dropped early or a failed exchange never comes back: the
//! connection is closed. After a 101 upgrade the connection goes on in a task of its own
//! (hyper hands its bytes to the tunnel) and never comes back either.
//!
//! hyper's state machine for a connection (its `Connection` future) is driven by the
//! request that holds the lease, not by a task of its own: [`Lease::send`] polls it until
//! the response head is in, and [`LeasedBody`] polls it whenever the body has nothing
//! ready. The request and the response still pass through hyper's channel and one-shot,
//! but within the request's task, and only the app's socket (or the client's request body)
//! wakes that task: the wakes hyper's channels would send it about its own doing are
//! dropped ([`Wakeup`]). So the state machine is driven only while the response is
//! awaited or read, and the request body goes to the app only then too. A connection in
//! the idle set is polled by nobody: an app that closed it meanwhile is noticed by the
//! next request sent on it, which then comes back unsent and is sent again (see
//! [`send_http1`](super::send_http1)), or by the reaper, which polls each connection it
//! looks at. A response that ends before its request body was sent (the app answered
//! early) leaves a connection that is not idle yet: a task drives it there, then puts it
//! back.
//!
//! Per request this is one uncontended lock to take a connection and one to put it back,
//! three more for the connection's waker (set to the request's task, cleared, and read by
//! the wake from the app's socket), two polls of hyper's state machine (one sends, one
//! reads the answer, usually with its body) and no task switch; hyper-util's pooled client
//! also hashes a pool key, builds its connect future, and for HTTP/1 spawns a task per
//! request to wait for the connection to come back.
//!
//! The idle set is bounded: at most [`MAX_IDLE`] connections (the oldest is closed first),
//! and a connection left idle for one to two idle timeouts is closed by a reaper task
//! that wakes once per idle timeout.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ForwardError;
use crate::inbound::body::ProgressBody;

/// At most this many idle app connections are kept (all app ports together).
pub(crate) const MAX_IDLE: usize = 128;

/// The HTTP/1.1 connections to the app. Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub(crate) struct Http1Pool(Arc<Inner>);

/// One app connection, ready for one request, until it is released or dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    connection: AppConnection,
    addr: SocketAddr,
    /// Taken from the idle set (it may have been closed by the app in the meantime), not
    /// just connected.
    reused: bool,
    pool: Http1Pool,
}

/// The app's response body; drives its connection while it waits for bytes, and returns
/// the connection to the idle set once read to the end.
#[derive(Debug)]
pub(crate) struct LeasedBody {
    inner: Incoming,
    lease: Option<Lease>,
}

/// hyper's state machine for one connection, upgrades included. Boxed: hyper does not name
/// the type.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send + Sync>>;

/// One app connection: where requests go in, and the state machine that moves its bytes
/// when polled.
struct AppConnection {
    sender: SendRequest<ProgressBody>,
    /// `None` once the connection has ended (closed by either side, failed, or upgraded).
    driver: Option<Driver>,
    /// The waker the state machine is polled with: `wakeup`'s.
    waker: Waker,
    wakeup: Arc<Wakeup>,
    /// The task `wakeup` wakes, to compare without its lock.
    task: Option<Waker>,
}

/// Whom the connection's waker wakes: the task holding the lease, nobody while it is
/// idle. While the holder sends a request or takes the response body's bytes, wakes are
/// dropped: hyper's channels then wake whoever polled the state machine last, to have it
/// polled again, which the holder does anyway right after sending, and when the body
/// next has nothing ready; waking its own task would only poll the task once more for
/// nothing. A wake from another thread in that moment (the app's socket) is not lost:
/// the state machine sees the socket's readiness when it is polled right after, and
/// where it is not, the dropped wake is made up for ([`LeasedBody`]).
#[derive(Default)]
struct Wakeup {
    task: Mutex<Option<Waker>>,
    /// [`AWAKE`], [`QUIET`] or [`DROPPED`]: one atomic, so that a wake from another thread
    /// is either dropped and seen as such, or delivered.
    state: AtomicU8,
}

/// Wakes are delivered.
const AWAKE: u8 = 0;
/// Wakes are dropped, none yet.
const QUIET: u8 = 1;
/// Wakes are dropped, and one was.
const DROPPED: u8 = 2;

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
    connection: AppConnection,
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

    /// The most recently used idle connection to `addr`, else a new one. The app may have
    /// closed an idle connection meanwhile: sending on it finds out, and gives the request
    /// back unsent (see [`Lease::send`]).
    pub(crate) async fn checkout(&self, addr: SocketAddr) -> Result<Lease, ForwardError> {
        if let Some(connection) = self.take_idle(addr) {
            return Ok(Lease {
                connection,
                addr,
                reused: true,
                pool: self.clone(),
            });
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
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ForwardError::Upstream(error.into()))?;
        if !self.0.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(&self.0)));
        }
        let wakeup = Arc::new(Wakeup::default());
        Ok(Lease {
            connection: AppConnection {
                sender,
                // Upgrades: after a 101 the connection's bytes belong to the tunnel.
                driver: Some(Box::pin(connection.with_upgrades())),
                waker: Waker::from(wakeup.clone()),
                wakeup,
                task: None,
            },
            addr,
            reused: false,
            pool: self.clone(),
        })
    }

    /// The most recently released idle connection to `addr`.
    fn take_idle(&self, addr: SocketAddr) -> Option<AppConnection> {
        let mut idle = self.0.lock();
        let at = idle.iter().rposition(|idle| idle.addr == addr)?;
        Some(idle.remove(at).connection)
    }

    /// Puts a connection whose exchange is over into the idle set, if it is ready for the
    /// next request; one still sending its request body gets there in a task of its own.
    fn release(&self, mut lease: Lease) {
        if lease.connection.driver.is_none() {
            return;
        }
        // Usually hyper is ready for the next request by the time the response body ends;
        // a connection that never carried a request gets there when first polled.
        if lease.connection.sender.is_ready() || lease.connection.poll_idle() {
            self.push_idle(lease.addr, lease.connection);
        } else if lease.connection.driver.is_some() {
            tokio::spawn(settle(lease));
        }
    }

    fn push_idle(&self, addr: SocketAddr, mut connection: AppConnection) {
        connection.wake(None);
        let mut idle = self.0.lock();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            addr,
            connection,
            seen: false,
        });
    }
}

#[cfg(test)]
impl Http1Pool {
    /// How many connections are idle.
    pub(crate) fn idle_len(&self) -> usize {
        self.0.lock().len()
    }
}

impl Inner {
    /// The idle set; a panic while it was held cannot leave it inconsistent (every change
    /// is one `Vec` call), so a poisoned lock is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drives a connection whose response ended before its request did (the app answered
/// without reading the whole request body) until it is ready for another request, then
/// puts it back into the idle set.
async fn settle(mut lease: Lease) {
    let ready = poll_fn(|cx| {
        lease.connection.drive(cx);
        if lease.connection.driver.is_none() {
            return Poll::Ready(false);
        }
        lease
            .connection
            .sender
            .poll_ready(cx)
            .map(|ready| ready.is_ok())
    })
    .await;
    if ready {
        lease.pool.push_idle(lease.addr, lease.connection);
    }
}

/// Closes connections that stayed idle between two looks, or that the app closed, one
/// look per idle timeout, until the pool is gone.
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
            let closed = idle
                .extract_if(.., |idle| idle.seen || !idle.connection.poll_idle())
                .collect();
            for idle in idle.iter_mut() {
                idle.seen = true;
            }
            closed
        };
        // Dropped outside the lock.
        drop(closed);
    }
}

/// Polls `future` once with a waker that does nothing, outside tokio's cooperative budget
/// (a spent budget would make the poll do nothing, and nothing would wake it later). For
/// futures that only make progress when something else the caller polls makes progress,
/// so that they never wake the task that is polling them right now.
fn poll_once_unwoken<F: Future + Unpin>(future: F) -> Poll<F::Output> {
    let mut unconstrained = tokio::task::coop::unconstrained(future);
    Pin::new(&mut unconstrained).poll(&mut Context::from_waker(Waker::noop()))
}

// === impl AppConnection ===

impl AppConnection {
    /// Lets hyper read and write what it can; `cx` is woken when it can do more (the
    /// app's socket, the request body).
    fn drive(&mut self, cx: &mut Context<'_>) {
        self.wake(Some(cx.waker()));
        self.poll_driver();
    }

    /// From now on, the connection's waker wakes `task` (nobody if `None`).
    fn wake(&mut self, task: Option<&Waker>) {
        match (&self.task, task) {
            (Some(current), Some(task)) if current.will_wake(task) => {}
            (None, None) => {}
            _ => {
                self.task = task.cloned();
                self.wakeup.set(task.cloned());
            }
        }
    }

    /// Polls the state machine with the connection's own waker.
    fn poll_driver(&mut self) {
        if let Some(driver) = &mut self.driver
            && let Poll::Ready(ended) = driver.as_mut().poll(&mut Context::from_waker(&self.waker))
        {
            if let Err(error) = ended {
                tracing::debug!(error = %error, "app connection ended");
            }
            self.driver = None;
        }
    }

    /// Polls an idle connection that nobody waits on: whether it is still open and ready
    /// for a request. One that is not is closed when dropped.
    fn poll_idle(&mut self) -> bool {
        // The waker wakes nobody while the connection is idle.
        let _ = poll_once_unwoken(poll_fn(|_| {
            self.poll_driver();
            Poll::Ready(())
        }));
        self.driver.is_some() && self.sender.is_ready()
    }
}

// === impl Wakeup ===

impl Wakeup {
    /// Calls `f`, dropping every wake meanwhile; also whether one was dropped.
    fn quietly<T>(&self, f: impl FnOnce() -> T) -> (T, bool) {
        self.state.store(QUIET, Ordering::SeqCst);
        let result = f();
        let dropped = self.state.swap(AWAKE, Ordering::SeqCst) == DROPPED;
        (result, dropped)
    }

    /// From now on, wakes `task` (nobody if `None`).
    fn set(&self, task: Option<Waker>) {
        // The previous waker is dropped outside the lock.
        let _previous = std::mem::replace(
            &mut *self.task.lock().unwrap_or_else(PoisonError::into_inner),
            task,
        );
    }
}

impl std::task::Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // QUIET becomes DROPPED; AWAKE stays and the wake goes through.
        let quiet = self
            .state
            .compare_exchange(QUIET, DROPPED, Ordering::SeqCst, Ordering::SeqCst);
        if matches!(quiet, Ok(_) | Err(DROPPED)) {
            return;
        }
        if let Some(task) = &*self.task.lock().unwrap_or_else(PoisonError::into_inner) {
            task.wake_by_ref();
        }
    }
}

impl fmt::Debug for AppConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConnection")
            .field("ended", &self.driver.is_none())
            .finish_non_exhaustive()
    }
}

// === impl Lease ===

impl Lease {
    /// Taken from the idle set rather than just connected: a request it could not send
    /// may be sent again on another connection.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Sends `request` and drives the connection until the response head is in. A request
    /// the connection could not start sending (the app closed it) comes back in the error.
    pub(crate) async fn send(
        &mut self,
        request: Request<ProgressBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ProgressBody>>> {
        let connection = &mut self.connection;
        // The channel wakes whoever polled the connection last: nobody needs that wake.
        let sender = &mut connection.sender;
        let (response, _) = connection
            .wakeup
            .quietly(|| sender.try_send_request(request));
        let mut response = pin!(response);
        // The response comes out of hyper's one-shot only while the connection is polled
        // here, so that poll wakes this task and the one-shot never does.
        poll_fn(|cx| {
            connection.drive(cx);
            poll_once_unwoken(response.as_mut())
        })
        .await
    }

    /// Lets the connection finish on its own, in a task: after a 101 hyper hands its bytes
    /// to the tunnel once it has read the response. It never comes back to the pool.
    pub(crate) fn detach(self) {
        if let Some(driver) = self.connection.driver {
            tokio::spawn(async move {
                if let Err(error) = driver.await {
                    tracing::debug!(error = %error, "app connection ended");
                }
            });
        }
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
        let polled = match &mut this.lease {
            // The body's bytes arrive only while its connection is polled: what hyper has
            // already read, else what one more poll of the connection reads. That poll
            // wakes this task when the app sends more; the body itself never does.
            Some(lease) => {
                let inner = &mut this.inner;
                let mut take = || {
                    let mut unwoken = Context::from_waker(Waker::noop());
                    Pin::new(&mut *inner).poll_frame(&mut unwoken)
                };
                let (mut polled, _) = lease.connection.wakeup.quietly(&mut take);
                if polled.is_pending() {
                    lease.connection.drive(cx);
                    let dropped;
                    (polled, dropped) = lease.connection.wakeup.quietly(&mut take);
                    // Taking nothing wakes nobody: a wake dropped meanwhile came from
                    // another thread after the connection was polled, and nothing polls
                    // it again unless this task is woken.
                    if polled.is_pending() && dropped {
                        cx.waker().wake_by_ref();
                    }
                }
                polled
            }
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            // A failed body leaves the connection unusable: it is closed.
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

    #[tokio::test]
    async fn released_connections_are_reused() {
        let (addr, accepted) = app().await;
        let pool = Http1Pool::new(SECOND, 60 * SECOND);
        let first = pool.checkout(addr).await.unwrap();
        assert!(!first.reused());
        first.release();
        let again = pool.checkout(addr).await.unwrap();
        assert!(again.reused());
        assert_eq!(pool.idle_len(), 0);
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
        assert_eq!(pool.idle_len(), MAX_IDLE);
    }

    #[tokio::test]
    async fn idle_connections_are_reaped() {
        let (addr, _) = app().await;
        let idle_timeout = Duration::from_millis(50);
        let pool = Http1Pool::new(SECOND, idle_timeout);
        pool.connect(addr).await.unwrap().release();
        assert_eq!(pool.idle_len(), 1);
        for _ in 0..100 {
            if pool.idle_len() == 0 {
                break;
            }
            tokio::time::sleep(idle_timeout).await;
        }
        assert_eq!(pool.idle_len(), 0);
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
