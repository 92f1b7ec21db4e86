//! The HTTP pipeline of one connection, assembled outermost-first in one place:
//!
//! request ID → [observe](crate::telemetry::observe) → [framing](super::framing) → [authorize](super::authorize) →
//! [headers](super::headers) → [forward](super::forward)
//!
//! Takes the connection's peer and destination; passes on a service hyper calls once per
//! request. Every layer answers with [`Infallible`] errors: failures are already responses,
//! written by [`respond`](super::respond).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use hyper::body::Incoming;
use palisade_config::Peer;
use tower::{Service, ServiceBuilder};

use super::authorize::{Authorize, AuthorizeLayer};
use super::forward::Forward;
use super::framing::{Framing, FramingLayer};
use super::headers::{Headers, HeadersLayer};
use super::request_id::{RequestIdLayer, SetRequestId};
use super::tunnel::TunnelSlot;
use super::{ResponseBody, ResponseFuture, Shared};
use crate::listen::OrigDst;
use crate::telemetry::observe::{Observe, ObserveFuture, ObserveLayer};

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

/// Calls `stack` for one request and returns the stack's own future.
///
/// Every layer is always ready (none waits for capacity: the overload cap is checked before
/// the stack), so the request goes straight to `call`, without a `Oneshot` future around a
/// copy of the stack and the request. A layer that ever did wait would still be honoured:
/// the request would then wait for it in a `Oneshot`.
pub(crate) fn call(stack: &mut Stack, request: Request<Incoming>) -> StackFuture {
    match stack.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => StackFuture::Called(stack.call(request)),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => {
            StackFuture::Waiting(Box::pin(tower::ServiceExt::oneshot(stack.clone(), request)))
        }
    }
}

/// The response of one request: the stack's own future, or (never with today's layers) the
/// stack waiting to be ready before it is called.
pub(crate) enum StackFuture {
    /// The stack was ready and called.
    Called(ObserveFuture),
    /// The stack was not ready: it is called once it is.
    Waiting(ResponseFuture),
}

impl Future for StackFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            StackFuture::Called(future) => Pin::new(future).poll(cx),
            StackFuture::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}
