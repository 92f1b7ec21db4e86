use super::*;
use crate::compile::LoadOptions;

const HEAD: &str = "apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\nmetadata: { name: t }\nspec:\n  rules:\n";
const FRONTEND: &str = "spiffe://cluster.local/ns/web/sa/frontend";

fn side(rules: &str) -> (Policy, Vec<Document>) {
    let text = format!("{HEAD}{rules}");
    let policy = Policy::from_yaml("t.yaml", &text, &LoadOptions::default())
        .unwrap()
        .policy;
    let (documents, diagnostics) = crate::document::parse("t.yaml", &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    (policy, documents)
}

fn run(old: &str, new: &str) -> PolicyDiff {
    let (old_policy, old_docs) = side(old);
    let (new_policy, new_docs) = side(new);
    let mut probes = Probes::default();
    probes.add_documents(&old_docs);
    probes.add_documents(&new_docs);
    diff(&old_policy, &new_policy, &probes)
}

const READ: &str = r#"    - name: read
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/api/v1/items/{id}"]
"#;

#[test]
fn identical_policies_do_not_change_access() {
    let result = run(READ, READ);
    assert_eq!(result.verdict(), Verdict::Unchanged);
}

#[test]
fn renamed_rule_does_not_change_access() {
    let renamed = READ
        .replace("name: read", "name: catalog-read")
        .replace("{id}", "{item}");
    assert_eq!(run(READ, &renamed).verdict(), Verdict::Unchanged);
}

#[test]
fn added_method_widens_with_an_example_request() {
    let wider = READ.replace("[GET]", "[GET, DELETE]");
    let result = run(READ, &wider);
    assert_eq!(result.verdict(), Verdict::Widens);
    assert_eq!(result.newly_allowed.len(), 1, "{result:?}");
    let change = &result.newly_allowed[0];
    assert_eq!(
        (
            change.peer.as_str(),
            change.method.as_str(),
            change.path.as_str()
        ),
        (FRONTEND, "DELETE", "/api/v1/items/sample-id")
    );
    assert!(result.no_longer_allowed.is_empty());
}

#[test]
fn removed_method_narrows() {
    let wider = READ.replace("[GET]", "[GET, DELETE]");
    let result = run(&wider, READ);
    assert_eq!(result.verdict(), Verdict::Narrows);
    assert_eq!(result.no_longer_allowed[0].method, "DELETE");
}

#[test]
fn namespace_wildcard_widens_for_a_sample_peer() {
    let wider = READ.replace("ns/web/sa/frontend", "ns/web/*");
    let result = run(READ, &wider);
    assert_eq!(result.verdict(), Verdict::Widens);
    assert!(
        result
            .newly_allowed
            .iter()
            .any(|c| c.peer == "spiffe://cluster.local/ns/web/sa/palisade-diff-sample"),
        "{result:?}"
    );
}

#[test]
fn catch_all_replacing_a_param_widens() {
    let wider = READ.replace("{id}", "{*rest}");
    let result = run(READ, &wider);
    assert_eq!(result.verdict(), Verdict::Widens);
    assert!(
        result
            .newly_allowed
            .iter()
            .any(|c| c.path == "/api/v1/items/sample-rest/more"),
        "{result:?}"
    );
}

#[test]
fn audit_rule_widens_what_reaches_the_app() {
    // An audit-only rule forwards its route's denials: a peer it does not name now reaches
    // `/admin/...`, which no route matched (and so was refused) before.
    let admin = r#"    - name: admin
      mode: audit
      from: { principals: ["spiffe://cluster.local/ns/ops/sa/admin"] }
      to:
        - methods: [GET]
          paths: ["/admin/{page}"]
"#;
    let result = run(READ, &format!("{READ}{admin}"));
    assert_eq!(result.verdict(), Verdict::Widens, "{result:?}");
    let frontend = result
        .newly_allowed
        .iter()
        .find(|c| c.peer == FRONTEND && c.path.starts_with("/admin/"))
        .expect("the frontend now reaches /admin/…");
    assert!(
        frontend
            .after
            .starts_with("forwarded in audit mode (denied"),
        "{frontend:?}"
    );
}

#[test]
fn enforcing_an_audit_rule_narrows() {
    let audit = READ.replace(
        "    - name: read\n",
        "    - name: read\n      mode: audit\n",
    );
    let result = run(&audit, READ);
    assert_eq!(result.verdict(), Verdict::Narrows, "{result:?}");
    assert!(result.newly_allowed.is_empty(), "{result:?}");
}
