//! HTTP step 4b, tunnel: after the app answers `101 Switching Protocols` to an upgrade that a
//! rule allowed (WebSocket), bytes are copied both ways between the client and the app until
//! either side closes.
//!
//! Takes the two pending upgrades from [`forward`](super::forward), which leaves the copy in
//! the connection's [`TunnelSlot`]; passes nothing on. The copy runs in the client
//! connection's own task once hyper has handed the connection over
//! ([`serve`](super::serve) takes it from the slot), so a drain waits for an open tunnel as
//! it waits for a request in flight, and closes it when the drain time is up.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::request_id::RequestId;

/// The copy of one upgraded connection, not yet started.
type Tunnel = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the forward step leaves a connection's tunnel for the connection's task to run.
/// One per client connection; an HTTP/1.1 connection upgrades at most once.
#[derive(Clone, Default)]
pub(crate) struct TunnelSlot(Arc<Mutex<Option<Tunnel>>>);

// === impl TunnelSlot ===

impl TunnelSlot {
    /// Leaves the copy between `downstream` (the client) and `upstream` (the app) for the
    /// connection's task.
    pub(crate) fn open(&self, downstream: OnUpgrade, upstream: OnUpgrade, id: RequestId) {
        let tunnel: Tunnel = Box::pin(copy(downstream, upstream, id));
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(tunnel);
    }

    /// The tunnel left by the forward step, if the connection was upgraded.
    pub(crate) fn take(&self) -> Option<impl Future<Output = ()> + Send + use<>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl fmt::Debug for TunnelSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelSlot").finish_non_exhaustive()
    }
}

/// Copies bytes both ways between an upgraded client connection and the app.
async fn copy(downstream: OnUpgrade, upstream: OnUpgrade, id: RequestId) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::info!(request.id = %id, error = %error, "upgrade failed");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(request.id = %id, error = %error, "upgraded connection ended");
    }
}
