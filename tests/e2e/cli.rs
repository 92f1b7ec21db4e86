//! `palisade check` and `palisade explain` as CI and people run them.

use std::time::Duration;

use crate::support::{palisade, run, text, write};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn check_passes_the_examples() {
    let output = run(
        {
            let mut c = palisade();
            c.args(["check", "examples/"]);
            c
        },
        LIMIT,
    );
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("ok: examples/orders-api.yaml: 6 rules, 13 tests passed"),
        "{stdout}"
    );
}

#[test]
fn check_names_file_line_column_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "orders.yaml",
        r#"apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: orders-api }
spec:
  rules:
    - name: read
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/api/v1/items", "/api/v1/items/{id"]
"#,
    );
    let output = run(
        {
            let mut c = palisade();
            c.arg("check").arg(&path);
            c
        },
        LIMIT,
    );
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let expected = format!(
        "{}:10:36: spec.rules[0].to[0].paths[1]: unclosed '{{' in \"/api/v1/items/{{id\"",
        path.display()
    );
    assert!(
        stdout.contains(&expected),
        "want {expected}\ngot:\n{stdout}"
    );
}

#[test]
fn check_reports_json_for_ci() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "typo.yaml",
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\nmetadata: { name: x }\nspec:\n  modes: audit\n  rules: []\n",
    );
    let output = run(
        {
            let mut c = palisade();
            c.args(["check", "--format", "json"]).arg(&path);
            c
        },
        LIMIT,
    );
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("json output");
    let diagnostic = &json[0]["diagnostics"][0];
    assert_eq!(json[0]["valid"], false);
    assert_eq!(diagnostic["severity"], "error", "{json}");
    assert_eq!(diagnostic["line"], 5, "{json}");
    assert_eq!(diagnostic["column"], 3, "{json}");
    let message = diagnostic["message"].as_str().expect("message");
    assert!(message.contains("did you mean `mode`"), "{message}");
}

#[test]
fn explain_shows_normalized_path_decision_and_rule() {
    let output = run(
        {
            let mut c = palisade();
            c.args([
                "explain",
                "--policy",
                "examples/orders-api.yaml",
                "--peer",
                "spiffe://cluster.local/ns/web/sa/frontend",
                "GET /api/v1/items/%34%32?x=1",
            ]);
            c
        },
        LIMIT,
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("normalized: /api/v1/items/42"), "{stdout}");
    assert!(stdout.contains("decision:   allow"), "{stdout}");
    assert!(stdout.contains("rule:       catalog-read"), "{stdout}");
    assert!(stdout.contains("query:      x=1"), "{stdout}");
}

#[test]
fn explain_says_why_a_request_is_denied() {
    let output = run(
        {
            let mut c = palisade();
            c.args([
                "explain",
                "--policy",
                "examples/orders-api.yaml",
                "--peer",
                "spiffe://cluster.local/ns/ops/sa/oncall",
                "POST /api/v1/orders",
            ]);
            c
        },
        LIMIT,
    );
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("decision:   deny (403)"), "{stdout}");
    assert!(stdout.contains("rule:       place-order"), "{stdout}");
    assert!(stdout.contains("not this peer"), "{stdout}");
}
