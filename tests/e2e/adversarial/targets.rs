//! What the cases run against: palisade's inbound side in-process (a fresh one per case, so
//! cases run concurrently), or a peer (HAProxy, nginx) configured as in
//! ../shared/bench/targets/*.sh, with the oracle as its upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use palisade_config::{LoadOptions, Policy, SpiffeId};
use palisade_proxy::config::InboundConfig;
use palisade_proxy::inbound::{Inbound, Running};
use palisade_proxy::pki::{Ca, Svid, SvidOptions};
use palisade_proxy::tls::{Identity, IdentityPaths, TrustDomains, server_config};
use rustls::ClientConfig;

use super::cases::Who;
use super::client::tls_config;

pub(crate) const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";
pub(crate) const FRONTEND: &str = "spiffe://cluster.local/ns/web/sa/frontend";

/// The allowlist of ../shared/bench/allowlist.txt, for the frontend identity.
pub(crate) const POLICY: &str = r#"apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: orders-api, namespace: shop }
spec:
  rules:
    - name: api
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/api/v1/items", "/api/v1/items/{id}"]
        - methods: [POST]
          paths: ["/api/v1/orders"]
"#;

pub(crate) fn policy() -> Policy {
    match Policy::from_yaml("adversarial.yaml", POLICY, &LoadOptions::default()) {
        Ok(loaded) => loaded.policy,
        Err(error) => panic!("adversarial policy does not load: {error:?}"),
    }
}

/// Certificates for one suite run.
pub(crate) struct Pki {
    pub(crate) ca: Ca,
    pub(crate) dir: tempfile::TempDir,
    server: Svid,
    clients: HashMap<Who, Option<Svid>>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let ca = Ca::new("cluster.local").expect("ca");
        let other = Ca::new("cluster.local").expect("other ca");
        let server = ca
            .issue_svid(
                SERVER_ID,
                &SvidOptions {
                    dns_names: vec!["localhost".to_owned()],
                    ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
                    server_auth: true,
                    ..SvidOptions::default()
                },
            )
            .expect("server svid");
        let issue =
            |id: &str, options: SvidOptions| Some(ca.issue_svid(id, &options).expect("svid"));
        let default = SvidOptions::default;
        let mut clients = HashMap::new();
        clients.insert(Who::Frontend, issue(FRONTEND, default()));
        clients.insert(
            Who::Stranger,
            issue("spiffe://cluster.local/ns/other/sa/stranger", default()),
        );
        clients.insert(Who::NoCert, None);
        clients.insert(
            Who::OtherCa,
            Some(other.issue_svid(FRONTEND, &default()).expect("svid")),
        );
        clients.insert(Who::Expired, issue(FRONTEND, SvidOptions::expired()));
        clients.insert(
            Who::ForeignTrustDomain,
            issue("spiffe://evil.local/ns/web/sa/frontend", default()),
        );
        clients.insert(
            Who::LookalikeTrustDomain,
            issue(
                "spiffe://cluster.local.evil.com/ns/web/sa/frontend",
                default(),
            ),
        );
        clients.insert(
            Who::TwoUriSans,
            issue(
                FRONTEND,
                SvidOptions {
                    extra_uri_sans: vec!["spiffe://cluster.local/ns/ops/sa/admin".to_owned()],
                    ..default()
                },
            ),
        );
        clients.insert(
            Who::DnsOnly,
            issue(
                FRONTEND,
                SvidOptions {
                    uri_san: false,
                    dns_names: vec!["frontend.web.svc".to_owned()],
                    ..default()
                },
            ),
        );
        clients.insert(
            Who::NoClientAuthEku,
            issue(
                FRONTEND,
                SvidOptions {
                    client_auth: false,
                    server_auth: true,
                    ..default()
                },
            ),
        );
        Pki {
            ca,
            dir: tempfile::tempdir().expect("tempdir"),
            server,
            clients,
        }
    }

    pub(crate) fn client(&self, who: Who, h2: bool) -> Arc<ClientConfig> {
        let cert = self.clients.get(&who).and_then(Option::as_ref);
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        tls_config(
            self.ca.bundle_pem(),
            cert.map(|svid| (svid.chain_pem(), svid.key_pem())),
            alpn,
        )
    }

    /// Writes the server's files for a peer: `server.crt`, `server.key`, `server.pem`
    /// (both, for HAProxy), `ca.crt`.
    fn write_server_files(&self) -> &Path {
        let dir = self.dir.path();
        std::fs::write(dir.join("server.crt"), self.server.chain_pem()).expect("write");
        std::fs::write(dir.join("server.key"), self.server.key_pem()).expect("write");
        std::fs::write(
            dir.join("server.pem"),
            format!("{}{}", self.server.chain_pem(), self.server.key_pem()),
        )
        .expect("write");
        std::fs::write(dir.join("ca.crt"), self.ca.bundle_pem()).expect("write");
        dir
    }
}

/// palisade's inbound side in front of the oracle on `app_port`.
pub(crate) async fn start_palisade(pki: &Pki, app_port: u16) -> Running {
    let dir = pki.dir.path().join(format!("server-{app_port}"));
    let paths: IdentityPaths =
        palisade_proxy::pki::write_identity(&dir, &pki.server, pki.ca.bundle_pem())
            .expect("identity");
    let identity = Identity::load(&paths).expect("identity loads");
    let tls = server_config(
        &identity,
        &TrustDomains::new(["cluster.local"]).expect("td"),
    )
    .expect("tls");
    let mut config = InboundConfig::new(policy(), tls, SpiffeId::parse(SERVER_ID).expect("id"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.app.port = app_port;
    // Documented, configurable limits tightened for the suite; the defaults are 10 s and 30 s.
    config.timeouts.header_read = Duration::from_secs(5);
    config.timeouts.body_progress = Duration::from_secs(5);
    config.timeouts.idle = Duration::from_secs(10);
    config.timeouts.drain = Duration::from_secs(1);
    Inbound::bind(config).await.expect("inbound binds").spawn()
}

/// A peer process, killed by its PID when dropped.
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts `name` ("haproxy" or "nginx") doing palisade's job in front of the oracle on
/// `app_port`, with the configuration shapes of ../shared/bench/targets/<name>.sh.
pub(crate) fn start_peer(name: &'static str, pki: &Pki, app_port: u16) -> Peer {
    let certs = pki.write_server_files().to_owned();
    let run = certs.join(name);
    std::fs::create_dir_all(run.join("tmp")).expect("mkdir");
    let port = free_port();
    let c = certs.display();
    let r = run.display();
    let mut command = match name {
        "haproxy" => {
            let cfg = format!(
                r#"global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect         5s
    timeout client          60s
    timeout server          60s
    timeout http-request    10s
    timeout http-keep-alive 60s
    option  http-keep-alive
    http-reuse safe

frontend mtls_in
    bind 127.0.0.1:{port} ssl crt {c}/server.pem ca-file {c}/ca.crt verify required alpn h2,http/1.1
    acl m_get     method GET
    acl m_post    method POST
    acl p_items   path /api/v1/items
    acl p_item    path_reg ^/api/v1/items/[^/]+$
    acl p_orders  path /api/v1/orders
    http-request return status 403 content-type application/json string '{{"error":"forbidden"}}' unless m_get p_items or m_get p_item or m_post p_orders
    default_backend app

backend app
    server app1 127.0.0.1:{app_port} maxconn 4096
"#
            );
            let path = run.join("haproxy.cfg");
            std::fs::write(&path, cfg).expect("write");
            let mut command = Command::new("haproxy");
            command.arg("-db").arg("-f").arg(path);
            command
        }
        _ => {
            let cfg = format!(
                r#"worker_processes 1;
master_process off;
daemon off;
pid {r}/nginx.pid;
error_log {r}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {r}/tmp/body;
    proxy_temp_path       {r}/tmp/proxy;
    fastcgi_temp_path     {r}/tmp/fastcgi;
    uwsgi_temp_path       {r}/tmp/uwsgi;
    scgi_temp_path        {r}/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout  120s;

    upstream app {{
        server 127.0.0.1:{app_port};
        keepalive 128;
        keepalive_requests 10000000;
    }}

    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate        {c}/server.crt;
        ssl_certificate_key    {c}/server.key;
        ssl_client_certificate {c}/ca.crt;
        ssl_verify_client      on;
        ssl_protocols          TLSv1.2 TLSv1.3;
        ssl_session_cache      shared:SSL:10m;

        default_type       application/json;
        proxy_http_version 1.1;
        proxy_set_header   Connection "";

        location = /api/v1/items {{
            if ($request_method != GET) {{ return 403 '{{"error":"forbidden"}}'; }}
            proxy_pass http://app;
        }}
        location ~ ^/api/v1/items/[^/]+$ {{
            if ($request_method != GET) {{ return 403 '{{"error":"forbidden"}}'; }}
            proxy_pass http://app;
        }}
        location = /api/v1/orders {{
            if ($request_method != POST) {{ return 403 '{{"error":"forbidden"}}'; }}
            proxy_pass http://app;
        }}
        location / {{
            return 403 '{{"error":"forbidden"}}';
        }}
    }}
}}
"#
            );
            let path = run.join("nginx.conf");
            std::fs::write(&path, cfg).expect("write");
            let mut command = Command::new("nginx");
            command
                .arg("-e")
                .arg(run.join("error.log"))
                .arg("-p")
                .arg(&run)
                .arg("-c")
                .arg(path);
            command
        }
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let peer = Peer { addr, child };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    peer
}
