//! The connection steps, one plain async function each, and the accept loop that runs them:
//!
//! [`Accepted`] → detect (permissive mode) → TLS handshake → `Handshaken { peer }` →
//! HTTP/1.1 or h2 (by ALPN; an h2 connection's streams run in its task,
//! [`streams`](super::streams)) → the listener's cap on requests in flight
//! ([`overload`](super::overload)) → the [`stack`], or, on an opaque port, identity-only
//! authorization and a byte copy to the app.
//!
//! On shutdown the loop stops accepting, asks every connection to finish (HTTP/1: close
//! after the current response; h2: GOAWAY), waits up to the drain timeout, then drops what
//! is left.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use palisade_config::{MtlsMode, Peer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::authorize::PeerDisplay;
use super::idle::{Activity, TrackedBody};
use super::overload::Overloaded;
use super::respond::{self, Rejection};
use super::stats::Stats;
use super::streams::{StreamExecutor, WithStreams};
use super::tunnel::TunnelSlot;
use super::wakers::PartWakers;
use super::{ResponseBody, Shared, stack};
use crate::detect::{DetectError, Protocol, detect};
use crate::error_chain::ErrorChain;
use crate::listen::{Accepted, AppListener, Listener, OrigDst, Shutdown, serve_connections};
use crate::send_io::SendIo;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::DetectOutcome;
use crate::telemetry::observe::ObserveLayer;
use crate::tls::HandshakeFailure;

/// A connection whose peer is known: after a TLS handshake, or plaintext in permissive mode.
struct Handshaken {
    io: BoxedIo,
    peer: Peer,
    http: HttpVersion,
    dst: OrigDst,
}

/// The byte stream of a connection, TLS or plaintext, behind one type: the HTTP servers and
/// the opaque copy are compiled once, not once per stream type (each copy of hyper's
/// servers adds code that every process maps).
type BoxedIo = Box<dyn Io>;

/// What [`BoxedIo`] can hold.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the client will speak, as far as the handshake tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HttpVersion {
    /// ALPN `h2`.
    H2,
    /// ALPN `http/1.1`, or TLS without ALPN.
    Http1,
    /// Plaintext: HTTP/1.1, or h2 with prior knowledge (told apart by the preface).
    Either,
}

/// The part of [`drive`]'s wake-ups that is its signals: shutdown or the idle timer.
const SIGNALS: u8 = 1;

/// Why a connection ended early. Only logged.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("cannot detect the protocol")]
    Detect(#[source] DetectError),
    #[error("tls handshake failed")]
    Handshake(#[source] io::Error),
    #[error("tls handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("client certificate carries no spiffe id")]
    NoPeerIdentity,
    #[error("peer not admitted to opaque port {0}")]
    NotAdmitted(u16),
    #[error("cannot connect to the app")]
    AppConnect(#[source] io::Error),
    #[error("http connection failed")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Accepts connections until `drain` flips to true, then drains
/// ([`crate::listen::serve_connections`]).
pub(crate) async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
) {
    let listener = AppListener {
        listener,
        app: shared.config.app.clone(),
    };
    let drain_time = shared.config.timeouts.drain;
    serve_connections(
        listener,
        drain,
        drain_time,
        "inbound",
        |accepted, shutdown| {
            Stats::incr(&shared.stats.connections_accepted);
            serve_connection(accepted, shared.clone(), shutdown)
        },
    )
    .await;
}

/// Runs one connection to its end and logs why it ended.
async fn serve_connection(accepted: Accepted, shared: Arc<Shared>, shutdown: Shutdown) {
    let remote = accepted.remote.0;
    let _open = OpenConnection::count(&shared.stats);
    let _observed = shared.telemetry.metrics().map(Metrics::connection);
    match connection(accepted, &shared, shutdown).await {
        Ok(()) => {}
        // Refused peers are worth a line at the default level; hang-ups are not.
        Err(
            error @ (ConnectionError::Handshake(_)
            | ConnectionError::HandshakeTimeout(_)
            | ConnectionError::NoPeerIdentity
            | ConnectionError::NotAdmitted(_)),
        ) => {
            let reason = match &error {
                ConnectionError::Handshake(io) => HandshakeFailure::of_io(io).as_label(),
                ConnectionError::HandshakeTimeout(_) => "timeout",
                ConnectionError::NoPeerIdentity => "no_spiffe_id",
                _ => "not_admitted",
            };
            if let (Some(metrics), false) = (
                shared.telemetry.metrics(),
                matches!(error, ConnectionError::NotAdmitted(_)),
            ) {
                metrics.handshake_failed(reason);
            }
            tracing::info!(client.addr = %remote, reason, error = %ErrorChain(&error), "connection refused");
        }
        Err(error) => {
            tracing::debug!(client.addr = %remote, error = %ErrorChain(&error), "connection ended");
        }
    }
}

/// Counts a connection as open until dropped, also when the drain timeout aborts its task.
struct OpenConnection(Arc<Stats>);

impl OpenConnection {
    fn count(stats: &Arc<Stats>) -> Self {
        Stats::incr(&stats.connections_open);
        Self(stats.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        Stats::decr(&self.0.connections_open);
    }
}

impl Handshaken {
    /// Takes the connection out of its box and frees the box now. (Destructuring `*boxed`
    /// in place would keep the allocation until the enclosing async fn returns, which for a
    /// connection is at its end.)
    #[expect(
        clippy::boxed_local,
        reason = "taking the box is the point: it is freed here"
    )]
    fn unbox(self: Box<Self>) -> Self {
        *self
    }
}

async fn connection(
    accepted: Accepted,
    shared: &Arc<Shared>,
    shutdown: Shutdown,
) -> Result<(), ConnectionError> {
    let stats = &shared.stats;
    let mtls = shared.config.policy.load().mtls();
    let protocol = match mtls {
        MtlsMode::Strict => Protocol::Tls,
        MtlsMode::Permissive => {
            let detected = detect(&accepted.stream, shared.config.timeouts.detect).await;
            let outcome = match &detected {
                Ok(Protocol::Tls) => {
                    Stats::incr(&stats.detected_tls);
                    DetectOutcome::Tls
                }
                Ok(Protocol::Plaintext) => {
                    Stats::incr(&stats.detected_plaintext);
                    DetectOutcome::Plaintext
                }
                Err(error) => {
                    Stats::incr(&stats.detect_failures);
                    match error {
                        DetectError::TimedOut(_) => DetectOutcome::Timeout,
                        _ => DetectOutcome::Error,
                    }
                }
            };
            if let Some(metrics) = shared.telemetry.metrics() {
                metrics.detected(outcome);
            }
            detected.map_err(ConnectionError::Detect)?
        }
    };
    match protocol {
        Protocol::Tls => {
            // Boxed: the handshake's state (a TLS stream in the making) would otherwise stay
            // in the connection's task for the connection's whole life.
            let handshaken = Box::pin(handshake(accepted, shared))
                .await
                .inspect_err(|_| {
                    Stats::incr(&stats.handshake_failures);
                })?;
            serve_handshaken(handshaken, shared, shutdown).await
        }
        Protocol::Plaintext => {
            let handshaken = Box::new(Handshaken {
                io: Box::new(SendIo(accepted.stream)),
                peer: Peer::Unauthenticated,
                http: HttpVersion::Either,
                dst: accepted.orig_dst,
            });
            serve_handshaken(handshaken, shared, shutdown).await
        }
    }
}

/// The TLS handshake with the current server configuration; the peer is the SPIFFE ID the
/// client-certificate verifier accepted.
async fn handshake(
    accepted: Accepted,
    shared: &Shared,
) -> Result<Box<Handshaken>, ConnectionError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.config.tls.load_full());
    let limit = shared.config.timeouts.handshake;
    let tls = tokio::time::timeout(limit, acceptor.accept(SendIo(accepted.stream)))
        .await
        .map_err(|_| ConnectionError::HandshakeTimeout(limit))?
        .map_err(ConnectionError::Handshake)?;
    let (_, session) = tls.get_ref();
    let peer = crate::tls::peer_id(session).ok_or(ConnectionError::NoPeerIdentity)?;
    let http = match session.alpn_protocol() {
        Some(b"h2") => HttpVersion::H2,
        _ => HttpVersion::Http1,
    };
    Ok(Box::new(Handshaken {
        io: Box::new(tls),
        peer: Peer::Spiffe(peer),
        http,
        dst: accepted.orig_dst,
    }))
}

/// Serves a connection whose peer is known: opaque ports get a byte copy, others HTTP.
///
/// The connection comes boxed: an async fn keeps its arguments for its whole life, so a
/// value passed down three calls would sit in every connection's task three times; boxed,
/// each level holds a pointer. The opaque copy is boxed too, so that its buffers and app
/// stream take no room in the task of an HTTP connection.
async fn serve_handshaken(
    handshaken: Box<Handshaken>,
    shared: &Arc<Shared>,
    shutdown: Shutdown,
) -> Result<(), ConnectionError> {
    let port = handshaken.dst.0.port();
    let opaque = shared.config.policy.load().opaque_ports().contains(&port);
    if opaque {
        Box::pin(serve_opaque(handshaken, shared)).await
    } else {
        serve_http(handshaken, shared, shutdown).await
    }
}

/// An opaque (non-HTTP) port: identity-only authorization, then bytes both ways.
async fn serve_opaque(handshaken: Box<Handshaken>, shared: &Shared) -> Result<(), ConnectionError> {
    let Handshaken {
        mut io, peer, dst, ..
    } = handshaken.unbox();
    let port = dst.0.port();
    let admitted = {
        let policy = shared.config.policy.load();
        let decision = policy.authorize_peer(&peer);
        tracing::info!(peer.id = %PeerDisplay(&peer), port, decision = %decision,
            audit = decision.is_audit_denied(), "opaque connection");
        // In audit mode a denial is logged and the connection carried on.
        decision.is_allowed() || decision.is_audit_denied()
    };
    if !admitted {
        Stats::incr(&shared.stats.opaque_denied);
        return Err(ConnectionError::NotAdmitted(port));
    }
    Stats::incr(&shared.stats.opaque_admitted);
    let limit = shared.config.timeouts.upstream_connect;
    let mut app = tokio::time::timeout(limit, TcpStream::connect(dst.0))
        .await
        .map_err(|_| ConnectionError::AppConnect(io::ErrorKind::TimedOut.into()))?
        .map_err(ConnectionError::AppConnect)?;
    app.set_nodelay(true).map_err(ConnectionError::AppConnect)?;
    // Errors here are the peers hanging up; nothing to answer.
    let _ = tokio::io::copy_bidirectional(&mut io, &mut app).await;
    Ok(())
}

/// HTTP/1.1 or h2 with the configured limits, until the client leaves or shutdown asks the
/// connection to finish.
async fn serve_http(
    handshaken: Box<Handshaken>,
    shared: &Arc<Shared>,
    shutdown: Shutdown,
) -> Result<(), ConnectionError> {
    let Handshaken {
        io,
        peer,
        http,
        dst,
    } = handshaken.unbox();
    let tunnel = TunnelSlot::default();
    let mut tunnel_shutdown = shutdown.clone();
    // One observer per connection: the stack's, and the one that records overload refusals.
    let observe = ObserveLayer::new(&shared.telemetry, &peer);
    let stack = stack::build(shared, peer, dst, tunnel.clone(), observe.clone());
    let activity = Activity::new();
    // hyper calls the service through `&self`; the stack's `call` takes `&mut self` and
    // returns at once, so a `RefCell` lends it out without cloning the stack per request.
    let stack = RefCell::new(stack);
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        let shared = shared.clone();
        move |mut request: Request<Incoming>| {
            let in_flight = activity.begin();
            // The stack runs up to its first wait (normalize, decide, the app request's
            // start) here; the future only waits for the response.
            let admitted = match shared.requests.try_admit() {
                Ok(permit) => Ok((stack::call(&mut stack.borrow_mut(), request), permit)),
                Err(overloaded) => Err(refuse_overloaded(
                    &shared,
                    &observe,
                    &mut request,
                    &overloaded,
                )),
            };
            // Boxed: hyper keeps room for this future in every connection, idle or not.
            Box::pin(async move {
                let (response, permit) = match admitted {
                    Ok((response, permit)) => (response.await?, Some(permit)),
                    Err(refusal) => (refusal, None),
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, in_flight, permit)))
            })
        }
    });
    let server = &shared.http;
    let io = TokioIo::new(io);
    let idle = shared.config.timeouts.idle;
    // Each protocol's connection gets its own allocation, sized for that protocol alone: an
    // idle HTTP/1.1 connection carries no room for h2 or `auto` state.
    let served = match http {
        HttpVersion::Http1 => {
            let connection = server.http1.serve_connection(io, service).with_upgrades();
            let finish = http1::UpgradeableConnection::graceful_shutdown;
            drive(Box::pin(connection), finish, &activity, idle, shutdown).await
        }
        HttpVersion::H2 => {
            // The streams run in this task, polled with the connection (see `streams`).
            let executor = StreamExecutor::new();
            let connection = shared.http2(executor.clone()).serve_connection(io, service);
            let connection =
                WithStreams::new(connection, executor, http2::Connection::graceful_shutdown);
            drive(
                Box::pin(connection),
                WithStreams::finish,
                &activity,
                idle,
                shutdown,
            )
            .await
        }
        HttpVersion::Either => {
            let connection = server.auto.serve_connection_with_upgrades(io, service);
            let finish = auto::UpgradeableConnection::graceful_shutdown;
            drive(Box::pin(connection), finish, &activity, idle, shutdown).await
        }
    };
    // After an upgrade hyper has handed the connection over: the tunnel runs here, in the
    // connection's task, so a drain waits for it and closes it when the drain time is up.
    if let Some(tunnel) = tunnel.take() {
        tokio::select! {
            () = tunnel => {}
            () = tunnel_shutdown.closing() => tracing::debug!("drain time is up: closing tunnel"),
        }
    }
    served
}

/// The answer to a request past the listener's cap: 503 at once, counted and logged, and
/// recorded by telemetry (metrics, access log, span) like a request the stack answered.
fn refuse_overloaded(
    shared: &Shared,
    observe: &ObserveLayer,
    request: &mut Request<Incoming>,
    overloaded: &Overloaded,
) -> Response<ResponseBody> {
    Stats::incr(&shared.stats.requests_overloaded);
    let id = shared.ids.next();
    tracing::debug!(request.id = %id, error = %overloaded, "request refused: overloaded");
    let response = respond::reject(Rejection::Unavailable, &id, request.version());
    observe.refused(request, id, overloaded, response)
}

/// Runs an HTTP connection until it ends, or until shutdown or `idle` without a request in
/// flight asks it to `finish` (HTTP/1: close after the current response; h2: GOAWAY); then
/// gives it until the drain time is up.
///
/// The connection is polled at every wake-up of the task; the drain and idle signals only
/// when their own waker was woken ([`PartWakers`]): they rarely fire, and polling them at
/// every request cost more than the check.
async fn drive<C, E>(
    mut connection: Pin<Box<C>>,
    finish: fn(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    mut shutdown: Shutdown,
) -> Result<(), ConnectionError>
where
    C: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let failed = |error: E| ConnectionError::Http(error.into());
    {
        let mut signals = pin!(async {
            tokio::select! {
                () = shutdown.draining() => {}
                () = activity.idle(idle) => tracing::debug!("closing idle connection"),
            }
        });
        // Starts marked: the first poll registers the signals' waker.
        let parts = PartWakers::new(SIGNALS);
        let signals_waker = parts.waker(SIGNALS);
        let ended = poll_fn(|cx| {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            loop {
                let woken = parts.hold(cx);
                if woken != 0
                    && signals
                        .as_mut()
                        .poll(&mut Context::from_waker(&signals_waker))
                        .is_ready()
                {
                    parts.release();
                    return Poll::Ready(None);
                }
                if parts.release() == 0 {
                    return Poll::Pending;
                }
            }
        })
        .await;
        if let Some(result) = ended {
            return result.map_err(failed);
        }
    }
    finish(connection.as_mut());
    tokio::select! {
        result = connection => result.map_err(failed),
        // The drain time is up: drop the connection now.
        () = shutdown.closing() => Ok(()),
    }
}
