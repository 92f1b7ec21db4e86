//! Broken policies: each `tests/policies/broken/NAME.yaml` must produce exactly the lines in
//! `NAME.expected` (errors, or warnings and failing `tests:` when the policy loads).
//!
//! Set `BLESS=1` to rewrite the `.expected` files from the current output (then review them).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};

use palisade_config::{LoadOptions, Policy, run_tests};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/policies/broken")
}

fn options() -> LoadOptions {
    LoadOptions {
        trust_domain: Some("cluster.local".to_owned()),
    }
}

/// What `palisade check` would print for one source.
fn report(name: &str, text: &str) -> String {
    let lines: Vec<String> = match Policy::from_yaml(name, text, &options()) {
        Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
        Ok(loaded) => loaded
            .warnings
            .iter()
            .map(ToString::to_string)
            .chain(run_tests(&loaded).iter().map(ToString::to_string))
            .collect(),
    };
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[test]
fn broken_policies_report_exact_diagnostics() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "only {} broken policies", names.len());
    let mut mismatches = Vec::new();
    for path in &names {
        let name = path.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let actual = report(name, &text);
        assert!(!actual.trim().is_empty(), "{name}: no diagnostics at all");
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if actual != expected {
            mismatches.push(format!(
                "--- {name}\nexpected:\n{expected}actual:\n{actual}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_diagnostic_has_a_location() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Policy::from_yaml("f.yaml", &text, &options()) {
            for d in &e.diagnostics {
                assert!(d.line >= 1 && d.column >= 1, "{}: {d}", path.display());
                assert_eq!(d.file, "f.yaml");
            }
        }
    }
}

#[test]
fn huge_sources_are_refused_before_parsing() {
    let text = format!("# {}\n", "x".repeat(5 * 1024 * 1024));
    let err = Policy::from_yaml("huge.yaml", &text, &options()).unwrap_err();
    assert_eq!(
        err.diagnostics[0].to_string(),
        "huge.yaml:1:1: policy source is 5242883 bytes; the limit is 4194304 bytes"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.yaml");
    std::fs::write(&file, &text).unwrap();
    let err = Policy::load(&[&file], &options()).unwrap_err();
    assert!(
        err.diagnostics[0]
            .message
            .ends_with("the limit is 4194304 bytes"),
        "{err}"
    );
}

#[test]
fn garbage_and_truncated_inputs_never_panic() {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orders-api.yaml"),
    )
    .unwrap();
    for cut in (0..base.len()).step_by(7) {
        if !base.is_char_boundary(cut) {
            continue;
        }
        let _ = Policy::from_yaml("cut.yaml", &base[..cut], &options());
    }
    for garbage in [
        "\0\0\0",
        "{{{{",
        "]]]",
        "- - - -",
        "&a *a",
        "!!binary AAAA",
        ":",
        "---\n---\n...",
    ] {
        let _ = Policy::from_yaml("garbage.yaml", garbage, &options());
    }
}
