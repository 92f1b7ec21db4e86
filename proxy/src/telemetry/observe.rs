//! Telemetry, observe: the tower layer that watches each inbound request from its head to
//! the end of its response body, right after the request ID is set.
//!
//! Takes a request (and the connection's peer); starts the request's server span and hands
//! its `traceparent` on to the app; leaves a [`Judgement`] in the request's extensions,
//! which [`authorize`](crate::inbound::authorize) fills with what it decided (or
//! [`framing`](crate::inbound::framing) with why it refused) — the route template, the
//! decision, the rule and the reason, for labels only: the request is normalized and
//! decided once, by authorize. Passes the request on unchanged otherwise. When the response
//! body ends (or is dropped) it records the request once: the metrics (through the
//! connection's [`PeerSeries`]), the span's end and, if sampled, the access-log line. A
//! request the listener refuses before the stack (overload) is recorded the same way, from
//! [`ObserveLayer::refused`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Status, TraceContextExt};
use palisade_config::{Decision, Mode, NormalizedPath, Peer};

use super::Parts;
use super::access_log::{AccessRecord, timestamp};
use super::metrics::{
    DecisionLabel, Direction, MethodLabel, PeerSeries, RequestClass, StatusClass,
};
use crate::inbound::request_id::RequestId;
use crate::inbound::{ResponseBody, ResponseFuture};

/// Layer for [`Observe`]. `None` when telemetry is disabled: nothing is built per
/// connection and each request costs one branch.
#[derive(Clone)]
pub(crate) struct ObserveLayer(Option<Arc<Connection>>);

/// Watches each request; see the module documentation.
#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    connection: Option<Arc<Connection>>,
}

/// The future of [`Observe`]: the inner one, and what is known about the request (`None`
/// when telemetry is off). Not boxed again: the stack's future already is.
pub(crate) struct ObserveFuture {
    inner: ResponseFuture,
    pending: Option<Pending>,
}

/// Where the step that settles a request leaves what it concluded, for observe's labels.
/// Observe puts one in each request's extensions (only when telemetry is on); authorize
/// fills it with its decision, framing with why it refused; observe takes it out when the
/// response comes back. An empty one means no step decided (labelled `invalid`).
#[derive(Clone)]
pub(crate) struct Judgement(Arc<Slot>);

/// The inside of a [`Judgement`].
struct Slot {
    connection: Arc<Connection>,
    /// Rule, reason and path are wanted (an access-log line or a recording span).
    detail: bool,
    verdict: Mutex<Option<Verdict>>,
    /// Request-body bytes read from the client so far (counted only for log lines).
    bytes_in: AtomicU64,
}

/// What every request of one connection shares.
struct Connection {
    parts: Arc<Parts>,
    /// The peer's SPIFFE ID (or `unauthenticated`), for log lines and spans.
    peer_id: Arc<str>,
    /// The peer's request series, with the handles this connection used last.
    series: PeerSeries,
}

/// What the policy said about a request, for labels only.
struct Verdict {
    decision: DecisionLabel,
    route: Option<Arc<str>>,
    /// The normalized path, if the target normalizes.
    path: Option<NormalizedPath>,
    /// Rule and reason, computed only when a log line or a recording span may need them.
    detail: Option<(Option<String>, String)>,
}

/// What is known about a request before it goes on, kept for when its response comes back.
struct Pending {
    method: MethodLabel,
    started: Instant,
    judgement: Judgement,
    span: Option<opentelemetry::Context>,
    /// The method and version, for the span's attributes (when it records).
    described: Option<(http::Method, Version)>,
    /// Boxed: most requests have none, and the rest of `Pending` moves several times.
    line: Option<Box<Line>>,
}

/// Everything recorded when the response ends.
struct Finish {
    class: RequestClass,
    route: Option<Arc<str>>,
    started: Instant,
    span: Option<opentelemetry::Context>,
    line: Option<Box<Line>>,
    judgement: Judgement,
}

/// The parts of an access-log line known before the response ends.
struct Line {
    at: SystemTime,
    id: RequestId,
    peer: Arc<str>,
    method: String,
    path: Option<NormalizedPath>,
    route: Option<Arc<str>>,
    rule: Option<String>,
    reason: String,
    status: u16,
    /// Time to the response head.
    responded: Duration,
    protocol: &'static str,
    trace_id: Option<String>,
}

/// A response body that counts its bytes and records the request when it ends.
struct ObservedBody {
    inner: ResponseBody,
    bytes: u64,
    /// Inline: the body itself is boxed once, as a `ResponseBody`.
    finish: Option<Finish>,
}

// === impl ObserveLayer ===

impl ObserveLayer {
    pub(crate) fn new(telemetry: &super::Telemetry, peer: &Peer) -> ObserveLayer {
        let Some(parts) = telemetry.parts().cloned() else {
            return ObserveLayer(None);
        };
        let metrics = &parts.metrics;
        let empty = || metrics.empty();
        let (peer_id, namespace, service_account) = match peer {
            Peer::Spiffe(id) => (
                Arc::from(id.as_str()),
                id.namespace().map_or_else(empty, Arc::from),
                id.service_account().map_or_else(empty, Arc::from),
            ),
            Peer::Unauthenticated => (Arc::from("unauthenticated"), empty(), empty()),
        };
        let series = metrics.peer_series(Direction::Inbound, namespace, service_account);
        ObserveLayer(Some(Arc::new(Connection {
            parts,
            peer_id,
            series,
        })))
    }

    /// Records a request answered before the stack, because the listener was overloaded
    /// (`why`): as any request — metrics, span, access-log line — labelled `invalid` (no
    /// decision was made) with `why` as the reason. Returns `response` with its body
    /// watched, so the request is recorded when the body ends.
    pub(crate) fn refused(
        &self,
        request: &mut Request<Incoming>,
        id: RequestId,
        why: &dyn Display,
        response: Response<ResponseBody>,
    ) -> Response<ResponseBody> {
        let Some(connection) = &self.0 else {
            return response;
        };
        let pending = connection.begin(request, Some(id));
        pending.judgement.refused(false, why);
        pending.respond(response)
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            connection: self.0.clone(),
        }
    }
}

// === impl Observe ===

impl<S> tower::Service<Request<Incoming>> for Observe<S>
where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<ResponseBody>,
            Error = Infallible,
            Future = ResponseFuture,
        >,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ObserveFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> ObserveFuture {
        let Some(connection) = &self.connection else {
            return ObserveFuture {
                inner: self.inner.call(request),
                pending: None,
            };
        };
        let pending = connection.begin(&mut request, None);
        request.extensions_mut().insert(pending.judgement.clone());
        ObserveFuture {
            inner: self.inner.call(request),
            pending: Some(pending),
        }
    }
}

// === impl ObserveFuture ===

impl Future for ObserveFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = match ready!(this.inner.as_mut().poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        Poll::Ready(Ok(match this.pending.take() {
            Some(pending) => pending.respond(response),
            None => response,
        }))
    }
}

// === impl Connection ===

impl Connection {
    /// Starts watching `request` (its span starts here and its `traceparent` is set); its ID
    /// is `id`, else the one the stack's first layer set.
    fn begin(self: &Arc<Self>, request: &mut Request<Incoming>, id: Option<RequestId>) -> Pending {
        let parts = &self.parts;
        let started = Instant::now();
        let method = MethodLabel::of(request.method());

        let span = parts.tracing.as_ref().map(|tracing| {
            tracing.start_span(method_name(request.method()), request.headers_mut())
        });
        let recording = span.as_ref().is_some_and(|cx| cx.span().is_recording());
        let logging = parts.access_log.is_some();
        let judgement = Judgement::new(self.clone(), logging || recording);
        let line = logging.then(|| {
            Box::new(Line {
                at: SystemTime::now(),
                id: id.unwrap_or_else(|| {
                    request
                        .extensions()
                        .get::<RequestId>()
                        .cloned()
                        .unwrap_or_else(RequestId::unknown)
                }),
                peer: self.peer_id.clone(),
                method: request.method().as_str().to_owned(),
                path: None,
                route: None,
                rule: None,
                reason: String::new(),
                status: 0,
                responded: Duration::ZERO,
                protocol: protocol(request.version()),
                trace_id: span
                    .as_ref()
                    .filter(|cx| cx.span().span_context().is_valid())
                    .map(|cx| cx.span().span_context().trace_id().to_string()),
            })
        });
        Pending {
            method,
            started,
            judgement,
            span,
            described: recording.then(|| (request.method().clone(), request.version())),
            line,
        }
    }
}

// === impl Judgement ===

impl std::fmt::Debug for Judgement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Judgement")
            .field("bytes_in", &self.bytes_in())
            .finish_non_exhaustive()
    }
}

impl Judgement {
    fn new(connection: Arc<Connection>, detail: bool) -> Self {
        Judgement(Arc::new(Slot {
            connection,
            detail,
            verdict: Mutex::new(None),
            bytes_in: AtomicU64::new(0),
        }))
    }

    /// Whether the request's body bytes are wanted (for an access-log line or a span).
    pub(crate) fn counts_body(&self) -> bool {
        self.0.detail
    }

    /// Adds `n` bytes of request body read from the client (the forward step calls this).
    pub(crate) fn body_read(&self, n: u64) {
        self.0.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// The request-body bytes read so far.
    fn bytes_in(&self) -> u64 {
        self.0.bytes_in.load(Ordering::Relaxed)
    }

    /// Records the policy's `decision` on `path` under `mode` (authorize calls this).
    pub(crate) fn decided(&self, decision: &Decision<'_>, mode: Mode, path: &NormalizedPath) {
        let slot = &*self.0;
        let label = match (decision, mode) {
            (Decision::Allow(_), _) => DecisionLabel::Allow,
            (Decision::Deny(_), Mode::Audit) => DecisionLabel::AuditDeny,
            (Decision::Deny(_), Mode::Enforce) => DecisionLabel::Deny,
        };
        let route = decision
            .route()
            .map(|route| slot.connection.series.route(Some(route)));
        let (path, detail) = if slot.detail {
            (
                Some(path.clone()),
                Some((decision.rule().map(str::to_owned), decision.to_string())),
            )
        } else {
            (None, None)
        };
        self.set(Verdict {
            decision: label,
            route,
            path,
            detail,
        });
    }

    /// Records that the request was refused before any decision: `why` becomes the reason.
    /// `denied` labels it `deny` (a request form no rule can allow) instead of `invalid`.
    pub(crate) fn refused(&self, denied: bool, why: &dyn Display) {
        let slot = &*self.0;
        self.set(Verdict {
            decision: if denied {
                DecisionLabel::Deny
            } else {
                DecisionLabel::Invalid
            },
            route: None,
            path: None,
            detail: slot.detail.then(|| (None, why.to_string())),
        });
    }

    fn set(&self, verdict: Verdict) {
        if let Ok(mut slot) = self.0.verdict.lock() {
            *slot = Some(verdict);
        }
    }

    fn take(&self) -> Verdict {
        let taken = self.0.verdict.lock().ok().and_then(|mut slot| slot.take());
        taken.unwrap_or_else(|| Verdict {
            decision: DecisionLabel::Invalid,
            route: None,
            path: None,
            detail: self.0.detail.then(|| (None, "no decision".to_owned())),
        })
    }
}

// === impl Pending ===

impl Pending {
    /// Completes the labels, the span and the line with the verdict and the status, and
    /// watches the response body: the request is recorded when it ends.
    fn respond(self, response: Response<ResponseBody>) -> Response<ResponseBody> {
        let finish = self.responded(response.status());
        response.map(|inner| {
            ObservedBody {
                inner,
                bytes: 0,
                finish: Some(finish),
            }
            .boxed()
        })
    }

    fn responded(self, status: http::StatusCode) -> Finish {
        let Pending {
            method,
            started,
            judgement,
            span,
            described,
            mut line,
        } = self;
        let verdict = judgement.take();
        if let (Some(cx), Some((method, version))) = (&span, &described) {
            describe_span(
                cx,
                method,
                *version,
                &verdict,
                &judgement.0.connection.peer_id,
            );
        }
        if let Some(line) = &mut line {
            line.status = status.as_u16();
            line.responded = started.elapsed();
            line.route = verdict.route.clone();
            line.path = verdict.path;
            if let Some((rule, reason)) = verdict.detail {
                line.rule = rule;
                line.reason = reason;
            }
        }
        if let Some(cx) = &span {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if status.is_server_error() {
                span.set_status(Status::error(""));
            }
        }
        Finish {
            class: RequestClass {
                method,
                status_class: StatusClass::of(status),
                decision: verdict.decision,
            },
            route: verdict.route,
            started,
            span,
            line,
            judgement,
        }
    }
}

/// The span's request attributes, once authorize has decided.
fn describe_span(
    cx: &opentelemetry::Context,
    method: &http::Method,
    version: Version,
    verdict: &Verdict,
    peer_id: &str,
) {
    let span = cx.span();
    let method = method.as_str().to_owned();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("url.scheme", "https"),
        KeyValue::new(
            "network.protocol.version",
            match version {
                Version::HTTP_2 => "2",
                Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        ),
        KeyValue::new("palisade.decision", verdict.decision.as_str()),
        KeyValue::new("palisade.peer.id", peer_id.to_owned()),
    ];
    if let Some(path) = &verdict.path {
        attributes.push(KeyValue::new("url.path", path.as_str().to_owned()));
    }
    if let Some(route) = &verdict.route {
        attributes.push(KeyValue::new("http.route", route.to_string()));
        span.update_name(format!("{method} {route}"));
    }
    if let Some((rule, reason)) = &verdict.detail {
        if let Some(rule) = rule {
            attributes.push(KeyValue::new("palisade.rule", rule.clone()));
        }
        attributes.push(KeyValue::new("palisade.reason", reason.clone()));
    }
    span.set_attributes(attributes);
}

/// The span name before the route is known: the method, without allocating for the
/// registered ones.
fn method_name(method: &http::Method) -> Cow<'static, str> {
    match MethodLabel::of(method) {
        MethodLabel::Other => Cow::Borrowed("HTTP"),
        known => Cow::Borrowed(known.as_str()),
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

// === impl Finish ===

impl Finish {
    fn record(self, bytes_out: u64) {
        let duration = self.started.elapsed();
        let connection = &*self.judgement.0.connection;
        connection
            .series
            .request(self.class, self.route.as_ref(), duration);
        let parts = &*connection.parts;
        if let Some(cx) = &self.span {
            cx.span().end();
        }
        let (Some(line), Some(log)) = (self.line, &parts.access_log) else {
            return;
        };
        let decision = self.class.decision;
        let always = decision != DecisionLabel::Allow || line.status >= 400;
        if !log.sampled(always) {
            return;
        }
        log.send(AccessRecord {
            timestamp: timestamp(line.at),
            request_id: line.id.as_str().to_owned(),
            direction: Direction::Inbound.as_str(),
            peer_id: line.peer.to_string(),
            method: line.method,
            path: line.path.map(|p| p.as_str().to_owned()),
            route: line.route.map(|r| r.to_string()),
            decision: decision.as_str(),
            rule: line.rule,
            reason: line.reason,
            status: line.status,
            protocol: line.protocol,
            response_ms: millis(line.responded),
            duration_ms: millis(duration),
            bytes_in: Some(self.judgement.bytes_in()),
            bytes_out,
            trace_id: line.trace_id,
        });
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

// === impl ObservedBody ===

impl ObservedBody {
    fn done(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish.record(self.bytes);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.done();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.done();
    }
}
