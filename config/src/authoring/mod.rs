//! Writing policy without guessing: tools that *propose* an `ApiPolicy` instead of deciding
//! requests.
//!
//! None of this is on the request path. Each module takes something an author already has and
//! passes on policy YAML or a report that `palisade check` and a reviewer then judge:
//!
//! - [`learn`]: access-log observations → a proposed allowlist per peer, with templates where
//!   a segment varies (bounded memory however long the log).
//! - [`openapi`]: an OpenAPI 3.0/3.1 spec → one `to` entry per operation.
//! - [`diff`]: two policies → the concrete requests the change newly allows or denies.

pub mod diff;
pub mod learn;
pub mod openapi;
mod yaml_out;

pub use diff::{Change, PolicyDiff, Probes, Verdict, diff};
pub use learn::{AccessLine, DeniedCalls, LearnError, LearnOptions, Learner, LineOutcome};
pub use openapi::{ImportError, ImportOptions, import_openapi};
