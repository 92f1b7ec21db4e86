//! Loading files and directories: several sources form one policy.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;

use palisade_config::{LoadOptions, Mode, Policy, normalize};

const HEADER: &str = "apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\n";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn rule(name: &str, path: &str) -> String {
    format!(
        "{HEADER}metadata: {{name: {name}}}\nspec:\n  mode: audit\n  rules:\n    - name: {name}\n      from: {{principals: [\"spiffe://cluster.local/*\"]}}\n      to: [{{methods: [GET], paths: [\"{path}\"]}}]\n"
    )
}

#[test]
fn a_directory_loads_its_yaml_files_as_one_policy() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.yaml", &rule("b", "/b"));
    write(dir.path(), "a.yml", &rule("a", "/a"));
    write(dir.path(), "notes.txt", "not a policy");
    let loaded = Policy::load(&[dir.path()], &LoadOptions::default()).unwrap();
    assert_eq!(loaded.policy.rule_count(), 2);
    assert_eq!(loaded.policy.mode(), Mode::Audit);
    let peer = palisade_config::Peer::Spiffe("spiffe://cluster.local/x".parse().unwrap());
    let path = normalize("/a").unwrap();
    assert_eq!(
        loaded.policy.decide("GET", path.path(), &peer).rule(),
        Some("a")
    );
}

#[test]
fn rule_names_must_be_unique_across_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "one.yaml", &rule("same", "/a"));
    write(dir.path(), "two.yaml", &rule("same", "/b"));
    let err = Policy::load(
        &[dir.path().join("one.yaml"), dir.path().join("two.yaml")],
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.diagnostics.len(), 1);
    let d = &err.diagnostics[0];
    assert!(d.file.ends_with("two.yaml"), "{d}");
    assert_eq!(
        (d.line, d.column, d.field.as_str()),
        (7, 13, "spec.rules[0].name")
    );
    assert!(
        d.message
            .starts_with("duplicate rule name \"same\" (first defined at "),
        "{d}"
    );
}

#[test]
fn missing_files_and_empty_directories_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = Policy::load(&[&missing], &LoadOptions::default()).unwrap_err();
    assert!(
        err.diagnostics[0].message.starts_with("cannot read: "),
        "{err}"
    );
    let err = Policy::load(&[dir.path()], &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.diagnostics[0].message,
        "directory contains no *.yaml or *.yml files"
    );
}

#[test]
fn an_empty_source_loads_with_a_warning() {
    let loaded = Policy::from_yaml("empty.yaml", "# nothing\n", &LoadOptions::default()).unwrap();
    assert_eq!(loaded.policy.rule_count(), 0);
    assert_eq!(
        loaded.warnings[0].to_string(),
        "empty.yaml:1:1: warning: no policy documents in this source"
    );
}

#[test]
fn diagnostics_serialize_for_json_output() {
    let err =
        Policy::from_yaml("x.yaml", "kind: ApiPolicy\n", &LoadOptions::default()).unwrap_err();
    let json = serde_json::to_string(&err.diagnostics[0]).unwrap();
    assert_eq!(
        json,
        r#"{"severity":"error","file":"x.yaml","line":1,"column":1,"field":"","message":"missing field `apiVersion`"}"#
    );
}

#[test]
fn a_transposed_field_name_gets_a_suggestion() {
    let rules =
        "  rules:\n    - name: r\n      from: {principals: [\"spiffe://cluster.local/*\"]}\n";
    let cases = [
        (
            format!(
                "{HEADER}metadata: {{name: shop}}\nspec:\n  mdoe: audit\n{rules}      to: [{{methods: [GET], paths: [/a]}}]\n"
            ),
            "t.yaml:5:3: spec.mdoe: unknown field `mdoe`; did you mean `mode`?",
        ),
        (
            format!(
                "{HEADER}metadata: {{name: shop}}\nspec:\n{rules}      to: [{{mehtods: [GET], paths: [/a]}}]\n"
            ),
            "t.yaml:8:13: spec.rules[0].to[0].mehtods: unknown field `mehtods`; did you mean `methods`?",
        ),
    ];
    for (text, expected) in cases {
        let err = Policy::from_yaml("t.yaml", &text, &LoadOptions::default()).unwrap_err();
        let lines: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(lines, [expected]);
    }
}
