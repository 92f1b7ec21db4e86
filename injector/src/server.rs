//! Step 3 of the webhook: the HTTPS server the API server calls. Accepts TLS (rustls, serving
//! certificate and key from files, re-read when they change), reads one bounded `POST /mutate`
//! body within a deadline, hands it to `review::review` and writes the answer: 200 with the
//! AdmissionReview, 400 when the body is not one, 404/405/413/408 for the rest.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::InjectConfig;
use crate::review::review;

/// The only path the webhook serves.
pub const MUTATE_PATH: &str = "/mutate";

/// Settings of `palisade inject`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Serving certificate chain (PEM), e.g. cert-manager's `tls.crt`.
    pub cert: PathBuf,
    /// Serving private key (PEM), e.g. cert-manager's `tls.key`.
    pub key: PathBuf,
    /// How often the certificate files are checked for changes. Default 10 s.
    pub reload_interval: Duration,
    /// Largest accepted request body. Default 2 MiB: above the largest pod the API server
    /// stores (etcd's 1.5 MiB object limit) wrapped in its AdmissionReview. A bigger body is
    /// answered 413 (after at most 4 times the limit more is read and dropped).
    pub max_body: usize,
    /// Time a client gets for its TLS handshake, and for sending a request body. Default 10 s
    /// (the API server's webhook timeout is at most 30 s).
    pub request_timeout: Duration,
    /// What to inject.
    pub inject: InjectConfig,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The serving certificate or key could not be loaded.
    #[error("cannot load the serving certificate {cert} and key {key}")]
    Certificate {
        /// Certificate path.
        cert: PathBuf,
        /// Key path.
        key: PathBuf,
        /// Why.
        #[source]
        source: CertificateError,
    },
    /// Accepting connections failed.
    #[error("cannot accept connections")]
    Accept(#[source] std::io::Error),
}

/// Why a certificate/key pair did not load.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file is not readable PEM.
    #[error("cannot read PEM")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// The chain file holds no certificate.
    #[error("no certificate in the chain file")]
    Empty,
    /// rustls refused the key (unsupported or not matching the certificate).
    #[error("key not usable with the certificate")]
    Key(#[source] rustls::Error),
}

/// The serving certificate, swapped in place when the files change; a bad new pair is logged
/// and the last good one kept.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
}

/// Modification times of the two files; a change in either triggers a reload.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

// === impl ServerConfig ===

impl ServerConfig {
    /// Defaults for everything but the file paths.
    pub fn new(cert: PathBuf, key: PathBuf, inject: InjectConfig) -> ServerConfig {
        ServerConfig {
            cert,
            key,
            reload_interval: Duration::from_secs(10),
            max_body: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            inject,
        }
    }
}

// === impl ReloadingCert ===

impl ReloadingCert {
    /// Loads the pair once; fails if it is not usable.
    pub fn load(cert: &Path, key: &Path) -> Result<ReloadingCert, ServerError> {
        let stamp = stamp(cert, key);
        let loaded = load_pair(cert, key).map_err(|source| ServerError::Certificate {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Loaded { key: loaded, stamp }),
        })
    }

    /// Re-reads the pair if either file changed; keeps the last good pair on error.
    pub fn refresh(&self) {
        let stamp = stamp(&self.cert, &self.key);
        let unchanged = self
            .current
            .read()
            .map(|c| c.stamp == stamp)
            .unwrap_or(false);
        if unchanged {
            return;
        }
        match load_pair(&self.cert, &self.key) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Loaded { key, stamp };
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                }
            }
            Err(error) => {
                // A half-written pair (cert updated, key not yet) lands here too; the next
                // refresh retries because the stamp was not recorded.
                tracing::warn!(cert = %self.cert.display(), error = %error, "serving certificate not reloaded, keeping the last good one");
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }
}

/// Serves the webhook on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, config: ServerConfig) -> Result<(), ServerError> {
    let certs = Arc::new(ReloadingCert::load(&config.cert, &config.key)?);
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| ServerError::Certificate {
        cert: config.cert.clone(),
        key: config.key.clone(),
        source: CertificateError::Key(source),
    })?
    .with_no_client_auth()
    .with_cert_resolver(certs.clone());
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let watcher = certs.clone();
    let interval = config.reload_interval;
    let reload = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
        loop {
            tick.tick().await;
            watcher.refresh();
        }
    });
    let _stop_reload = AbortOnDrop(reload);

    let config = Arc::new(config);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_transient(&error) => {
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(error) => return Err(ServerError::Accept(error)),
        };
        let acceptor = acceptor.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(config.request_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(client.addr = %peer, error = %error, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client.addr = %peer, "tls handshake timed out");
                    return;
                }
            };
            let service =
                hyper::service::service_fn(move |request| handle(request, config.clone()));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new());
            if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(client.addr = %peer, error = %error, "connection ended with an error");
            }
        });
    }
}

/// Handles one request.
async fn handle(
    request: Request<Incoming>,
    config: Arc<ServerConfig>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != MUTATE_PATH {
        return Ok(error_body(StatusCode::NOT_FOUND, "not found"));
    }
    if request.method() != Method::POST {
        return Ok(error_body(StatusCode::METHOD_NOT_ALLOWED, "only POST"));
    }
    let bytes = match tokio::time::timeout(
        config.request_timeout,
        read_body(request.into_body(), config.max_body),
    )
    .await
    {
        Ok(Ok(Body::Complete(bytes))) => bytes,
        Ok(Ok(Body::TooLarge)) => {
            return Ok(error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
        Ok(Err(_)) => {
            return Ok(error_body(
                StatusCode::BAD_REQUEST,
                "cannot read request body",
            ));
        }
        Err(_) => {
            return Ok(error_body(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ));
        }
    };
    Ok(match review(&bytes, &config.inject) {
        Ok(answer) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(answer)))
            .unwrap_or_else(|_| {
                error_body(StatusCode::INTERNAL_SERVER_ERROR, "cannot build response")
            }),
        Err(failure) => {
            tracing::warn!(error = %DisplayChain(&failure), "bad admission request");
            error_body(StatusCode::BAD_REQUEST, &DisplayChain(&failure).to_string())
        }
    })
}

/// A request body read within the limit, or the news that it was over.
enum Body {
    Complete(Bytes),
    TooLarge,
}

/// Reads at most `max` bytes. Past it, up to `DRAIN_FACTOR` times `max` more is read and
/// dropped, so that a client still sending gets to read the 413 (an HTTP/2 stream reset
/// while a client uploads makes it drop the answer; HTTP/1 closes the connection).
async fn read_body(mut body: Incoming, max: usize) -> Result<Body, hyper::Error> {
    const DRAIN_FACTOR: usize = 4;
    let mut collected = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen <= max {
            collected.extend_from_slice(&data);
        } else if seen > max.saturating_mul(DRAIN_FACTOR) {
            return Ok(Body::TooLarge);
        }
    }
    Ok(if seen <= max {
        Body::Complete(collected.freeze())
    } else {
        Body::TooLarge
    })
}

/// A JSON error body `{"error": "..."}`.
fn error_body(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertificateError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(CertificateError::Pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(CertificateError::Pem)?;
    if chain.is_empty() {
        return Err(CertificateError::Empty);
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(CertificateError::Pem)?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(CertificateError::Key)
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || error.raw_os_error() == Some(24)
        || error.raw_os_error() == Some(23)
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error and its sources, joined with `: ` (for the 400 body and logs).
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
