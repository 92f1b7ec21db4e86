//! `palisade learn`, `palisade import openapi` and `palisade diff` on the recorded fixtures in
//! tests/fixtures/authoring/, the way an author and CI run them.

use std::time::Duration;

use crate::support::{palisade, run, text, write};

const LIMIT: Duration = Duration::from_secs(60);
const FIXTURES: &str = "tests/fixtures/authoring";

fn palisade_with(args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = palisade();
    command.args(args);
    let output = run(command, LIMIT);
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}

fn check_accepts(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "proposed.yaml", yaml);
    let path = path.to_str().expect("utf-8 path").to_owned();
    let (code, stdout, stderr) = palisade_with(&["check", &path]);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn learn_proposes_per_peer_templates_with_counts() {
    let log = format!("{FIXTURES}/traffic.jsonl");
    let (code, stdout, stderr) = palisade_with(&["learn", "--from-access-log", &log]);
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        "# 32 lines read, 2 skipped (deny or invalid), 0 dropped",
        "- name: \"web-frontend\"",
        "from: { principals: [\"spiffe://cluster.local/ns/web/sa/frontend\"] }",
        "# GET /api/v1/items/{id}: 20 calls, first 2026-11-20T09:01:00.000Z, last 2026-11-20T09:20:00.000Z",
        "paths: [\"/api/v1/items/{id}\"]",
        "paths: [\"/api/v1/orders/{id}/events\"]",
        "# POST /api/v1/orders: 2 calls",
        "- name: \"ops-prober\"",
        "- methods: [\"GET\", \"HEAD\"]\n          paths: [\"/healthz\"]",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // The enforced denial (DELETE) and raw ids never become rules.
    assert!(!stdout.contains("DELETE"), "{stdout}");
    assert!(!stdout.contains("3f2a9c1d"), "{stdout}");
    let (code, out) = check_accepts(&stdout);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn learn_against_lists_what_the_current_policy_would_deny() {
    let log = format!("{FIXTURES}/traffic.jsonl");
    let current = format!("{FIXTURES}/current.yaml");
    let (code, stdout, stderr) =
        palisade_with(&["learn", "--from-access-log", &log, "--against", &current]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("spiffe://cluster.local/ns/web/sa/frontend POST /api/v1/orders (2 calls): denied: no route matches"), "{stdout}");
    assert!(
        stdout.contains("spiffe://cluster.local/ns/ops/sa/prober HEAD /healthz (1 calls)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("GET /api/v1/items/7 "),
        "allowed calls are not listed:\n{stdout}"
    );
}

#[test]
fn import_petstore_yaml_round_trips_through_check() {
    let spec = format!("{FIXTURES}/petstore.yaml");
    let (code, stdout, stderr) = palisade_with(&["import", "openapi", &spec]);
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        "- name: \"showpetbyid\"",
        "- methods: [DELETE]\n          paths: [\"/pets/{petId}\"]",
        "- methods: [PUT]\n          paths: [\"/pets/{petId}\"]",
        // operation-level extension wins over the root one
        "- name: \"createpet\"\n      from: { principals: [\"spiffe://cluster.local/ns/admin/*\"] }",
        // non-identifier names and mixed segments become whole-segment parameters
        "paths: [\"/stores/{store_id}/pets/{petId}\"]",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let (code, out) = check_accepts(&stdout);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn import_openapi_31_json_needs_principals_until_given() {
    let spec = format!("{FIXTURES}/inventory.json");
    let (code, stdout, _) = palisade_with(&["import", "openapi", &spec]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("principals: []"), "{stdout}");
    assert!(
        stdout.contains(
            "- methods: [PATCH]\n          paths: [\"/v2/warehouses/{warehouseId}/stock\"]"
        ),
        "{stdout}"
    );
    let (code, out) = check_accepts(&stdout);
    assert_eq!(code, Some(1), "a placeholder must fail check:\n{out}");
    assert!(out.contains("`principals` is empty"), "{out}");

    let (code, stdout, _) = palisade_with(&[
        "import",
        "openapi",
        &spec,
        "--principal",
        "spiffe://cluster.local/ns/web/sa/frontend",
    ]);
    assert_eq!(code, Some(0));
    let (code, out) = check_accepts(&stdout);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn import_reports_unreadable_specs_with_their_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = write(
        dir.path(),
        "broken.json",
        "{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {,}\n}\n",
    );
    let swagger = write(dir.path(), "swagger.yaml", "swagger: \"2.0\"\npaths: {}\n");
    let (code, _, stderr) = palisade_with(&["import", "openapi", broken.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("broken.json:3:") && stderr.contains("invalid json"),
        "{stderr}"
    );
    let (code, _, stderr) = palisade_with(&["import", "openapi", swagger.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("swagger 2.0 documents are not supported"),
        "{stderr}"
    );
}

#[test]
fn diff_exit_status_says_widen_narrow_or_same() {
    let before = format!("{FIXTURES}/diff/before.yaml");
    let cases = [
        ("widen.yaml", 2, "this change widens access"),
        ("narrow.yaml", 1, "this change narrows access only"),
        ("same.yaml", 0, "no change in access"),
    ];
    for (after, status, summary) in cases {
        let after = format!("{FIXTURES}/diff/{after}");
        let (code, stdout, stderr) = palisade_with(&["diff", &before, &after]);
        assert_eq!(code, Some(status), "{after}: {stdout}{stderr}");
        assert!(stdout.contains(summary), "{after}: {stdout}");
    }
    let (_, stdout, _) = palisade_with(&[
        "diff",
        &before,
        &format!("{FIXTURES}/diff/widen.yaml"),
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["verdict"], "widens");
    let first = &report["newly_allowed"][0];
    assert_eq!(
        first["peer"],
        "spiffe://cluster.local/ns/ops/sa/palisade-diff-sample"
    );
    assert_eq!(
        first["after"],
        "allowed by rule catalog-read (route /api/v1/items)"
    );
    assert!(
        report["no_longer_allowed"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

#[test]
fn diff_of_an_invalid_policy_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(dir.path(), "bad.yaml", "apiVersion: nope\n");
    let before = format!("{FIXTURES}/diff/before.yaml");
    let (code, _, stderr) = palisade_with(&["diff", &before, bad.to_str().expect("utf-8")]);
    assert_eq!(code, Some(3), "{stderr}");
}
