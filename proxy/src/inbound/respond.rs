//! The only place that writes a 4xx or 5xx: maps every way a request can fail to a status
//! and a JSON body `{"error":"<code>","request_id":"<id>"}`.
//!
//! Takes a `Rejection` (built from the typed errors of the other steps); passes back the
//! response the client gets. The reason stays in the log, never in the body.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use super::ResponseBody;
use super::authorize::{Malformed, Unauthorized};
use super::forward::ForwardError;
use super::framing::AmbiguousFraming;
use super::request_id::RequestId;

/// Every way palisade itself answers a request instead of the app.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// Denied by policy: 403.
    Forbidden,
    /// Malformed request target: 400.
    BadRequest,
    /// Ambiguous HTTP/1 message framing: 400, and the connection is closed.
    BadFraming,
    /// The client stopped sending its request body: 408.
    RequestTimeout,
    /// The app refused the connection or failed mid-response: 502.
    BadGateway,
    /// The app did not accept a connection in time: 503.
    Unavailable,
    /// The app did not answer in time: 504.
    GatewayTimeout,
}

// === impl Rejection ===

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::BadRequest | Rejection::BadFraming => StatusCode::BAD_REQUEST,
            Rejection::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::BadGateway => StatusCode::BAD_GATEWAY,
            Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Rejection::Forbidden => "forbidden",
            Rejection::BadRequest | Rejection::BadFraming => "bad_request",
            Rejection::RequestTimeout => "request_timeout",
            Rejection::BadGateway => "bad_gateway",
            Rejection::Unavailable => "service_unavailable",
            Rejection::GatewayTimeout => "gateway_timeout",
        }
    }
}

impl From<&Unauthorized> for Rejection {
    fn from(_: &Unauthorized) -> Self {
        Rejection::Forbidden
    }
}

impl From<&Malformed> for Rejection {
    fn from(_: &Malformed) -> Self {
        Rejection::BadRequest
    }
}

impl From<&AmbiguousFraming> for Rejection {
    fn from(_: &AmbiguousFraming) -> Self {
        Rejection::BadFraming
    }
}

impl From<&ForwardError> for Rejection {
    fn from(error: &ForwardError) -> Self {
        match error {
            ForwardError::Refused(_) | ForwardError::Upstream(_) => Rejection::BadGateway,
            ForwardError::ConnectTimeout => Rejection::Unavailable,
            ForwardError::ResponseTimeout(_) => Rejection::GatewayTimeout,
            ForwardError::InvalidTarget(_) => Rejection::BadRequest,
            ForwardError::BodyStalled(_) => Rejection::RequestTimeout,
        }
    }
}

/// Builds the JSON answer for `rejection`. On HTTP/1 a framing error also closes the
/// connection, since the rest of the byte stream cannot be trusted.
pub(crate) fn reject(
    rejection: impl Into<Rejection>,
    request_id: &RequestId,
    version: Version,
) -> Response<ResponseBody> {
    let rejection = rejection.into();
    let body = serde_json::json!({ "error": rejection.code(), "request_id": request_id.as_str() });
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = rejection.status();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(super::headers::X_REQUEST_ID, request_id.header_value());
    // After bad framing or a stalled body the rest of the byte stream cannot be trusted.
    let closes = matches!(rejection, Rejection::BadFraming | Rejection::RequestTimeout);
    if closes && version < Version::HTTP_2 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
