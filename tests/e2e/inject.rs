//! `palisade inject` over real HTTPS: AdmissionReviews built from pod manifests are posted with
//! curl, each returned JSON Patch is applied with `kubectl patch --local --type=json`, the
//! result is validated offline with `kubernetes-validate --strict` and checked field by field,
//! and the patched pod sent again gets no patch.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use palisade_proxy::pki::{Ca, SvidOptions, write_identity};
use palisade_proxy::tls::IdentityPaths;
use serde_json::{Value, json};

use crate::support::{Guard, palisade, require_tool};

/// A running `palisade inject` and what a test needs to talk to it.
struct Webhook {
    guard: Guard,
    addr: SocketAddr,
    /// The CA bundle that signed the serving certificate.
    bundle: PathBuf,
    /// The serving certificate and key files.
    serving: IdentityPaths,
    ca: Ca,
}

/// Starts `palisade inject` on 127.0.0.1:0 with a fresh serving certificate and `extra`
/// arguments.
fn start_with(dir: &Path, extra: &[&str]) -> Webhook {
    let ca = Ca::new("cluster.local").expect("ca");
    let paths =
        write_identity(&dir.join("serving"), &serving_svid(&ca), ca.bundle_pem()).expect("write");
    let mut child = palisade()
        .args(["inject", "--listen", "127.0.0.1:0", "--cert"])
        .arg(&paths.chain)
        .arg("--key")
        .arg(&paths.key)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("palisade inject starts");
    let stderr = child.stderr.take().expect("stderr");
    let guard = Guard(Some(child));
    let addr = logged_addr(stderr, "inject listening");
    Webhook {
        guard,
        addr,
        bundle: paths.bundle.clone(),
        serving: paths,
        ca,
    }
}

fn start(dir: &Path) -> (Guard, SocketAddr, PathBuf) {
    let webhook = start_with(dir, &[]);
    (webhook.guard, webhook.addr, webhook.bundle)
}

/// A serving certificate for 127.0.0.1 (each call a new key and serial).
fn serving_svid(ca: &Ca) -> palisade_proxy::pki::Svid {
    let mut options = SvidOptions::valid_for(Duration::from_secs(3600));
    options.ip_addresses = vec!["127.0.0.1".parse().expect("ip")];
    ca.issue_svid(
        "spiffe://cluster.local/ns/palisade-system/sa/palisade-injector",
        &options,
    )
    .expect("svid")
}

/// Reads `stderr` on a thread until a line with `key` names its `listen=` address.
fn logged_addr(stderr: std::process::ChildStderr, key: &'static str) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(key)
                && let Some(addr) = line
                    .split("listen=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("palisade logs {key:?} with its address"))
}

/// POSTs `body` to /mutate with curl; returns (status, body).
fn post(addr: SocketAddr, ca: &Path, body: &[u8]) -> (u16, Vec<u8>) {
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(ca)
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("https://{addr}/mutate"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("send body");
    let output = child.wait_with_output().expect("curl output");
    let text = output.stdout;
    let split = text.iter().rposition(|b| *b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&text[split + 1..])
        .trim()
        .parse()
        .expect("status");
    (status, text[..split].to_vec())
}

fn admission_review(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "2b752327-a529-4ffd-b2e2-478455e80a0d",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": pod,
        },
    }))
    .expect("json")
}

/// Sends the pod; returns the response object and its decoded JSON Patch, if any.
fn mutate(addr: SocketAddr, ca: &Path, pod: &Value) -> (Value, Option<String>) {
    let (status, body) = post(addr, ca, &admission_review(pod));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let review: Value = serde_json::from_slice(&body).expect("AdmissionReview JSON");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    let response = review["response"].clone();
    assert_eq!(response["uid"], "2b752327-a529-4ffd-b2e2-478455e80a0d");
    let patch = response["patch"].as_str().map(|b64| {
        let mut child = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("base64 runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b64.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("base64 output");
        assert!(out.status.success(), "patch is base64");
        String::from_utf8(out.stdout).expect("utf-8 patch")
    });
    (response, patch)
}

/// Applies the patch with kubectl offline and validates the result; returns the patched pod.
fn apply(dir: &Path, name: &str, pod: &Value, patch: &str) -> Value {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(pod).expect("json")).expect("write pod");
    let output = Command::new("kubectl")
        .args(["patch", "--local", "--type=json", "-o", "json", "-f"])
        .arg(&file)
        .args(["-p", patch])
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "{name}: kubectl patch: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let patched = dir.join(format!("{name}.patched.json"));
    std::fs::write(&patched, &output.stdout).expect("write patched");
    let validate = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&patched)
        .output()
        .expect("kubernetes-validate runs");
    assert!(
        validate.status.success(),
        "{name}: kubernetes-validate --strict: {}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("patched pod JSON")
}

fn pod(name: &str, annotations: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "shop", "annotations": annotations },
        "spec": spec,
    })
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn injects_real_pods_and_the_result_validates() {
    if !["curl", "kubectl", "kubernetes-validate", "base64"]
        .into_iter()
        .all(require_tool)
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (guard, addr, ca) = start(dir.path());

    // A Deployment's pod template as the ReplicaSet controller creates it (no name, labels,
    // an HTTP readiness probe on a named port).
    let mut deployment = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "orders-7d9f8b-x7k2p", "generateName": "orders-7d9f8b-", "namespace": "shop", "labels": { "app": "orders" } },
        "spec": { "containers": [{
            "name": "orders", "image": "registry.example/orders:1.4",
            "ports": [{ "name": "http", "containerPort": 8080 }, { "name": "health", "containerPort": 8081 }],
            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "health" } },
            "livenessProbe": { "httpGet": { "path": "/livez", "port": 8081 } } }] },
    });
    let (response, patch) = mutate(addr, &ca, &deployment);
    assert_eq!(response["allowed"], true);
    let out = apply(
        dir.path(),
        "deployment",
        &deployment,
        &patch.expect("a patch"),
    );
    let inits = &out["spec"]["initContainers"];
    assert_eq!(names(inits), ["palisade-init", "palisade"]);
    assert_eq!(inits[1]["restartPolicy"], "Always");
    assert_eq!(inits[1]["securityContext"]["runAsUser"], 1337);
    assert_eq!(
        inits[1]["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        inits[1]["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(inits[1]["readinessProbe"]["httpGet"]["port"], 15020);
    // The app's probes go through the admin port; nothing is excluded from capture.
    let orders = &out["spec"]["containers"][0];
    assert_eq!(
        orders["readinessProbe"]["httpGet"],
        json!({ "path": "/app-health/orders/readyz", "port": 15020, "scheme": "HTTP" })
    );
    assert_eq!(
        orders["livenessProbe"]["httpGet"],
        json!({ "path": "/app-health/orders/livez", "port": 15020, "scheme": "HTTP" })
    );
    assert_eq!(inits[1]["env"][0]["name"], "PALISADE_APP_PROBES");
    let probes: Value =
        serde_json::from_str(inits[1]["env"][0]["value"].as_str().expect("value")).expect("json");
    assert_eq!(
        probes["/app-health/orders/readyz"],
        json!({ "httpGet": { "port": 8081, "path": "/healthz" } })
    );
    let args: Vec<String> = serde_json::from_value(inits[0]["args"].clone()).expect("args");
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--exclude-inbound-ports")),
        "{args:?}"
    );
    assert_eq!(
        inits[0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(names(&out["spec"]["containers"]), ["orders"]);
    assert_eq!(
        names(&out["spec"]["volumes"]),
        ["palisade-identity", "palisade-policy"]
    );
    assert_eq!(
        out["spec"]["volumes"][0]["csi"]["driver"],
        "spiffe.csi.cert-manager.io"
    );
    assert_eq!(
        out["metadata"]["annotations"]["palisade.dev/status"],
        "injected"
    );
    // Second pass: nothing more to do.
    let (again, patch) = mutate(addr, &ca, &out);
    assert_eq!(again["allowed"], true);
    assert!(patch.is_none(), "second pass patched: {patch:?}");
    deployment["metadata"]["annotations"] = json!({ "palisade.dev/inject": "false" });
    let (_, patch) = mutate(addr, &ca, &deployment);
    assert!(patch.is_none(), "opted-out pod was patched");

    // A Job's pod with existing init containers, a classic sidecar, volumes and odd annotations.
    let job = pod(
        "report-x2k9",
        json!({
            "palisade.dev/exclude-outbound-cidrs": "169.254.169.254/32",
            "palisade.dev/exclude-outbound-ports": "5432,6379",
            "palisade.dev/proxy-memory": "96Mi",
            "palisade.dev/policy": "report-policy",
            "example.com/with~tilde/and-slash": "odd",
        }),
        json!({
            "restartPolicy": "Never",
            "initContainers": [{ "name": "migrate", "image": "m:1" }],
            "containers": [{ "name": "report", "image": "r:1" }, { "name": "log-shipper", "image": "l:1" }],
            "volumes": [{ "name": "scratch", "emptyDir": {} }],
        }),
    );
    let (response, patch) = mutate(addr, &ca, &job);
    assert_eq!(response["allowed"], true);
    let out = apply(dir.path(), "job", &job, &patch.expect("a patch"));
    assert_eq!(
        names(&out["spec"]["initContainers"]),
        ["palisade-init", "palisade", "migrate"]
    );
    assert_eq!(names(&out["spec"]["containers"]), ["report", "log-shipper"]);
    assert_eq!(
        names(&out["spec"]["volumes"]),
        ["scratch", "palisade-identity", "palisade-policy"]
    );
    assert_eq!(
        out["spec"]["volumes"][2]["configMap"]["name"],
        "report-policy"
    );
    assert_eq!(
        out["spec"]["initContainers"][1]["resources"]["requests"]["memory"],
        "96Mi"
    );
    let args: Vec<String> =
        serde_json::from_value(out["spec"]["initContainers"][0]["args"].clone()).expect("args");
    assert!(
        args.contains(&"--exclude-outbound-ports=5432,6379".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--exclude-outbound-cidrs=169.254.169.254/32".to_owned()),
        "{args:?}"
    );
    assert_eq!(
        out["metadata"]["annotations"]["example.com/with~tilde/and-slash"],
        "odd"
    );
    assert_eq!(
        out["metadata"]["annotations"]["palisade.dev/status"],
        "injected"
    );

    // No annotations at all: the annotations map is added whole.
    let mut bare = pod(
        "bare",
        json!(null),
        json!({ "containers": [{ "name": "app", "image": "a:1" }] }),
    );
    if let Some(metadata) = bare["metadata"].as_object_mut() {
        metadata.remove("annotations");
    }
    let (_, patch) = mutate(addr, &ca, &bare);
    let out = apply(dir.path(), "bare", &bare, &patch.expect("a patch"));
    assert_eq!(
        out["metadata"]["annotations"]["palisade.dev/status"],
        "injected"
    );

    // Left alone: host network; already injected.
    let host = pod(
        "host",
        json!({}),
        json!({ "hostNetwork": true, "containers": [{ "name": "a", "image": "a:1" }] }),
    );
    let (response, patch) = mutate(addr, &ca, &host);
    assert_eq!(response["allowed"], true);
    assert!(patch.is_none(), "host-network pod was patched");

    // Refused (fail closed), with the reason.
    let bad = pod(
        "bad",
        json!({ "palisade.dev/exclude-inbound-ports": "ssh" }),
        json!({ "containers": [{ "name": "a", "image": "a:1" }] }),
    );
    let (response, patch) = mutate(addr, &ca, &bad);
    assert_eq!(response["allowed"], false);
    assert!(patch.is_none());
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("palisade.dev/exclude-inbound-ports"),
        "{message}"
    );

    // Not an AdmissionReview: 400 with a message.
    let (status, body) = post(addr, &ca, b"{\"kind\":\"Pod\"}");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("AdmissionReview"));

    let output = guard.terminate(Duration::from_secs(10));
    assert!(
        output.status.success(),
        "palisade inject exits cleanly on SIGTERM"
    );
}

/// Every manifest in deploy/ passes `yamllint` and `kubernetes-validate --strict`. The
/// cert-manager kinds (Issuer, Certificate) are CRDs outside kubernetes-validate's schema set:
/// it only warns about them, so the test asserts that those two, and nothing else, went
/// unvalidated.
#[test]
fn deploy_manifests_validate() {
    if !["kubernetes-validate", "yamllint"]
        .into_iter()
        .all(require_tool)
    {
        return;
    }
    let deploy = crate::support::repo().join("deploy");
    let lint = Command::new("yamllint")
        .args(["-s", "-c"])
        .arg(deploy.join(".yamllint"))
        .arg(&deploy)
        .output()
        .expect("yamllint runs");
    assert!(
        lint.status.success(),
        "yamllint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let mut files = Vec::new();
    for dir in [deploy.clone(), deploy.join("example")] {
        for entry in std::fs::read_dir(&dir).expect("deploy/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 9, "manifests found: {files:?}");
    let mut unvalidated = Vec::new();
    for file in &files {
        let output = Command::new("kubernetes-validate")
            .arg("--strict")
            .arg(file)
            .output()
            .expect("kubernetes-validate runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{}: {text}", file.display());
        for line in text.lines() {
            assert!(!line.starts_with("ERROR"), "{}: {line}", file.display());
            if line.contains("Couldn't find schema for kind") {
                unvalidated.push(
                    line.split("kind ")
                        .nth(1)
                        .unwrap_or_default()
                        .split(' ')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    }
    unvalidated.sort();
    assert_eq!(unvalidated, ["Certificate", "Issuer"]);
}

/// A tiny app on 127.0.0.1 for the probes: `/healthz` is 200 when the probe's `x-probe`
/// header arrived (418 otherwise), `/fail` 500, `/moved` 302; the thread ends with the test.
fn start_probe_app() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |request: http::Request<hyper::body::Incoming>| async move {
                            let status = match request.uri().path() {
                                "/healthz" if request.headers().get("x-probe").is_some() => 200,
                                "/healthz" => 418,
                                "/fail" => 500,
                                "/moved" => 302,
                                _ => 404,
                            };
                            let mut response = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"app body"),
                            ));
                            *response.status_mut() =
                                http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(response)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Plain HTTP with curl: (status, body).
fn plain(method: &str, url: &str) -> (u16, String) {
    // `-X HEAD` would wait for the body a HEAD answer never has; `-I` does not.
    let method_args = if method == "HEAD" {
        vec!["-I"]
    } else {
        vec!["-X", method]
    };
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(method_args)
        .arg(url)
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (status.parse().unwrap_or(0), body.to_owned())
}

/// The pod the injector patched, run for real: the proxy container's exact arguments (with
/// its three listeners moved to 127.0.0.1:0 and the mounts to temporary files) and its
/// `PALISADE_APP_PROBES`, next to an app on loopback. The kubelet's view: each rewritten
/// probe path on the admin port answers with the app's real state; nothing else does.
#[test]
fn injected_proxy_answers_the_apps_probes() {
    if !["curl", "kubectl", "kubernetes-validate", "base64"]
        .into_iter()
        .all(require_tool)
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::support::write(
        dir.path(),
        "inject.json",
        r#"{ "meshCidrs": ["10.244.0.0/16", "fd00:10:244::/56"],
             "trustDomains": ["cluster.local", "partner.example"],
             "unmeshed": "refuse" }"#,
    );
    let config = config.to_string_lossy().into_owned();
    let webhook = start_with(dir.path(), &["--config", &config]);
    let app = start_probe_app();
    let closed = closed_port();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "orders", "namespace": "shop" },
        "spec": { "containers": [
            { "name": "orders", "image": "orders:1",
              "ports": [{ "name": "health", "containerPort": app.port() }],
              "readinessProbe": { "httpGet": { "path": "/healthz", "port": "health",
                                               "httpHeaders": [{ "name": "X-Probe", "value": "yes" }] } },
              "livenessProbe": { "httpGet": { "path": "/fail", "port": app.port() } },
              "startupProbe": { "tcpSocket": { "port": closed } } },
            { "name": "worker", "image": "worker:1",
              "livenessProbe": { "tcpSocket": { "port": app.port() } },
              "readinessProbe": { "httpGet": { "path": "/moved", "port": app.port() } },
              "startupProbe": { "httpGet": { "path": "/healthz", "port": closed } } },
            // Its port speaks HTTP/1 only: the gRPC health check cannot pass.
            { "name": "rpc", "image": "rpc:1",
              "readinessProbe": { "grpc": { "port": app.port(), "service": "rpc" } } }] },
    });
    let (response, patch) = mutate(webhook.addr, &webhook.bundle, &pod);
    assert_eq!(response["allowed"], true, "{response}");
    let out = apply(dir.path(), "probes", &pod, &patch.expect("a patch"));
    let proxy = &out["spec"]["initContainers"][1];
    assert_eq!(proxy["name"], "palisade");
    let args: Vec<String> = serde_json::from_value(proxy["args"].clone()).expect("args");
    for expected in [
        "--mesh-cidr=10.244.0.0/16,fd00:10:244::/56",
        "--trust-domain=cluster.local",
        "--trust-domain=partner.example",
        "--unmeshed=refuse",
        "--outbound-listen=[::]:15001",
    ] {
        assert!(args.contains(&expected.to_owned()), "{expected}: {args:?}");
    }
    let env = proxy["env"][0]["value"]
        .as_str()
        .expect("PALISADE_APP_PROBES");

    // The init container's arguments parse too (dry run: prints, installs nothing).
    let init: Vec<String> =
        serde_json::from_value(out["spec"]["initContainers"][0]["args"].clone()).expect("args");
    let mut dry = palisade();
    dry.args(&init).arg("--dry-run");
    let output = crate::support::run(dry, Duration::from_secs(20));
    assert!(
        output.status.success(),
        "palisade {init:?} --dry-run: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Run the proxy container's command line.
    let ca = Ca::new("cluster.local").expect("ca");
    let svid = ca
        .issue_svid(
            "spiffe://cluster.local/ns/shop/sa/orders",
            &SvidOptions::valid_for(Duration::from_secs(3600)),
        )
        .expect("svid");
    let identity = dir.path().join("identity");
    write_identity(&identity, &svid, ca.bundle_pem()).expect("identity");
    let policy = crate::support::write(
        dir.path(),
        "policy.yaml",
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\nmetadata: { name: orders, namespace: shop }\nspec:\n  rules: []\n",
    );
    let mut run_args = Vec::new();
    for arg in &args {
        let (flag, _) = arg.split_once('=').unwrap_or((arg, ""));
        run_args.push(match flag {
            "--inbound" | "--admin" | "--outbound-listen" => format!("{flag}=127.0.0.1:0"),
            "--identity-dir" => format!("{flag}={}", identity.display()),
            "--policy" => format!("{flag}={}", policy.display()),
            _ => arg.clone(),
        });
    }
    let mut child = palisade()
        .args(&run_args)
        .env("PALISADE_APP_PROBES", env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("palisade proxy starts");
    let stderr = child.stderr.take().expect("stderr");
    let guard = Guard(Some(child));
    let admin = logged_addr(stderr, "admin listening");

    let probe = |path: &str| plain("GET", &format!("http://{admin}{path}"));
    let cases = [
        // httpGet with its header, through a named port: the app's 200.
        ("/app-health/orders/readyz", 200, "app answered 200"),
        // The app's 500 is relayed (the kubelet counts it as a failure).
        ("/app-health/orders/livez", 500, "app answered 500"),
        // Nothing listens: 503.
        ("/app-health/orders/startupz", 503, "cannot connect"),
        ("/app-health/worker/startupz", 503, "cannot connect"),
        // tcpSocket: a connect to the app's port.
        ("/app-health/worker/livez", 200, ""),
        // A redirect is success for the kubelet, and is not followed.
        ("/app-health/worker/readyz", 200, "app answered 302"),
        // gRPC: the health service is asked over h2c; an HTTP/1-only port fails.
        ("/app-health/rpc/readyz", 503, "http exchange"),
        // Only the configured paths answer.
        ("/app-health/orders/nope", 404, "not found"),
        ("/app-health/", 404, "not found"),
        ("/app-health/orders/readyz/", 404, "not found"),
    ];
    for (path, status, body) in cases {
        let (got, text) = probe(path);
        assert_eq!(got, status, "{path}: {text}");
        assert!(text.contains(body), "{path}: {text}");
        assert!(
            !text.contains("app body"),
            "{path}: the app's body is relayed"
        );
    }
    // The query is not the app's business: the configured path is what the app sees.
    assert_eq!(probe("/app-health/orders/readyz?x=/fail").0, 200);
    // GET only.
    for method in ["POST", "HEAD", "PUT"] {
        assert_eq!(
            plain(method, &format!("http://{admin}/app-health/orders/readyz")).0,
            405,
            "{method}"
        );
    }
    let output = guard.terminate(Duration::from_secs(30));
    assert!(
        output.status.success(),
        "palisade proxy exits cleanly on SIGTERM"
    );
    drop(webhook);
}

/// A body over the limit (2 MiB) is refused with 413, never decoded; the client, still
/// uploading over HTTP/2, gets to read the answer.
#[test]
fn oversized_review_is_413() {
    if !require_tool("curl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let webhook = start_with(dir.path(), &[]);
    let body = vec![b' '; 3 * 1024 * 1024];
    for _ in 0..5 {
        let (status, text) = post(webhook.addr, &webhook.bundle, &body);
        assert_eq!(status, 413, "{}", String::from_utf8_lossy(&text));
        assert!(String::from_utf8_lossy(&text).contains("too large"));
    }
    // Still serving.
    let (status, _) = post(webhook.addr, &webhook.bundle, b"{}");
    assert_eq!(status, 400);
}

/// The leaf certificate `addr` serves (DER), fetched with a rustls client trusting `bundle`.
fn served_leaf(addr: SocketAddr, bundle: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(bundle).expect("bundle") {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("handshake in time")
        .expect("handshake");
        let (_, connection) = tls.get_ref();
        connection.peer_certificates().expect("certificates")[0].to_vec()
    })
}

/// Replacing the serving certificate and key on disk (as cert-manager renews them) changes
/// what new connections are served, without a restart.
#[test]
fn serving_certificate_is_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let webhook = start_with(dir.path(), &["--reload-interval-secs", "1"]);
    let first = served_leaf(webhook.addr, &webhook.bundle);
    let renewed = serving_svid(&webhook.ca);
    let written = write_identity(
        &dir.path().join("renewed"),
        &renewed,
        webhook.ca.bundle_pem(),
    )
    .expect("write");
    // Key first, then the chain: a half-written pair is kept out until both match.
    std::fs::copy(&written.key, &webhook.serving.key).expect("replace key");
    std::fs::copy(&written.chain, &webhook.serving.chain).expect("replace chain");
    let expected = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::pem_file_iter(&written.chain)
            .expect("chain")
            .next()
            .expect("a certificate")
            .expect("pem")
            .to_vec()
    };
    assert_ne!(first, expected, "the renewed certificate is a new one");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let served = served_leaf(webhook.addr, &webhook.bundle);
        if served == expected {
            break;
        }
        assert_eq!(
            served, first,
            "served neither the old nor the new certificate"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was not served within 15 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = webhook.guard.terminate(Duration::from_secs(10));
    assert!(output.status.success());
}

/// The injector config shipped in deploy/ loads and passes the checks `palisade inject` runs
/// at start (read offline with `kubectl patch --local`).
#[test]
fn deploy_injector_config_loads() {
    if !require_tool("kubectl") {
        return;
    }
    let file = crate::support::repo().join("deploy/injector-config.yaml");
    let output = Command::new("kubectl")
        .args([
            "patch",
            "--local",
            "--type=json",
            "-p",
            "[]",
            "-o",
            "json",
            "-f",
        ])
        .arg(&file)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let map: Value = serde_json::from_slice(&output.stdout).expect("ConfigMap JSON");
    let text = map["data"]["config.json"]
        .as_str()
        .expect("data.config.json");
    let config: palisade_injector::InjectConfig =
        serde_json::from_str(text).expect("an injector config");
    assert_eq!(config.validate(), Ok(()));
    assert!(
        !config.mesh_cidrs.is_empty(),
        "outbound mTLS needs meshCidrs"
    );
}

/// A malformed `PALISADE_APP_PROBES` stops the proxy at start, naming the variable and the
/// entry (never a proxy that silently fails every app probe).
#[test]
fn proxy_refuses_malformed_app_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (env, expected) in [
        ("{not json", "not a JSON object"),
        (
            r#"{"/app-health/a/livez": {"httpGet": {"port": 8080, "scheme": "FTP"}}}"#,
            "scheme must be HTTP or HTTPS",
        ),
        (
            r#"{"/metrics": {"tcpSocket": {"port": 8080}}}"#,
            "/app-health/",
        ),
    ] {
        let mut command = palisade();
        command
            .args(["proxy", "--no-admin", "--policy"])
            .arg(dir.path())
            .env("PALISADE_APP_PROBES", env);
        let output = crate::support::run(command, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env}: started");
        assert!(stderr.contains("PALISADE_APP_PROBES"), "{env}: {stderr}");
        assert!(stderr.contains(expected), "{env}: {stderr}");
    }
}
