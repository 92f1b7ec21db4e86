//! Step 1, accept: binds the inbound listener and turns each accepted TCP connection into an
//! [`Accepted`] value carrying the socket, the client's address and the original destination.
//!
//! Passes on to [`detect`](crate::detect) (permissive mode) or straight to the TLS handshake.
//!
//! Also the life of a listener, shared by both sides: [`serve_connections`] runs each
//! accepted connection on its own task until asked to drain, then stops accepting, gives
//! open connections the drain time to finish, tells the rest to close
//! ([`Shutdown::closing`]) and aborts what still runs after [`CLOSE_GRACE`]. [`Running`] is
//! that loop on its own task, with the handle that starts the drain.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::AppConfig;
use crate::orig_dst::redirected;

/// A bound inbound listener.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
}

/// One accepted connection, before anything has been read from it.
#[derive(Debug)]
pub struct Accepted {
    /// The client's socket.
    pub stream: TcpStream,
    /// Where the connection comes from.
    pub remote: Remote,
    /// Where the client meant to connect: the app address requests are forwarded to.
    pub orig_dst: OrigDst,
}

/// The client's address, as seen by the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote(pub SocketAddr);

/// Where a request goes: the app's IP and the port the client connected to (from
/// `SO_ORIGINAL_DST` under iptables redirection, else the configured app port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst(pub SocketAddr);

/// After the drain time, how long connections told to close get to end (and record how they
/// ended) before their tasks are aborted.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A listener [`serve_connections`] accepts from.
pub trait Accept: Send + 'static {
    /// What one accepted connection carries.
    type Connection: Send + 'static;

    /// Waits for the next connection. Must be cancel-safe (it races the shutdown signal).
    fn accept(&self) -> impl Future<Output = io::Result<Self::Connection>> + Send;
}

/// The inbound listener with the app address its original destinations map to: what the
/// inbound side's [`serve_connections`] accepts from.
#[derive(Debug)]
pub struct AppListener {
    /// The bound listener.
    pub listener: Listener,
    /// The app the accepted connections are forwarded to.
    pub app: AppConfig,
}

/// What each connection of a listener watches to learn that the listener stops.
#[derive(Clone, Debug)]
pub struct Shutdown {
    drain: watch::Receiver<bool>,
    close: watch::Receiver<bool>,
}

/// A listener's accept loop on its own task, and the listener's counters `S` (what
/// `Inbound::spawn` and `Outbound::spawn` return). Dropping it starts the drain without
/// waiting for it.
#[derive(Debug)]
pub struct Running<S> {
    local_addr: SocketAddr,
    stats: Arc<S>,
    drain: watch::Sender<bool>,
    task: JoinHandle<()>,
    side: &'static str,
}

/// Binding the listener failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: io::Error,
}

// === impl Listener ===

impl Listener {
    /// Binds `addr` (use port 0 for an ephemeral port, as tests do).
    pub async fn bind(addr: SocketAddr) -> Result<Self, ListenError> {
        let inner = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError { addr, source })?;
        Ok(Self { inner })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits for the next connection and sets `TCP_NODELAY` on it (requests and responses
    /// are written whole, so Nagle's algorithm only adds latency).
    ///
    /// The destination is the app's IP with the port the client originally connected to
    /// when iptables redirected the connection (`SO_ORIGINAL_DST`), else the configured
    /// app address.
    pub async fn accept(&self, app: &AppConfig) -> io::Result<Accepted> {
        let (stream, remote) = self.inner.accept().await?;
        stream.set_nodelay(true)?;
        let orig_dst = match redirected(&stream) {
            Ok(Some(original)) => SocketAddr::new(app.ip, original.port()),
            Ok(None) => app.addr(),
            Err(error) => {
                tracing::debug!(error = %error, "cannot read the original destination");
                app.addr()
            }
        };
        Ok(Accepted {
            stream,
            remote: Remote(remote),
            orig_dst: OrigDst(orig_dst),
        })
    }
}

// === impl Accept ===

impl Accept for TcpListener {
    type Connection = (TcpStream, SocketAddr);

    fn accept(&self) -> impl Future<Output = io::Result<Self::Connection>> + Send {
        TcpListener::accept(self)
    }
}

impl Accept for AppListener {
    type Connection = Accepted;

    fn accept(&self) -> impl Future<Output = io::Result<Accepted>> + Send {
        self.listener.accept(&self.app)
    }
}

// === impl Shutdown ===

impl Shutdown {
    /// Completes once the listener stops accepting (or its owner is gone): finish what is
    /// in flight.
    pub async fn draining(&mut self) {
        flipped(&mut self.drain).await;
    }

    /// Completes once the drain time is up: end the connection now.
    pub async fn closing(&mut self) {
        flipped(&mut self.close).await;
    }
}

/// Completes once `signal` is true, or its sender is gone.
async fn flipped(signal: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await (it is not Send).
    let _ = signal.wait_for(|on| *on).await;
}

/// Accepts from `listener` and runs `serve` on each connection, on its own task, until
/// `drain` flips to true (or its sender is dropped). Then it stops accepting (the listening
/// socket is closed), waits up to `drain_time` for open connections to end, tells the rest
/// to close ([`Shutdown::closing`]) and aborts those still running after [`CLOSE_GRACE`].
/// `side` names the listener in logs.
pub async fn serve_connections<A, S, F>(
    listener: A,
    mut drain: watch::Receiver<bool>,
    drain_time: Duration,
    side: &'static str,
    mut serve: S,
) where
    A: Accept,
    S: FnMut(A::Connection, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let (close_tx, close) = watch::channel(false);
    let shutdown = Shutdown {
        drain: drain.clone(),
        close,
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => {
                    connections.spawn(serve(connection, shutdown.clone()));
                }
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(side, error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = flipped(&mut drain) => break,
        }
    }
    drop(listener);
    tracing::info!(side, connections = connections.len(), "draining");
    if ended(&mut connections, drain_time).await {
        return;
    }
    tracing::warn!(
        side,
        connections = connections.len(),
        "drain timed out: closing connections"
    );
    let _ = close_tx.send(true);
    if !ended(&mut connections, CLOSE_GRACE).await {
        connections.shutdown().await;
    }
}

/// Waits up to `limit` for every task of `connections` to end; true if they all did.
async fn ended(connections: &mut JoinSet<()>, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok()
}

/// Runs `accept_loop` (given the drain signal) until it ends by itself or `shutdown`
/// completes; then starts the drain and waits for the loop to finish it.
pub async fn serve_until<L, F>(accept_loop: L, shutdown: impl Future<Output = ()> + Send)
where
    L: FnOnce(watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send,
{
    let (tx, rx) = watch::channel(false);
    let serving = accept_loop(rx);
    tokio::pin!(serving);
    tokio::select! {
        () = &mut serving => return,
        () = shutdown => {}
    }
    // Nobody else holds the sender, so this cannot fail while the loop runs.
    let _ = tx.send(true);
    serving.await;
}

// === impl Running ===

impl<S> Running<S> {
    /// Runs `accept_loop` (given the drain signal) on a new task, for the listener bound to
    /// `local_addr` that counts into `stats`; `side` names it in logs.
    pub fn spawn<L, F>(
        local_addr: SocketAddr,
        stats: Arc<S>,
        side: &'static str,
        accept_loop: L,
    ) -> Running<S>
    where
        L: FnOnce(watch::Receiver<bool>) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let (drain, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(rx));
        Running {
            local_addr,
            stats,
            drain,
            task,
            side,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters of this listener.
    pub fn stats(&self) -> Arc<S> {
        self.stats.clone()
    }

    /// Stops accepting and starts the drain, without waiting for it (a proxy shutting down
    /// drains its inbound and outbound sides at once).
    pub fn drain(&self) {
        let _ = self.drain.send(true);
    }

    /// Stops accepting and waits until every connection has ended: open connections get the
    /// drain time to finish, then are closed (bounded by [`CLOSE_GRACE`] more).
    pub async fn shutdown(self) {
        self.drain();
        if let Err(error) = self.task.await {
            tracing::error!(side = self.side, error = %error, "accept loop failed");
        }
    }
}
