//! Test parts for the inbound side: per-test certificates, an "oracle" app that echoes what
//! it received, palisade's inbound side in-process, and HTTP clients (hyper over mTLS or
//! plaintext, raw sockets).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_config::{LoadOptions, Policy, SpiffeId};
use palisade_proxy::config::InboundConfig;
use palisade_proxy::inbound::{Inbound, Running};
use palisade_proxy::pki::{Ca, SvidOptions, write_identity};
use palisade_proxy::tls::{
    ClientOptions, Identity, IdentityPaths, TrustDomains, client_config, server_config, server_name,
};
use rustls::ClientConfig;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits for.
pub const LIMIT: Duration = Duration::from_secs(10);
pub const TD: &str = "cluster.local";
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";
pub const FRONTEND: &str = "spiffe://cluster.local/ns/web/sa/frontend";
pub const OPS: &str = "spiffe://cluster.local/ns/ops/sa/debug";
pub const STRANGER: &str = "spiffe://cluster.local/ns/other/sa/stranger";

/// The policy of most tests; `{mode}` and `{mtls}` are filled in.
pub const POLICY: &str = r#"
apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: orders-api, namespace: shop }
spec:
  mode: {mode}
  mtls: {mtls}
  rules:
    - name: catalog-read
      from:
        principals: ["spiffe://cluster.local/ns/web/sa/frontend", "spiffe://cluster.local/ns/ops/*"]
      to:
        - methods: [GET, HEAD]
          paths: ["/api/v1/items", "/api/v1/items/{id}"]
    - name: place-order
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [POST]
          paths: ["/api/v1/orders"]
    - name: live-feed
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/ws"]
          upgrade: websocket
{extra}
"#;

/// Extra rule for permissive tests: plaintext peers may read `/healthz`.
pub const HEALTH_RULE: &str = r#"    - name: health
      from: { principals: [unauthenticated] }
      to:
        - methods: [GET]
          paths: ["/healthz"]"#;

/// Builds a policy from [`POLICY`].
pub fn policy(mode: &str, mtls: &str, extra: &str) -> Policy {
    let text = POLICY
        .replace("{mode}", mode)
        .replace("{mtls}", mtls)
        .replace("{extra}", extra);
    match Policy::from_yaml("test.yaml", &text, &LoadOptions::default()) {
        Ok(loaded) => loaded.policy,
        Err(error) => panic!("test policy does not load: {error:?}"),
    }
}

/// A certificate authority and identity files for one test.
pub struct Pki {
    pub ca: Ca,
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            ca: Ca::new(TD).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes and loads an identity for `id`.
    pub fn identity(&self, id: &str) -> Identity {
        let paths = self.identity_files(id);
        Identity::load(&paths).unwrap()
    }

    /// Writes the identity files for `id` (for curl) and returns their paths.
    pub fn identity_files(&self, id: &str) -> IdentityPaths {
        self.identity_files_with(id, &SvidOptions::default())
    }

    /// Writes the identity files for `id`, issued with `options`.
    pub fn identity_files_with(&self, id: &str, options: &SvidOptions) -> IdentityPaths {
        let svid = self.ca.issue_svid(id, options).unwrap();
        let name = id.replace(['/', ':'], "_");
        write_identity(&self.dir.path().join(name), &svid, self.ca.bundle_pem()).unwrap()
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.identity_files(SERVER_ID).bundle
    }

    /// A client config presenting `id`; `alpn` e.g. `[b"h2"]`.
    pub fn client(&self, id: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let identity = self.identity(id);
        let mut options = ClientOptions::new(TrustDomains::new([TD]).unwrap());
        options.alpn = alpn.iter().map(|p| p.to_vec()).collect();
        client_config(&identity, &options).unwrap()
    }
}

/// What the oracle app saw of one request, as it echoes it back.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// An app on 127.0.0.1:0 that answers every request with a JSON echo of its request line,
/// headers and body. `x-oracle-sleep-ms: N` delays the answer; `upgrade` requests get a
/// 101 and an echo tunnel.
pub struct Oracle {
    pub addr: SocketAddr,
    served: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Oracle {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// An oracle speaking h2c with prior knowledge.
    pub async fn start_h2c() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(h2c: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        echo(request)
                    });
                    let io = TokioIo::new(stream);
                    if h2c {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .with_upgrades()
                            .await;
                    }
                });
            }
        });
        Self {
            addr,
            served,
            connections,
            task,
        }
    }

    /// How many connections the app has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// How many requests the app has received.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(bytes: Bytes) -> EchoBody {
    Full::new(bytes).boxed()
}

async fn echo(mut request: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    if let Some(ms) = request
        .headers()
        .get("x-oracle-sleep-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if request.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(Bytes::new()))
            .unwrap());
    }
    let grpc = request
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/grpc");
    let method = request.method().to_string();
    let target = request.uri().to_string();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(error) => format!("<body error: {error}>"),
    };
    let json = serde_json::json!({
        "method": method, "target": target, "headers": headers, "body": body,
    });
    let json = Bytes::from(json.to_string());
    let body = if grpc {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        ChunkedWithTrailers {
            data: Some(json),
            trailers: Some(trailers),
        }
        .boxed()
    } else {
        full(json)
    };
    let mut response = Response::builder().header("content-type", "application/json");
    if grpc {
        // HTTP/1 needs the announcement to send trailers at all.
        response = response.header("trailer", "grpc-status");
    } else {
        response = response
            .header("connection", "keep-alive, x-app-hop")
            .header("x-app-hop", "must not reach the client");
    }
    Ok(response.body(body).unwrap())
}

/// One chunk, then trailers, of unknown length up front: HTTP/1 must send it chunked, the
/// only framing that carries trailers.
struct ChunkedWithTrailers {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for ChunkedWithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = match (self.data.take(), self.trailers.take()) {
            (Some(data), trailers) => {
                self.trailers = trailers;
                Some(Ok(http_body::Frame::data(data)))
            }
            (None, Some(trailers)) => Some(Ok(http_body::Frame::trailers(trailers))),
            (None, None) => None,
        };
        std::task::Poll::Ready(frame)
    }
}

/// palisade's inbound side in front of an app.
pub struct Proxy {
    pub running: Running,
    pub addr: SocketAddr,
}

/// Starts the inbound side with `policy` in front of `app`; `tune` adjusts the config.
pub async fn start_proxy(
    pki: &Pki,
    policy: Policy,
    app: SocketAddr,
    tune: impl FnOnce(&mut InboundConfig),
) -> Proxy {
    // A DNS name too, so that curl can verify the server as `localhost`.
    let options = SvidOptions {
        dns_names: vec!["localhost".to_owned()],
        ..SvidOptions::default()
    };
    let identity = Identity::load(&pki.identity_files_with(SERVER_ID, &options)).unwrap();
    let tls = server_config(&identity, &TrustDomains::new([TD]).unwrap()).unwrap();
    let own_id = SpiffeId::parse(SERVER_ID).unwrap();
    let mut config = InboundConfig::new(policy, tls, own_id);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.app.ip = app.ip();
    config.app.port = app.port();
    config.timeouts.drain = Duration::from_secs(5);
    tune(&mut config);
    let inbound = Inbound::bind(config).await.unwrap();
    let addr = inbound.local_addr();
    Proxy {
        running: inbound.spawn(),
        addr,
    }
}

/// One response, body collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {:?}", self.body))
    }

    /// The oracle's echo of what it received.
    pub fn seen(&self) -> Seen {
        let json = self.json();
        let headers = json["headers"]
            .as_object()
            .unwrap_or_else(|| panic!("not an oracle echo: {json}"))
            .iter()
            .map(|(k, v)| {
                let values = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect();
                (k.clone(), values)
            })
            .collect();
        Seen {
            method: json["method"].as_str().unwrap().to_owned(),
            target: json["target"].as_str().unwrap().to_owned(),
            headers,
            body: json["body"].as_str().unwrap().to_owned(),
        }
    }

    /// Asserts a palisade JSON error with `code` and returns its request ID.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {:?}", self.body);
        let json = self.json();
        assert_eq!(json["error"], code, "body: {json}");
        let id = json["request_id"].as_str().unwrap().to_owned();
        assert!(!id.is_empty());
        id
    }
}

/// How a test client reaches the proxy.
#[derive(Clone)]
pub enum Via {
    /// mTLS with this client config; HTTP version by the config's ALPN.
    Tls(Arc<ClientConfig>),
    /// Plaintext HTTP/1.1.
    Plain,
}

/// Sends one request on a new connection (h2 if the TLS handshake picked it).
pub async fn send(addr: SocketAddr, via: &Via, request: Request<Full<Bytes>>) -> Reply {
    tokio::time::timeout(LIMIT, send_inner(addr, via, request))
        .await
        .expect("request timed out")
}

async fn send_inner(addr: SocketAddr, via: &Via, request: Request<Full<Bytes>>) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let response = match via {
        Via::Plain => exchange(TokioIo::new(tcp), false, request).await,
        Via::Tls(config) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = connector
                .connect(server_name(addr.ip()), tcp)
                .await
                .unwrap();
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            exchange(TokioIo::new(tls), h2, request).await
        }
    };
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    Reply {
        status: parts.status,
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
        body: collected.to_bytes(),
    }
}

async fn exchange<I>(io: I, h2: bool, mut request: Request<Full<Bytes>>) -> Response<Incoming>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        if request.uri().authority().is_none() {
            let uri = format!("https://orders.shop{}", request.uri());
            *request.uri_mut() = uri.parse().unwrap();
        }
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        if !request.headers().contains_key(http::header::HOST) {
            request
                .headers_mut()
                .insert(http::header::HOST, "orders.shop".parse().unwrap());
        }
        sender.send_request(request).await.unwrap()
    }
}

/// A GET request for `target`.
pub fn get(target: &str) -> Request<Full<Bytes>> {
    Request::get(target).body(Full::new(Bytes::new())).unwrap()
}

/// Writes `raw` on a plaintext connection and reads until the server closes it (or
/// [`LIMIT`]); returns what it read and whether the server closed the connection.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Whether `tool` can run. Under `CI=true` a missing tool fails the test; otherwise the test
/// prints why it skips.
pub fn have_tool(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required under CI=true but cannot be run");
        }
        println!("skipping: {tool} is not installed");
    }
    found
}

/// What curl reported: status code, HTTP version and body.
#[derive(Debug)]
pub struct CurlReply {
    pub ok: bool,
    pub status: u16,
    pub version: String,
    pub body: String,
    pub stderr: String,
}

/// Runs curl against `https://localhost:<port><target>` with the client identity in `client`
/// (or none) and extra `args` (e.g. `--http2`).
pub async fn curl(
    proxy: SocketAddr,
    bundle: &std::path::Path,
    client: Option<&IdentityPaths>,
    target: &str,
    args: &[&str],
) -> CurlReply {
    let mut command = std::process::Command::new("curl");
    command
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(bundle)
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", proxy.port()))
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .arg(format!("https://localhost:{}{target}", proxy.port()));
    if let Some(client) = client {
        command
            .arg("--cert")
            .arg(&client.chain)
            .arg("--key")
            .arg(&client.key);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, trailer) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, version) = trailer.split_once(' ').unwrap_or(("0", ""));
    CurlReply {
        ok: output.status.success(),
        status: status.parse().unwrap_or(0),
        version: version.to_owned(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Like [`send`] over h2, but reports a failed exchange instead of panicking.
pub async fn try_send(
    addr: SocketAddr,
    via: &Via,
    mut request: Request<Full<Bytes>>,
) -> Result<u16, String> {
    let Via::Tls(config) = via else {
        return Err("try_send speaks h2 over TLS only".to_owned());
    };
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tls = connector
        .connect(server_name(addr.ip()), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let uri = format!("https://orders.shop{}", request.uri());
    *request.uri_mut() = uri.parse().unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.status().as_u16())
}

/// Waits (at most a second) for `condition`, for counters a server task updates just after
/// the client has seen the outcome.
pub async fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..50 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// A writer tests can read back: what the access log wrote.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Each line written so far, as JSON.
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}
