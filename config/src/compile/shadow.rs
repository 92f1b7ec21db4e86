//! Warnings about rules that can never decide anything.
//!
//! Takes the validated rules and the built trie and reports, as warnings, rules shadowed by an
//! earlier rule (its principals, methods and routes all covered by that rule, so the earlier
//! one always answers first; an enforced rule is not shadowed by an audit rule, since it
//! makes their shared routes enforced), identity-only rules in a policy without opaque ports,
//! and a `mode` on an identity-only rule (it has no effect). Only
//! rules sharing a route with the shadowed rule are compared, so this stays cheap at 10 000
//! rules.

use super::rules::CompiledRule;
use crate::location::Diagnostic;
use crate::policy::{Inner, Mode};

/// `rules` have been built into `inner`: each path knows its route, and the principals are in
/// `inner.rules`.
pub(super) fn warn(
    rules: &[CompiledRule<'_>],
    inner: &Inner,
    has_opaque_ports: bool,
    warnings: &mut Vec<Diagnostic>,
) {
    let principals = |i: usize| &inner.rules[i].principals;
    for (b, rule) in rules.iter().enumerate() {
        let shadowing = match &rule.to {
            None => inner
                .identity_rules
                .iter()
                .take_while(|&&a| a < b)
                .find(|&&a| principals(a).covers(principals(b)))
                .copied(),
            Some(to) => {
                let first = to.iter().flat_map(|t| &t.paths).find_map(|p| p.route);
                let candidates = first.map_or(&[][..], |r| &inner.routes[r].entries[..]);
                candidates
                    .iter()
                    .map(|e| e.rule)
                    // an enforced rule on audit rules' routes enforces them: not redundant
                    .filter(|&a| {
                        a < b && !(rule.mode == Mode::Enforce && rules[a].mode == Mode::Audit)
                    })
                    .find(|&a| {
                        principals(a).covers(principals(b))
                            && to.iter().all(|entry| {
                                entry.paths.iter().all(|path| {
                                    path.route.is_some_and(|r| {
                                        inner.routes[r].entries.iter().any(|e| {
                                            e.rule == a && e.methods.covers(&entry.methods)
                                        })
                                    })
                                })
                            })
                    })
            }
        };
        if let Some(a) = shadowing {
            let earlier = &rules[a].name;
            warnings.push(rule.name.origin.warning(format!(
                "rule {:?} is shadowed by earlier rule {:?} ({}): every peer, method and route it allows is already allowed there",
                rule.name.value,
                earlier.value,
                earlier.origin.place()
            )));
        }
        if let (None, Some(mode)) = (&rule.to, rule.written_mode) {
            warnings.push(mode.warning(format!(
                "rule {:?} has no `to`, so its `mode` has no effect: opaque-port denials follow `spec.mode`",
                rule.name.value
            )));
        }
        if rule.to.is_none() && !has_opaque_ports {
            warnings.push(rule.name.origin.warning(format!(
                "rule {:?} has no `to`, so it only applies to opaque ports, but the policy lists no `opaquePorts`",
                rule.name.value
            )));
        }
    }
}
