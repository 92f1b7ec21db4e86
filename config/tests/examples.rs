//! The shipped examples load without errors or warnings and their `tests:` all pass.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;

use palisade_config::{LoadOptions, Policy, run_tests};

#[test]
fn examples_load_and_their_tests_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let opts = LoadOptions {
        trust_domain: Some("cluster.local".to_owned()),
    };
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let loaded = Policy::load(&[&path], &opts)
            .unwrap_or_else(|e| panic!("{}: {:#?}", path.display(), e.diagnostics));
        assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
        assert!(!loaded.tests.is_empty(), "{}: no tests", path.display());
        let failures = run_tests(&loaded);
        assert!(
            failures.is_empty(),
            "{}",
            failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
