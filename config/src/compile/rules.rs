//! Validating what rules and ports mean: the semantic half of reading a policy.
//!
//! Takes the decoded [`RuleDoc`]s and produces [`CompiledRule`]s (methods as tokens, templates
//! parsed, principals parsed, the effective mode) or located errors: duplicate rule names,
//! rules without principals, `to: []`, empty `methods`/`paths`, `unauthenticated` under
//! `mtls: strict`, and warnings for principals outside the configured trust domain.

use std::collections::HashMap;
use std::sync::Arc;

use crate::compile::LoadOptions;
use crate::document::{Document, ModeDoc, RuleDoc, ToDoc};
use crate::location::{Diagnostic, Located, Origin};
use crate::policy::{Methods, Mode, MtlsMode, Principals};
use crate::spiffe::PrincipalPattern;
use crate::template::TemplateRef;

/// The principal that names plaintext peers under `mtls: permissive`.
pub(crate) const UNAUTHENTICATED: &str = "unauthenticated";

/// A rule whose values have been validated. It borrows names and origins from the documents
/// rather than copying them: compiling 10 000 rules is mostly allocation otherwise.
pub(crate) struct CompiledRule<'d> {
    pub(crate) name: &'d Located<String>,
    /// Moved into the policy's rule table when the trie is built.
    pub(crate) principals: Principals,
    /// `None`: identity-only rule (opaque ports).
    pub(crate) to: Option<Vec<CompiledTo<'d>>>,
    /// The rule's `mode`, or its document's `spec.mode` when it has none.
    pub(crate) mode: Mode,
    /// Where the rule's own `mode` is written, if it has one.
    pub(crate) written_mode: Option<&'d Origin>,
}

/// The method lists built so far, at most [`MethodLists::KEPT`]: policies repeat a few lists
/// (`[GET]`, `[GET, POST]`), and each `to` reuses an equal one instead of allocating its own.
#[derive(Default)]
struct MethodLists(Vec<Arc<[Box<str>]>>);

pub(crate) struct CompiledTo<'d> {
    pub(crate) methods: Methods,
    pub(crate) paths: Vec<CompiledPath<'d>>,
    pub(crate) upgrade: bool,
}

pub(crate) struct CompiledPath<'d> {
    /// Borrows the document's text.
    pub(crate) template: TemplateRef<'d>,
    pub(crate) origin: &'d Origin,
    /// The trie route this template landed on; `None` until built, or if it conflicted.
    pub(crate) route: Option<usize>,
}

/// Validates every rule of every document, in order.
pub(crate) fn validate<'d>(
    documents: &'d [Document],
    mtls: MtlsMode,
    opts: &LoadOptions,
    diagnostics: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<CompiledRule<'d>> {
    let count = documents.iter().map(|d| d.spec.rules.len()).sum();
    let mut seen: HashMap<&str, &Origin> = HashMap::with_capacity(count);
    let mut rules = Vec::with_capacity(count);
    let rules_with_mode = documents.iter().flat_map(|d| {
        let fallback = mode_of(d.spec.mode.as_ref());
        d.spec.rules.iter().map(move |rule| (rule, fallback))
    });
    let mut method_lists = MethodLists::default();
    for (rule, fallback) in rules_with_mode {
        let name = &rule.name;
        if let Some(first) = seen.get(name.value.as_str()) {
            diagnostics.push(name.origin.error(format!(
                "duplicate rule name {:?} (first defined at {})",
                name.value,
                first.place()
            )));
        } else {
            seen.insert(&name.value, &name.origin);
        }
        let principals = principals(rule, mtls, opts, diagnostics, warnings);
        let to = rule.to.as_ref().map(|to| {
            if to.value.is_empty() {
                diagnostics.push(to.origin.error(
                    "`to` is empty: list what the rule allows, or leave `to` out for an identity-only rule (opaque ports)",
                ));
            }
            to.value
                .iter()
                .map(|t| to_entry(t, &mut method_lists, diagnostics))
                .collect()
        });
        rules.push(CompiledRule {
            name,
            principals,
            to,
            mode: rule.mode.as_ref().map_or(fallback, |m| mode_of(Some(m))),
            written_mode: rule.mode.as_ref().map(|m| &m.origin),
        });
    }
    rules
}

/// A written `mode`; absent means enforce.
pub(crate) fn mode_of(mode: Option<&Located<ModeDoc>>) -> Mode {
    match mode.map(|m| m.value) {
        Some(ModeDoc::Audit) => Mode::Audit,
        Some(ModeDoc::Enforce) | None => Mode::Enforce,
    }
}

fn principals(
    rule: &RuleDoc,
    mtls: MtlsMode,
    opts: &LoadOptions,
    diagnostics: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Principals {
    let mut out = Principals {
        unauthenticated: false,
        patterns: Vec::with_capacity(rule.principals.value.len()),
    };
    if rule.principals.value.is_empty() {
        diagnostics.push(
            rule.principals
                .origin
                .error("`principals` is empty: a rule must name at least one principal"),
        );
    }
    for p in &rule.principals.value {
        if p.value == UNAUTHENTICATED {
            if mtls == MtlsMode::Strict {
                diagnostics.push(p.origin.error(
                    "`unauthenticated` needs `spec.mtls: permissive`; under strict mtls every peer has a certificate",
                ));
            }
            out.unauthenticated = true;
            continue;
        }
        match PrincipalPattern::parse(&p.value) {
            Ok(pattern) => {
                if let Some(td) = &opts.trust_domain
                    && pattern.trust_domain() != td
                {
                    warnings.push(p.origin.warning(format!(
                        "principal {:?} is outside the trust domain {td:?}; such peers cannot connect",
                        p.value
                    )));
                }
                out.patterns.push(pattern);
            }
            Err(e) => diagnostics.push(p.origin.error(format!(
                "invalid principal {:?}: {e} (expected a SPIFFE ID, spiffe://<td>/ns/<ns>/*, spiffe://<td>/* or `unauthenticated`)",
                p.value
            ))),
        }
    }
    out
}

fn to_entry<'d>(
    to: &'d ToDoc,
    method_lists: &mut MethodLists,
    diagnostics: &mut Vec<Diagnostic>,
) -> CompiledTo<'d> {
    if to.methods.value.is_empty() {
        diagnostics.push(
            to.methods
                .origin
                .error("`methods` is empty: list HTTP methods or \"*\""),
        );
    }
    let mut any = false;
    for m in &to.methods.value {
        if m.value == "*" {
            any = true;
        } else if !is_token(&m.value) {
            diagnostics.push(m.origin.error(format!(
                "invalid method {:?}: a method is an HTTP token (RFC 9110) or \"*\"",
                m.value
            )));
        } else {
            if m.value.bytes().any(|b| b.is_ascii_lowercase()) {
                diagnostics.push(m.origin.error(format!(
                    "method {:?} is not upper-case; methods are case-sensitive (did you mean {:?}?)",
                    m.value,
                    m.value.to_ascii_uppercase()
                )));
            }
        }
    }
    if to.paths.value.is_empty() {
        diagnostics.push(
            to.paths
                .origin
                .error("`paths` is empty: list at least one path template"),
        );
    }
    let mut paths = Vec::with_capacity(to.paths.value.len());
    for p in &to.paths.value {
        match TemplateRef::parse(&p.value) {
            Ok(template) => paths.push(CompiledPath {
                template,
                origin: &p.origin,
                route: None,
            }),
            Err(e) => diagnostics.push(p.origin.error(e.to_string())),
        }
    }
    let upgrade = match &to.upgrade {
        Some(u) if u.value == "websocket" => true,
        Some(u) => {
            diagnostics.push(u.origin.error(format!(
                "unknown upgrade {:?} (expected websocket)",
                u.value
            )));
            false
        }
        None => false,
    };
    CompiledTo {
        methods: if any {
            Methods::Any
        } else {
            Methods::List(method_lists.get(to))
        },
        paths,
        upgrade,
    }
}

// === impl MethodLists ===

impl MethodLists {
    /// How many distinct lists are kept for reuse, so that a lookup stays a short scan.
    const KEPT: usize = 16;

    /// The methods of `to` that are tokens (`*` and invalid ones left out, as in the
    /// policy), in order: a kept equal list, or a new one.
    fn get(&mut self, to: &ToDoc) -> Arc<[Box<str>]> {
        let written = || {
            to.methods
                .value
                .iter()
                .map(|m| m.value.as_str())
                .filter(|m| *m != "*" && is_token(m))
        };
        if let Some(kept) = self.0.iter().find(|l| l.iter().map(|m| &**m).eq(written())) {
            return Arc::clone(kept);
        }
        let list: Arc<[Box<str>]> = written().map(Box::from).collect();
        if self.0.len() < Self::KEPT {
            self.0.push(Arc::clone(&list));
        }
        list
    }
}

/// Checks `spec.opaquePorts` of every document: 1..=65535, no duplicates.
pub(crate) fn opaque_ports(documents: &[Document], diagnostics: &mut Vec<Diagnostic>) -> Vec<u16> {
    let mut seen: HashMap<u16, &Origin> = HashMap::new();
    for port in documents.iter().flat_map(|d| &d.spec.opaque_ports) {
        let Some(p) = u16::try_from(port.value).ok().filter(|p| *p != 0) else {
            diagnostics.push(
                port.origin
                    .error(format!("port {} is out of range (1-65535)", port.value)),
            );
            continue;
        };
        if let Some(first) = seen.get(&p) {
            diagnostics.push(port.origin.error(format!(
                "duplicate opaque port {p} (first listed at {})",
                first.place()
            )));
        } else {
            seen.insert(p, &port.origin);
        }
    }
    let mut ports: Vec<u16> = seen.into_keys().collect();
    ports.sort_unstable();
    ports
}

/// RFC 9110 `token`: one or more `tchar`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_rfc_9110() {
        for ok in ["GET", "PURGE", "M-SEARCH", "x!#$%&'*+-.^_`|~9"] {
            assert!(is_token(ok), "{ok}");
        }
        for bad in ["", "G ET", "GET/", "(GET)", "GÉT", "a:b", "\"GET\""] {
            assert!(!is_token(bad), "{bad}");
        }
    }
}
