//! HTTP step 3, headers: removes what must not reach the app and adds what palisade vouches
//! for.
//!
//! Takes an [`Authorized`] request; passes it on with its headers rewritten:
//!
//! - **Hop-by-hop** (RFC 9110 §7.6.1): `Connection` and every field it names, `Keep-Alive`,
//!   `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE` (except
//!   `te: trailers`, which gRPC needs), `Transfer-Encoding`, `Upgrade` and
//!   `HTTP2-Settings`. `Upgrade` (with `Connection: upgrade`) survives only when the rule
//!   that allowed the request permits upgrades; there is never an h2c upgrade. `Trailer`
//!   is end-to-end and kept: hyper sends HTTP/1 trailers only when it is present.
//! - **Identity and override headers** a client could use to lie to the app:
//!   `x-forwarded-client-cert` (palisade sets its own), `x-original-url`, `x-rewrite-url`,
//!   `x-http-method-override`, `x-http-method`, `x-method-override`, `x-forwarded-for`,
//!   `x-forwarded-host`, `x-forwarded-proto`, `x-forwarded-port`, `x-forwarded-prefix`,
//!   `x-forwarded-path`, `x-forwarded-uri`, `forwarded`, `x-real-ip`, `x-client-ip`,
//!   `x-envoy-original-path`, `x-envoy-peer-metadata`, `x-envoy-peer-metadata-id`,
//!   `x-envoy-internal`, `x-envoy-external-address`, `x-envoy-original-dst-host`,
//!   `x-ssl-client-cert`, `x-client-cert`, `ssl-client-cert`, `x-client-verify`,
//!   `x-spiffe-id`, `x-request-id` and `x-original-method`. Apps behind palisade learn the
//!   caller from `x-forwarded-client-cert` only.
//! - **Underscore look-alikes** of all of the above (`x_forwarded_client_cert`,
//!   `Transfer_Encoding`): CGI, WSGI and Rack turn `-` and `_` into the same variable name
//!   (`HTTP_X_FORWARDED_CLIENT_CERT`), so a look-alike would reach the app as the real thing.
//! - **Added**: `x-forwarded-client-cert: By=<own id>;URI=<peer id>` for a peer with a
//!   verified SPIFFE ID (nothing for an unauthenticated one), `x-request-id`, and `host`
//!   from the h2 `:authority` when the request had no `host` field.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{Response, Version};
use palisade_config::{Peer, SpiffeId};

use super::authorize::Authorized;
use super::{ResponseBody, ResponseFuture};

/// The request-ID header palisade sets.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The client-certificate header palisade sets for the app.
pub(crate) const X_FORWARDED_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-client-cert");

/// The hop-by-hop fields, removed in both directions: `TE` is kept by
/// [`strip_hop_by_hop`] when it is exactly `trailers`; `Upgrade` is put back by
/// [`Headers`] when the rule allows it. [`hop_by_hop_index`] gives each one's place.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRANSFER_ENCODING,
    HeaderName::from_static("http2-settings"),
    UPGRADE,
    TE,
];

/// Where `name` stands in [`HOP_BY_HOP`], if it is a hop-by-hop field. A `match` on the
/// name: one length check and at most a few byte comparisons per field.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "transfer-encoding" => 5,
        "http2-settings" => 6,
        "upgrade" => 7,
        "te" => 8,
        _ => return None,
    })
}

/// Whether `name` is a hop-by-hop field (see [`HOP_BY_HOP`]).
fn is_hop_by_hop_name(name: &str) -> bool {
    hop_by_hop_index(name).is_some()
}

/// Whether `name` is a field a client could use to impersonate someone or redirect the
/// app's routing (the list in the module documentation).
fn is_spoofable_name(name: &str) -> bool {
    matches!(
        name,
        "x-forwarded-client-cert"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-path"
            | "x-forwarded-uri"
            | "forwarded"
            | "x-real-ip"
            | "x-client-ip"
            | "x-envoy-original-path"
            | "x-envoy-peer-metadata"
            | "x-envoy-peer-metadata-id"
            | "x-envoy-internal"
            | "x-envoy-external-address"
            | "x-envoy-original-dst-host"
            | "x-ssl-client-cert"
            | "x-client-cert"
            | "ssl-client-cert"
            | "x-client-verify"
            | "x-spiffe-id"
            | "x-request-id"
            | "x-original-method"
    )
}

/// Layer for [`Headers`].
#[derive(Clone, Debug)]
pub(crate) struct HeadersLayer {
    xfcc: Option<HeaderValue>,
}

/// Rewrites request headers, then calls the inner service.
#[derive(Clone, Debug)]
pub(crate) struct Headers<S> {
    inner: S,
    /// `By=<own id>;URI=<peer id>`, the same for every request of the connection; `None`
    /// for an unauthenticated peer.
    xfcc: Option<HeaderValue>,
}

// === impl HeadersLayer ===

impl HeadersLayer {
    /// Headers for requests from `peer` to this proxy, `own_id`.
    pub(crate) fn new(own_id: &SpiffeId, peer: &Peer) -> Self {
        let xfcc = match peer {
            // SPIFFE IDs are visible ASCII: always a valid header value.
            Peer::Spiffe(peer) => HeaderValue::try_from(format!("By={own_id};URI={peer}")).ok(),
            Peer::Unauthenticated => None,
        };
        Self { xfcc }
    }
}

impl<S> tower::Layer<S> for HeadersLayer {
    type Service = Headers<S>;

    fn layer(&self, inner: S) -> Headers<S> {
        Headers {
            inner,
            xfcc: self.xfcc.clone(),
        }
    }
}

// === impl Headers ===

impl<S> tower::Service<Authorized> for Headers<S>
where
    S: tower::Service<
            Authorized,
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

    fn call(&mut self, mut authorized: Authorized) -> ResponseFuture {
        let upgrade = authorized.upgrade && authorized.request.version() == Version::HTTP_11;
        let authority = authorized.request.uri().authority().cloned();
        let headers = authorized.request.headers_mut();
        let upgrade_to = if upgrade {
            headers.get(UPGRADE).cloned()
        } else {
            None
        };
        strip_hop_by_hop(headers);
        strip_spoofable(headers);
        if let Some(protocol) = upgrade_to {
            headers.insert(UPGRADE, protocol);
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if !headers.contains_key(HOST)
            && let Some(authority) = authority
            && let Ok(value) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(HOST, value);
        }
        if let Some(xfcc) = &self.xfcc {
            headers.insert(X_FORWARDED_CLIENT_CERT, xfcc.clone());
        }
        headers.insert(X_REQUEST_ID, authorized.id.header_value());
        self.inner.call(authorized)
    }
}

/// Removes hop-by-hop fields (and those `Connection` names) from a request or a response.
/// Keeps `te: trailers`, the one `TE` value that may cross a proxy (gRPC requires it), unless
/// `Connection` names it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the field names notes which hop-by-hop fields are present; then one
    // removal per field present. Most messages carry none, or `connection: keep-alive`,
    // whose list names nothing else. Nothing here allocates unless a message repeats its
    // `Connection` field.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(at) = hop_by_hop_index(name.as_str()) {
            present |= 1 << at;
        }
    }
    if present == 0 {
        return;
    }
    let trailers_only = {
        let mut te = headers.get_all(TE).iter();
        matches!((te.next(), te.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    };
    // The lists are cloned (a reference count) so the fields they name can be removed.
    let (first, rest): (Option<HeaderValue>, Vec<HeaderValue>) = {
        let mut lists = headers.get_all(CONNECTION).iter().cloned();
        (lists.next(), lists.collect())
    };
    let mut te_listed = false;
    let listed = first
        .iter()
        .chain(&rest)
        .filter_map(|list| list.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim);
    for name in listed {
        if name.eq_ignore_ascii_case("te") {
            te_listed = true;
        } else if !(name.is_empty()
            || is_hop_by_hop_name(name)
            || name.eq_ignore_ascii_case("host"))
        {
            // `Connection: host` must not cost the app its Host field. A `&str` key is
            // matched without case and without allocating.
            headers.remove(name);
        }
    }
    for (at, name) in HOP_BY_HOP.iter().enumerate() {
        let keep = *name == TE && trailers_only && !te_listed;
        if present & (1 << at) != 0 && !keep {
            headers.remove(name);
        }
    }
}

/// Removes the spoofable fields and the underscore look-alikes of every field palisade
/// strips or sets, looking at each field name once.
fn strip_spoofable(headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_spoofable_name(name.as_str()) || is_underscore_lookalike(name))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Whether `name`, with `_` read as `-`, is one palisade strips or sets.
fn is_underscore_lookalike(name: &HeaderName) -> bool {
    if !name.as_str().contains('_') {
        return false;
    }
    let dashed = name.as_str().replace('_', "-");
    is_spoofable_name(&dashed) || is_hop_by_hop_name(&dashed) || dashed == HOST.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn strips_hop_by_hop_fields_and_those_connection_names() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-private, host"),
            ("connection", "X-Other"),
            ("x-private", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eA=="),
            ("transfer-encoding", "chunked"),
            ("trailer", "grpc-status"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("te", "gzip"),
            ("host", "orders.shop"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "trailer", "x-kept"]);
    }

    #[test]
    fn leaves_messages_without_hop_by_hop_fields_alone() {
        let mut headers = map(&[("host", "orders.shop"), ("te", "trailers"), ("x-kept", "1")]);
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 3);
        let mut headers = map(&[("upgrade", "websocket"), ("x-kept", "1")]);
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn strips_spoofable_fields_and_underscore_lookalikes_only() {
        let mut headers = map(&[
            ("x_forwarded_client_cert", "By=spoofed"),
            ("transfer_encoding", "chunked"),
            ("x_spiffe_id", "spoofed"),
            ("x_custom_field", "1"),
            ("x-kept", "1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("forwarded", "for=10.0.0.1"),
            ("x-request-id", "spoofed"),
            ("host", "orders.shop"),
        ]);
        strip_spoofable(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept", "x_custom_field"]);
    }

    #[test]
    fn recognises_every_documented_name_and_nothing_standard() {
        let docs = include_str!("headers.rs");
        let listed = docs
            .lines()
            .take_while(|line| line.starts_with("//!"))
            .skip_while(|line| !line.contains("**Identity and override headers**"))
            .take_while(|line| !line.contains("**Underscore look-alikes**"))
            .flat_map(|line| line.split('`').skip(1).step_by(2))
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(listed.len(), 29, "{listed:?}");
        for name in listed {
            assert!(is_spoofable_name(name), "{name}");
        }
        for name in [
            "host",
            "user-agent",
            "accept",
            "content-length",
            "content-type",
            "date",
        ] {
            assert!(
                !is_spoofable_name(name) && !is_hop_by_hop_name(name),
                "{name}"
            );
        }
    }

    #[test]
    fn keeps_te_trailers_only() {
        for (te, kept) in [
            (&[("te", "trailers")][..], true),
            (&[("te", "TRAILERS")][..], true),
            (&[("te", "trailers, gzip")][..], false),
            (&[("te", "trailers"), ("te", "gzip")][..], false),
            (&[("te", "trailers"), ("connection", "TE")][..], false),
        ] {
            let mut headers = map(te);
            strip_hop_by_hop(&mut headers);
            assert_eq!(headers.contains_key(TE), kept, "{te:?}");
        }
    }
}
