//! Fuzz target for policy documents: arbitrary text through `Policy::from_yaml` (YAML parsing,
//! validation with locations, compilation); no panic, every diagnostic located in the input,
//! and a compiled policy answers `decide` for a few requests without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_config::{LoadOptions, Peer, Policy, SpiffeId, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = match Policy::from_yaml("fuzz.yaml", text, &LoadOptions::default()) {
        Ok(loaded) => loaded,
        Err(error) => {
            assert!(!error.diagnostics.is_empty(), "error without a diagnostic");
            for diagnostic in &error.diagnostics {
                assert_eq!(diagnostic.file, "fuzz.yaml");
                // Rendering must not panic either.
                let _ = diagnostic.to_string();
            }
            return;
        }
    };
    let policy = loaded.policy;
    let peers = [
        Peer::Unauthenticated,
        SpiffeId::parse("spiffe://cluster.local/ns/web/sa/frontend")
            .map_or(Peer::Unauthenticated, Peer::Spiffe),
    ];
    for target in ["/", "/api/v1/items/42", "/api/v1/orders", "/a/b/c/d"] {
        let Ok(target) = normalize(target) else {
            continue;
        };
        for method in ["GET", "POST", "DELETE"] {
            for peer in &peers {
                let decision = policy.decide(method, target.path(), peer);
                let _ = decision.to_string();
                assert_eq!(
                    decision.is_allowed(),
                    matches!(decision, palisade_config::Decision::Allow(_))
                );
            }
        }
    }
    for peer in &peers {
        let _ = policy.authorize_peer(peer).to_string();
    }
});
