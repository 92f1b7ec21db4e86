//! The outbound connection steps, top to bottom:
//!
//! accept → original destination ([`crate::orig_dst`]) → [`route`] → connect (mutual TLS
//! or plaintext, [`super::connect`]) → bytes both ways until either side closes.
//!
//! Each connection ends with one log line saying where it went and why it ended.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connect::{ConnectError, Connector};
use super::detect::{Protocol, detect};
use super::route::{Refusal, Route, route};
use super::{Destinations, OutboundConfig, Stats};

/// What every connection of one outbound listener shares.
pub(crate) struct Shared {
    pub(crate) config: OutboundConfig,
    pub(crate) connector: Connector,
    pub(crate) stats: Arc<Stats>,
}

/// Why an outbound connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("cannot read the original destination")]
    OrigDst(#[source] io::Error),
    #[error("refused ({})", .0.as_label())]
    Refused(Refusal),
    #[error("cannot reach the destination")]
    Connect(#[source] ConnectError),
}

/// Accepts connections until `shutdown` flips to true, then gives open ones the drain
/// timeout to finish.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    Stats::incr(&shared.stats.connections_accepted);
                    connections.spawn(serve_connection(stream, remote, shared.clone()));
                }
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %error, "outbound accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drain = shared.config.timeouts.drain;
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "outbound drain timed out: closing connections"
        );
        connections.shutdown().await;
    }
}

/// Completes once shutdown has been asked for (or the sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await (it is not Send).
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs one connection to its end and logs how it ended.
async fn serve_connection(app: TcpStream, remote: SocketAddr, shared: Arc<Shared>) {
    match connection(app, remote, &shared).await {
        Ok(()) => {}
        Err(ConnectionError::Refused(refusal)) => {
            Stats::incr(&shared.stats.refused);
            tracing::info!(client = %remote, reason = refusal.as_label(), "outbound connection refused");
        }
        Err(error) => {
            Stats::incr(&shared.stats.failed);
            tracing::warn!(client = %remote, error = %Chain(&error), "outbound connection failed");
        }
    }
}

async fn connection(
    mut app: TcpStream,
    remote: SocketAddr,
    shared: &Shared,
) -> Result<(), ConnectionError> {
    let _ = app.set_nodelay(true);
    let orig_dst = match shared.config.destinations {
        Destinations::Fixed(_) => None,
        Destinations::Transparent(_) => {
            crate::orig_dst::redirected(&app).map_err(ConnectionError::OrigDst)?
        }
    };
    match route(&shared.config.destinations, orig_dst) {
        Route::Mesh(upstream) => {
            let opaque = match &shared.config.destinations {
                Destinations::Transparent(rules) => {
                    rules.opaque_ports.contains(&upstream.addr.port())
                }
                Destinations::Fixed(_) => false,
            };
            let protocol = if opaque {
                Protocol::Opaque
            } else {
                detect(&app, shared.config.timeouts.detect).await
            };
            let mut meshed = shared
                .connector
                .mesh(&upstream, protocol)
                .await
                .map_err(ConnectionError::Connect)?;
            Stats::incr(&shared.stats.meshed);
            if meshed.resumed {
                Stats::incr(&shared.stats.resumed);
            }
            tracing::info!(
                client = %remote,
                dst = %upstream.addr,
                peer.id = %meshed.peer,
                tls.resumed = meshed.resumed,
                h2 = protocol == Protocol::H2,
                "outbound connection meshed"
            );
            // Errors here are either side hanging up; there is nobody to tell.
            let _ = tokio::io::copy_bidirectional(&mut app, &mut meshed.stream).await;
        }
        Route::PassThrough(addr) => {
            let mut upstream = shared
                .connector
                .plain(addr)
                .await
                .map_err(ConnectionError::Connect)?;
            Stats::incr(&shared.stats.passed_through);
            tracing::info!(client = %remote, dst = %addr, "outbound connection passed through");
            let _ = tokio::io::copy_bidirectional(&mut app, &mut upstream).await;
        }
        Route::Refuse(refusal) => return Err(ConnectionError::Refused(refusal)),
    }
    Ok(())
}

/// Displays an error with its sources, `a: b: c`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
