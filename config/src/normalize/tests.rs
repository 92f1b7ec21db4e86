//! Adversarial table and property tests for [`normalize`].

use std::path::Path;

use NormalizeError::*;
use proptest::test_runner::TestCaseError;
use proptest::{prop_assert, prop_assert_eq};

use super::*;

/// What a case expects: the canonical path and query, or the exact error.
enum Expect {
    Ok(&'static str, Option<&'static str>),
    Err(NormalizeError),
}

fn ok(path: &'static str) -> Expect {
    Expect::Ok(path, None)
}

fn ok_q(path: &'static str, query: &'static str) -> Expect {
    Expect::Ok(path, Some(query))
}

fn err(error: NormalizeError) -> Expect {
    Expect::Err(error)
}

fn check(cases: &[(&str, Expect)]) {
    let mut failures = Vec::new();
    for (input, expect) in cases {
        let got = normalize(input);
        let matches = match (&got, expect) {
            (Ok(target), Expect::Ok(path, query)) => {
                target.path().as_str() == *path && target.query() == *query
            }
            (Err(error), Expect::Err(expected)) => error == expected,
            _ => false,
        };
        if !matches {
            let want = match expect {
                Expect::Ok(path, query) => format!("Ok({path:?}, {query:?})"),
                Expect::Err(error) => format!("Err({error:?})"),
            };
            let got = match &got {
                Ok(target) => format!("Ok({:?}, {:?})", target.path().as_str(), target.query()),
                Err(error) => format!("Err({error:?})"),
            };
            failures.push(format!("{input:?}: want {want}, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn keeps_canonical_paths() {
    check(&[
        ("/", ok("/")),
        ("/api/v1/items", ok("/api/v1/items")),
        ("/api/v1/items/42", ok("/api/v1/items/42")),
        ("/api/v1/items/", ok("/api/v1/items/")),
        ("/API/V1/Items", ok("/API/V1/Items")),
        ("/a-b_c~d.e", ok("/a-b_c~d.e")),
        ("/a:b@c!$&'()*+,;=", ok("/a:b@c!$&'()*+,;=")),
        ("/%20", ok("/%20")),
        ("/a%3Bb", ok("/a%3Bb")),
    ]);
}

#[test]
fn removes_dot_segments() {
    check(&[
        ("/.", ok("/")),
        ("/..", ok("/")),
        ("/./", ok("/")),
        ("/../", ok("/")),
        ("/a/.", ok("/a/")),
        ("/a/..", ok("/")),
        ("/a/b/..", ok("/a/")),
        ("/a/./b", ok("/a/b")),
        ("/a/../b", ok("/b")),
        ("/a/b/../../c", ok("/c")),
        ("/../../../etc/passwd", ok("/etc/passwd")),
        ("/api/v1/../../admin", ok("/admin")),
        ("/public/../admin/users", ok("/admin/users")),
        ("/a/b/c/./../../g", ok("/a/g")),
        ("/mid/content=5/../6", ok("/mid/6")),
        ("/a/.../b", ok("/a/.../b")),
        ("/a/..../b", ok("/a/..../b")),
        ("/.a/a./..a/a..", ok("/.a/a./..a/a..")),
    ]);
}

#[test]
fn removes_encoded_dot_segments() {
    check(&[
        ("/%2e", ok("/")),
        ("/%2E", ok("/")),
        ("/%2e%2e", ok("/")),
        ("/%2E%2E/admin", ok("/admin")),
        ("/api/%2e%2e/admin", ok("/admin")),
        ("/api/%2E%2e/admin", ok("/admin")),
        ("/api/.%2e/admin", ok("/admin")),
        ("/api/%2e./admin", ok("/admin")),
        ("/api/%2e/admin", ok("/api/admin")),
        ("/api/%2e%2e%2e/admin", ok("/api/.../admin")),
        ("/a/b/%2e%2e", ok("/a/")),
        ("/%61dmin", ok("/admin")),
        ("/%41%42%43", ok("/ABC")),
        ("/%7e%5f%2d%30", ok("/~_-0")),
    ]);
}

#[test]
fn does_not_double_decode() {
    check(&[
        ("/%252e%252e/admin", ok("/%252e%252e/admin")),
        ("/api/%252E%252E/admin", ok("/api/%252E%252E/admin")),
        ("/%252f", ok("/%252f")),
        ("/%255c", ok("/%255c")),
        ("/%2500", ok("/%2500")),
        ("/%25", ok("/%25")),
        ("/%25%32%65", ok("/%252e")),
        ("/%%32%65", err(MalformedPercentEncoding)),
    ]);
}

#[test]
fn upper_cases_hex_of_reserved_and_non_ascii_escapes() {
    check(&[
        ("/a%3bb", ok("/a%3Bb")),
        ("/%3f", ok("/%3F")),
        ("/%23", ok("/%23")),
        ("/%7b%7D", ok("/%7B%7D")),
        ("/caf%c3%a9", ok("/caf%C3%A9")),
        ("/%ff", ok("/%FF")),
        ("/%20a", ok("/%20a")),
    ]);
}

#[test]
fn keeps_overlong_utf8_encoded() {
    check(&[
        ("/%c0%ae%c0%ae/admin", ok("/%C0%AE%C0%AE/admin")),
        ("/%C0%AE", ok("/%C0%AE")),
        ("/%e0%80%ae", ok("/%E0%80%AE")),
        ("/%c0%af", ok("/%C0%AF")),
        ("/%c1%9c", ok("/%C1%9C")),
        ("/a/%c0%2e", ok("/a/%C0.")),
    ]);
}

#[test]
fn treats_semicolon_and_trailing_dots_as_ordinary() {
    check(&[
        ("/..;/admin", ok("/..;/admin")),
        ("/api/..;/admin", ok("/api/..;/admin")),
        ("/api;jsessionid=1/items", ok("/api;jsessionid=1/items")),
        ("/.;/admin", ok("/.;/admin")),
        ("/a/b.", ok("/a/b.")),
        ("/a/b..", ok("/a/b..")),
        ("/admin.", ok("/admin.")),
        ("/admin%2e", ok("/admin.")),
        ("/a/b/", ok("/a/b/")),
    ]);
}

#[test]
fn merges_repeated_slashes() {
    check(&[
        ("//", ok("/")),
        ("///", ok("/")),
        ("//admin", ok("/admin")),
        ("//evil.example/admin", ok("/evil.example/admin")),
        ("/a//b///c", ok("/a/b/c")),
        ("/a/b//", ok("/a/b/")),
        ("/a//../b", ok("/a/b")),
        ("/a/b//../c", ok("/a/b/c")),
        ("/.//admin", ok("/admin")),
        ("//..//admin", ok("/admin")),
        ("/%2e//%2e%2e//admin", ok("/admin")),
    ]);
}

#[test]
fn rejects_slashes_and_backslashes_that_are_not_separators() {
    check(&[
        ("/a%2Fb", err(EncodedSlash)),
        ("/a%2fb", err(EncodedSlash)),
        ("/..%2F..%2Fadmin", err(EncodedSlash)),
        ("/%2e%2e%2fadmin", err(EncodedSlash)),
        ("/a\\b", err(Backslash)),
        ("/..\\admin", err(Backslash)),
        ("/a%5Cb", err(EncodedBackslash)),
        ("/a%5cb", err(EncodedBackslash)),
        ("/%2e%2e%5cadmin", err(EncodedBackslash)),
    ]);
}

#[test]
fn rejects_nul_and_control_characters() {
    check(&[
        ("/a\0b", err(Nul)),
        ("/admin\0.html", err(Nul)),
        ("/a%00b", err(Nul)),
        ("/admin%00.json", err(Nul)),
        ("/a\tb", err(ControlCharacter)),
        ("/a\r\nHost: x", err(ControlCharacter)),
        ("/a\x7f", err(ControlCharacter)),
        ("/a\x1b", err(ControlCharacter)),
        ("/a%0d%0aSet-Cookie:x", err(EncodedControlCharacter)),
        ("/a%09", err(EncodedControlCharacter)),
        ("/a%7F", err(EncodedControlCharacter)),
        ("/a%1f", err(EncodedControlCharacter)),
    ]);
}

#[test]
fn rejects_space_non_ascii_and_fragments() {
    check(&[
        ("/a b", err(Space)),
        ("/a HTTP/1.1", err(Space)),
        ("/caf\u{e9}", err(NonAscii)),
        ("/\u{ff0e}\u{ff0e}/admin", err(NonAscii)),
        ("/a#b", err(Fragment)),
        ("/admin#", err(Fragment)),
        ("/public#/../admin", err(Fragment)),
        ("/a?b#c", err(Fragment)),
        ("/a%23b", ok("/a%23b")),
    ]);
}

#[test]
fn rejects_malformed_percent_encoding() {
    check(&[
        ("/%", err(MalformedPercentEncoding)),
        ("/a%", err(MalformedPercentEncoding)),
        ("/a%4", err(MalformedPercentEncoding)),
        ("/a%4/b", err(MalformedPercentEncoding)),
        ("/a%zz", err(MalformedPercentEncoding)),
        ("/a%g1", err(MalformedPercentEncoding)),
        ("/%u002e%u002e/admin", err(MalformedPercentEncoding)),
        ("/%U0041", err(MalformedPercentEncoding)),
        ("/a%%41", err(MalformedPercentEncoding)),
        ("/a%-1", err(MalformedPercentEncoding)),
        ("/a%+1", err(MalformedPercentEncoding)),
        ("/a% 1", err(MalformedPercentEncoding)),
    ]);
}

#[test]
fn reports_the_first_violation() {
    check(&[
        ("/a\\b\0", err(Backslash)),
        ("/a\0b\\", err(Nul)),
        ("/%zz\0", err(MalformedPercentEncoding)),
        ("/a/\0/%2f", err(Nul)),
        ("/a%2f?\0", err(EncodedSlash)),
        ("/a?b\0", err(Nul)),
    ]);
}

#[test]
fn returns_query_untouched_but_checked() {
    check(&[
        ("/a?", ok_q("/a", "")),
        ("/a?x=1", ok_q("/a", "x=1")),
        ("/a/../b?x=%2e%2E&y=%2F", ok_q("/b", "x=%2e%2E&y=%2F")),
        ("/a?b?c", ok_q("/a", "b?c")),
        ("/a?/../admin", ok_q("/a", "/../admin")),
        ("/a?%zz%", ok_q("/a", "%zz%")),
        ("/a?x=a\\b", ok_q("/a", "x=a\\b")),
        ("/%2e%2e?x", ok_q("/", "x")),
        ("/a?x y", err(Space)),
        ("/a?x\0", err(Nul)),
        ("/a?x\r\n", err(ControlCharacter)),
        ("/a?\u{e9}", err(NonAscii)),
        ("/a?x#y", err(Fragment)),
    ]);
}

#[test]
fn reduces_absolute_form_to_origin_form() {
    check(&[
        ("http://example.com/a/b", ok("/a/b")),
        ("https://example.com/a/b?x=1", ok_q("/a/b", "x=1")),
        ("HTTP://EXAMPLE.COM/A", ok("/A")),
        ("HtTpS://example.com/", ok("/")),
        ("http://example.com:8080/a/../b", ok("/b")),
        ("http://[::1]:8080/a", ok("/a")),
        ("http://127.0.0.1/a", ok("/a")),
        ("http://example.com", ok("/")),
        ("http://example.com?x", ok_q("/", "x")),
        ("http://example.com//admin", ok("/admin")),
        ("http://example.com/%2e%2e/admin", ok("/admin")),
        ("http://user@example.com/a", err(Userinfo)),
        ("http://user:pass@example.com/a", err(Userinfo)),
        ("http://allowed.example@evil.example/a", err(Userinfo)),
        ("http:///a", err(InvalidAuthority)),
        ("http://", err(InvalidAuthority)),
        ("http://exa%6dple.com/a", err(InvalidAuthority)),
        ("http://host\\@evil/a", err(Backslash)),
        ("http://host name/a", err(Space)),
        ("http://host#frag/a", err(Fragment)),
        ("http://host/a%2fb", err(EncodedSlash)),
        ("ftp://example.com/a", err(UnsupportedScheme)),
        ("ws://example.com/a", err(UnsupportedScheme)),
        ("file:///etc/passwd", err(UnsupportedScheme)),
        ("http:/a", err(UnrecognizedForm)),
        ("http:a", err(UnrecognizedForm)),
        ("1http://example.com/a", err(UnrecognizedForm)),
    ]);
}

/// `normalize_absolute` must answer exactly what `normalize` answers for the joined target.
fn assert_absolute_same(scheme: &str, authority: &str, path_and_query: &str) {
    let joined = format!("{scheme}://{authority}{path_and_query}");
    assert_eq!(
        normalize_absolute(scheme, authority, path_and_query),
        normalize(&joined),
        "{joined:?}"
    );
}

#[test]
fn normalizes_absolute_form_parts_like_the_joined_target() {
    for (scheme, authority, path_and_query) in [
        ("https", "example.com", "/a/b"),
        ("https", "example.com", "/a/../b?x=1&y"),
        ("HTTP", "EXAMPLE.COM:8080", "/A//b/%2e%2e/c"),
        ("http", "[::1]:8080", "/"),
        ("https", "example.com", "/a%2fb"),
        ("https", "example.com", "/a?x#y"),
        ("https", "example.com", "/a b"),
        ("https", "example.com", "/\\admin"),
        ("https", "user@example.com", "/a"),
        ("https", "host\\@evil", "/a"),
        ("https", "", "/a"),
        ("https", "exa%6dple.com", "/a"),
        ("https", "exa%6dple.com", "/a\0"),
        ("https", "host name", "/a"),
        ("ftp", "example.com", "/a"),
        ("ws", "example.com", "/a?x"),
        ("1http", "example.com", "/a"),
        ("https", "example.com", "*"),
        ("https", "example.com", ""),
        ("https", "example.com", "?x"),
    ] {
        assert_absolute_same(scheme, authority, path_and_query);
    }
    let long = format!("/{}", "a".repeat(MAX_TARGET_LEN));
    assert_absolute_same("https", "example.com", &long);
    let at_limit = format!("/{}", "a".repeat(MAX_TARGET_LEN - "https://h".len() - 1));
    assert_absolute_same("https", "h", &at_limit);
    assert!(normalize_absolute("https", "h", &at_limit).is_ok());
}

#[test]
fn refuses_asterisk_and_authority_forms_as_denied() {
    check(&[
        ("*", err(AsteriskForm)),
        ("example.com:443", err(AuthorityForm)),
        ("localhost:8080", err(AuthorityForm)),
        ("127.0.0.1:5432", err(AuthorityForm)),
        ("[::1]:443", err(AuthorityForm)),
        ("**", err(UnrecognizedForm)),
        ("*?x", err(UnrecognizedForm)),
        ("example.com", err(UnrecognizedForm)),
        ("example.com:", err(UnrecognizedForm)),
        ("example.com:123456", err(UnrecognizedForm)),
        ("example.com:80x", err(UnrecognizedForm)),
        ("user@example.com:443", err(UnrecognizedForm)),
        ("a b:80", err(Space)),
        ("", err(Empty)),
        ("?x", err(UnrecognizedForm)),
        ("admin", err(UnrecognizedForm)),
        ("..", err(UnrecognizedForm)),
        ("\\admin", err(UnrecognizedForm)),
        ("\0", err(Nul)),
    ]);
    assert!(AsteriskForm.is_denied_form());
    assert!(AuthorityForm.is_denied_form());
    for malformed in [
        Empty,
        UnrecognizedForm,
        Nul,
        EncodedSlash,
        TooLong { len: 1 },
    ] {
        assert!(!malformed.is_denied_form(), "{malformed:?}");
    }
}

#[test]
fn caps_target_length() {
    let at_limit = format!("/{}", "a".repeat(MAX_TARGET_LEN - 1));
    assert_eq!(
        normalize(&at_limit).map(|t| t.path().as_str().len()),
        Ok(MAX_TARGET_LEN)
    );
    let over = format!("/{}", "a".repeat(MAX_TARGET_LEN));
    assert_eq!(
        normalize(&over),
        Err(TooLong {
            len: MAX_TARGET_LEN + 1
        })
    );
    let long_query = format!("/a?{}", "x".repeat(MAX_TARGET_LEN));
    assert_eq!(
        normalize(&long_query),
        Err(TooLong {
            len: MAX_TARGET_LEN + 3
        })
    );
    // The length check comes first, whatever else is wrong.
    let long_nul = format!("/\0{}", "a".repeat(MAX_TARGET_LEN));
    assert_eq!(
        normalize(&long_nul),
        Err(TooLong {
            len: MAX_TARGET_LEN + 2
        })
    );
    // Worst case within the cap: many dot segments and escapes.
    let repeats = MAX_TARGET_LEN / "/./a/../%41".len();
    let worst = "/./a/../%41".repeat(repeats);
    assert_eq!(
        normalize(&worst).map(|t| t.path().to_string()),
        Ok("/A".repeat(repeats))
    );
    let climbing = format!("{}/admin", "/..".repeat((MAX_TARGET_LEN - 6) / 3));
    assert_eq!(
        normalize(&climbing).map(|t| t.path().to_string()),
        Ok("/admin".to_owned())
    );
}

#[test]
fn exposes_path_and_query() {
    let target = normalize("/a/%62?q=%2e").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(target.path().as_str(), "/a/b");
    assert_eq!(target.path().as_ref(), "/a/b");
    assert_eq!(target.path().to_string(), "/a/b");
    assert_eq!(target.query(), Some("q=%2e"));
    let (path, query) = target.into_parts();
    assert_eq!((path.as_str(), query.as_deref()), ("/a/b", Some("q=%2e")));
}

#[test]
fn error_messages_are_lower_case_without_trailing_period() {
    let errors = [
        TooLong { len: 9000 },
        Empty,
        AsteriskForm,
        AuthorityForm,
        UnrecognizedForm,
        UnsupportedScheme,
        Userinfo,
        InvalidAuthority,
        Nul,
        ControlCharacter,
        EncodedControlCharacter,
        Space,
        NonAscii,
        Fragment,
        Backslash,
        EncodedBackslash,
        EncodedSlash,
        MalformedPercentEncoding,
    ];
    for error in errors {
        let message = error.to_string();
        assert!(
            message.starts_with(|c: char| c.is_ascii_lowercase()),
            "{message}"
        );
        assert!(!message.ends_with('.'), "{message}");
    }
}

#[test]
fn replays_fuzz_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/normalize");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let target = String::from_utf8_lossy(&bytes);
        if let Err(failure) = check_target(&target) {
            panic!("{}: {failure}", path.display());
        }
        replayed += 1;
    }
    assert!(
        replayed >= 20,
        "only {replayed} corpus inputs in {}",
        dir.display()
    );
}

/// Checks every property the module documentation promises for an accepted output.
fn assert_canonical(path: &str) -> Result<(), TestCaseError> {
    prop_assert!(path.starts_with('/'), "{path:?}");
    prop_assert!(!path.contains("//"), "{path:?}");
    prop_assert!(!path.contains("/./"), "{path:?}");
    prop_assert!(!path.contains("/../"), "{path:?}");
    prop_assert!(!path.ends_with("/."), "{path:?}");
    prop_assert!(!path.ends_with("/.."), "{path:?}");
    let upper = path.to_ascii_uppercase();
    prop_assert!(!upper.contains("%2F"), "{path:?}");
    prop_assert!(!upper.contains("%5C"), "{path:?}");
    prop_assert!(!upper.contains("%00"), "{path:?}");
    prop_assert!(
        !path
            .bytes()
            .any(|b| b.is_ascii_control() || b >= 0x80 || matches!(b, b' ' | b'#' | b'?' | b'\\')),
        "{path:?}"
    );
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        prop_assert!(
            hex.len() == 2
                && hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
            "escape at {i} in {path:?}"
        );
        // Unreserved characters are never left encoded.
        let decoded = decode_escape(bytes, i);
        prop_assert!(decoded.is_some_and(|d| !is_unreserved(d)), "{path:?}");
    }
    Ok(())
}

fn check_target(target: &str) -> Result<(), TestCaseError> {
    if let Ok(normalized) = normalize(target) {
        let path = normalized.path().as_str();
        assert_canonical(path)?;
        let again = normalize(path);
        prop_assert_eq!(again.as_ref().map(|t| t.path()), Ok(normalized.path()));
        prop_assert_eq!(again.as_ref().map(|t| t.query()), Ok(None));
        if let Some((_, query)) = target.split_once('?') {
            prop_assert_eq!(normalized.query(), Some(query));
        }
    }
    Ok(())
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_on_arbitrary_strings(s in "\\PC{0,64}") {
            check_target(&s)?;
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            check_target(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn path_like_targets_are_canonical_and_idempotent(
            s in "(/|\\.|\\.\\.|%2[eEfF]|%5[cC]|%4[1a]|%25|%[0-9a-fA-FuU]{0,2}|;|a|B|\\\\|\\?|#|~){0,24}"
        ) {
            check_target(&s)?;
            check_target(&format!("/{s}"))?;
            check_target(&format!("http://h{s}"))?;
        }

        #[test]
        fn absolute_form_parts_normalize_like_the_joined_target(
            scheme in "(https?|HTTPS|ftp|x)",
            authority in "[a-z0-9.:@%\\\\\\[\\] ]{0,12}",
            path in "(/|\\.|\\.\\.|%2[eEfF]|%[0-9a-fA-F]{0,2}|;|a|\\\\|\\?|#|\0| ){0,16}"
        ) {
            let path_and_query = format!("/{path}");
            let joined = format!("{scheme}://{authority}{path_and_query}");
            prop_assert_eq!(
                normalize_absolute(&scheme, &authority, &path_and_query),
                normalize(&joined),
                "{:?}", joined
            );
        }

        #[test]
        fn accepts_every_plain_segment_path(
            segments in proptest::collection::vec("[A-Za-z0-9._~;:@!$&'()*+,=-]{0,8}", 1..8)
        ) {
            let target = format!("/{}", segments.join("/"));
            prop_assert!(normalize(&target).is_ok(), "{target:?}");
            check_target(&target)?;
        }
    }
}
