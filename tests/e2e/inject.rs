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
use serde_json::{Value, json};

use crate::support::{Guard, palisade, require_tool};

/// Starts `palisade inject` on 127.0.0.1:0 with a fresh serving certificate; returns the
/// guard, the address and the CA bundle path.
fn start(dir: &Path) -> (Guard, SocketAddr, PathBuf) {
    let ca = Ca::new("cluster.local").expect("ca");
    let mut options = SvidOptions::valid_for(Duration::from_secs(3600));
    options.ip_addresses = vec!["127.0.0.1".parse().expect("ip")];
    let svid = ca
        .issue_svid(
            "spiffe://cluster.local/ns/palisade-system/sa/palisade-injector",
            &options,
        )
        .expect("svid");
    let paths = write_identity(&dir.join("serving"), &svid, ca.bundle_pem()).expect("write");
    let mut child = palisade()
        .args(["inject", "--listen", "127.0.0.1:0", "--cert"])
        .arg(&paths.chain)
        .arg("--key")
        .arg(&paths.key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("palisade inject starts");
    let stderr = child.stderr.take().expect("stderr");
    let guard = Guard(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("inject listening")
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
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("palisade inject logs its listen address");
    (guard, addr, paths.bundle)
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
    let args: Vec<String> = serde_json::from_value(inits[0]["args"].clone()).expect("args");
    assert!(
        args.contains(&"--exclude-inbound-ports=8081".to_owned()),
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
