//! Table tests for SPIFFE ID and principal pattern parsing.

use super::*;

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn pattern(s: &str) -> PrincipalPattern {
    PrincipalPattern::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

#[test]
fn accepts_valid_ids() {
    // (input, trust domain, path)
    let cases = [
        (
            "spiffe://cluster.local/ns/web/sa/frontend",
            "cluster.local",
            "/ns/web/sa/frontend",
        ),
        ("spiffe://td/a", "td", "/a"),
        ("spiffe://example.org/workload", "example.org", "/workload"),
        (
            "spiffe://cluster.local.evil.com/ns/web/sa/frontend",
            "cluster.local.evil.com",
            "/ns/web/sa/frontend",
        ),
        (
            "spiffe://my_td-1.example/A/B.c/d-e/f_g",
            "my_td-1.example",
            "/A/B.c/d-e/f_g",
        ),
        ("spiffe://td/...", "td", "/..."),
        ("spiffe://td/.a/a./..b", "td", "/.a/a./..b"),
        ("spiffe://0/9", "0", "/9"),
        ("spiffe://td/UPPER/Case", "td", "/UPPER/Case"),
        ("spiffe://td/ns/web/sa", "td", "/ns/web/sa"),
        ("spiffe://td/-/_", "td", "/-/_"),
    ];
    for (input, trust_domain, path) in cases {
        let parsed = id(input);
        assert_eq!(parsed.as_str(), input);
        assert_eq!(parsed.to_string(), input);
        assert_eq!(parsed.trust_domain(), trust_domain, "{input}");
        assert_eq!(parsed.path(), path, "{input}");
        assert_eq!(input.parse::<SpiffeId>().as_ref(), Ok(&parsed));
    }
}

#[test]
fn rejects_invalid_ids() {
    use SpiffeIdError::*;
    let long_path = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN));
    let long_td = format!("spiffe://{}/a", "a".repeat(MAX_TRUST_DOMAIN_LEN + 1));
    let cases: Vec<(&str, SpiffeIdError)> = vec![
        ("", Empty),
        (
            &long_path,
            TooLong {
                len: MAX_ID_LEN + 12,
            },
        ),
        (
            &long_td,
            TrustDomainTooLong {
                len: MAX_TRUST_DOMAIN_LEN + 1,
            },
        ),
        ("SPIFFE://td/a", Scheme),
        ("Spiffe://td/a", Scheme),
        ("spiffe:/td/a", Scheme),
        ("spiffe:td/a", Scheme),
        ("https://td/a", Scheme),
        (" spiffe://td/a", Scheme),
        ("spiffe://", MissingTrustDomain),
        ("spiffe:///a", MissingTrustDomain),
        ("spiffe://td", MissingPath),
        ("spiffe://td/", MissingPath),
        ("spiffe://cluster.local@evil/ns/web/sa/frontend", Userinfo),
        ("spiffe://user:pass@td/a", Port),
        ("spiffe://td:8443/a", Port),
        (
            "spiffe://Cluster.local/a",
            UpperCaseTrustDomain { found: 'C' },
        ),
        (
            "spiffe://CLUSTER.LOCAL/a",
            UpperCaseTrustDomain { found: 'C' },
        ),
        ("spiffe://td?x=1", Query),
        ("spiffe://td/a?x=1", Query),
        ("spiffe://td/a#frag", Fragment),
        ("spiffe://td#frag", Fragment),
        ("spiffe://td/a%2Fb", PercentEncoded),
        ("spiffe://t%64/a", PercentEncoded),
        ("spiffe://td/a//b", EmptySegment),
        ("spiffe://td//a", EmptySegment),
        ("spiffe://td/a/", TrailingSlash),
        ("spiffe://td/a/b/", TrailingSlash),
        ("spiffe://td/.", DotSegment),
        ("spiffe://td/..", DotSegment),
        ("spiffe://td/a/./b", DotSegment),
        ("spiffe://td/a/../b", DotSegment),
        ("spiffe://td/a b", PathChar { found: ' ' }),
        ("spiffe://td/a*", PathChar { found: '*' }),
        ("spiffe://td/*", PathChar { found: '*' }),
        ("spiffe://td/a:b", PathChar { found: ':' }),
        ("spiffe://td/a@b", PathChar { found: '@' }),
        ("spiffe://td/a\\b", PathChar { found: '\\' }),
        ("spiffe://td/a\0", PathChar { found: '\0' }),
        ("spiffe://td/caf\u{e9}", PathChar { found: '\u{e9}' }),
        ("spiffe://td/a;b", PathChar { found: ';' }),
        ("spiffe://t d/a", TrustDomainChar { found: ' ' }),
        ("spiffe://t*d/a", TrustDomainChar { found: '*' }),
        ("spiffe://[::1]/a", TrustDomainChar { found: '[' }),
        ("spiffe://t\u{e9}/a", TrustDomainChar { found: '\u{e9}' }),
        ("spiffe://td\\x/a", TrustDomainChar { found: '\\' }),
    ];
    for (input, expected) in cases {
        assert_eq!(SpiffeId::parse(input), Err(expected), "{input:?}");
    }
}

#[test]
fn accepts_ids_at_the_length_limits() {
    let max = format!(
        "spiffe://td/{}",
        "a".repeat(MAX_ID_LEN - "spiffe://td/".len())
    );
    assert_eq!(id(&max).as_str().len(), MAX_ID_LEN);
    let td = "a".repeat(MAX_TRUST_DOMAIN_LEN);
    assert_eq!(id(&format!("spiffe://{td}/a")).trust_domain(), td);
}

#[test]
fn reads_kubernetes_namespace_and_service_account() {
    let cases = [
        (
            "spiffe://td/ns/web/sa/frontend",
            Some("web"),
            Some("frontend"),
        ),
        ("spiffe://td/ns/web/sa", None, None),
        ("spiffe://td/ns/web/sa/frontend/extra", None, None),
        ("spiffe://td/ns/web/x/frontend", None, None),
        ("spiffe://td/NS/web/sa/frontend", None, None),
        ("spiffe://td/workload", None, None),
    ];
    for (input, namespace, service_account) in cases {
        let parsed = id(input);
        assert_eq!(parsed.namespace(), namespace, "{input}");
        assert_eq!(parsed.service_account(), service_account, "{input}");
    }
}

#[test]
fn parses_principal_patterns() {
    assert_eq!(
        pattern("spiffe://cluster.local/ns/web/sa/frontend"),
        PrincipalPattern::Exact(id("spiffe://cluster.local/ns/web/sa/frontend"))
    );
    assert_eq!(
        pattern("spiffe://cluster.local/ns/ops/*"),
        PrincipalPattern::Namespace {
            trust_domain: "cluster.local".into(),
            namespace: "ops".into()
        }
    );
    assert_eq!(
        pattern("spiffe://cluster.local/*"),
        PrincipalPattern::TrustDomain("cluster.local".into())
    );
    for input in [
        "spiffe://cluster.local/ns/web/sa/frontend",
        "spiffe://cluster.local/ns/ops/*",
        "spiffe://cluster.local/*",
        "spiffe://td/workload",
    ] {
        assert_eq!(pattern(input).to_string(), input);
        assert_eq!(input.parse::<PrincipalPattern>(), Ok(pattern(input)));
    }
}

#[test]
fn rejects_invalid_principal_patterns() {
    use SpiffeIdError::*;
    let cases = [
        ("*", Wildcard),
        ("spiffe://*", Wildcard),
        ("spiffe://*/a", Wildcard),
        ("spiffe://td/**", Wildcard),
        ("spiffe://td/a*", Wildcard),
        ("spiffe://td/*/a", Wildcard),
        ("spiffe://td/*/*", Wildcard),
        ("spiffe://td/ns/*", Wildcard),
        ("spiffe://td/ns/web/sa/*", Wildcard),
        ("spiffe://td/ns/web/sa/*/x", Wildcard),
        ("spiffe://td/ns/we*/*", Wildcard),
        ("spiffe://td/foo/*", Wildcard),
        ("spiffe://td/a/b/*", Wildcard),
        ("spiffe://*.td/*", Wildcard),
        ("SPIFFE://td/*", Scheme),
        ("spiffe:///*", MissingTrustDomain),
        ("spiffe://TD/*", UpperCaseTrustDomain { found: 'T' }),
        ("spiffe://td:1/*", Port),
        ("spiffe://u@td/*", Userinfo),
        ("spiffe://td/ns/WEB web/*", PathChar { found: ' ' }),
        ("spiffe://td/ns/../*", DotSegment),
        ("spiffe://td?/*", Query),
        ("spiffe://td/ns/web/sa/", TrailingSlash),
        ("unauthenticated", Scheme),
    ];
    for (input, expected) in cases {
        assert_eq!(PrincipalPattern::parse(input), Err(expected), "{input:?}");
    }
}

#[test]
fn wildcard_error_says_where_star_is_allowed() {
    let message = SpiffeIdError::Wildcard.to_string();
    assert!(message.contains("spiffe://<trust-domain>/*"), "{message}");
    assert!(
        message.contains("spiffe://<trust-domain>/ns/<namespace>/*"),
        "{message}"
    );
}

#[test]
fn matches_by_exact_namespace_and_trust_domain() {
    let frontend = id("spiffe://cluster.local/ns/web/sa/frontend");
    let web_other = id("spiffe://cluster.local/ns/web/sa/other");
    let web_deep = id("spiffe://cluster.local/ns/web/x/y/z");
    let web_admin = id("spiffe://cluster.local/ns/web-admin/sa/frontend");
    let web_bare = id("spiffe://cluster.local/ns/web");
    let evil = id("spiffe://cluster.local.evil.com/ns/web/sa/frontend");
    let evil_prefix = id("spiffe://evilcluster.local/ns/web/sa/frontend");
    let other_form = id("spiffe://cluster.local/web/sa/frontend");

    // (pattern, [frontend, web_other, web_deep, web_admin, web_bare, evil, evil_prefix, other_form])
    let cases = [
        (
            "spiffe://cluster.local/ns/web/sa/frontend",
            [true, false, false, false, false, false, false, false],
        ),
        (
            "spiffe://cluster.local/ns/web/*",
            [true, true, true, false, false, false, false, false],
        ),
        (
            "spiffe://cluster.local/*",
            [true, true, true, true, true, false, false, true],
        ),
        (
            "spiffe://cluster.local.evil.com/*",
            [false, false, false, false, false, true, false, false],
        ),
    ];
    let ids = [
        &frontend,
        &web_other,
        &web_deep,
        &web_admin,
        &web_bare,
        &evil,
        &evil_prefix,
        &other_form,
    ];
    for (pattern_str, expected) in cases {
        let p = pattern(pattern_str);
        for (candidate, expect) in ids.iter().zip(expected) {
            assert_eq!(p.matches(candidate), expect, "{p} vs {candidate}");
        }
    }
}

#[test]
fn covers_follows_matches() {
    let patterns = [
        "spiffe://td/*",
        "spiffe://td/ns/web/*",
        "spiffe://td/ns/ops/*",
        "spiffe://td/ns/web/sa/frontend",
        "spiffe://td/ns/web/sa/backend",
        "spiffe://td/ns/ops/sa/frontend",
        "spiffe://td/other",
        "spiffe://other/*",
        "spiffe://other/ns/web/*",
        "spiffe://other/ns/web/sa/frontend",
    ]
    .map(pattern);
    // covers(a, b) must hold exactly when every ID b matches is matched by a.
    let expected = |a: &str, b: &str| -> bool {
        match (a, b) {
            _ if a == b => true,
            ("spiffe://td/*", b) => b.starts_with("spiffe://td/"),
            ("spiffe://other/*", b) => b.starts_with("spiffe://other/"),
            ("spiffe://td/ns/web/*", b) => b.starts_with("spiffe://td/ns/web/"),
            ("spiffe://td/ns/ops/*", b) => b.starts_with("spiffe://td/ns/ops/"),
            ("spiffe://other/ns/web/*", b) => b.starts_with("spiffe://other/ns/web/"),
            _ => false,
        }
    };
    for a in &patterns {
        for b in &patterns {
            let (a_str, b_str) = (a.to_string(), b.to_string());
            assert_eq!(a.covers(b), expected(&a_str, &b_str), "{a} covers {b}");
        }
    }
    assert_eq!(pattern("spiffe://td/ns/web/*").trust_domain(), "td");
    assert_eq!(pattern("spiffe://td/*").trust_domain(), "td");
    assert_eq!(pattern("spiffe://td/x").trust_domain(), "td");
}

#[test]
fn error_messages_are_lower_case_without_trailing_period() {
    let errors = [
        SpiffeIdError::Empty,
        SpiffeIdError::Scheme,
        SpiffeIdError::Userinfo,
        SpiffeIdError::UpperCaseTrustDomain { found: 'A' },
        SpiffeIdError::Wildcard,
        SpiffeIdError::MissingPath,
    ];
    for error in errors {
        let message = error.to_string();
        assert!(!message.ends_with('.'), "{message}");
        let first_word = message.split(' ').next().unwrap_or_default();
        assert!(
            first_word == "SPIFFE" || !first_word.starts_with(|c: char| c.is_ascii_uppercase()),
            "{message}"
        );
    }
}

#[test]
fn replays_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/spiffe");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let input = String::from_utf8_lossy(&bytes);
        if let Ok(parsed) = SpiffeId::parse(&input) {
            assert_eq!(parsed.as_str(), input, "{}", path.display());
            assert!(PrincipalPattern::Exact(parsed.clone()).matches(&parsed));
        }
        if let Ok(parsed) = PrincipalPattern::parse(&input) {
            assert_eq!(parsed.to_string(), input, "{}", path.display());
            assert!(parsed.covers(&parsed), "{}", path.display());
        }
        replayed += 1;
    }
    assert!(
        replayed >= 10,
        "only {replayed} corpus inputs in {}",
        dir.display()
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(parsed) = SpiffeId::parse(&s) {
                prop_assert_eq!(parsed.to_string(), s.clone());
                prop_assert_eq!(SpiffeId::parse(&parsed.to_string()), Ok(parsed));
            }
            if let Ok(parsed) = PrincipalPattern::parse(&s) {
                prop_assert_eq!(PrincipalPattern::parse(&parsed.to_string()), Ok(parsed));
            }
        }

        #[test]
        fn spiffe_like_strings_never_panic_and_round_trip(s in "spiffe://[a-zA-Z0-9.:@*/%?# _-]{0,40}") {
            if let Ok(parsed) = SpiffeId::parse(&s) {
                prop_assert_eq!(parsed.as_str(), s.as_str());
                prop_assert!(!parsed.path().contains("//"));
            }
            if let Ok(parsed) = PrincipalPattern::parse(&s) {
                prop_assert_eq!(parsed.to_string(), s.clone());
            }
        }

        #[test]
        fn well_formed_ids_parse(
            td in "[a-z0-9._-]{1,20}",
            segments in proptest::collection::vec("[A-Za-z0-9._-]{1,10}", 1..6),
        ) {
            let dotted = segments.iter().any(|s| s == "." || s == "..");
            let input = format!("spiffe://{td}/{}", segments.join("/"));
            prop_assert_eq!(SpiffeId::parse(&input).is_ok(), !dotted);
        }
    }
}
