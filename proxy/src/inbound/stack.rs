//! The HTTP pipeline of one connection, assembled outermost-first in one place:
//!
//! request ID → [observe](crate::telemetry::observe) → [framing](super::framing) → [authorize](super::authorize) →
//! [headers](super::headers) → [forward](super::forward)
//!
//! Takes the connection's peer and destination; passes on a service hyper calls once per
//! request. Every layer answers with [`Infallible`] errors: failures are already responses,
//! written by [`respond`](super::respond).

use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use palisade_config::Peer;
use tower::ServiceBuilder;

use super::authorize::{Authorize, AuthorizeLayer};
use super::forward::Forward;
use super::framing::{Framing, FramingLayer};
use super::headers::{Headers, HeadersLayer};
use super::request_id::{RequestIdLayer, SetRequestId};
use super::tunnel::TunnelSlot;
use super::{ResponseBody, Shared};
use crate::listen::OrigDst;
use crate::telemetry::observe::{Observe, ObserveLayer};

/// The per-connection service.
pub(crate) type Stack = SetRequestId<Observe<Framing<Authorize<Headers<Forward>>>>>;

/// Builds the stack for one connection from `peer` to `dst`, watched by `observe` (built
/// for the same peer); an upgraded request leaves its tunnel in `tunnel`.
pub(crate) fn build(
    shared: &Shared,
    peer: Peer,
    dst: OrigDst,
    tunnel: TunnelSlot,
    observe: ObserveLayer,
) -> Stack {
    let config = &shared.config;
    let h2c = config.app.speaks_h2c(dst.0.port());
    let headers = HeadersLayer::new(&config.own_id, &peer);
    ServiceBuilder::new()
        .layer(RequestIdLayer::new(shared.ids.clone()))
        .layer(observe)
        .layer(FramingLayer::new(shared.stats.clone()))
        .layer(AuthorizeLayer::new(
            config.policy.clone(),
            peer,
            shared.stats.clone(),
        ))
        .layer(headers)
        .service(Forward::new(
            &shared.clients,
            dst,
            h2c,
            &config.timeouts,
            shared.stats.clone(),
            tunnel,
        ))
}

/// Calls `stack` for one request, as hyper wants it.
pub(crate) async fn call(
    stack: Stack,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    tower::ServiceExt::oneshot(stack, request).await
}
