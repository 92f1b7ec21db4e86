//! `palisade demo`: a local mesh on 127.0.0.1 that shows what palisade does.
//!
//! It mints a CA and SPIFFE identities (rcgen) in a temporary directory, starts an example
//! app and palisade's inbound side in front of it with `examples/orders-api.yaml`, then makes
//! real calls — mutual TLS from several identities, a plaintext one, one from a rogue CA —
//! and prints who asked for what, what came back and why. The last calls go the way an app in
//! the mesh makes them: app A speaks plain HTTP to palisade's outbound listener (fixed
//! destination), which carries them to palisade's inbound side over mutual TLS as
//! `frontend`. `--keep` stays up and prints curl commands to try by hand.

mod app;
mod call;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use palisade_config::{LoadOptions, Peer, Policy, SpiffeId, normalize};
use palisade_proxy::config::InboundConfig;
use palisade_proxy::inbound::Inbound;
use palisade_proxy::outbound::{Destinations, Outbound, OutboundConfig, Upstream};
use palisade_proxy::pki::{Ca, SvidOptions, write_identity};
use palisade_proxy::tls::{
    ClientOptions, Identity, IdentityPaths, TrustDomains, client_config, server_config,
};

use self::call::{Caller, Outcome};

/// The example policy the demo enforces (the same file `palisade check examples/` checks).
const POLICY_NAME: &str = "examples/orders-api.yaml";
const POLICY: &str = include_str!("../../../examples/orders-api.yaml");
const TRUST_DOMAIN: &str = "cluster.local";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";

/// Arguments of `palisade demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Stay up after the calls and print curl commands to try by hand (Ctrl-C to stop).
    #[arg(long)]
    keep: bool,
}

/// One scripted call: who calls, and what.
struct Script {
    caller: &'static str,
    method: &'static str,
    target: &'static str,
}

const SCRIPT: &[Script] = &[
    Script {
        caller: "frontend",
        method: "GET",
        target: "/api/v1/items/42",
    },
    Script {
        caller: "frontend",
        method: "GET",
        target: "/api/v1/items/%34%32?color=red",
    },
    Script {
        caller: "frontend",
        method: "POST",
        target: "/api/v1/orders",
    },
    Script {
        caller: "frontend",
        method: "DELETE",
        target: "/api/v1/items/42",
    },
    Script {
        caller: "frontend",
        method: "GET",
        target: "/admin/../admin/users",
    },
    Script {
        caller: "frontend",
        method: "GET",
        target: "/api/v1/items/1%2F..%2F..%2Fadmin",
    },
    Script {
        caller: "oncall",
        method: "HEAD",
        target: "/api/v1/items",
    },
    Script {
        caller: "oncall",
        method: "POST",
        target: "/api/v1/orders",
    },
    Script {
        caller: "picker",
        method: "PATCH",
        target: "/api/v1/orders/o-17/status",
    },
    Script {
        caller: "admin",
        method: "DELETE",
        target: "/admin/cache/items",
    },
    Script {
        caller: "plaintext",
        method: "GET",
        target: "/api/v1/items",
    },
    Script {
        caller: "rogue-ca",
        method: "GET",
        target: "/api/v1/items",
    },
    Script {
        caller: "app-a",
        method: "GET",
        target: "/api/v1/items/7",
    },
    Script {
        caller: "app-a",
        method: "DELETE",
        target: "/api/v1/items/7",
    },
];

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo(args))
}

async fn demo(args: Args) -> Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("palisade-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mesh = Mesh::generate(dir.path()).context("generating the demo's certificates")?;
    let loaded = Policy::from_yaml(POLICY_NAME, POLICY, &LoadOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("loading the example policy")?;
    let policy = loaded.policy;

    let app = app::start().await.context("starting the example app")?;
    let server = Identity::load(&mesh.server_files).context("loading the server identity")?;
    let trust = TrustDomains::new([TRUST_DOMAIN]).context("trust domain")?;
    let tls = server_config(&server, &trust).context("building the TLS server config")?;
    let mut config = InboundConfig::new(policy.clone(), tls, server.id().clone());
    config.listen = "127.0.0.1:0".parse().context("listen address")?;
    config.app.ip = app.addr.ip();
    config.app.port = app.addr.port();
    let inbound = Inbound::bind(config).await.context("starting palisade")?;
    let proxy = inbound.local_addr();
    let running = inbound.spawn();

    // App A's side: an outbound listener standing for the orders service.
    let frontend = Identity::load(&mesh.frontend_files).context("loading app A's identity")?;
    let upstream = Upstream {
        addr: proxy,
        expected: Some(SpiffeId::parse(SERVER_ID)?),
    };
    let outbound = OutboundConfig::new(
        "127.0.0.1:0".parse().context("listen address")?,
        Destinations::Fixed(upstream),
        frontend,
    );
    let outbound = Outbound::bind(outbound)
        .await
        .context("starting palisade's outbound side")?;
    let outbound_addr = outbound.local_addr();
    let outbound = outbound.spawn();

    println!("palisade demo: a local mesh on 127.0.0.1");
    println!(
        "  app (orders)      http://{}  (reachable only through palisade in a pod)",
        app.addr
    );
    println!("  palisade inbound  https://{proxy}  identity {SERVER_ID}, mTLS strict");
    println!(
        "  palisade outbound http://{outbound_addr}  app A's side: mTLS to {proxy} as ns/web/sa/frontend, expects {}",
        short(SERVER_ID)
    );
    println!(
        "  policy            {POLICY_NAME} (version {}, {} rules)",
        policy.version(),
        policy.rule_count()
    );
    println!("  certificates      {}", dir.path().display());
    println!();

    let mut rows = Vec::new();
    let mut all_expected = true;
    for step in SCRIPT {
        let caller = mesh.caller(step.caller)?;
        let to = if caller.via_outbound {
            outbound_addr
        } else {
            proxy
        };
        let outcome = call::send(to, &caller, step.method, step.target).await;
        let why = explain(&policy, &caller, step.method, step.target, &outcome);
        all_expected &= outcome.matches_policy(&policy, &caller, step.method, step.target);
        rows.push([
            caller.label.clone(),
            format!("{} {}", step.method, step.target),
            outcome.status_text(),
            why,
        ]);
    }
    print_table(&["caller", "request", "result", "why"], &rows);
    println!();
    println!("Allowed calls reach the app with the normalized path and the caller's identity");
    println!("in x-forwarded-client-cert; everything else is refused before it gets there.");
    println!("App A's calls leave as plain HTTP and cross the wire as mutual TLS: palisade's");
    println!("outbound side presents app A's identity and checks the server's.");

    if args.keep {
        print_curl_help(&mesh, proxy, outbound_addr);
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    outbound.shutdown().await;
    running.shutdown().await;
    app.stop().await;
    if all_expected {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("palisade demo: some calls did not get the answer the policy gives");
        Ok(ExitCode::FAILURE)
    }
}

/// The reason column: what `palisade explain` says for this call.
fn explain(
    policy: &Policy,
    caller: &Caller,
    method: &str,
    target: &str,
    outcome: &Outcome,
) -> String {
    match outcome {
        Outcome::Refused(reason) => reason.clone(),
        Outcome::Answered { seen, .. } => {
            let decision = match normalize(target) {
                Err(error) => return format!("rejected: {error}"),
                Ok(normalized) => {
                    let decision = policy.decide(method, normalized.path(), &caller.peer);
                    let raw_path = target.split('?').next().unwrap_or(target);
                    if normalized.path().as_str() == raw_path {
                        decision.to_string()
                    } else {
                        format!("normalized to {}: {decision}", normalized.path())
                    }
                }
            };
            match seen {
                Some(seen) => format!("{decision}; app saw {seen}"),
                None => decision,
            }
        }
    }
}

fn print_table(header: &[&str; 4], rows: &[[String; 4]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 4]| {
        // The last column is free-running text.
        let [a, b, c, d] = cells;
        let [wa, wb, wc, _] = widths;
        println!(
            "{}",
            format!("{a:<wa$}  {b:<wb$}  {c:<wc$}  {d}").trim_end()
        );
    };
    line(*header);
    line(["---"; 4]);
    for [a, b, c, d] in rows {
        line([a, b, c, d].map(String::as_str));
    }
}

fn print_curl_help(mesh: &Mesh, proxy: std::net::SocketAddr, outbound: std::net::SocketAddr) {
    let d = &mesh.dir;
    println!();
    println!("palisade stays up (Ctrl-C to stop). Try it by hand:");
    for who in ["frontend", "oncall"] {
        println!(
            "  curl --cacert {ca} --cert {d}/{who}/tls.crt --key {d}/{who}/tls.key https://{proxy}/api/v1/items/42",
            ca = mesh.ca_path().display(),
            d = d.display(),
        );
    }
    println!(
        "  curl --http2 --cacert {ca} --cert {d}/frontend/tls.crt --key {d}/frontend/tls.key -X DELETE https://{proxy}/api/v1/items/42",
        ca = mesh.ca_path().display(),
        d = d.display(),
    );
    println!(
        "  curl http://{outbound}/api/v1/items/42    (as app A: plain HTTP, mTLS on the wire)"
    );
    println!(
        "  palisade explain --policy {POLICY_NAME} --peer spiffe://cluster.local/ns/web/sa/frontend \"DELETE /api/v1/items/42\""
    );
}

/// The demo's generated PKI: one CA, the server's identity and the callers'.
struct Mesh {
    dir: PathBuf,
    server_files: palisade_proxy::tls::IdentityPaths,
    /// App A's identity, presented by the outbound side.
    frontend_files: palisade_proxy::tls::IdentityPaths,
    callers: Vec<Caller>,
}

impl Mesh {
    fn generate(dir: &Path) -> Result<Mesh> {
        let ca = Ca::new(TRUST_DOMAIN)?;
        let options = SvidOptions::default();
        // An address SAN lets curl (the --keep instructions) check the server by address;
        // palisade itself identifies servers by SPIFFE ID only.
        let server_options = SvidOptions {
            ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            ..SvidOptions::default()
        };
        let server = ca.issue_svid(SERVER_ID, &server_options)?;
        let server_files = write_identity(&dir.join("orders"), &server, ca.bundle_pem())?;
        let server_identity = Identity::load(&server_files)?;
        let mut client_options = ClientOptions::new(TrustDomains::new([TRUST_DOMAIN])?);
        client_options.expected = Some(SpiffeId::parse(SERVER_ID)?);
        client_options.alpn = vec![b"http/1.1".to_vec()];

        let mut callers = Vec::new();
        for (name, id) in [
            ("frontend", "spiffe://cluster.local/ns/web/sa/frontend"),
            ("oncall", "spiffe://cluster.local/ns/ops/sa/oncall"),
            ("picker", "spiffe://cluster.local/ns/warehouse/sa/picker"),
            ("admin", "spiffe://cluster.local/ns/ops/sa/admin"),
        ] {
            let svid = ca.issue_svid(id, &options)?;
            let files = write_identity(&dir.join(name), &svid, ca.bundle_pem())?;
            let identity = Identity::load(&files)?;
            callers.push(Caller {
                name,
                label: format!("{name} ({})", short(id)),
                peer: Peer::Spiffe(SpiffeId::parse(id)?),
                tls: Some(client_config(&identity, &client_options)?),
                via_outbound: false,
            });
        }
        let frontend_files = IdentityPaths::in_dir(dir.join("frontend"));
        callers.push(Caller {
            name: "app-a",
            label: "app A via palisade outbound (ns/web/sa/frontend)".to_owned(),
            peer: Peer::Spiffe(SpiffeId::parse(
                "spiffe://cluster.local/ns/web/sa/frontend",
            )?),
            tls: None,
            via_outbound: true,
        });
        // A caller with a certificate from a CA the mesh does not trust.
        let rogue_ca = Ca::new(TRUST_DOMAIN)?;
        let rogue = rogue_ca.issue_svid("spiffe://cluster.local/ns/web/sa/frontend", &options)?;
        // It trusts the real server, so the refusal is the server's doing.
        callers.push(Caller {
            name: "rogue-ca",
            label: "rogue CA (claims frontend)".to_owned(),
            peer: Peer::Unauthenticated,
            tls: Some(call::rogue_client_config(
                &rogue,
                &server_identity,
                &client_options,
            )?),
            via_outbound: false,
        });
        callers.push(Caller {
            name: "plaintext",
            label: "plaintext (no TLS)".to_owned(),
            peer: Peer::Unauthenticated,
            tls: None,
            via_outbound: false,
        });
        Ok(Mesh {
            dir: dir.to_owned(),
            server_files,
            frontend_files,
            callers,
        })
    }

    fn caller(&self, name: &str) -> Result<Caller> {
        self.callers
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .with_context(|| format!("no demo caller {name}"))
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("orders").join("ca.crt")
    }
}

/// `ns/web/sa/frontend` out of a full SPIFFE ID, for the table.
fn short(id: &str) -> &str {
    id.strip_prefix("spiffe://cluster.local/").unwrap_or(id)
}
