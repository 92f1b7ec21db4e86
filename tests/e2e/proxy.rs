//! `palisade proxy` as a pod runs it: real certificate files, a real app on loopback, curl as
//! the client, SIGTERM to stop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{
    CATALOG_POLICY, CLIENT_ID, Guard, Identities, SERVER_ID, identities, lines_of, logged_addr,
    palisade, require_tool, run, text, wait_line, write,
};

/// A tiny app on 127.0.0.1 that answers with the path and XFCC it received.
fn start_app() -> (
    SocketAddr,
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("send");
            let accept = async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            |request: http::Request<hyper::body::Incoming>| async move {
                                let xfcc = request
                                    .headers()
                                    .get("x-forwarded-client-cert")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-")
                                    .to_owned();
                                let body = format!(
                                    "app saw {} {} xfcc={xfcc}",
                                    request.method(),
                                    request.uri()
                                );
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            };
            tokio::select! {
                () = accept => {}
                _ = stop_rx => {}
            }
        });
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("app address");
    (addr, handle, stop_tx)
}

/// Starts `palisade proxy` on a free port; returns the child and the port it listens on.
fn start_proxy(pki: &Identities, app: SocketAddr) -> (Guard, SocketAddr) {
    let mut command = palisade();
    command
        .args([
            "proxy",
            "--admin",
            "127.0.0.1:0",
            "--inbound",
            "127.0.0.1:0",
            "--drain",
            "5s",
            "--workers",
            "1",
        ])
        .arg("--app")
        .arg(app.to_string())
        .arg("--identity-dir")
        .arg(&pki.server)
        .arg("--policy")
        .arg(&pki.policy)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("palisade proxy starts");
    let lines = lines_of(child.stderr.take().expect("stderr"));
    let guard = Guard(Some(child));
    let line = wait_line(&lines, "inbound listening", Duration::from_secs(20));
    let addr = logged_addr(&line, "inbound listening").expect("listen address");
    // Keep draining stderr so that the proxy never blocks on a full pipe.
    std::thread::spawn(move || lines.iter().for_each(drop));
    (guard, addr)
}

/// curl with the client identity: returns (status, body).
fn curl(client: &Path, args: &[&str], url: &str) -> (String, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(client.join("ca.crt"))
        .arg("--cert")
        .arg(client.join("tls.crt"))
        .arg("--key")
        .arg(client.join("tls.key"))
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (status.to_owned(), body.to_owned())
}

#[test]
fn proxy_forwards_allowed_calls_and_refuses_the_rest_over_h1_and_h2() {
    if !require_tool("curl") {
        return;
    }
    let pki = identities(CATALOG_POLICY);
    let (app, app_thread, stop_app) = start_app();
    let (proxy, addr) = start_proxy(&pki, app);
    let base = format!("https://{addr}");

    for version in ["--http1.1", "--http2"] {
        let (status, body) = curl(
            &pki.client,
            &[version],
            &format!("{base}/api/v1/items/%34%32?x=1"),
        );
        assert_eq!(status, "200", "{version}: {body}");
        assert!(
            body.starts_with("app saw GET /api/v1/items/42?x=1 "),
            "{version}: {body}"
        );
        assert!(
            body.contains(&format!("By={SERVER_ID};URI={CLIENT_ID}")),
            "{version}: {body}"
        );

        let (status, body) = curl(
            &pki.client,
            &[version, "-X", "DELETE"],
            &format!("{base}/api/v1/items/42"),
        );
        assert_eq!(status, "403", "{version}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("403 body is JSON");
        assert_eq!(json["error"], "forbidden");
        assert!(
            json["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{json}"
        );

        let (status, body) = curl(
            &pki.client,
            &[
                version,
                "-H",
                "x-forwarded-client-cert: By=x;URI=spiffe://cluster.local/ns/ops/sa/admin",
            ],
            &format!("{base}/api/v1/items/7"),
        );
        assert_eq!(status, "200", "{version}: {body}");
        assert!(
            !body.contains("ops/sa/admin"),
            "spoofed XFCC reached the app: {body}"
        );
    }

    // Without a client certificate there is no answer at all.
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(pki.client.join("ca.crt"))
        .arg(format!("{base}/api/v1/items/42"))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "000");

    let output = proxy.terminate(Duration::from_secs(10));
    assert!(output.status.success(), "SIGTERM exit: {:?}", output.status);
    let _ = stop_app.send(());
    app_thread.join().expect("app thread");
}

#[test]
fn proxy_refuses_to_start_with_a_bad_policy() {
    let pki = identities(CATALOG_POLICY);
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(
        dir.path(),
        "bad.yaml",
        &CATALOG_POLICY.replace("[GET]", "[\"GE T\"]"),
    );
    let output = run(
        {
            let mut c = palisade();
            c.args([
                "proxy",
                "--no-admin",
                "--inbound",
                "127.0.0.1:0",
                "--identity-dir",
            ])
            .arg(&pki.server)
            .arg("--policy")
            .arg(&bad);
            c
        },
        Duration::from_secs(20),
    );
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:9:21: spec.rules[0].to[0].methods[0]",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("not starting"), "{stderr}");
}

#[test]
fn proxy_refuses_to_start_without_its_identity() {
    let pki = identities(CATALOG_POLICY);
    let output = run(
        {
            let mut c = palisade();
            c.args([
                "proxy",
                "--inbound",
                "127.0.0.1:0",
                "--identity-dir",
                "/nonexistent/identity",
                "--policy",
            ])
            .arg(&pki.policy);
            c
        },
        Duration::from_secs(20),
    );
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("loading the pod's identity"), "{stderr}");
    assert!(stderr.contains("/nonexistent/identity/tls.crt"), "{stderr}");
}
