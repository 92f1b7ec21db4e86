//! Fuzz target for the normalize step: arbitrary request targets in; no panic, and every
//! accepted path is canonical and a fixpoint (the properties in `config/src/normalize.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_config::normalize::{MAX_TARGET_LEN, normalize};

fuzz_target!(|data: &[u8]| {
    // Non-UTF-8 bytes can't reach `normalize` (it takes &str); lossy conversion turns them
    // into U+FFFD, which must be rejected as non-ASCII.
    let target = String::from_utf8_lossy(data);
    let Ok(normalized) = normalize(&target) else {
        return;
    };
    assert!(target.len() <= MAX_TARGET_LEN);
    let path = normalized.path().as_str();
    assert_canonical(path);

    let again = normalize(path).unwrap_or_else(|e| panic!("{path:?} rejected on second pass: {e}"));
    assert_eq!(
        again.path(),
        normalized.path(),
        "not idempotent for {target:?}"
    );
    assert_eq!(again.query(), None);

    if target.starts_with('/') {
        assert_eq!(
            normalized.query(),
            target.split_once('?').map(|(_, q)| q),
            "query changed"
        );
    }
});

fn assert_canonical(path: &str) {
    assert!(path.starts_with('/'), "{path:?}");
    for bad in ["//", "/./", "/../"] {
        assert!(!path.contains(bad), "{path:?} contains {bad:?}");
    }
    assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{path:?}");
    let upper = path.to_ascii_uppercase();
    for bad in ["%2F", "%5C", "%00"] {
        assert!(!upper.contains(bad), "{path:?} contains {bad:?}");
    }
    assert!(
        !path
            .bytes()
            .any(|b| b.is_ascii_control() || b >= 0x80 || matches!(b, b' ' | b'#' | b'?' | b'\\')),
        "{path:?} has a forbidden byte"
    );
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        assert!(
            hex.len() == 2
                && hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
            "bad escape at {i} in {path:?}"
        );
        let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
            .unwrap_or_else(|_| panic!("bad hex at {i} in {path:?}"));
        assert!(
            !(value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~')),
            "unreserved character left encoded at {i} in {path:?}"
        );
    }
}
