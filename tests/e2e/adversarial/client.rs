//! The attacking client: TLS with a chosen certificate (or none), then raw HTTP/1 bytes or
//! hand-built h2 frames. It never parses what comes back beyond h2 frame boundaries; the
//! verdict is taken at the oracle, not from the responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_proxy::tls::{SpiffeServerVerifier, TrustDomains, provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Granularity of the reader's wait for data.
const QUIET: Duration = Duration::from_millis(200);

/// One step of what the client sends.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    Send(Vec<u8>),
    /// Wait before the next step (a slow client, or letting a response come back first).
    Pause(Duration),
}

/// How a connection ended, as the client saw it.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Time from connecting to the server closing the connection (EOF, reset or h2 GOAWAY),
    /// if it did within the case's limit.
    pub(crate) closed_after: Option<Duration>,
    /// The first bytes of the response (for the failure report).
    pub(crate) response: Vec<u8>,
    /// The TLS handshake failed.
    pub(crate) refused: bool,
}

/// A TLS client config presenting `cert` (chain and key PEM), or no certificate at all;
/// the server must chain to `roots_pem` (its SPIFFE ID is not checked beyond the trust
/// domain `cluster.local`).
pub(crate) fn tls_config(
    roots_pem: &str,
    cert: Option<(&str, &str)>,
    alpn: &[u8],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(der.expect("ca pem")).expect("ca cert");
    }
    let provider = provider();
    let verifier = SpiffeServerVerifier::new(
        Arc::new(roots),
        TrustDomains::new(["cluster.local"]).expect("trust domain"),
        None,
        &provider,
    );
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some((chain, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(|c| c.expect("chain pem"))
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// Connects, runs `steps` (for h2, after the preface and an empty SETTINGS frame, answering
/// the server's SETTINGS), then reads until the server is quiet, closes, or `limit` passes.
pub(crate) async fn exchange(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    h2: bool,
    steps: &[Step],
    limit: Duration,
) -> Outcome {
    let start = Instant::now();
    let connector = tokio_rustls::TlsConnector::from(config);
    let Ok(Ok(tcp)) = tokio::time::timeout(limit, TcpStream::connect(addr)).await else {
        return Outcome {
            closed_after: Some(start.elapsed()),
            response: Vec::new(),
            refused: true,
        };
    };
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => {
            return Outcome {
                closed_after: Some(start.elapsed()),
                response: Vec::new(),
                refused: true,
            };
        }
    };
    // TLS 1.3: a refused client certificate shows only on the first read. Probe with a
    // short read for an alert before sending anything.
    let mut probe = [0u8; 1];
    if let Ok(result) = tokio::time::timeout(Duration::from_millis(150), tls.read(&mut probe)).await
    {
        let refused = result.is_err();
        if refused || matches!(result, Ok(0)) {
            return Outcome {
                closed_after: Some(start.elapsed()),
                response: Vec::new(),
                refused,
            };
        }
    }
    let (mut reader, writer) = tokio::io::split(tls);
    let writer = Arc::new(Mutex::new(writer));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reading = {
        let writer = writer.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut frames = FrameReader::default();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let read = tokio::time::timeout(QUIET, reader.read(&mut buf)).await;
                let n = match read {
                    Err(_) => continue,
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(n)) => n,
                };
                {
                    let mut seen = seen.lock().expect("response lock");
                    if seen.len() < 4096 {
                        seen.extend_from_slice(&buf[..n]);
                    }
                }
                if h2 {
                    let (acks, goaway) = frames.feed(&buf[..n]);
                    if !acks.is_empty() {
                        let _ = writer.lock().await.write_all(&acks).await;
                    }
                    if goaway {
                        return true;
                    }
                }
            }
        })
    };
    let mut write_failed = false;
    if h2 {
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(0x4, 0, 0, &[]));
        write_failed |= writer.lock().await.write_all(&hello).await.is_err();
    }
    for step in steps {
        match step {
            Step::Send(bytes) if !write_failed => {
                let mut w = writer.lock().await;
                let sent = tokio::time::timeout(limit, w.write_all(bytes)).await;
                write_failed = !matches!(sent, Ok(Ok(())));
                let _ = w.flush().await;
            }
            Step::Send(_) => {}
            Step::Pause(d) => tokio::time::sleep(*d).await,
        }
        if reading.is_finished() {
            break;
        }
    }
    // Wait for the server: until it closes, or (unless the case waits on purpose) for a
    // second after the last write, time enough for a loopback answer.
    let deadline = if needs_full_limit(steps) {
        start + limit
    } else {
        (Instant::now() + Duration::from_secs(1)).min(start + limit)
    };
    while !reading.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let elapsed = start.elapsed();
    let closed = if reading.is_finished() {
        reading.await.unwrap_or(true)
    } else {
        reading.abort();
        false
    };
    let response = std::mem::take(&mut *seen.lock().expect("response lock"));
    Outcome {
        closed_after: closed.then_some(elapsed),
        response,
        refused: false,
    }
}

/// Slow-client cases end with a long pause: wait for the server to act on them.
fn needs_full_limit(steps: &[Step]) -> bool {
    matches!(steps.last(), Some(Step::Pause(_)))
}

/// Splits server bytes into h2 frames; answers SETTINGS with an ACK and notices GOAWAY.
#[derive(Default)]
struct FrameReader {
    pending: Vec<u8>,
}

impl FrameReader {
    fn feed(&mut self, bytes: &[u8]) -> (Vec<u8>, bool) {
        self.pending.extend_from_slice(bytes);
        let mut acks = Vec::new();
        let mut goaway = false;
        while self.pending.len() >= 9 {
            let len = usize::from(self.pending[0]) << 16
                | usize::from(self.pending[1]) << 8
                | usize::from(self.pending[2]);
            if self.pending.len() < 9 + len {
                break;
            }
            let (kind, flags) = (self.pending[3], self.pending[4]);
            if kind == 0x4 && flags & 0x1 == 0 {
                acks.extend(frame(0x4, 0x1, 0, &[]));
            }
            goaway |= kind == 0x7;
            self.pending.drain(..9 + len);
        }
        (acks, goaway)
    }
}

/// One h2 frame.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK: an integer with an `n`-bit prefix, the prefix byte's high bits set to `high`.
pub(crate) fn hpack_int(high: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// HPACK: a literal field without indexing, name and value as raw (non-Huffman) strings.
pub(crate) fn hpack_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    hpack_int(0, 7, name.len(), out);
    out.extend_from_slice(name);
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value);
}

/// HPACK: a literal field with incremental indexing (it enters the dynamic table).
pub(crate) fn hpack_indexed_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x40);
    hpack_int(0, 7, name.len(), out);
    out.extend_from_slice(name);
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value);
}

/// A header block of literal fields, in order.
pub(crate) fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        hpack_literal(name, value, &mut out);
    }
    out
}
