//! The app's own probes, answered on the admin port: the step between the kubelet and an app
//! whose ports are all behind strict mutual TLS.
//!
//! The injector rewrites each container's `httpGet`, `tcpSocket` and `grpc` probe into an
//! `httpGet` on the admin port at `/app-health/<container>/<livez|readyz|startupz>` and hands
//! the originals to the proxy in `PALISADE_APP_PROBES` (see [`AppProbes::from_json`]). The
//! kubelet's GET to one of those exact paths becomes the original check, made by the proxy
//! to the app on loopback with a bounded time; the outcome goes back as a status code the
//! kubelet reads the way it reads the app's own (success is 200–399).
//!
//! | original probe | check made on `127.0.0.1` | answer |
//! |---|---|---|
//! | `httpGet` (scheme `HTTP`) | `GET <path>` over HTTP/1.1 to `<port>`, with the probe's `httpHeaders` | the app's 2xx as is, 3xx as 200 (the redirect is not followed, as the kubelet does not follow one to another host), 4xx/5xx as is |
//! | `httpGet` (scheme `HTTPS`) | the same over TLS, **certificate not verified** (what the kubelet does) | the same |
//! | `tcpSocket` | a TCP connect to `<port>` | 200 when it connects |
//! | `grpc` | `grpc.health.v1.Health/Check` for the probe's `service` over h2c to `<port>` | 200 when the status is `SERVING`, else 503 |
//! | (any) app unreachable | — | 503; 504 past the probe's `timeoutSeconds` |
//!
//! # Security
//! Only the configured paths answer, only to `GET`; the request's query, headers and body
//! are ignored, so the port cannot be used to reach anything but the configured checks on
//! loopback (no open proxy). The app's response body is never relayed. An `HTTPS` probe
//! skips certificate verification like the kubelet's own: the connection never leaves the
//! pod's network namespace.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, TE, USER_AGENT};
use http::uri::PathAndQuery;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Name of the environment variable the injector puts the app's probes in.
pub const APP_PROBES_ENV: &str = "PALISADE_APP_PROBES";

/// Every admin path of an app probe starts with this.
pub const APP_HEALTH_PREFIX: &str = "/app-health/";

/// Longest time a check may take, whatever the probe's `timeoutSeconds` says.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The app's probes, by admin path. Empty by default: no `/app-health/` path answers.
/// Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AppProbes(Arc<Probes>);

#[derive(Debug, Default)]
struct Probes {
    by_path: BTreeMap<String, AppProbe>,
    /// Built once when some probe uses `HTTPS`.
    tls: Option<Arc<ClientConfig>>,
}

/// One configured check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppProbe {
    /// What is checked.
    pub check: Check,
    /// Time the check gets (the probe's `timeoutSeconds`, default 1 s).
    pub timeout: Duration,
}

/// What one probe checks on `127.0.0.1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `GET path` to `port`.
    Http {
        /// The app's port.
        port: u16,
        /// Path and query sent, exactly as the original probe had them.
        path: PathAndQuery,
        /// TLS without certificate verification (the probe's scheme `HTTPS`).
        https: bool,
        /// Header fields sent (the probe's `httpHeaders`; `Host` among them replaces the
        /// default `127.0.0.1:<port>`).
        headers: HeaderMap,
    },
    /// A TCP connect to `port`.
    Tcp {
        /// The app's port.
        port: u16,
    },
    /// The gRPC health service's `Check` over h2c (HTTP/2 without TLS) to `port`.
    Grpc {
        /// The app's port.
        port: u16,
        /// The `service` asked about; empty: the server as a whole.
        service: String,
    },
}

/// Why `PALISADE_APP_PROBES` does not load.
#[derive(Debug, thiserror::Error)]
pub enum AppProbesError {
    /// Not JSON of the documented shape.
    #[error("not a JSON object of admin path to probe")]
    Json(#[source] serde_json::Error),
    /// One entry is wrong.
    #[error("probe {path:?}: {reason}")]
    Invalid {
        /// The admin path of the entry.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The TLS client for `HTTPS` probes cannot be built.
    #[error("cannot build the tls client for HTTPS probes")]
    Tls(#[source] rustls::Error),
}

/// The written form of one entry: a Kubernetes probe handler with its port resolved.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProbeDocument {
    http_get: Option<HttpGetDocument>,
    tcp_socket: Option<TcpSocketDocument>,
    grpc: Option<GrpcDocument>,
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpGetDocument {
    port: u16,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    http_headers: Vec<HeaderDocument>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderDocument {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpSocketDocument {
    port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcDocument {
    port: u16,
    #[serde(default)]
    service: Option<String>,
}

/// Why one check failed (logged at debug; the kubelet sees the status).
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("cannot connect to the app")]
    Connect(#[source] std::io::Error),
    #[error("tls handshake with the app failed")]
    Tls(#[source] std::io::Error),
    #[error("http exchange with the app failed")]
    Http(#[source] hyper::Error),
    #[error("cannot build the request")]
    Request(#[source] http::Error),
    #[error("no tls client for an HTTPS probe")]
    NoTls,
}

/// Accepts any server certificate: the kubelet's `InsecureSkipVerify` for HTTPS probes.
#[derive(Debug)]
struct DangerousAcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

// === impl AppProbes ===

impl AppProbes {
    /// Parses `PALISADE_APP_PROBES`: a JSON object from admin path to a Kubernetes probe
    /// handler with a numeric port, e.g.
    ///
    /// ```json
    /// {
    ///   "/app-health/orders/readyz": {
    ///     "httpGet": { "port": 8081, "path": "/healthz", "scheme": "HTTP",
    ///                  "httpHeaders": [{ "name": "X-Probe", "value": "1" }] },
    ///     "timeoutSeconds": 1
    ///   },
    ///   "/app-health/orders/livez": { "tcpSocket": { "port": 8080 } },
    ///   "/app-health/orders/startupz": { "grpc": { "port": 9090 } }
    /// }
    /// ```
    ///
    /// Each key must start with `/app-health/`; each entry has exactly one of `httpGet`,
    /// `tcpSocket` and `grpc` (`{ "port": 9090, "service": "orders" }`); `path` defaults to `/`, `scheme` to `HTTP`, `timeoutSeconds` to 1 (at
    /// most [`MAX_PROBE_TIMEOUT`]). Unknown fields are errors.
    pub fn from_json(text: &str) -> Result<AppProbes, AppProbesError> {
        let documents: BTreeMap<String, ProbeDocument> =
            serde_json::from_str(text).map_err(AppProbesError::Json)?;
        let mut probes = BTreeMap::new();
        for (path, document) in documents {
            let invalid = |reason| AppProbesError::Invalid {
                path: path.clone(),
                reason,
            };
            if !path.starts_with(APP_HEALTH_PREFIX) || path.len() == APP_HEALTH_PREFIX.len() {
                return Err(invalid("admin path must start with /app-health/"));
            }
            let check = match (document.http_get, document.tcp_socket, document.grpc) {
                (Some(get), None, None) => http_check(get).map_err(invalid)?,
                (None, Some(tcp), None) if tcp.port != 0 => Check::Tcp { port: tcp.port },
                (None, None, Some(grpc)) if grpc.port != 0 => Check::Grpc {
                    port: grpc.port,
                    service: grpc.service.unwrap_or_default(),
                },
                (None, Some(_), None) | (None, None, Some(_)) => return Err(invalid("port 0")),
                _ => return Err(invalid("needs exactly one of httpGet, tcpSocket and grpc")),
            };
            let timeout = match document.timeout_seconds {
                None => Duration::from_secs(1),
                Some(0) => return Err(invalid("timeoutSeconds must be at least 1")),
                Some(seconds) => Duration::from_secs(seconds).min(MAX_PROBE_TIMEOUT),
            };
            probes.insert(path, AppProbe { check, timeout });
        }
        let tls = probes
            .values()
            .any(|p| matches!(p.check, Check::Http { https: true, .. }))
            .then(insecure_client_config)
            .transpose()
            .map_err(AppProbesError::Tls)?;
        Ok(AppProbes(Arc::new(Probes {
            by_path: probes,
            tls,
        })))
    }

    /// The probe answering `path`, if configured.
    pub fn get(&self, path: &str) -> Option<&AppProbe> {
        self.0.by_path.get(path)
    }

    /// How many probes are configured.
    pub fn len(&self) -> usize {
        self.0.by_path.len()
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.by_path.is_empty()
    }

    /// Runs the probe at `path` within its timeout; `None` when no probe is configured
    /// there. Returns the status for the kubelet and a short plain-text body naming the
    /// outcome; `user_agent` (the kubelet's `kube-probe/…`) is passed on to the app.
    pub async fn run(
        &self,
        path: &str,
        user_agent: Option<&HeaderValue>,
    ) -> Option<(StatusCode, String)> {
        let probe = self.get(path)?;
        let checked = tokio::time::timeout(
            probe.timeout,
            probe.check.run(self.0.tls.as_ref(), user_agent),
        )
        .await;
        Some(match checked {
            Ok(Ok(status)) if status.is_redirection() => (
                StatusCode::OK,
                format!("app answered {}\n", status.as_u16()),
            ),
            Ok(Ok(status)) => (status, format!("app answered {}\n", status.as_u16())),
            Ok(Err(error)) => {
                tracing::debug!(probe.path = path, error = %error, cause = ?std::error::Error::source(&error), "app probe failed");
                (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n"))
            }
            Err(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "app did not answer in time\n".to_owned(),
            ),
        })
    }
}

fn http_check(get: HttpGetDocument) -> Result<Check, &'static str> {
    if get.port == 0 {
        return Err("port 0");
    }
    let https = match get.scheme.as_deref() {
        None | Some("HTTP") => false,
        Some("HTTPS") => true,
        Some(_) => return Err("scheme must be HTTP or HTTPS"),
    };
    let path = get.path.unwrap_or_default();
    // The kubelet sends an empty path as `/` and prefixes a relative one.
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let path = PathAndQuery::try_from(path).map_err(|_| "path is not a valid request path")?;
    let mut headers = HeaderMap::new();
    for header in get.http_headers {
        let name = HeaderName::try_from(header.name).map_err(|_| "invalid header name")?;
        let value = HeaderValue::try_from(header.value).map_err(|_| "invalid header value")?;
        headers.append(name, value);
    }
    Ok(Check::Http {
        port: get.port,
        path,
        https,
        headers,
    })
}

// === impl Check ===

impl Check {
    /// The app's status (200 for a TCP connect that succeeded).
    async fn run(
        &self,
        tls: Option<&Arc<ClientConfig>>,
        user_agent: Option<&HeaderValue>,
    ) -> Result<StatusCode, CheckError> {
        let port = match self {
            Check::Http { port, .. } | Check::Tcp { port } | Check::Grpc { port, .. } => *port,
        };
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let stream = TcpStream::connect(addr)
            .await
            .map_err(CheckError::Connect)?;
        let (path, https, headers) = match self {
            Check::Tcp { .. } => return Ok(StatusCode::OK),
            Check::Grpc { service, .. } => return grpc_check(stream, addr, service).await,
            Check::Http {
                path,
                https,
                headers,
                ..
            } => (path, https, headers),
        };
        let mut request = Request::get(path.clone())
            .header(HOST, addr.to_string())
            .header(
                USER_AGENT,
                user_agent
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static("palisade-probe")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(CheckError::Request)?;
        for (name, value) in headers {
            request.headers_mut().insert(name, value.clone());
        }
        match (https, tls) {
            (false, _) => exchange(stream, request).await,
            (true, Some(tls)) => {
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(ServerName::IpAddress(addr.ip().into()), stream)
                    .await
                    .map_err(CheckError::Tls)?;
                exchange(tls, request).await
            }
            (true, None) => Err(CheckError::NoTls),
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; the response body is not read.
async fn exchange<S>(stream: S, request: Request<Empty<Bytes>>) -> Result<StatusCode, CheckError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(CheckError::Http)?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await;
    driver.abort();
    Ok(response.map_err(CheckError::Http)?.status())
}

/// The gRPC health check (`grpc.health.v1.Health/Check`) over h2c: 200 when the answer is
/// `SERVING` with `grpc-status: 0`, 503 otherwise (what the kubelet's gRPC probe decides).
async fn grpc_check(
    stream: TcpStream,
    addr: SocketAddr,
    service: &str,
) -> Result<StatusCode, CheckError> {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(CheckError::Http)?;
    let driver = tokio::spawn(connection);
    let request = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(USER_AGENT, "palisade-probe")
        .body(Full::new(grpc::health_check_request(service)))
        .map_err(CheckError::Request)?;
    let answer = async {
        let response = sender.send_request(request).await?;
        let (head, body) = response.into_parts();
        let collected = body.collect().await?;
        Ok::<_, hyper::Error>((head, collected))
    }
    .await;
    driver.abort();
    let (head, collected) = answer.map_err(CheckError::Http)?;
    // A trailers-only answer carries grpc-status in the head.
    let status = collected
        .trailers()
        .and_then(|t| t.get(grpc::STATUS))
        .or_else(|| head.headers.get(grpc::STATUS));
    let serving = head.status == StatusCode::OK
        && status.is_some_and(|s| s == "0")
        && grpc::is_serving(&collected.to_bytes());
    Ok(if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    })
}

/// The two messages of the gRPC health protocol this check needs, in their fixed wire form.
mod grpc {
    use bytes::{BufMut, Bytes, BytesMut};

    /// The trailer (or header) holding the gRPC status code.
    pub(super) const STATUS: &str = "grpc-status";

    /// A length-prefixed `HealthCheckRequest { service }` (field 1, a string).
    pub(super) fn health_check_request(service: &str) -> Bytes {
        let mut message = BytesMut::new();
        if !service.is_empty() {
            message.put_u8(0x0a); // field 1, length-delimited
            let mut len = service.len();
            while len >= 0x80 {
                message.put_u8(((len & 0x7f) as u8) | 0x80);
                len >>= 7;
            }
            message.put_u8(len as u8);
            message.put_slice(service.as_bytes());
        }
        let mut framed = BytesMut::with_capacity(5 + message.len());
        framed.put_u8(0); // not compressed
        framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        framed.put_slice(&message);
        framed.freeze()
    }

    /// Whether `body` is exactly one uncompressed `HealthCheckResponse { status: SERVING }`
    /// (field 1 = 1, which every protobuf encoder writes as `08 01`). Anything else, including
    /// a response with unknown fields, counts as not serving.
    pub(super) fn is_serving(body: &[u8]) -> bool {
        body == [0, 0, 0, 0, 2, 0x08, 0x01]
    }
}

/// A TLS client that accepts any server certificate, for `HTTPS` probes only.
fn insecure_client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DangerousAcceptAnyServer(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

// === impl DangerousAcceptAnyServer ===

impl ServerCertVerifier for DangerousAcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let probes = AppProbes::from_json(
            r#"{
              "/app-health/orders/readyz": {
                "httpGet": { "port": 8081, "path": "/healthz?full=1", "scheme": "HTTPS",
                             "httpHeaders": [{ "name": "Host", "value": "orders.local" }] },
                "timeoutSeconds": 3
              },
              "/app-health/orders/livez": { "tcpSocket": { "port": 8080 } },
              "/app-health/orders/startupz": { "httpGet": { "port": 8080 } }
            }"#,
        )
        .expect("valid");
        assert_eq!(probes.len(), 3);
        let ready = probes.get("/app-health/orders/readyz").expect("readyz");
        assert_eq!(ready.timeout, Duration::from_secs(3));
        let Check::Http {
            port,
            path,
            https,
            headers,
        } = &ready.check
        else {
            panic!("an http check: {ready:?}");
        };
        assert_eq!(
            (*port, path.as_str(), *https),
            (8081, "/healthz?full=1", true)
        );
        assert_eq!(
            headers.get(HOST).map(HeaderValue::as_bytes),
            Some(&b"orders.local"[..])
        );
        assert_eq!(
            probes.get("/app-health/orders/livez").map(|p| &p.check),
            Some(&Check::Tcp { port: 8080 })
        );
        let startup = probes.get("/app-health/orders/startupz").expect("startupz");
        assert_eq!(startup.timeout, Duration::from_secs(1));
        assert!(matches!(&startup.check, Check::Http { path, https: false, .. } if path == "/"));
        assert!(
            probes.0.tls.is_some(),
            "an HTTPS probe builds the tls client"
        );
        assert!(probes.get("/app-health/orders/other").is_none());
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        for (bad, why) in [
            ("[]", "not an object"),
            (
                r#"{"/ready": {"tcpSocket": {"port": 1}}}"#,
                "outside /app-health/",
            ),
            (
                r#"{"/app-health/": {"tcpSocket": {"port": 1}}}"#,
                "bare prefix",
            ),
            (r#"{"/app-health/a/livez": {}}"#, "no handler"),
            (
                r#"{"/app-health/a/livez": {"tcpSocket": {"port": 1}, "httpGet": {"port": 1}}}"#,
                "two handlers",
            ),
            (
                r#"{"/app-health/a/livez": {"tcpSocket": {"port": 0}}}"#,
                "port 0",
            ),
            (
                r#"{"/app-health/a/livez": {"tcpSocket": {"port": 70000}}}"#,
                "port too big",
            ),
            (
                r#"{"/app-health/a/livez": {"tcpSocket": {"port": "http"}}}"#,
                "named port",
            ),
            (
                r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "scheme": "FTP"}}}"#,
                "scheme",
            ),
            (
                r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "path": "/a b"}}}"#,
                "space",
            ),
            (
                r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "httpHeaders": [{"name": "a b", "value": "x"}]}}}"#,
                "header name",
            ),
            (
                r#"{"/app-health/a/livez": {"exec": {"command": ["true"]}}}"#,
                "exec",
            ),
            (
                r#"{"/app-health/a/livez": {"tcpSocket": {"port": 1}, "timeoutSeconds": 0}}"#,
                "timeout 0",
            ),
        ] {
            assert!(AppProbes::from_json(bad).is_err(), "{why}: {bad}");
        }
    }

    /// An app on 127.0.0.1:0 answering every request with `status`, over TLS when `tls`.
    async fn app(status: u16, tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| async move {
                        let mut response = http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"app body"),
                        ));
                        *response.status_mut() = StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        Some(tls) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(tls).accept(stream).await
                            else {
                                return;
                            };
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                    };
                });
            }
        });
        port
    }

    fn self_signed() -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let ca = crate::pki::Ca::new("cluster.local").expect("ca");
        let svid = ca
            .issue_svid("spiffe://cluster.local/ns/a/sa/app", &Default::default())
            .expect("svid");
        let chain = CertificateDer::pem_slice_iter(svid.chain_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(svid.key_pem().as_bytes())
            .expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        Arc::new(config)
    }

    #[tokio::test]
    async fn https_probe_skips_verification_like_the_kubelet() {
        let ok = app(204, Some(self_signed())).await;
        let failing = app(503, Some(self_signed())).await;
        let plain = app(200, None).await;
        let probes = AppProbes::from_json(&format!(
            r#"{{ "/app-health/a/readyz": {{ "httpGet": {{ "port": {ok}, "scheme": "HTTPS" }} }},
                 "/app-health/a/livez": {{ "httpGet": {{ "port": {failing}, "scheme": "HTTPS" }} }},
                 "/app-health/a/startupz": {{ "httpGet": {{ "port": {plain}, "scheme": "HTTPS" }} }} }}"#
        ))
        .expect("valid");
        let status = |path: &'static str| {
            let probes = probes.clone();
            async move { probes.run(path, None).await.expect("configured").0 }
        };
        assert_eq!(status("/app-health/a/readyz").await, StatusCode::NO_CONTENT);
        assert_eq!(
            status("/app-health/a/livez").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // TLS to a plaintext app fails the handshake: unreachable.
        let (code, body) = probes
            .run("/app-health/a/startupz", None)
            .await
            .expect("configured");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("tls"), "{body}");
        assert!(probes.run("/app-health/a/other", None).await.is_none());
    }

    #[tokio::test]
    async fn a_silent_app_times_out() {
        // Accepts connections (the backlog does) and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let probes = AppProbes::from_json(&format!(
            r#"{{ "/app-health/a/livez": {{ "httpGet": {{ "port": {port} }}, "timeoutSeconds": 1 }} }}"#
        ))
        .expect("valid");
        let started = tokio::time::Instant::now();
        let (code, _) = probes
            .run("/app-health/a/livez", None)
            .await
            .expect("configured");
        assert_eq!(code, StatusCode::GATEWAY_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(listener);
    }

    /// A gRPC health server over h2c: `SERVING` for the whole server, `NOT_SERVING` for the
    /// service `down`, an error status for anything else.
    async fn grpc_app() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |request: Request<hyper::body::Incoming>| async move {
                            let path_ok = request.uri().path() == "/grpc.health.v1.Health/Check";
                            let body = request.into_body().collect().await?.to_bytes();
                            let (message, code): (&[u8], &str) = if !path_ok {
                                (&[], "12")
                            } else if body == grpc::health_check_request("") {
                                (&[0, 0, 0, 0, 2, 0x08, 0x01], "0")
                            } else if body == grpc::health_check_request("down") {
                                (&[0, 0, 0, 0, 2, 0x08, 0x02], "0")
                            } else {
                                (&[], "5")
                            };
                            let mut trailers = HeaderMap::new();
                            trailers.insert(grpc::STATUS, HeaderValue::from_static(code));
                            let body = Full::new(Bytes::copy_from_slice(message))
                                .with_trailers(async move { Some(Ok(trailers)) });
                            let mut response = http::Response::new(body);
                            response
                                .headers_mut()
                                .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                            Ok::<_, hyper::Error>(response)
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn grpc_probe_asks_the_health_service() {
        let grpc = grpc_app().await;
        let http1 = app(200, None).await;
        let probes = AppProbes::from_json(&format!(
            r#"{{ "/app-health/a/readyz": {{ "grpc": {{ "port": {grpc} }} }},
                 "/app-health/a/livez": {{ "grpc": {{ "port": {grpc}, "service": "down" }} }},
                 "/app-health/a/startupz": {{ "grpc": {{ "port": {grpc}, "service": "unknown" }} }},
                 "/app-health/b/readyz": {{ "grpc": {{ "port": {http1} }} }} }}"#
        ))
        .expect("valid");
        for (path, expected) in [
            ("/app-health/a/readyz", StatusCode::OK),
            ("/app-health/a/livez", StatusCode::SERVICE_UNAVAILABLE),
            ("/app-health/a/startupz", StatusCode::SERVICE_UNAVAILABLE),
            // Not an h2c server: the HTTP/2 handshake fails.
            ("/app-health/b/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let (status, body) = probes.run(path, None).await.expect("configured");
            assert_eq!(status, expected, "{path}: {body}");
        }
    }

    #[test]
    fn health_check_request_wire_form() {
        assert_eq!(&grpc::health_check_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc::health_check_request("ab")[..],
            [0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        let long = "x".repeat(300);
        let framed = grpc::health_check_request(&long);
        // 300 = 0b10_0101100: varint ac 02.
        assert_eq!(&framed[..8], [0, 0, 0, 1, 47, 0x0a, 0xac, 0x02]);
        assert_eq!(framed.len(), 5 + 3 + 300);
        assert!(grpc::is_serving(&[0, 0, 0, 0, 2, 0x08, 0x01]));
        assert!(!grpc::is_serving(&[0, 0, 0, 0, 2, 0x08, 0x02]));
        assert!(!grpc::is_serving(&[]));
    }
}
