//! Table tests of template parsing: valid forms, canonical forms and every rejection.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use super::*;

#[test]
fn parses_valid_templates() {
    let cases: &[(&str, &str)] = &[
        ("/", "/"),
        ("/api/v1/items", "/api/v1/items"),
        ("/api/v1/items/{id}", "/api/v1/items/{s3}"),
        ("/api/{version}/items/{id}", "/api/{s1}/items/{s3}"),
        ("/files/{*rest}", "/files/{*s1}"),
        ("/api/", "/api/"),
        ("/a;b/%20x/caf%C3%A9", "/a;b/%20x/caf%C3%A9"),
        ("/users/{_u1}/x", "/users/{s1}/x"),
    ];
    for (input, canonical) in cases {
        let t = Template::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(t.canonical(), *canonical, "{input}");
        assert_eq!(t.as_str(), *input);
    }
}

#[test]
fn rejects_invalid_templates() {
    let cases: &[(&str, &str)] = &[
        ("", "path template is empty"),
        ("api", "path template \"api\" must start with '/'"),
        ("/api/v1/items/{id", "unclosed '{' in \"/api/v1/items/{id\""),
        ("/api/id}", "unmatched '}' in \"/api/id}\""),
        (
            "/api/x{id}",
            "a parameter must be a whole segment (\"/{name}/\") in \"/api/x{id}\"",
        ),
        (
            "/api/{id}x",
            "a parameter must be a whole segment (\"/{name}/\") in \"/api/{id}x\"",
        ),
        (
            "/api/{}",
            "parameter name \"\" is not an identifier (letters, digits, '_') in \"/api/{}\"",
        ),
        (
            "/api/{1x}",
            "parameter name \"1x\" is not an identifier (letters, digits, '_') in \"/api/{1x}\"",
        ),
        (
            "/a/{id}/b/{id}",
            "duplicate parameter name \"id\" in \"/a/{id}/b/{id}\"",
        ),
        (
            "/a/{*rest}/b",
            "catch-all {*rest} must be the last segment in \"/a/{*rest}/b\"",
        ),
        (
            "/a/*",
            "'*' matches only a literal '*' in \"/a/*\"; use {*rest} to match the remaining segments",
        ),
        (
            "/a//b",
            "\"/a//b\" never matches: normalized paths never contain \"//\"",
        ),
        (
            "/a/./b",
            "\"/a/./b\" never matches: normalized paths never contain \".\" or \"..\" segments",
        ),
        (
            "/a/../b",
            "\"/a/../b\" never matches: normalized paths never contain \".\" or \"..\" segments",
        ),
        (
            "/a/.",
            "\"/a/.\" never matches: normalized paths never contain \".\" or \"..\" segments",
        ),
        (
            "/a%2Fb",
            "\"/a%2Fb\" never matches: requests with an encoded '/' (%2F) are rejected",
        ),
        (
            "/a%5cb",
            "\"/a%5cb\" never matches: requests with a backslash ('\\' or %5C) are rejected",
        ),
        (
            "/a\\b",
            "\"/a\\\\b\" never matches: requests with a backslash ('\\' or %5C) are rejected",
        ),
        (
            "/a\0",
            "\"/a\\0\" never matches: requests with control characters are rejected",
        ),
        (
            "/a#b",
            "\"/a#b\" never matches: requests with '#' are rejected",
        ),
        (
            "/a?b=1",
            "\"/a?b=1\" never matches: the query ('?…') is not part of the matched path",
        ),
        (
            "/a%3a",
            "\"/a%3a\" never matches: normalized paths use upper-case percent-encoding (write %3A)",
        ),
        (
            "/%41pi",
            "\"/%41pi\" never matches: normalization decodes %41 to 'A' (write 'A')",
        ),
        ("/a%zz", "malformed percent-encoding in \"/a%zz\""),
        ("/a%4", "malformed percent-encoding in \"/a%4\""),
        (
            "/a b",
            "character ' ' must be percent-encoded in \"/a b\" (write %20)",
        ),
        (
            "/café",
            "character 'é' must be percent-encoded in \"/café\" (write %C3%A9)",
        ),
        (
            "/a|b",
            "character '|' must be percent-encoded in \"/a|b\" (write %7C)",
        ),
        // A character error wins over a segment error standing before it.
        (
            "/a//b|c",
            "character '|' must be percent-encoded in \"/a//b|c\" (write %7C)",
        ),
        (
            "/{id/x%2F",
            "\"/{id/x%2F\" never matches: requests with an encoded '/' (%2F) are rejected",
        ),
        (
            "/a/{id}/%20/{*rest}/x",
            "catch-all {*rest} must be the last segment in \"/a/{id}/%20/{*rest}/x\"",
        ),
    ];
    for (input, message) in cases {
        match Template::parse(input) {
            Ok(t) => panic!("{input:?} parsed as {t:?}"),
            Err(e) => assert_eq!(e.to_string(), *message, "{input:?}"),
        }
    }
}

#[test]
fn literal_prefix_stops_at_first_parameter() {
    let t = Template::parse("/api/v1/items/{id}/tags").unwrap();
    assert_eq!(t.literal_prefix(), "/api/v1/items/");
    let t = Template::parse("/api/v1/items").unwrap();
    assert_eq!(t.literal_prefix(), "/api/v1/items");
}

#[test]
fn templates_differing_in_param_names_share_canonical_form() {
    let a = Template::parse("/items/{id}/x/{*rest}").unwrap();
    let b = Template::parse("/items/{item}/x/{*tail}").unwrap();
    assert_eq!(a.canonical(), b.canonical());
}
