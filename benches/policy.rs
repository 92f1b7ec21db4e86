//! Benchmarks of the authorize step's policy half: `Policy::decide` and compilation.
//!
//! `decide` runs on generated policies of 10, 1 000 and 10 000 rules, each rule with its own
//! two parameterized templates, so lookup cost can be compared across sizes (it must not grow
//! with the rule count). `compile` turns 10 000 parsed rules into a policy (validate, build
//! the trie); `load_yaml` adds parsing the YAML text. Run with `cargo bench --bench policy`; figures go in BENCHMARKS.md.

use divan::{Bencher, black_box};
use palisade_config::{LoadOptions, NormalizedPath, Peer, Policy, SpiffeId, compile, normalize};

fn main() {
    divan::main();
}

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// A policy of `rules` rules: rule `i` lets namespace `n{i}` GET/POST two templates with
/// parameters under `/svc{i}/`.
fn policy_text(rules: usize) -> String {
    let mut text = String::from(
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\nmetadata: {name: bench}\nspec:\n  rules:\n",
    );
    for i in 0..rules {
        text.push_str(&format!(
            "    - name: r{i}\n      from: {{principals: [\"spiffe://cluster.local/ns/n{i}/*\"]}}\n      to:\n        - methods: [GET, POST]\n          paths: [\"/svc{i}/api/v1/items/{{id}}\", \"/svc{i}/api/v1/items/{{id}}/parts/{{part}}\"]\n"
        ));
    }
    text
}

fn load(rules: usize) -> Policy {
    match Policy::from_yaml("bench.yaml", &policy_text(rules), &LoadOptions::default()) {
        Ok(loaded) => loaded.policy,
        Err(e) => panic!("bench policy must load: {e}"),
    }
}

fn path(target: &str) -> NormalizedPath {
    match normalize(target) {
        Ok(t) => t.into_parts().0,
        Err(e) => panic!("bench target must normalize: {e}"),
    }
}

fn peer(rule: usize) -> Peer {
    match SpiffeId::parse(&format!("spiffe://cluster.local/ns/n{rule}/sa/client")) {
        Ok(id) => Peer::Spiffe(id),
        Err(e) => panic!("bench peer must parse: {e}"),
    }
}

/// An allowed request to the middle rule's deeper template.
#[divan::bench(args = SIZES)]
fn decide_allow(bencher: Bencher<'_, '_>, rules: usize) {
    let policy = load(rules);
    let middle = rules / 2;
    let path = path(&format!("/svc{middle}/api/v1/items/42/parts/7"));
    let peer = peer(middle);
    assert!(policy.decide("GET", &path, &peer).is_allowed());
    bencher.bench_local(|| {
        black_box(&policy)
            .decide(black_box("GET"), black_box(&path), black_box(&peer))
            .is_allowed()
    });
}

/// A request whose peer is not allowed (the route and method match).
#[divan::bench(args = SIZES)]
fn decide_deny_peer(bencher: Bencher<'_, '_>, rules: usize) {
    let policy = load(rules);
    let middle = rules / 2;
    let path = path(&format!("/svc{middle}/api/v1/items/42"));
    let peer = peer(middle + 1);
    assert!(!policy.decide("POST", &path, &peer).is_allowed());
    bencher.bench_local(|| {
        black_box(&policy)
            .decide(black_box("POST"), black_box(&path), black_box(&peer))
            .is_allowed()
    });
}

/// A path no template matches (computes the nearest template; the path's first segment
/// `/svc1/` is a known one, the common case of a typo further down).
#[divan::bench(args = SIZES)]
fn decide_no_route(bencher: Bencher<'_, '_>, rules: usize) {
    let policy = load(rules);
    let path = path("/svc1/api/v2/unknown/route");
    let peer = peer(1);
    assert!(!policy.decide("GET", &path, &peer).is_allowed());
    bencher.bench_local(|| {
        black_box(&policy)
            .decide(black_box("GET"), black_box(&path), black_box(&peer))
            .is_allowed()
    });
}

/// A path whose first segment no template starts with: the nearest template is found by a
/// binary search over all templates (the first-segment index cannot narrow it).
#[divan::bench(args = SIZES)]
fn decide_no_route_unknown_segment(bencher: Bencher<'_, '_>, rules: usize) {
    let policy = load(rules);
    let path = path("/unknown/api/v1/items/1");
    let peer = peer(1);
    assert!(!policy.decide("GET", &path, &peer).is_allowed());
    bencher.bench_local(|| {
        black_box(&policy)
            .decide(black_box("GET"), black_box(&path), black_box(&peer))
            .is_allowed()
    });
}

/// Parsed documents → Policy for 10 000 rules (20 000 templates): validate, build the trie,
/// merge covering routes, shadowing warnings.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn compile_10000_rules(bencher: Bencher<'_, '_>) {
    let (documents, errors) = palisade_config::document::parse("bench.yaml", &policy_text(10_000));
    assert!(errors.is_empty(), "bench policy must parse");
    // Returning the policy keeps its deallocation out of the measurement.
    bencher.bench_local(|| compile(black_box(&documents), &LoadOptions::default()));
}

/// YAML text → Policy for 10 000 rules: parse and decode (serde-saphyr) plus compile.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn load_yaml_10000_rules(bencher: Bencher<'_, '_>) {
    let text = policy_text(10_000);
    bencher
        .bench_local(|| Policy::from_yaml("bench.yaml", black_box(&text), &LoadOptions::default()));
}
