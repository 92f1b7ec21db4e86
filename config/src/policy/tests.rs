//! decide() over a realistic policy: allows, each denial kind, shared nodes, covering
//! templates, opaque ports, accessors, and a 10 000-rule policy.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use super::*;
use crate::compile::LoadOptions;
use crate::normalize::normalize;

const POLICY: &str = r#"
apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: orders-api, namespace: shop }
spec:
  mode: audit
  mtls: permissive
  rules:
    - name: catalog-read
      from:
        principals: ["spiffe://cluster.local/ns/web/sa/frontend", "spiffe://cluster.local/ns/ops/*"]
      to:
        - methods: [GET, HEAD]
          paths: ["/api/v1/items", "/api/v1/items/{id}"]
    - name: catalog-write
      from: { principals: ["spiffe://cluster.local/ns/ops/sa/admin"] }
      to:
        - methods: [PUT, DELETE]
          paths: ["/api/v1/items/{item}"]
    - name: place-order
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [POST]
          paths: ["/api/v1/orders"]
    - name: files
      from: { principals: ["spiffe://cluster.local/*"] }
      to:
        - methods: ["*"]
          paths: ["/files/{*rest}"]
    - name: events
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/events"]
          upgrade: websocket
    - name: health
      from: { principals: [unauthenticated] }
      to:
        - methods: [GET]
          paths: ["/healthz"]
    - name: db
      from: { principals: ["spiffe://cluster.local/ns/shop/*"] }
    - name: items-special
      from: { principals: ["spiffe://cluster.local/ns/ops/sa/admin"] }
      to:
        - methods: [POST]
          paths: ["/api/v1/items/special", "/files/health"]
  opaquePorts: [5432, 6379]
"#;

fn policy() -> Policy {
    match Policy::from_yaml("orders.yaml", POLICY, &LoadOptions::default()) {
        Ok(loaded) => loaded.policy,
        Err(e) => panic!("{e:#?}"),
    }
}

fn peer(id: &str) -> Peer {
    Peer::Spiffe(SpiffeId::parse(id).unwrap())
}

const FRONTEND: &str = "spiffe://cluster.local/ns/web/sa/frontend";
const ADMIN: &str = "spiffe://cluster.local/ns/ops/sa/admin";

fn decide(p: &Policy, method: &str, target: &str, who: &Peer) -> String {
    let target = normalize(target).unwrap();
    p.decide(method, target.path(), who).to_string()
}

#[test]
fn decides_a_table_of_requests() {
    let p = policy();
    let frontend = peer(FRONTEND);
    let admin = peer(ADMIN);
    let other = peer("spiffe://cluster.local/ns/other/sa/x");
    let cases: &[(&str, &str, &Peer, &str)] = &[
        (
            "GET",
            "/api/v1/items",
            &frontend,
            "allowed by rule catalog-read (route /api/v1/items)",
        ),
        (
            "GET",
            "/api/v1/items/42",
            &frontend,
            "allowed by rule catalog-read (route /api/v1/items/{id})",
        ),
        (
            "HEAD",
            "/api/v1/items/42",
            &admin,
            "allowed by rule catalog-read (route /api/v1/items/{id})",
        ),
        // `{id}` and `{item}` share one node: both rules are consulted on it.
        (
            "DELETE",
            "/api/v1/items/42",
            &admin,
            "allowed by rule catalog-write (route /api/v1/items/{item})",
        ),
        // a rule on the route allows DELETE, just not for this peer: name that rule
        (
            "DELETE",
            "/api/v1/items/42",
            &frontend,
            "denied: rule catalog-write allows this method on /api/v1/items/{item} but not this peer",
        ),
        (
            "PATCH",
            "/api/v1/items/42",
            &frontend,
            "denied: route /api/v1/items/{id} exists but rule catalog-read does not allow this method",
        ),
        (
            "PUT",
            "/api/v1/items/42",
            &other,
            "denied: rule catalog-write allows this method on /api/v1/items/{item} but not this peer",
        ),
        (
            "POST",
            "/api/v1/orders",
            &frontend,
            "allowed by rule place-order (route /api/v1/orders)",
        ),
        (
            "POST",
            "/api/v1/orders",
            &admin,
            "denied: rule place-order allows this method on /api/v1/orders but not this peer",
        ),
        (
            "GET",
            "/api/v1/orderz",
            &frontend,
            "denied: no route matches (nearest: /api/v1/orders)",
        ),
        (
            "GET",
            "/api/v1/items/42/tags",
            &frontend,
            "denied: no route matches (nearest: /api/v1/items/{id})",
        ),
        (
            "GET",
            "/",
            &frontend,
            "denied: no route matches (nearest: /api/v1/items)",
        ),
        (
            "PATCH",
            "/files/a/b/c.txt",
            &other,
            "allowed by rule files (route /files/{*rest})",
        ),
        (
            "GET",
            "/files/",
            &other,
            "denied: no route matches (nearest: /files/{*rest})",
        ),
        (
            "GET",
            "/events",
            &frontend,
            "allowed by rule events (route /events), websocket upgrade allowed",
        ),
        (
            "GET",
            "/healthz",
            &Peer::Unauthenticated,
            "allowed by rule health (route /healthz)",
        ),
        (
            "GET",
            "/api/v1/items",
            &Peer::Unauthenticated,
            "denied: rule catalog-read allows this method on /api/v1/items but not this peer",
        ),
        // a literal route also answers for the templates covering it: rules add up
        (
            "GET",
            "/api/v1/items/special",
            &frontend,
            "allowed by rule catalog-read (route /api/v1/items/{id})",
        ),
        (
            "POST",
            "/api/v1/items/special",
            &admin,
            "allowed by rule items-special (route /api/v1/items/special)",
        ),
        (
            "POST",
            "/api/v1/items/special",
            &frontend,
            "denied: rule items-special allows this method on /api/v1/items/special but not this peer",
        ),
        (
            "GET",
            "/files/health",
            &other,
            "allowed by rule files (route /files/{*rest})",
        ),
        // methods are case-sensitive
        (
            "get",
            "/api/v1/items",
            &frontend,
            "denied: route /api/v1/items exists but rule catalog-read does not allow this method",
        ),
    ];
    for (method, target, who, expected) in cases {
        assert_eq!(
            decide(&p, method, target, who),
            *expected,
            "{method} {target} as {who}"
        );
    }
}

#[test]
fn decision_accessors_name_rule_and_route() {
    let p = policy();
    let path = normalize("/api/v1/items/7").unwrap();
    let d = p.decide("GET", path.path(), &peer(FRONTEND));
    assert!(d.is_allowed());
    assert_eq!(d.rule(), Some("catalog-read"));
    assert_eq!(d.route(), Some("/api/v1/items/{id}"));
    assert_eq!(
        d,
        Decision::Allow(Permit {
            rule: "catalog-read",
            template: "/api/v1/items/{id}",
            upgrade: false
        })
    );
    let d = p.decide("PATCH", path.path(), &peer(FRONTEND));
    assert!(!d.is_allowed());
    assert_eq!(d.rule(), Some("catalog-read"));
    assert_eq!(d.route(), Some("/api/v1/items/{id}"));
    let missing = normalize("/nope").unwrap();
    let d = p.decide("GET", missing.path(), &peer(FRONTEND));
    assert_eq!(d.rule(), None);
    assert_eq!(d.route(), None);
}

#[test]
fn opaque_ports_admit_identity_only_rules() {
    let p = policy();
    assert_eq!(p.opaque_ports(), &[5432, 6379]);
    let d = p.authorize_peer(&peer("spiffe://cluster.local/ns/shop/sa/api"));
    assert_eq!(d.to_string(), "allowed by rule db (identity-only rule)");
    assert_eq!(d.route(), None);
    let d = p.authorize_peer(&peer(FRONTEND));
    assert_eq!(
        d,
        Decision::Deny(Denial::PeerNotAdmitted { mode: Mode::Audit })
    );
    assert!(!p.authorize_peer(&Peer::Unauthenticated).is_allowed());
}

#[test]
fn exposes_mode_mtls_version_and_rule_count() {
    let p = policy();
    assert_eq!(p.mode(), Mode::Audit);
    assert_eq!(p.mtls(), MtlsMode::Permissive);
    assert_eq!(p.rule_count(), 8);
    assert_eq!(p.version().len(), 12);
    assert!(p.version().bytes().all(|b| b.is_ascii_hexdigit()));
    let changed = POLICY.replace("/healthz", "/livez");
    let q = Policy::from_yaml("orders.yaml", &changed, &LoadOptions::default())
        .unwrap()
        .policy;
    assert_ne!(p.version(), q.version());
    let same = Policy::from_yaml("orders.yaml", POLICY, &LoadOptions::default()).unwrap();
    assert_eq!(p.version(), same.policy.version());
}

#[test]
fn empty_policy_denies_everything() {
    let text = "apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\nmetadata: {name: none}\nspec: {}\n";
    let p = Policy::from_yaml("none.yaml", text, &LoadOptions::default())
        .unwrap()
        .policy;
    assert_eq!(p.mode(), Mode::Enforce);
    assert_eq!(p.mtls(), MtlsMode::Strict);
    assert_eq!(
        decide(&p, "GET", "/", &peer(FRONTEND)),
        "denied: no route matches (the policy has no routes)"
    );
}

#[test]
fn ten_thousand_rules_load_and_decide() {
    let mut text = String::from(
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\nmetadata: {name: big}\nspec:\n  rules:\n",
    );
    for i in 0..10_000 {
        text.push_str(&format!(
            "    - name: r{i}\n      from: {{principals: [\"spiffe://cluster.local/ns/n{i}/*\"]}}\n      to:\n        - methods: [GET, POST]\n          paths: [\"/svc{i}/items/{{id}}/parts/{{part}}\"]\n"
        ));
    }
    let loaded = Policy::from_yaml("big.yaml", &text, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.policy.rule_count(), 10_000);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings.first());
    let who = peer("spiffe://cluster.local/ns/n9999/sa/x");
    assert_eq!(
        decide(&loaded.policy, "POST", "/svc9999/items/1/parts/2", &who),
        "allowed by rule r9999 (route /svc9999/items/{id}/parts/{part})"
    );
    assert!(
        !loaded
            .policy
            .decide(
                "GET",
                normalize("/svc1/items/1/parts/2").unwrap().path(),
                &who
            )
            .is_allowed()
    ); // no route: the first-segment index finds the same nearest template a full search does
    for (target, nearest) in [
        ("/svc42/items", "/svc42/items/{id}/parts/{part}"),
        ("/svc42/", "/svc42/items/{id}/parts/{part}"),
        ("/svc4/items/1/parts", "/svc4/items/{id}/parts/{part}"),
        ("/svc9999/zzz", "/svc9999/items/{id}/parts/{part}"),
        ("/svc", "/svc0/items/{id}/parts/{part}"),
        ("/nosuch/svc1", "/svc0/items/{id}/parts/{part}"),
        ("/zzz", "/svc9999/items/{id}/parts/{part}"),
    ] {
        assert_eq!(
            decide(&loaded.policy, "GET", target, &who),
            format!("denied: no route matches (nearest: {nearest})"),
            "{target}"
        );
    }
}

/// Per-rule `mode`: which denials are enforced.
mod rule_modes {
    use super::*;
    use crate::check::run_tests;
    use crate::compile::Loaded;

    const ENFORCED_WITH_AUDIT_RULES: &str = r#"
apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: rollout }
spec:
  rules:
    - name: reports-new
      mode: audit
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/reports/{id}"]
    - name: orders
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/orders/{id}"]
    - name: orders-audit
      mode: audit
      from: { principals: ["spiffe://cluster.local/ns/ops/sa/admin"] }
      to:
        - methods: [DELETE]
          paths: ["/orders/{order}"]
    - name: admin
      mode: enforce
      from: { principals: ["spiffe://cluster.local/ns/ops/sa/admin"] }
      to:
        - methods: ["*"]
          paths: ["/admin/{*rest}"]
    - name: admin-health
      mode: audit
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/admin/health"]
    - name: db
      mode: audit
      from: { principals: ["spiffe://cluster.local/ns/shop/*"] }
  opaquePorts: [5432]
tests:
  - { peer: "spiffe://cluster.local/ns/web/sa/frontend", request: "POST /reports/1", expect: deny, rule: reports-new }
  - { peer: "spiffe://cluster.local/ns/web/sa/frontend", request: "GET /reports/1", expect: allow, rule: reports-new }
"#;

    fn load(text: &str) -> Loaded {
        Policy::from_yaml("rollout.yaml", text, &LoadOptions::default()).unwrap()
    }

    fn decision_mode(p: &Policy, method: &str, target: &str, who: &Peer) -> (bool, Option<Mode>) {
        let target = normalize(target).unwrap();
        match p.decide(method, target.path(), who) {
            Decision::Allow(_) => (true, None),
            Decision::Deny(d) => (false, Some(d.mode())),
        }
    }

    #[test]
    fn route_of_only_audit_rules_is_audit_denied() {
        let p = load(ENFORCED_WITH_AUDIT_RULES).policy;
        assert_eq!(p.mode(), Mode::Enforce);
        let frontend = peer(FRONTEND);
        let admin = peer(ADMIN);
        // method not allowed, peer not allowed: both audit on the audit-only route
        assert_eq!(
            decision_mode(&p, "POST", "/reports/1", &frontend),
            (false, Some(Mode::Audit))
        );
        assert_eq!(
            decision_mode(&p, "GET", "/reports/1", &admin),
            (false, Some(Mode::Audit))
        );
        // an audit rule's allow is an allow
        assert_eq!(
            decision_mode(&p, "GET", "/reports/1", &frontend),
            (true, None)
        );
        let target = normalize("/reports/1").unwrap();
        let d = p.decide("POST", target.path(), &frontend);
        assert!(d.is_audit_denied());
        assert!(!d.is_allowed());
        assert_eq!(
            d,
            Decision::Deny(Denial::MethodNotAllowed {
                template: "/reports/{id}",
                rule: "reports-new",
                mode: Mode::Audit,
            })
        );
        // the reason reads the same as an enforced denial's
        assert_eq!(
            d.to_string(),
            "denied: route /reports/{id} exists but rule reports-new does not allow this method"
        );
    }

    #[test]
    fn route_with_one_enforced_rule_stays_enforced() {
        let p = load(ENFORCED_WITH_AUDIT_RULES).policy;
        let frontend = peer(FRONTEND);
        let other = peer("spiffe://cluster.local/ns/other/sa/x");
        // `/orders/{id}` (enforced) and `/orders/{order}` (audit) share one route
        assert_eq!(
            decision_mode(&p, "DELETE", "/orders/1", &other),
            (false, Some(Mode::Enforce))
        );
        assert_eq!(
            decision_mode(&p, "PATCH", "/orders/1", &frontend),
            (false, Some(Mode::Enforce))
        );
        assert_eq!(
            decision_mode(&p, "DELETE", "/orders/1", &peer(ADMIN)),
            (true, None)
        );
        // `/admin/health` (audit) is covered by the enforced `/admin/{*rest}`
        let target = normalize("/admin/health").unwrap();
        let d = p.decide("POST", target.path(), &frontend);
        assert!(!d.is_audit_denied(), "{d}");
        assert_eq!(
            decision_mode(&p, "GET", "/admin/health", &other),
            (false, Some(Mode::Enforce))
        );
        assert_eq!(
            decision_mode(&p, "GET", "/admin/health", &frontend),
            (true, None)
        );
        assert_eq!(
            decision_mode(&p, "GET", "/admin/users", &frontend),
            (false, Some(Mode::Enforce))
        );
    }

    #[test]
    fn no_route_and_opaque_port_denials_follow_spec_mode() {
        let p = load(ENFORCED_WITH_AUDIT_RULES).policy;
        let frontend = peer(FRONTEND);
        assert_eq!(
            decision_mode(&p, "GET", "/reports", &frontend),
            (false, Some(Mode::Enforce))
        );
        let d = p.authorize_peer(&frontend);
        assert_eq!(
            d,
            Decision::Deny(Denial::PeerNotAdmitted {
                mode: Mode::Enforce
            })
        );
        assert!(!d.is_audit_denied());

        // the other way round: an audit policy with one enforced rule
        let audit = ENFORCED_WITH_AUDIT_RULES.replace("spec:\n", "spec:\n  mode: audit\n");
        let q = load(&audit).policy;
        assert_eq!(q.mode(), Mode::Audit);
        assert_eq!(
            decision_mode(&q, "GET", "/reports", &frontend),
            (false, Some(Mode::Audit))
        );
        assert!(q.authorize_peer(&frontend).is_audit_denied());
        // `orders` now inherits audit, so its shared route is all audit
        assert_eq!(
            decision_mode(&q, "PATCH", "/orders/1", &frontend),
            (false, Some(Mode::Audit))
        );
        // `admin` says enforce: its routes stay enforced under an audit policy
        assert_eq!(
            decision_mode(&q, "GET", "/admin/users", &frontend),
            (false, Some(Mode::Enforce))
        );
        assert_eq!(
            decision_mode(&q, "POST", "/admin/health", &frontend),
            (false, Some(Mode::Enforce))
        );
        assert_ne!(p.version(), q.version());
    }

    #[test]
    fn policy_level_audit_still_audits_every_denial() {
        let p = policy(); // `spec.mode: audit`, no rule modes
        for (method, target) in [("PATCH", "/api/v1/items/42"), ("GET", "/nope")] {
            let target = normalize(target).unwrap();
            assert!(
                p.decide(method, target.path(), &peer(FRONTEND))
                    .is_audit_denied()
            );
        }
        let allowed = normalize("/api/v1/items/42").unwrap();
        assert!(
            !p.decide("GET", allowed.path(), &peer(FRONTEND))
                .is_audit_denied()
        );
    }

    #[test]
    fn audit_denied_requests_satisfy_deny_expectations() {
        let loaded = load(ENFORCED_WITH_AUDIT_RULES);
        assert_eq!(loaded.tests.len(), 2);
        let failures = run_tests(&loaded);
        assert!(
            failures.is_empty(),
            "{:?}",
            failures.first().map(ToString::to_string)
        );
        let wrong = ENFORCED_WITH_AUDIT_RULES.replace("expect: deny", "expect: allow");
        assert_eq!(run_tests(&load(&wrong)).len(), 1);
    }
}

/// A `{parameter}` and a `{*catch-all}` at one segment conflict; the message names the earlier
/// template as written, also when parameters before that segment are named differently, in
/// either order, and whichever method lists the rules repeat.
#[test]
fn route_conflicts_name_the_earlier_template_as_written() {
    let text = |first: &str, second: &str| {
        format!(
            "apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\nmetadata: {{name: c}}\nspec:\n  rules:\n    - name: a\n      from: {{principals: [\"spiffe://cluster.local/*\"]}}\n      to: [{{methods: [GET, POST], paths: [\"/x\", \"{first}\"]}}]\n    - name: b\n      from: {{principals: [\"spiffe://cluster.local/*\"]}}\n      to: [{{methods: [GET, POST], paths: [\"{second}\"]}}]\n"
        )
    };
    for (first, second) in [
        ("/a/{x}/b/{*rest}", "/a/{y}/b/{z}"),
        ("/a/{x}/b/{z}", "/a/{y}/b/{*rest}"),
        ("/files/{id}", "/files/{*path}"),
    ] {
        let err =
            Policy::from_yaml("c.yaml", &text(first, second), &LoadOptions::default()).unwrap_err();
        let messages: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 1, "{messages:?}");
        let expected = format!("path template {second:?} conflicts with {first:?} (c.yaml:8:");
        assert!(messages[0].contains(&expected), "{messages:?}");
        assert!(
            messages[0]
                .ends_with("a {parameter} and a {*catch-all} cannot start at the same segment"),
            "{messages:?}"
        );
    }
}
