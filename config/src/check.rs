//! Check: runs the `tests:` expectations written next to a policy.
//!
//! Takes the validated [`TestCase`]s of a [`Loaded`] policy, normalizes each request target
//! with [`normalize`](crate::normalize()) exactly as the proxy does, asks
//! [`Policy::decide`](crate::Policy::decide) and passes on a [`TestFailure`] for every
//! expectation that does not hold, with the decision's reason and the test's location.
//! `palisade check` prints them.

use std::fmt;

use crate::compile::Loaded;
use crate::compile::rules::{CompiledRule, UNAUTHENTICATED, is_token};
use crate::document::{Document, ExpectDoc, did_you_mean};
use crate::location::{Diagnostic, Origin};
use crate::normalize::normalize;
use crate::policy::Peer;
use crate::spiffe::SpiffeId;

/// One validated entry of `tests:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    /// Where the test was written (`tests[2]`).
    pub origin: Origin,
    /// `peer`.
    pub peer: Peer,
    /// The method of `request`.
    pub method: String,
    /// The request target of `request`, as written (normalized when the test runs).
    pub target: String,
    /// `expect`.
    pub expect: Expect,
    /// `rule`: the rule expected to allow (or, for `deny`, to be named as nearest).
    pub rule: Option<String>,
}

/// The expected outcome of a [`TestCase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request must be allowed.
    Allow,
    /// The request must be denied.
    Deny,
}

/// A `tests:` expectation that does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestFailure {
    /// The test that failed.
    pub test: TestCase,
    /// What happened instead: the decision's sentence, or why the target was rejected.
    pub outcome: String,
}

/// Runs every test of `loaded` against its policy; returns the failures (empty: all passed).
pub fn run_tests(loaded: &Loaded) -> Vec<TestFailure> {
    loaded
        .tests
        .iter()
        .filter_map(|test| {
            let outcome = run(loaded, test);
            outcome.err().map(|outcome| TestFailure {
                test: test.clone(),
                outcome,
            })
        })
        .collect()
}

fn run(loaded: &Loaded, test: &TestCase) -> Result<(), String> {
    let (allowed, rule, outcome) = match normalize(&test.target) {
        Ok(target) => {
            let decision = loaded
                .policy
                .decide(&test.method, target.path(), &test.peer);
            let rule = decision.rule().map(str::to_owned);
            (decision.is_allowed(), rule, decision.to_string())
        }
        Err(e) => (false, None, format!("denied: request target rejected: {e}")),
    };
    let expected = test.expect == Expect::Allow;
    if allowed != expected {
        return Err(outcome);
    }
    match &test.rule {
        Some(want) if rule.as_deref() != Some(want.as_str()) => {
            Err(format!("{outcome}, not by rule {want}",))
        }
        _ => Ok(()),
    }
}

/// Validates the `tests:` of every document; `rule:` must name a rule of the policy.
pub(crate) fn validate(
    documents: &[Document],
    rules: &[CompiledRule],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<TestCase> {
    let names: Vec<&str> = rules.iter().map(|r| r.name.value.as_str()).collect();
    let mut tests = Vec::new();
    for t in documents.iter().flat_map(|d| &d.tests) {
        let peer = if t.peer.value == UNAUTHENTICATED {
            Some(Peer::Unauthenticated)
        } else {
            match SpiffeId::parse(&t.peer.value) {
                Ok(id) => Some(Peer::Spiffe(id)),
                Err(e) => {
                    diagnostics.push(t.peer.origin.error(format!(
                        "invalid peer {:?}: {e} (expected a SPIFFE ID or `unauthenticated`)",
                        t.peer.value
                    )));
                    None
                }
            }
        };
        let request = match t.request.value.split_once(' ') {
            Some((method, target)) if is_token(method) && !target.trim().is_empty() => {
                Some((method.to_owned(), target.trim().to_owned()))
            }
            _ => {
                diagnostics.push(t.request.origin.error(format!(
                    "invalid request {:?}: expected \"METHOD target\", e.g. \"GET /api/v1/items\"",
                    t.request.value
                )));
                None
            }
        };
        if let Some(rule) = &t.rule
            && !names.contains(&rule.value.as_str())
        {
            let hint = match did_you_mean(&rule.value, &names) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => String::new(),
            };
            diagnostics.push(
                rule.origin
                    .error(format!("no rule named {:?}{hint}", rule.value)),
            );
        }
        if let (Some(peer), Some((method, target))) = (peer, request) {
            tests.push(TestCase {
                origin: t.origin.clone(),
                peer,
                method,
                target,
                expect: match t.expect.value {
                    ExpectDoc::Allow => Expect::Allow,
                    ExpectDoc::Deny => Expect::Deny,
                },
                rule: t.rule.as_ref().map(|r| r.value.clone()),
            });
        }
    }
    tests
}

// === impl Expect ===

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        })
    }
}

// === impl TestFailure ===

impl TestFailure {
    /// The failure as an error [`Diagnostic`] at the test's location (for `--format json`).
    pub fn to_diagnostic(&self) -> Diagnostic {
        self.test.origin.error(self.message())
    }

    fn message(&self) -> String {
        let t = &self.test;
        let rule = t
            .rule
            .as_ref()
            .map(|r| format!(" by rule {r}"))
            .unwrap_or_default();
        format!(
            "test failed: {} {} from {}: expected {}{rule}, got: {}",
            t.method, t.target, t.peer, t.expect, self.outcome
        )
    }
}

impl fmt::Display for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_diagnostic().fmt(f)
    }
}
