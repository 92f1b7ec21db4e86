//! Fuzz target for the whole inbound HTTP service: arbitrary bytes from a plaintext
//! (permissive-mode) client over loopback, through detect → HTTP/1.1 or h2 → framing →
//! normalize + authorize → headers → forward, to the oracle app of the adversarial suite.
//!
//! Asserts: no panic anywhere in palisade (libfuzzer-sys turns a panic on any thread into an
//! abort), and every request head that reaches the app is allowed by the policy under every
//! backend reading the adversarial suite's judge knows (`tests/e2e/adversarial/verdict.rs`),
//! with unambiguous framing.
#![no_main]

#[path = "../../../tests/e2e/adversarial/oracle.rs"]
#[allow(dead_code, unreachable_pub)]
mod oracle;
#[path = "../../../tests/e2e/adversarial/verdict.rs"]
#[allow(dead_code, unreachable_pub)]
mod verdict;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use palisade_config::{LoadOptions, Peer, Policy, SpiffeId};
use palisade_proxy::config::InboundConfig;
use palisade_proxy::inbound::{Inbound, Running};
use palisade_proxy::pki::{Ca, SvidOptions, write_identity};
use palisade_proxy::tls::{Identity, TrustDomains, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use self::oracle::Oracle;
use self::verdict::Reach;

const POLICY: &str = r#"apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: fuzz, namespace: shop }
spec:
  mtls: permissive
  rules:
    - name: api
      from: { principals: [unauthenticated] }
      to:
        - methods: [GET]
          paths: ["/api/v1/items", "/api/v1/items/{id}"]
        - methods: [POST]
          paths: ["/api/v1/orders"]
"#;

struct Harness {
    runtime: tokio::runtime::Runtime,
    oracle: Oracle,
    addr: SocketAddr,
    policy: Policy,
    _running: Running,
    _dir: std::path::PathBuf,
}

fn policy() -> Policy {
    Policy::from_yaml("fuzz.yaml", POLICY, &LoadOptions::default())
        .expect("fuzz policy loads")
        .policy
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = std::env::temp_dir().join(format!("palisade-fuzz-{}", std::process::id()));
        let ca = Ca::new("cluster.local").expect("ca");
        let svid = ca
            .issue_svid(
                "spiffe://cluster.local/ns/shop/sa/orders",
                &SvidOptions::default(),
            )
            .expect("svid");
        let paths = write_identity(&dir, &svid, ca.bundle_pem()).expect("identity");
        let identity = Identity::load(&paths).expect("identity loads");
        let tls = server_config(
            &identity,
            &TrustDomains::new(["cluster.local"]).expect("td"),
        )
        .expect("tls");
        let (oracle, running) = runtime.block_on(async {
            let oracle = Oracle::start(0).await;
            let own = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").expect("id");
            let mut config = InboundConfig::new(policy(), tls, own);
            config.listen = "127.0.0.1:0".parse().expect("addr");
            config.app.port = oracle.port;
            config.timeouts.detect = Duration::from_millis(500);
            config.timeouts.header_read = Duration::from_millis(500);
            config.timeouts.body_progress = Duration::from_millis(500);
            config.timeouts.upstream_response = Duration::from_secs(2);
            let running = Inbound::bind(config).await.expect("bind").spawn();
            (oracle, running)
        });
        Harness {
            addr: running.local_addr(),
            runtime,
            oracle,
            policy: policy(),
            _running: running,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    harness.runtime.block_on(async {
        harness.oracle.take();
        let Ok(mut stream) = TcpStream::connect(harness.addr).await else {
            return;
        };
        // The client sends everything and half-closes; the server ends the exchange.
        let _ = stream.write_all(data).await;
        let _ = stream.shutdown().await;
        let mut buf = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        // A forwarded request finishes arriving before its response left palisade; the
        // short wait covers requests whose client side was cut off mid-forward.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let arrived = harness.oracle.take();
        let found = verdict::violations(
            &arrived,
            Reach::AtMost(usize::MAX),
            &harness.policy,
            &Peer::Unauthenticated,
        );
        assert!(
            found.is_empty(),
            "forwarded outside the allowlist: {found:?}"
        );
    });
});
