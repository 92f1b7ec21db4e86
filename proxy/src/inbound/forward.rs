//! HTTP step 4, forward: sends an [`Authorized`] request to the app over a pooled
//! connection and streams the answer back.
//!
//! Takes an [`Authorized`] request; the upstream URI is built from its
//! [`RequestTarget`] (the normalized path that was checked
//! and the original query) and nothing else. Passes back the app's response (hop-by-hop
//! fields removed, trailers kept), or an error that [`respond`](super::respond) turns into
//! 502 (refused, or failed mid-way), 503 (no connection within the connect timeout), 504
//! (no response within the response timeout) or 408 (the client's body stalled).
//!
//! HTTP/1.1 requests allowed to upgrade (WebSocket) are tunnelled: after the app answers
//! `101 Switching Protocols`, the byte copy is left to [`tunnel`](super::tunnel).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HOST, HeaderValue, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use palisade_config::{Peer, RequestTarget};

use super::authorize::{Authorized, PeerDisplay};
use super::body::{BodyError, ProgressBody};
use super::headers::{X_REQUEST_ID, strip_hop_by_hop};
use super::request_id::RequestId;
use super::respond::reject;
use super::stats::Stats;
use super::tunnel::TunnelSlot;
use super::{ResponseBody, ResponseFuture};
use crate::config::Timeouts;
use crate::error_chain::ErrorChain;
use crate::listen::OrigDst;
use crate::telemetry::observe::Judgement;

mod pool;

use self::pool::{Http1Pool, LeasedBody};

/// What went wrong below a [`ForwardError`]: hyper's, hyper-util's or the socket's error.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Forwarding to the app failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The app refused the connection (nothing listens, or it reset).
    #[error("app refused the connection")]
    Refused(#[source] Cause),
    /// No connection to the app within the connect timeout.
    #[error("app did not accept a connection in time")]
    ConnectTimeout,
    /// No response headers within the response timeout.
    #[error("app did not answer within {0:?}")]
    ResponseTimeout(Duration),
    /// The client stopped sending its request body (slow POST).
    #[error("request body stalled")]
    BodyStalled(#[source] Cause),
    /// The checked target does not form a valid URI (nothing was sent).
    #[error("normalized target is not a valid uri")]
    InvalidTarget(#[source] http::Error),
    /// The exchange with the app failed after the connection was made.
    #[error("app connection failed")]
    Upstream(#[source] Cause),
}

/// The connections to the app, shared by all client connections: HTTP/1.1 ports through
/// one idle set ([`pool`]), h2c ports through hyper-util's pooled client (one multiplexed
/// connection per port).
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    http1: Http1Pool,
    h2c: Client<HttpConnector, ProgressBody>,
}

/// The innermost service: sends each request to one app address. Cloned for every request
/// (hyper calls the stack through a shared reference), so it is one `Arc`.
#[derive(Clone, Debug)]
pub(crate) struct Forward(Arc<Upstream>);

/// The app address of one connection and how to reach it.
#[derive(Debug)]
struct Upstream {
    route: Route,
    body_progress: Duration,
    response_timeout: Duration,
    stats: Arc<Stats>,
    /// Where an upgraded request's tunnel is left for the connection's task.
    tunnel: TunnelSlot,
}

/// How requests reach the app port.
#[derive(Debug)]
enum Route {
    /// HTTP/1.1 from the idle set; requests carry an origin-form URI.
    Http1 {
        pool: Http1Pool,
        addr: SocketAddr,
        /// `<app ip>:<port>`, for requests that arrive without a `host` field.
        host: HeaderValue,
    },
    /// h2c through the pooled client; requests carry `http://<app ip>:<port>/…`.
    H2c {
        /// Boxed: the client is several times the size of the HTTP/1.1 route.
        client: Box<Client<HttpConnector, ProgressBody>>,
        authority: Authority,
    },
}

// === impl Clients ===

impl Clients {
    pub(crate) fn new(timeouts: &Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.upstream_connect));
        let h2c = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(timeouts.idle)
            .http2_only(true)
            .build(connector);
        let http1 = Http1Pool::new(timeouts.upstream_connect, timeouts.idle);
        Self { http1, h2c }
    }
}

// === impl Forward ===

impl Forward {
    pub(crate) fn new(
        clients: &Clients,
        dst: OrigDst,
        h2c: bool,
        timeouts: &Timeouts,
        stats: Arc<Stats>,
        tunnel: TunnelSlot,
    ) -> Self {
        let addr = dst.0;
        let route = if h2c {
            // A socket address always forms a valid authority.
            let authority = Authority::try_from(addr.to_string())
                .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
            Route::H2c {
                client: Box::new(clients.h2c.clone()),
                authority,
            }
        } else {
            // A socket address always forms a valid header value.
            let host = HeaderValue::try_from(addr.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1"));
            Route::Http1 {
                pool: clients.http1.clone(),
                addr,
                host,
            }
        };
        Self(Arc::new(Upstream {
            route,
            body_progress: timeouts.body_progress,
            response_timeout: timeouts.upstream_response,
            stats,
            tunnel,
        }))
    }
}

impl tower::Service<Authorized> for Forward {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, authorized: Authorized) -> ResponseFuture {
        // The upstream request is built here, before the future: the future then holds only
        // what waiting for the app needs, which keeps its allocation small.
        match self.0.prepare(authorized) {
            Ok(exchange) => {
                let upstream = self.0.clone();
                Box::pin(async move { Ok(upstream.exchange(exchange).await) })
            }
            Err(answered) => Box::pin(std::future::ready(Ok(*answered))),
        }
    }
}

/// A request ready for the app, and what answering its client needs.
struct Exchange {
    /// The request as the app receives it. Boxed: it is handed down through three futures,
    /// each of which would otherwise keep its own room for it.
    upstream: Box<Request<ProgressBody>>,
    /// The client's side of an upgrade the route allows, if it asked for one.
    downstream_upgrade: Option<OnUpgrade>,
    /// The client's HTTP version, for an error response.
    version: Version,
    /// Who sent it, for a log line about a failure.
    peer: Arc<Peer>,
    /// Its ID, for the response's `x-request-id` and the log.
    id: RequestId,
}

// === impl Upstream ===

impl Upstream {
    /// Turns an authorized request into the app's request: the normalized path (the only
    /// path the app ever sees), the app's HTTP version and `Host`, no client-side
    /// extensions. A target that cannot form a URI is answered here (the rare case, boxed).
    fn prepare(&self, authorized: Authorized) -> Result<Exchange, Box<Response<ResponseBody>>> {
        let Authorized {
            target,
            upgrade,
            mut request,
            peer,
            id,
        } = authorized;
        let version = request.version();
        let downstream_upgrade = (upgrade && request.headers().contains_key(UPGRADE))
            .then(|| hyper::upgrade::on(&mut request));

        let counted = request
            .extensions()
            .get::<Judgement>()
            .filter(|judgement| judgement.counts_body())
            .cloned();
        // The request is rebuilt in place (method and headers stay where they are); its
        // extensions are the client side's and do not go to the app.
        let mut upstream = request.map(|body| ProgressBody::new(body, self.body_progress, counted));
        upstream.extensions_mut().clear();
        let built = match &self.route {
            Route::Http1 { host, .. } => {
                *upstream.version_mut() = Version::HTTP_11;
                upstream
                    .headers_mut()
                    .entry(HOST)
                    .or_insert_with(|| host.clone());
                path_and_query(target).map(Uri::from)
            }
            Route::H2c { authority, .. } => {
                *upstream.version_mut() = Version::HTTP_2;
                absolute_uri(authority, target)
            }
        };
        *upstream.uri_mut() = match built {
            Ok(uri) => uri,
            Err(error) => {
                let error = ForwardError::InvalidTarget(error);
                tracing::info!(request.id = %id, error = %ErrorChain(&error), "request rejected");
                return Err(Box::new(reject(&error, &id, version)));
            }
        };
        Ok(Exchange {
            upstream: Box::new(upstream),
            downstream_upgrade,
            version,
            peer,
            id,
        })
    }

    /// Sends the request to the app and turns its response (or the failure) into the
    /// client's response.
    async fn exchange(&self, exchange: Exchange) -> Response<ResponseBody> {
        let Exchange {
            upstream,
            downstream_upgrade,
            version,
            peer,
            id,
        } = exchange;
        let sent = tokio::time::timeout(self.response_timeout, self.send(upstream)).await;
        let result = match sent {
            Err(_) => Err(ForwardError::ResponseTimeout(self.response_timeout)),
            Ok(result) => result,
        };
        let (mut response, lease) = match result {
            Ok(sent) => sent,
            Err(error) => {
                tracing::warn!(request.id = %id, peer.id = %PeerDisplay(&peer),
                    error = %ErrorChain(&error), "forwarding failed");
                Stats::incr(&self.stats.upstream_failures);
                return reject(&error, &id, version);
            }
        };

        match downstream_upgrade {
            Some(downstream) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let upstream = hyper::upgrade::on(&mut response);
                self.tunnel.open(downstream, upstream, id.clone());
            }
            _ => strip_hop_by_hop(response.headers_mut()),
        }
        // Never indexed by HPACK: every value is new, and entering each into the h2 client's
        // dynamic table would evict the fields that do repeat (`server`, `content-type`…).
        let mut request_id = id.header_value();
        request_id.set_sensitive(true);
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        match lease {
            // After a 101 the connection is the tunnel's: it never goes back to the pool.
            Some(lease) if response.status() != StatusCode::SWITCHING_PROTOCOLS => {
                response.map(|body| LeasedBody::new(body, lease).boxed())
            }
            _ => response.map(|body| body.boxed()),
        }
    }

    /// Sends `request` on the route; an HTTP/1.1 response comes with the lease of its
    /// connection, to go back to the pool with the body.
    async fn send(
        &self,
        request: Box<Request<ProgressBody>>,
    ) -> Result<(Response<Incoming>, Option<pool::Lease>), ForwardError> {
        match &self.route {
            Route::Http1 { pool, addr, .. } => {
                let (response, lease) = send_http1(pool, *addr, request).await?;
                Ok((response, Some(lease)))
            }
            // Boxed: hyper-util's request future is ~3.4 KiB, and without the box every
            // HTTP/1.1 request's future would be that large too.
            Route::H2c { client, .. } => match Box::pin(client.request(*request)).await {
                Ok(response) => Ok((response, None)),
                Err(error) => Err(classify_pooled(error)),
            },
        }
    }
}

/// Sends `request` on a connection from `pool`. A request that an idle connection could
/// not even start sending (the app closed it meanwhile) is sent again on a new one, once.
async fn send_http1(
    pool: &Http1Pool,
    addr: SocketAddr,
    request: Box<Request<ProgressBody>>,
) -> Result<(Response<Incoming>, pool::Lease), ForwardError> {
    let mut lease = pool.checkout(addr).await?;
    let mut error = match lease.sender().try_send_request(*request).await {
        Ok(response) => return Ok((response, lease)),
        Err(error) => error,
    };
    // Boxed, and nothing else kept across its wait: the rare second try would otherwise
    // add its room to every request's future.
    let resend = match error.take_message() {
        Some(unsent) if lease.reused() => Box::pin(resend_http1(pool, addr, unsent)),
        _ => return Err(classify_sent(error.into_error())),
    };
    drop((error, lease));
    resend.await
}

/// The second and last try of [`send_http1`], on a new connection.
async fn resend_http1(
    pool: &Http1Pool,
    addr: SocketAddr,
    request: Request<ProgressBody>,
) -> Result<(Response<Incoming>, pool::Lease), ForwardError> {
    let mut lease = pool.connect(addr).await?;
    match lease.sender().try_send_request(request).await {
        Ok(response) => Ok((response, lease)),
        Err(error) => Err(classify_sent(error.into_error())),
    }
}

/// `/<normalized path>[?<original query>]`: the only way a path reaches the app. The
/// normalized path's own string becomes the URI's bytes, without a copy.
fn path_and_query(target: RequestTarget) -> Result<PathAndQuery, http::Error> {
    let (path, query) = target.into_parts();
    let mut path_and_query = path.into_string();
    if let Some(query) = query {
        path_and_query.reserve_exact(1 + query.len());
        path_and_query.push('?');
        path_and_query.push_str(&query);
    }
    Ok(PathAndQuery::try_from(path_and_query)?)
}

/// `http://<app>/<normalized path>[?<original query>]`, for the h2c client.
fn absolute_uri(authority: &Authority, target: RequestTarget) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path_and_query(target)?)
        .build()
}

/// Tells a stalled client body from any other failed exchange.
fn classify_sent(error: hyper::Error) -> ForwardError {
    if stalled(&error) {
        ForwardError::BodyStalled(error.into())
    } else {
        ForwardError::Upstream(error.into())
    }
}

/// Whether `error` or one of its causes is the client's request body stalling.
fn stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(BodyError::Stalled(_)) = cause.downcast_ref::<BodyError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The h2c client's errors: a refused connection, a connect timeout, a stalled client
/// body or a failed exchange.
fn classify_pooled(error: hyper_util::client::legacy::Error) -> ForwardError {
    if !error.is_connect() {
        return if stalled(&error) {
            ForwardError::BodyStalled(error.into())
        } else {
            ForwardError::Upstream(error.into())
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return ForwardError::ConnectTimeout;
        }
        source = cause.source();
    }
    ForwardError::Refused(error.into())
}
