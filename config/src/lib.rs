//! palisade's policy language: everything about *what is allowed*.
//!
//! The crate is pure (no tokio, hyper or rustls) so that it can be fuzzed and used by
//! `palisade check` in CI exactly as the proxy uses it.
//!
//! The steps, in the order a policy and a request meet them:
//!
//! - [`document`]: the YAML users write (`policy.palisade.dev/v1alpha1`, kind `ApiPolicy`),
//!   deserialized with source spans; unknown fields are errors.
//! - [`location`]: `file:line:column` and field paths (`spec.rules[1].to[0].paths[2]`) that
//!   every diagnostic carries.
//! - [`template`]: path templates (`/api/v1/items/{id}`, final `{*rest}`), no regex.
//! - [`spiffe`]: SPIFFE IDs and principal patterns.
//! - [`normalize`]: the single path-normalization function (also taking a target in parts,
//!   as h2 sends it: [`normalize_absolute`]); only it builds a
//!   [`NormalizedPath`].
//! - [`compile`] → [`policy`]: an immutable [`Policy`] over a route trie and
//!   [`Policy::decide`], which returns a [`Decision`] naming the rule that allowed a request or
//!   why it was denied.
//! - [`check`]: runs the `tests:` expectations of each document.
//! - [`fingerprint`]: the FNV-1a hash behind [`Policy::version`] and the proxy's reload.
#![forbid(unsafe_code)]

pub mod authoring;
pub mod check;
pub mod compile;
pub mod document;
pub mod fingerprint;
pub mod location;
pub mod normalize;
pub mod policy;
pub mod spiffe;
pub mod template;

pub use check::{Expect, TestCase, TestFailure, run_tests};
pub use compile::{LoadOptions, Loaded, compile, policy_files};
pub use fingerprint::{Fnv1a, fingerprint};
pub use location::{Diagnostic, LoadError, Severity};
pub use normalize::{NormalizeError, NormalizedPath, RequestTarget, normalize, normalize_absolute};
pub use policy::{Decision, Denial, Mode, MtlsMode, Peer, Permit, Policy};
pub use spiffe::{PrincipalPattern, SpiffeId, SpiffeIdError};
pub use template::{Template, TemplateError};
