//! HTTP step 1, framing: rejects requests whose body framing two HTTP implementations could
//! read differently (request smuggling), before anything else looks at them.
//!
//! Takes a request as hyper parsed it; passes it on unchanged, or answers 400 (and, on
//! HTTP/1, closes the connection) through [`respond`](super::respond).
//!
//! hyper (httparse) already rejects, before this step sees the request: differing or
//! malformed `Content-Length` values (including list form `5, 6`), a `Transfer-Encoding`
//! whose last coding is not `chunked` (`xchunked`), `Transfer-Encoding` in an HTTP/1.0
//! request, obs-fold continuation lines and bare CR. When a request carries both
//! `Content-Length` and `Transfer-Encoding: chunked`, hyper drops the `Content-Length`,
//! reads the body as chunked and closes the connection after the response (RFC 9112
//! §6.3), so no second request can hide behind it. This step rejects what remains visible:
//! any `Transfer-Encoding` other than exactly one `chunked`, several `Content-Length`
//! fields, both together, and a body on GET or HEAD.
//!
//! Two readings are deliberately left to hyper. A request with both `Content-Length` and
//! `Transfer-Encoding: chunked` is not answered 400: hyper removes the `Content-Length`
//! before this step runs and exposes no raw header list to a server, so the conflict is
//! invisible here; the connection closes after the response, and the adversarial suite's
//! CL.TE and TE.CL cases show that nothing behind the body reaches the app. Bare LF line
//! endings are accepted (RFC 9112 §2.2 lets a recipient do so): palisade never forwards the
//! client's bytes, it writes a new CRLF-framed request to the app, so no app can read the
//! head differently.

use std::task::{Context, Poll};

use http::header::{CONTENT_LENGTH, HeaderMap, TRANSFER_ENCODING};
use http::{Method, Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;

use super::request_id::RequestId;
use super::respond::reject;
use super::stats::Stats;
use super::{ResponseBody, ResponseFuture};
use crate::telemetry::observe::Judgement;
use std::convert::Infallible;
use std::sync::Arc;

/// A request whose framing palisade refuses to guess at. Only this module builds it.
#[derive(Debug, thiserror::Error)]
#[error("ambiguous request framing: {0}")]
pub struct AmbiguousFraming(&'static str);

/// Layer for [`Framing`].
#[derive(Clone, Debug)]
pub(crate) struct FramingLayer {
    stats: Arc<Stats>,
}

/// Rejects ambiguous framing, then calls the inner service.
#[derive(Clone, Debug)]
pub(crate) struct Framing<S> {
    inner: S,
    stats: Arc<Stats>,
}

// === impl FramingLayer ===

impl FramingLayer {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self { stats }
    }
}

impl<S> tower::Layer<S> for FramingLayer {
    type Service = Framing<S>;

    fn layer(&self, inner: S) -> Framing<S> {
        Framing {
            inner,
            stats: self.stats.clone(),
        }
    }
}

// === impl Framing ===

impl<S> tower::Service<Request<Incoming>> for Framing<S>
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
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> ResponseFuture {
        match check(&request) {
            Ok(()) => self.inner.call(request),
            Err(error) => {
                let id = request.extensions().get::<RequestId>().cloned();
                let id = id.unwrap_or_else(RequestId::unknown);
                tracing::info!(request.id = %id, error = %error, "request rejected");
                Stats::incr(&self.stats.requests_bad_framing);
                if let Some(judgement) = request.extensions().get::<Judgement>() {
                    judgement.refused(false, &error);
                }
                let response = reject(&error, &id, request.version());
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// The checks, in the order a reader of the request head would notice the problem.
fn check(request: &Request<Incoming>) -> Result<(), AmbiguousFraming> {
    check_head(
        request.version(),
        request.method(),
        request.headers(),
        request.body().is_end_stream(),
    )
}

fn check_head(
    version: Version,
    method: &Method,
    headers: &HeaderMap,
    body_ended: bool,
) -> Result<(), AmbiguousFraming> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    let has_te = match (te.next(), te.next()) {
        (None, _) => false,
        (Some(value), None) if value.as_bytes().eq_ignore_ascii_case(b"chunked") => true,
        _ => {
            return Err(AmbiguousFraming(
                "transfer-encoding other than exactly chunked",
            ));
        }
    };
    if has_te && version < Version::HTTP_11 {
        return Err(AmbiguousFraming("transfer-encoding in an HTTP/1.0 request"));
    }
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    let content_length = match (cl.next(), cl.next()) {
        (None, _) => None,
        (Some(value), None) => Some(
            std::str::from_utf8(value.as_bytes())
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or(AmbiguousFraming("content-length is not one number"))?,
        ),
        _ => return Err(AmbiguousFraming("several content-length fields")),
    };
    if has_te && content_length.is_some() {
        return Err(AmbiguousFraming(
            "both content-length and transfer-encoding",
        ));
    }
    let bodyless = method == Method::GET || method == Method::HEAD;
    let has_body = has_te || content_length.is_some_and(|n| n > 0) || !body_ended;
    if bodyless && has_body {
        return Err(AmbiguousFraming("GET or HEAD with a body"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Method, version, header fields, whether the body has ended, expected rejection.
    type Case = (
        &'static str,
        Version,
        &'static [(&'static str, &'static str)],
        bool,
        Option<&'static str>,
    );

    #[test]
    fn framing_table() {
        let cases: &[Case] = &[
            ("GET", Version::HTTP_11, &[], true, None),
            (
                "GET",
                Version::HTTP_11,
                &[("content-length", "0")],
                true,
                None,
            ),
            (
                "POST",
                Version::HTTP_11,
                &[("content-length", "5")],
                false,
                None,
            ),
            (
                "POST",
                Version::HTTP_11,
                &[("transfer-encoding", "chunked")],
                false,
                None,
            ),
            (
                "POST",
                Version::HTTP_11,
                &[("transfer-encoding", "CHUNKED")],
                false,
                None,
            ),
            ("POST", Version::HTTP_2, &[], false, None),
            (
                "POST",
                Version::HTTP_11,
                &[("transfer-encoding", "gzip, chunked")],
                false,
                Some("transfer-encoding other than exactly chunked"),
            ),
            (
                "POST",
                Version::HTTP_11,
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                false,
                Some("transfer-encoding other than exactly chunked"),
            ),
            (
                "POST",
                Version::HTTP_11,
                &[("transfer-encoding", " chunked")],
                false,
                Some("transfer-encoding other than exactly chunked"),
            ),
            (
                "POST",
                Version::HTTP_10,
                &[("transfer-encoding", "chunked")],
                false,
                Some("transfer-encoding in an HTTP/1.0 request"),
            ),
            (
                "POST",
                Version::HTTP_11,
                &[("content-length", "5"), ("content-length", "5")],
                false,
                Some("several content-length fields"),
            ),
            (
                "POST",
                Version::HTTP_11,
                &[("content-length", "5, 5")],
                false,
                Some("content-length is not one number"),
            ),
            (
                "POST",
                Version::HTTP_11,
                &[("content-length", "+5")],
                false,
                Some("content-length is not one number"),
            ),
            (
                "POST",
                Version::HTTP_11,
                &[("content-length", "5"), ("transfer-encoding", "chunked")],
                false,
                Some("both content-length and transfer-encoding"),
            ),
            (
                "GET",
                Version::HTTP_11,
                &[("content-length", "1")],
                false,
                Some("GET or HEAD with a body"),
            ),
            (
                "HEAD",
                Version::HTTP_11,
                &[("transfer-encoding", "chunked")],
                false,
                Some("GET or HEAD with a body"),
            ),
            (
                "GET",
                Version::HTTP_2,
                &[],
                false,
                Some("GET or HEAD with a body"),
            ),
        ];
        for (method, version, fields, body_ended, expected) in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in *fields {
                headers.append(
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                );
            }
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let got = check_head(*version, &method, &headers, *body_ended)
                .err()
                .map(|e| e.0);
            assert_eq!(got, *expected, "{method} {version:?} {fields:?}");
        }
    }
}
