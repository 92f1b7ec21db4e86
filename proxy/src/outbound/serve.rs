//! The outbound connection steps, top to bottom:
//!
//! accept → original destination ([`crate::orig_dst`]) → [`route`] → connect (mutual TLS
//! or plaintext, [`super::connect`]) → bytes both ways ([`super::flow`]) until either side
//! closes, the idle timeout, or the end of the drain.
//!
//! The accept loop and the drain are [`crate::listen::serve_connections`]'s. Each connection
//! ends with one log line saying where it went and why it ended, and is recorded by
//! [`super::observe`] (metrics, access log).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::connect::{ConnectError, Connector};
use super::detect::{Protocol, detect};
use super::flow::carry;
use super::observe::{Connected, Observed};
use super::route::{Refusal, Route, route};
use super::{Destinations, OutboundConfig, Stats};
use crate::error_chain::ErrorChain;
use crate::listen::{Shutdown, serve_connections};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{CloseReason, OutboundOutcome};

/// What every connection of one outbound listener shares.
pub(crate) struct Shared {
    pub(crate) config: OutboundConfig,
    pub(crate) connector: Connector,
    pub(crate) stats: Arc<Stats>,
    pub(crate) telemetry: Telemetry,
}

/// Why an outbound connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("cannot read the original destination")]
    OrigDst(#[source] io::Error),
    #[error("refused ({})", .0.as_label())]
    Refused(Refusal),
    #[error("cannot reach the destination")]
    Connect {
        #[source]
        source: ConnectError,
        /// Time spent trying.
        elapsed: Duration,
    },
}

/// Accepts connections until `drain` flips to true, then gives open ones the drain timeout
/// to finish before closing them.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
) {
    let drain_time = shared.config.timeouts.drain;
    serve_connections(
        listener,
        drain,
        drain_time,
        "outbound",
        |(stream, remote), shutdown| serve_connection(stream, remote, shared.clone(), shutdown),
    )
    .await;
}

/// Runs one connection to its end and logs how it ended.
async fn serve_connection(
    app: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    Stats::incr(&shared.stats.connections_accepted);
    let mut observed = Observed::accept(&shared.telemetry, remote);
    match connection(app, remote, &shared, &mut observed, shutdown).await {
        Ok(()) => {}
        Err(ConnectionError::Refused(refusal)) => {
            Stats::incr(&shared.stats.refused);
            observed.refused(refusal.as_label());
            tracing::info!(client = %remote, reason = refusal.as_label(), "outbound connection refused");
        }
        Err(error) => {
            Stats::incr(&shared.stats.failed);
            match &error {
                ConnectionError::Connect { source, elapsed } => {
                    observed.failed(
                        source.as_label(),
                        source.handshake_failure(),
                        Some(*elapsed),
                    );
                }
                _ => observed.failed("orig_dst", None, None),
            }
            tracing::warn!(client = %remote, error = %ErrorChain(&error), "outbound connection failed");
        }
    }
}

async fn connection(
    app: TcpStream,
    remote: SocketAddr,
    shared: &Shared,
    observed: &mut Observed,
    shutdown: Shutdown,
) -> Result<(), ConnectionError> {
    let _ = app.set_nodelay(true);
    let orig_dst = match shared.config.destinations {
        Destinations::Fixed(_) => None,
        Destinations::Transparent(_) => {
            crate::orig_dst::redirected(&app).map_err(ConnectionError::OrigDst)?
        }
    };
    if let Some(dst) = orig_dst {
        observed.destination(dst, None);
    }
    let idle = shared.config.timeouts.idle;
    match route(&shared.config.destinations, orig_dst) {
        Route::Mesh(upstream) => {
            observed.destination(upstream.addr, upstream.expected.as_ref());
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
            let (mut meshed, connect) = timed(shared.connector.mesh(&upstream, protocol)).await?;
            let flow = observed.connected(Connected {
                outcome: OutboundOutcome::Meshed,
                peer: Some(&meshed.peer),
                protocol: Some(protocol),
                resumed: Some(meshed.resumed),
                connect,
            });
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
            let ended = carry(app, &mut meshed.stream, flow, idle, shutdown).await;
            closed(observed, ended, remote, upstream.addr);
        }
        Route::PassThrough(addr) => {
            observed.destination(addr, None);
            let (mut upstream, connect) = timed(shared.connector.plain(addr)).await?;
            let flow = observed.connected(Connected {
                outcome: OutboundOutcome::PassedThrough,
                peer: None,
                protocol: None,
                resumed: None,
                connect,
            });
            Stats::incr(&shared.stats.passed_through);
            tracing::info!(client = %remote, dst = %addr, "outbound connection passed through");
            let ended = carry(app, &mut upstream, flow, idle, shutdown).await;
            closed(observed, ended, remote, addr);
        }
        Route::Refuse(refusal) => return Err(ConnectionError::Refused(refusal)),
    }
    Ok(())
}

/// Runs one connect step and notes how long it took, failed or not.
async fn timed<T>(
    connecting: impl Future<Output = Result<T, ConnectError>>,
) -> Result<(T, Duration), ConnectionError> {
    let started = Instant::now();
    match connecting.await {
        Ok(connected) => Ok((connected, started.elapsed())),
        Err(source) => Err(ConnectionError::Connect {
            source,
            elapsed: started.elapsed(),
        }),
    }
}

/// Records and logs how a carried connection ended.
fn closed(observed: &mut Observed, ended: CloseReason, remote: SocketAddr, dst: SocketAddr) {
    observed.closed(ended);
    tracing::debug!(client = %remote, dst = %dst, reason = ended.as_str(), "outbound connection closed");
}
