//! Fuzz target for SPIFFE IDs and principal patterns: no panic; `Display` round-trips; a
//! pattern matches what it names and covers itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_config::spiffe::{MAX_ID_LEN, PrincipalPattern, SpiffeId};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(input) {
        assert!(input.len() <= MAX_ID_LEN);
        assert_eq!(id.to_string(), input);
        assert_eq!(SpiffeId::parse(&id.to_string()).as_ref(), Ok(&id));
        assert_eq!(
            format!("spiffe://{}{}", id.trust_domain(), id.path()),
            input
        );
        assert!(!id.path().contains("//") && !id.path().ends_with('/'));
        assert!(!id.trust_domain().bytes().any(|b| b.is_ascii_uppercase()));
        if let (Some(ns), Some(sa)) = (id.namespace(), id.service_account()) {
            assert_eq!(id.path(), format!("/ns/{ns}/sa/{sa}"));
        }
        let exact = PrincipalPattern::Exact(id.clone());
        assert!(exact.matches(&id));
        let domain = PrincipalPattern::TrustDomain(id.trust_domain().to_owned());
        assert!(domain.matches(&id) && domain.covers(&exact));
    }
    if let Ok(pattern) = PrincipalPattern::parse(input) {
        assert_eq!(pattern.to_string(), input);
        assert_eq!(
            PrincipalPattern::parse(&pattern.to_string()).as_ref(),
            Ok(&pattern)
        );
        assert!(pattern.covers(&pattern));
        if let PrincipalPattern::Exact(id) = &pattern {
            assert!(pattern.matches(id));
        }
    }
});
