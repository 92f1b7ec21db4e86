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
//! `101 Switching Protocols`, bytes are copied both ways until either side closes.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::UPGRADE;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_config::RequestTarget;

use super::authorize::{Authorized, PeerDisplay};
use super::body::{BodyError, ProgressBody};
use super::headers::{X_REQUEST_ID, strip_hop_by_hop};
use super::respond::reject;
use super::stats::Stats;
use super::{ResponseBody, ResponseFuture};
use crate::config::Timeouts;
use crate::error_chain::ErrorChain;
use crate::listen::OrigDst;
use crate::telemetry::observe::Judgement;

/// Forwarding to the app failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The app refused the connection (nothing listens, or it reset).
    #[error("app refused the connection")]
    Refused(#[source] hyper_util::client::legacy::Error),
    /// No connection to the app within the connect timeout.
    #[error("app did not accept a connection in time")]
    ConnectTimeout,
    /// No response headers within the response timeout.
    #[error("app did not answer within {0:?}")]
    ResponseTimeout(Duration),
    /// The client stopped sending its request body (slow POST).
    #[error("request body stalled")]
    BodyStalled(#[source] hyper_util::client::legacy::Error),
    /// The checked target does not form a valid URI (nothing was sent).
    #[error("normalized target is not a valid uri")]
    InvalidTarget(#[source] http::Error),
    /// The exchange with the app failed after the connection was made.
    #[error("app connection failed")]
    Upstream(#[source] hyper_util::client::legacy::Error),
}

/// The pooled clients to the app, shared by all connections.
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    http1: Client<HttpConnector, ProgressBody>,
    h2c: Client<HttpConnector, ProgressBody>,
}

/// The innermost service: sends each request to one app address. Cloned for every request
/// (hyper calls the stack through a shared reference), so it is one `Arc`.
#[derive(Clone, Debug)]
pub(crate) struct Forward(Arc<Upstream>);

/// The app address of one connection and how to reach it.
#[derive(Debug)]
struct Upstream {
    client: Client<HttpConnector, ProgressBody>,
    version: Version,
    /// `<app ip>:<port>`, parsed once per connection.
    authority: Authority,
    body_progress: Duration,
    response_timeout: Duration,
    stats: Arc<Stats>,
}

// === impl Clients ===

impl Clients {
    pub(crate) fn new(timeouts: &Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.upstream_connect));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(timeouts.idle);
        let http1 = builder.build(connector.clone());
        let h2c = builder.http2_only(true).build(connector);
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
    ) -> Self {
        let (client, version) = if h2c {
            (clients.h2c.clone(), Version::HTTP_2)
        } else {
            (clients.http1.clone(), Version::HTTP_11)
        };
        // A socket address always forms a valid authority.
        let authority = Authority::try_from(dst.0.to_string())
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Self(Arc::new(Upstream {
            client,
            version,
            authority,
            body_progress: timeouts.body_progress,
            response_timeout: timeouts.upstream_response,
            stats,
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
        let upstream = self.0.clone();
        Box::pin(async move { Ok(upstream.forward(authorized).await) })
    }
}

// === impl Upstream ===

impl Upstream {
    async fn forward(&self, authorized: Authorized) -> Response<ResponseBody> {
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

        let (parts, body) = request.into_parts();
        let counted = parts
            .extensions
            .get::<Judgement>()
            .filter(|judgement| judgement.counts_body())
            .cloned();
        let mut upstream = Request::new(ProgressBody::new(body, self.body_progress, counted));
        *upstream.method_mut() = parts.method;
        *upstream.headers_mut() = parts.headers;
        *upstream.version_mut() = self.version;
        *upstream.uri_mut() = match upstream_uri(&self.authority, target) {
            Ok(uri) => uri,
            Err(error) => {
                let error = ForwardError::InvalidTarget(error);
                tracing::info!(request.id = %id, error = %ErrorChain(&error), "request rejected");
                return reject(&error, &id, version);
            }
        };

        let sent = tokio::time::timeout(self.response_timeout, self.client.request(upstream)).await;
        let result = match sent {
            Err(_) => Err(ForwardError::ResponseTimeout(self.response_timeout)),
            Ok(Err(error)) => Err(classify(error)),
            Ok(Ok(response)) => Ok(response),
        };
        let mut response = match result {
            Ok(response) => response,
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
                tokio::spawn(tunnel(downstream, upstream, id.clone()));
            }
            _ => strip_hop_by_hop(response.headers_mut()),
        }
        response
            .headers_mut()
            .insert(X_REQUEST_ID, id.header_value());
        response.map(|body| body.boxed())
    }
}

/// `http://<app>/<normalized path>[?<original query>]`: the only way a path reaches the app.
fn upstream_uri(authority: &Authority, target: RequestTarget) -> Result<Uri, http::Error> {
    let (path, query) = target.into_parts();
    let path_and_query = match query {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}"))?,
        None => PathAndQuery::try_from(path.as_str())?,
    };
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
}

/// Tells a refused connection from a connect timeout from a stalled client body from a
/// failed exchange.
fn classify(error: hyper_util::client::legacy::Error) -> ForwardError {
    if !error.is_connect() {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(cause) = source {
            if let Some(BodyError::Stalled(_)) = cause.downcast_ref::<BodyError>() {
                return ForwardError::BodyStalled(error);
            }
            source = cause.source();
        }
        return ForwardError::Upstream(error);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            return ForwardError::ConnectTimeout;
        }
        source = cause.source();
    }
    ForwardError::Refused(error)
}

/// Copies bytes both ways between an upgraded client connection and the app.
async fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    id: super::request_id::RequestId,
) {
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
