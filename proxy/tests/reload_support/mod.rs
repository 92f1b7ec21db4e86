//! Test parts for live reload: directories laid out the way Kubernetes writes ConfigMap and
//! CSI volumes (`..data` symlink swaps), generated policies, an app that answers 200, and
//! mTLS clients (HTTP/1.1 keep-alive, h2, one-shot).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_proxy::pki::{Ca, Svid, SvidOptions, write_identity};
use palisade_proxy::reload::{ReloadConfig, ReloadTask, Reloader, StatusHandle};
use palisade_proxy::tls::{
    ClientOptions, Identity, IdentityPaths, TrustDomains, client_config, server_name,
};
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits for.
pub const LIMIT: Duration = Duration::from_secs(10);
pub const TD: &str = "cluster.local";
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";
pub const FRONTEND: &str = "spiffe://cluster.local/ns/web/sa/frontend";

/// A directory written the way the kubelet writes a ConfigMap or a CSI volume: the files live
/// in a timestamped `..<time>` directory, `..data` is a symlink to it, and each visible name
/// is a symlink `name -> ..data/name`. An update writes a new timestamped directory, points a
/// `..data_tmp` symlink at it and renames that over `..data` (one atomic step), then removes
/// the old directory.
pub struct AtomicDir {
    pub root: PathBuf,
    current: Option<PathBuf>,
    generation: u32,
}

impl AtomicDir {
    pub fn new(root: &Path) -> Self {
        std::fs::create_dir_all(root).unwrap();
        Self {
            root: root.to_owned(),
            current: None,
            generation: 0,
        }
    }

    /// Publishes `files` (name, contents) as the new contents, atomically.
    pub fn publish(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let name = format!(
            "..2026_11_22_17_00_{:02}.{}",
            self.generation % 60,
            self.generation
        );
        let dir = self.root.join(&name);
        std::fs::create_dir(&dir).unwrap();
        for (file, contents) in files {
            std::fs::write(dir.join(file), contents).unwrap();
        }
        let tmp = self.root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        for (file, _) in files {
            let visible = self.root.join(file);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(file), &visible).unwrap();
            }
        }
        if let Some(old) = self.current.replace(dir) {
            std::fs::remove_dir_all(old).unwrap();
        }
    }
}

/// The identity files of `svid` with `bundle`, as (name, contents) for [`AtomicDir::publish`].
pub fn identity_files<'a>(svid: &'a Svid, bundle: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("tls.crt", svid.chain_pem()),
        ("tls.key", svid.key_pem()),
        ("ca.crt", bundle),
    ]
}

/// The leaf certificate of `svid`, DER.
pub fn leaf_der(svid: &Svid) -> Vec<u8> {
    let pem = svid.chain_pem().as_bytes();
    use rustls_pki_types::pem::PemObject;
    let first = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .unwrap()
        .unwrap();
    first.to_vec()
}

/// A policy whose rule `stable` always allows `GET /stable/{id}` to `ns/web` peers, and whose
/// rule `probe` allows `GET /probe` only if `probe_allowed`. `generation` goes into the
/// metadata, so every generation has its own version.
pub fn policy_text(generation: usize, probe_allowed: bool) -> String {
    let mut text = format!(
        r#"apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: {{ name: gen-{generation}, namespace: shop }}
spec:
  mode: enforce
  mtls: strict
  rules:
    - name: stable
      from: {{ principals: ["spiffe://cluster.local/ns/web/*"] }}
      to:
        - methods: [GET]
          paths: ["/stable/{{id}}"]
"#
    );
    if probe_allowed {
        text.push_str(
            r#"    - name: probe
      from: { principals: ["spiffe://cluster.local/ns/web/*"] }
      to:
        - methods: [GET]
          paths: ["/probe"]
"#,
        );
    }
    text
}

/// An app on 127.0.0.1:0 that answers every request with 200 `ok`.
pub struct App {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl App {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reloader in front of an [`App`]: palisade's inbound side on 127.0.0.1:0 whose policy
/// and TLS config are the reloader's.
pub struct Served {
    pub addr: SocketAddr,
    pub status: StatusHandle,
    pub policy: Arc<arc_swap::ArcSwap<palisade_config::Policy>>,
    pub tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    pub reload: ReloadTask,
    pub inbound: palisade_proxy::inbound::Running,
    pub app: App,
}

impl Served {
    pub async fn start(config: ReloadConfig) -> Self {
        let app = App::start().await;
        let reloader = Reloader::load(config).unwrap();
        let mut inbound = reloader.inbound_config();
        inbound.listen = "127.0.0.1:0".parse().unwrap();
        inbound.app.ip = app.addr.ip();
        inbound.app.port = app.addr.port();
        inbound.timeouts.drain = Duration::from_secs(2);
        let status = reloader.status();
        let policy = reloader.policy();
        let tls = reloader.tls();
        let inbound = palisade_proxy::inbound::Inbound::bind(inbound)
            .await
            .unwrap();
        let addr = inbound.local_addr();
        Self {
            addr,
            status,
            policy,
            tls,
            reload: reloader.spawn(),
            inbound: inbound.spawn(),
            app,
        }
    }

    pub async fn stop(self) {
        self.reload.shutdown().await;
        self.inbound.shutdown().await;
    }

    /// Waits until the policy in force is no longer `version`; returns the new one.
    pub async fn policy_changed_from(&self, version: &str) -> String {
        wait_for(|| {
            let policy = self.policy.load();
            (policy.version() != version).then(|| policy.version().to_owned())
        })
        .await
    }

    /// Waits until the TLS config in force is no longer `config`.
    pub async fn tls_changed_from(&self, config: &Arc<rustls::ServerConfig>) {
        wait_for(|| (!Arc::ptr_eq(&self.tls.load_full(), config)).then_some(())).await;
    }
}

/// Polls `check` every millisecond until it returns a value, for at most [`LIMIT`].
pub async fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A client identity for `id` from `ca`, trusting the servers of every CA in `bundle`.
pub fn client(dir: &Path, ca: &Ca, id: &str, bundle: &str, alpn: &[u8]) -> Arc<ClientConfig> {
    let svid = ca.issue_svid(id, &SvidOptions::default()).unwrap();
    let paths: IdentityPaths = write_identity(dir, &svid, bundle).unwrap();
    let identity = Identity::load(&paths).unwrap();
    let mut options = ClientOptions::new(TrustDomains::new([TD]).unwrap());
    options.alpn = vec![alpn.to_vec()];
    client_config(&identity, &options).unwrap()
}

async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(server_name(addr.ip()), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// An HTTP/1.1 keep-alive connection.
pub async fn h1_connection(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> http1::SendRequest<Empty<Bytes>> {
    let tls = tls_connect(addr, config).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An h2 connection; clones of the sender share it.
pub async fn h2_connection(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> http2::SendRequest<Empty<Bytes>> {
    let tls = tls_connect(addr, config).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn request(uri: String) -> Request<Empty<Bytes>> {
    Request::get(uri)
        .header(http::header::HOST, "orders.shop")
        .body(Empty::new())
        .unwrap()
}

/// GET `path` on a kept-alive HTTP/1.1 connection; the status, or what failed.
pub async fn h1_get(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<u16, String> {
    let exchange = async {
        sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e:?}"))?;
        let response = sender
            .send_request(request(path.to_owned()))
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?;
        Ok(status)
    };
    tokio::time::timeout(LIMIT, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

/// GET `path` as a new stream of an h2 connection; the status, or what failed.
pub async fn h2_get(
    sender: &mut http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<u16, String> {
    let exchange = async {
        sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e:?}"))?;
        let response = sender
            .send_request(request(format!("https://orders.shop{path}")))
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?;
        Ok(status)
    };
    tokio::time::timeout(LIMIT, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

/// GET `path` on a new connection (a new handshake): the status and the server's leaf
/// certificate, or what failed.
pub async fn fresh_get(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    path: &str,
) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let tls = tls_connect(addr, config).await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.to_vec())
            .unwrap_or_default();
        let (mut sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let status = h1_get(&mut sender, path).await?;
        Ok((status, leaf))
    };
    tokio::time::timeout(LIMIT, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}
