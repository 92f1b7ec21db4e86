//! The demo's callers: each makes one real request to palisade, over mutual TLS with its own
//! SPIFFE identity, or over plaintext, and reports what came back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_config::{Peer, Policy, normalize};
use palisade_proxy::pki::Svid;
use palisade_proxy::tls::{ClientOptions, Identity, SpiffeServerVerifier, provider, server_name};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

/// How long one demo call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One demo caller.
#[derive(Clone)]
pub(super) struct Caller {
    pub(super) name: &'static str,
    pub(super) label: String,
    /// Who palisade should take the caller for, if it lets it in at all.
    pub(super) peer: Peer,
    /// mTLS client config; `None` calls over plaintext.
    pub(super) tls: Option<Arc<ClientConfig>>,
    /// Plain HTTP to palisade's outbound listener (app A's view), which carries the call
    /// to the inbound side over mutual TLS with the caller's identity.
    pub(super) via_outbound: bool,
}

/// What one call got.
pub(super) enum Outcome {
    /// An HTTP answer; `seen` is what the app reports it received (allowed calls only).
    Answered { status: u16, seen: Option<String> },
    /// No HTTP answer: the connection or handshake was refused.
    Refused(String),
}

/// Makes one request to palisade at `proxy`.
pub(super) async fn send(
    proxy: SocketAddr,
    caller: &Caller,
    method: &str,
    target: &str,
) -> Outcome {
    match tokio::time::timeout(CALL_TIMEOUT, exchange(proxy, caller, method, target)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => Outcome::Refused(format!("{error:#}")),
        Err(_) => Outcome::Refused("timed out".to_owned()),
    }
}

async fn exchange(
    proxy: SocketAddr,
    caller: &Caller,
    method: &str,
    target: &str,
) -> Result<Outcome> {
    let tcp = TcpStream::connect(proxy).await.context("connect")?;
    let request = Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, "orders.shop.svc")
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let response = match &caller.tls {
        Some(config) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = match connector.connect(server_name(proxy.ip()), tcp).await {
                Ok(tls) => tls,
                Err(_) => {
                    return Ok(Outcome::Refused(
                        "refused: TLS handshake failed (client certificate not trusted)".to_owned(),
                    ));
                }
            };
            // The server checks the client certificate after the client's last flight;
            // a refusal shows up on the first read.
            match send_http1(TokioIo::new(tls), request).await {
                Ok(response) => response,
                Err(_) => {
                    return Ok(Outcome::Refused(
                        "refused: TLS handshake failed (client certificate not trusted)".to_owned(),
                    ));
                }
            }
        }
        None => match send_http1(TokioIo::new(tcp), request).await {
            Ok(response) => response,
            Err(_) => {
                return Ok(Outcome::Refused(
                    "refused: strict mTLS takes no plaintext".to_owned(),
                ));
            }
        },
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the body")?
        .to_bytes();
    let seen = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .filter(|json| json["app"] == "orders")
        .map(|json| {
            format!(
                "{} {} from {}",
                json["method"].as_str().unwrap_or("?"),
                json["target"].as_str().unwrap_or("?"),
                json["caller"].as_str().map(super::short).unwrap_or("?"),
            )
        });
    Ok(Outcome::Answered { status, seen })
}

async fn send_http1<I>(
    io: I,
    request: Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

/// A client config presenting `rogue`'s certificate (from a CA the mesh does not trust) while
/// trusting the real server, so that the refusal the demo shows is the server's.
pub(super) fn rogue_client_config(
    rogue: &Svid,
    server: &Identity,
    options: &ClientOptions,
) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = SpiffeServerVerifier::new(
        server.roots().clone(),
        options.trust.clone(),
        options.expected.clone(),
        &provider,
    );
    let chain = CertificateDer::pem_slice_iter(rogue.chain_pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("rogue chain")?;
    let key = PrivateKeyDer::from_pem_slice(rogue.key_pem().as_bytes()).context("rogue key")?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .context("rogue client certificate")?;
    config.alpn_protocols = options.alpn.clone();
    Ok(Arc::new(config))
}

// === impl Outcome ===

impl Outcome {
    /// The result column.
    pub(super) fn status_text(&self) -> String {
        match self {
            Outcome::Answered { status, .. } => {
                let word = match status {
                    200..=299 => "ok",
                    400 => "bad request",
                    403 => "forbidden",
                    _ => "error",
                };
                format!("{status} {word}")
            }
            Outcome::Refused(_) => "refused".to_owned(),
        }
    }

    /// Whether palisade answered what the policy says for this call: 2xx for allowed,
    /// 403 for denied, 400 for malformed, and no answer for callers it must not let in.
    pub(super) fn matches_policy(
        &self,
        policy: &Policy,
        caller: &Caller,
        method: &str,
        target: &str,
    ) -> bool {
        let admitted = caller.name != "plaintext" && caller.name != "rogue-ca";
        match self {
            Outcome::Refused(_) => !admitted,
            Outcome::Answered { status, .. } => {
                if !admitted {
                    return false;
                }
                match normalize(target) {
                    Err(error) if error.is_denied_form() => *status == 403,
                    Err(_) => *status == 400,
                    Ok(normalized) => {
                        let allowed = policy
                            .decide(method, normalized.path(), &caller.peer)
                            .is_allowed();
                        if allowed {
                            (200..300).contains(status)
                        } else {
                            *status == 403
                        }
                    }
                }
            }
        }
    }
}
