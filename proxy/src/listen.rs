//! Step 1, accept: binds the inbound listener and turns each accepted TCP connection into an
//! [`Accepted`] value carrying the socket, the client's address and the original destination.
//!
//! Passes on to [`detect`](crate::detect) (permissive mode) or straight to the TLS handshake.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

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
