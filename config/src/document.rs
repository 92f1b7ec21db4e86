//! The YAML users write: `policy.palisade.dev/v1alpha1`, kind `ApiPolicy`.
//!
//! Takes source text (one or more `---`-separated documents) and produces [`Document`]s in
//! which every value is [`Located`]: file, line, column and field path. Unknown fields are
//! errors (a typo must not silently widen or narrow a policy), with a "did you mean" for near
//! misses. Values are kept as written; [`compile`](crate::compile) validates what they mean
//! (methods, templates, principals) and builds the [`Policy`](crate::Policy).

mod decode;
mod yaml;

use std::sync::Arc;

use crate::location::{Diagnostic, Located, Origin};

pub(crate) use decode::did_you_mean;
pub use yaml::MAX_SOURCE_BYTES;

/// The only `apiVersion` this release reads.
pub const API_VERSION: &str = "policy.palisade.dev/v1alpha1";
/// The only `kind` this release reads.
pub const KIND: &str = "ApiPolicy";

/// One `ApiPolicy` document.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Where the document starts.
    pub origin: Origin,
    /// `metadata.name` and `metadata.namespace`.
    pub metadata: Metadata,
    /// `spec`.
    pub spec: Spec,
    /// Top-level `tests:`, run by `palisade check`.
    pub tests: Vec<TestDoc>,
}

/// `metadata`.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// `metadata.name` (required).
    pub name: Located<String>,
    /// `metadata.namespace`.
    pub namespace: Option<Located<String>>,
}

/// `spec`.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Where `spec` is.
    pub origin: Origin,
    /// `spec.mode`; absent means enforce.
    pub mode: Option<Located<ModeDoc>>,
    /// `spec.mtls`; absent means strict.
    pub mtls: Option<Located<MtlsDoc>>,
    /// `spec.rules`.
    pub rules: Vec<RuleDoc>,
    /// `spec.opaquePorts`, as written (range checked by the compiler).
    pub opaque_ports: Vec<Located<i128>>,
}

/// `spec.mode` or a rule's `mode`, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeDoc {
    /// `enforce`.
    Enforce,
    /// `audit`.
    Audit,
}

/// `spec.mtls` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsDoc {
    /// `strict`.
    Strict,
    /// `permissive`.
    Permissive,
}

/// One entry of `spec.rules`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDoc {
    /// Where the rule starts.
    pub origin: Origin,
    /// `name`.
    pub name: Located<String>,
    /// `from.principals`, located at `from.principals`.
    pub principals: Located<Vec<Located<String>>>,
    /// `to`; `None` when absent (an identity-only rule, for opaque ports).
    pub to: Option<Located<Vec<ToDoc>>>,
    /// `mode`; absent means the document's `spec.mode`.
    pub mode: Option<Located<ModeDoc>>,
}

/// One entry of a rule's `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct ToDoc {
    /// Where the entry starts.
    pub origin: Origin,
    /// `methods`.
    pub methods: Located<Vec<Located<String>>>,
    /// `paths`.
    pub paths: Located<Vec<Located<String>>>,
    /// `upgrade` (only `websocket` is valid; checked by the compiler).
    pub upgrade: Option<Located<String>>,
}

/// One entry of `tests:`.
#[derive(Clone, Debug, PartialEq)]
pub struct TestDoc {
    /// Where the entry starts.
    pub origin: Origin,
    /// `peer`: a SPIFFE ID or `unauthenticated`.
    pub peer: Located<String>,
    /// `request`: `"METHOD target"`.
    pub request: Located<String>,
    /// `expect`: `allow` or `deny`.
    pub expect: Located<ExpectDoc>,
    /// `rule`: the rule expected to decide.
    pub rule: Option<Located<String>>,
}

/// `expect` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectDoc {
    /// `allow`.
    Allow,
    /// `deny`.
    Deny,
}

/// Parses and decodes every document in `text`; `file` is the name diagnostics print.
///
/// Returns the documents that decoded cleanly and every error found (a document with an error
/// is left out, so callers must not use the documents when errors are returned).
pub fn parse(file: &str, text: &str) -> (Vec<Document>, Vec<Diagnostic>) {
    let file: Arc<str> = Arc::from(file);
    let nodes = match yaml::parse_stream(&file, text) {
        Ok(nodes) => nodes,
        Err(diagnostic) => return (Vec::new(), vec![diagnostic]),
    };
    let mut documents = Vec::with_capacity(nodes.len());
    let mut diagnostics = Vec::new();
    for node in &nodes {
        let before = diagnostics.len();
        let document = decode::document(&file, node, &mut diagnostics);
        if let Some(document) = document.filter(|_| diagnostics.len() == before) {
            documents.push(document);
        }
    }
    (documents, diagnostics)
}

/// The message for a source above [`MAX_SOURCE_BYTES`].
pub fn too_large_message(len: usize) -> String {
    yaml::too_large(len)
}
