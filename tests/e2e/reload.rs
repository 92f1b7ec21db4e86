//! `palisade proxy` reloads while it runs: a changed policy file is picked up and logged with
//! its new version, and SIGHUP triggers a reload instead of ending the process.

use std::process::Stdio;
use std::time::Duration;

use palisade_proxy::pki::{Ca, SvidOptions, write_identity};

use crate::support::{Guard, SERVER_ID, lines_of, palisade, wait_line};

/// How long any one awaited log line may take.
const LIMIT: Duration = Duration::from_secs(20);

fn policy(path: &str) -> String {
    format!(
        r#"apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: {{ name: orders-api, namespace: shop }}
spec:
  rules:
    - name: read
      from: {{ principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }}
      to:
        - methods: [GET]
          paths: ["{path}"]
"#
    )
}

#[test]
fn proxy_reloads_a_changed_policy_and_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster.local").expect("ca");
    let identity = dir.path().join("identity");
    let svid = ca
        .issue_svid(SERVER_ID, &SvidOptions::default())
        .expect("svid");
    write_identity(&identity, &svid, ca.bundle_pem()).expect("write");
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, policy("/a")).expect("write");

    let mut command = palisade();
    command
        .args([
            "proxy",
            "--admin",
            "127.0.0.1:0",
            "--inbound",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--drain",
            "1s",
        ])
        .args(["--app", "127.0.0.1:9", "--reload-interval", "0"])
        .arg("--identity-dir")
        .arg(&identity)
        .arg("--policy")
        .arg(&policy_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("palisade proxy starts");
    let lines = lines_of(child.stderr.take().expect("stderr"));
    let guard = Guard(Some(child));
    wait_line(&lines, "watching for policy and identity changes", LIMIT);

    // A changed file (renamed over, as editors and kubelet do) is picked up and logged.
    let staged = dir.path().join(".policy.yaml.new");
    std::fs::write(&staged, policy("/b")).expect("write");
    std::fs::rename(&staged, &policy_file).expect("rename");
    let line = wait_line(&lines, "policy reloaded", LIMIT);
    assert!(line.contains("policy.version="), "{line}");

    // A bad policy keeps the last good one and says where it is wrong.
    std::fs::write(&staged, policy("/b/{id")).expect("write");
    std::fs::rename(&staged, &policy_file).expect("rename");
    let line = wait_line(&lines, "policy reload failed", LIMIT);
    assert!(line.contains("policy.yaml:10:"), "{line}");

    // SIGHUP reloads (here: the file is fixed meanwhile) and does not end the process.
    std::fs::write(&policy_file, policy("/c")).expect("write");
    let pid = guard.0.as_ref().expect("child").id();
    // The shell's built-in kill: no procps needed.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -HUP {pid}")])
        .status()
        .expect("sh runs");
    assert!(status.success());
    wait_line(&lines, "sighup: reloading", LIMIT);
    let output = guard.terminate(Duration::from_secs(10));
    assert!(output.status.success(), "{:?}", output.status);
}
