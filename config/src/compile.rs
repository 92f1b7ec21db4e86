//! Compile: located documents → an immutable [`Policy`] over a route trie.
//!
//! Takes the [`Document`]s of every loaded file, validates what their values mean (methods,
//! templates, principals, ports, agreement on `mode`/`mtls`), inserts one template per route
//! shape into a `matchit` trie (templates differing only in parameter names share a node; a
//! trie conflict becomes a located diagnostic, never an internal error) and passes on a
//! [`Loaded`]: the policy, its warnings and the `tests:` for [`check`](crate::check).

mod cover;
pub(crate) mod rules;
mod shadow;

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::check::{self, TestCase};
use crate::document::{self, Document, MAX_SOURCE_BYTES, MtlsDoc};
use crate::fingerprint::Fnv1a;
use crate::location::{Diagnostic, LoadError, Origin};
use crate::policy::{Entry, Inner, Mode, MtlsMode, Nearest, Policy, Route, Rule};
use crate::template::TemplateRef;

use rules::CompiledRule;

/// Settings for loading a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The trust domain of this mesh (e.g. `cluster.local`). When set, principals in other
    /// trust domains are reported as warnings, since such peers fail the TLS handshake.
    /// Default: `None` (no check).
    pub trust_domain: Option<String>,
}

/// A successfully loaded policy plus what `palisade check` needs.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The compiled policy.
    pub policy: Policy,
    /// Findings that do not reject the policy (shadowed rules, foreign trust domains, …).
    pub warnings: Vec<Diagnostic>,
    /// The `tests:` of every document, in source order.
    pub tests: Vec<TestCase>,
}

/// Reads files and directories and compiles them together (see [`Policy::load`]).
pub(crate) fn load<P: AsRef<Path>>(paths: &[P], opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let mut sources = Vec::new();
    let mut diagnostics = Vec::new();
    for path in paths {
        let path = path.as_ref();
        if path.is_dir() {
            match policy_files(path) {
                Ok(files) if files.is_empty() => diagnostics.push(io_error(
                    path,
                    "directory contains no *.yaml or *.yml files".to_owned(),
                )),
                Ok(files) => {
                    for file in files {
                        read_source(&file, &mut sources, &mut diagnostics);
                    }
                }
                Err(e) => diagnostics.push(io_error(path, format!("cannot read directory: {e}"))),
            }
        } else {
            read_source(path, &mut sources, &mut diagnostics);
        }
    }
    if !diagnostics.is_empty() {
        return Err(LoadError { diagnostics });
    }
    from_sources(&sources, opts)
}

/// Compiles `(name, text)` sources together.
pub(crate) fn from_sources(
    sources: &[(String, String)],
    opts: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let mut diagnostics = Vec::new();
    let mut warnings = Vec::new();
    let mut documents = Vec::new();
    for (name, text) in sources {
        let (docs, diags) = document::parse(name, text);
        if docs.is_empty() && diags.is_empty() {
            warnings.push(
                Origin {
                    file: Arc::from(name.as_str()),
                    line: 1,
                    column: 1,
                    field: String::new(),
                }
                .warning("no policy documents in this source"),
            );
        }
        documents.extend(docs);
        diagnostics.extend(diags);
    }
    compile_parsed(&documents, version(sources), opts, diagnostics, warnings)
}

/// Compiles documents already read with [`document::parse`] into a policy, exactly as
/// [`Policy::load`] does after parsing (which documents are passed is up to the caller).
/// The result's [`Policy::version`] hashes the rules' names, principals, methods and paths
/// rather than source bytes.
pub fn compile(documents: &[Document], opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let version = document_version(documents);
    compile_parsed(documents, version, opts, Vec::new(), Vec::new())
}

fn compile_parsed(
    documents: &[Document],
    version: String,
    opts: &LoadOptions,
    mut diagnostics: Vec<Diagnostic>,
    mut warnings: Vec<Diagnostic>,
) -> Result<Loaded, LoadError> {
    let (mode, mtls) = agree_on_modes(documents, &mut diagnostics);
    let mut rules = rules::validate(documents, mtls, opts, &mut diagnostics, &mut warnings);
    let opaque_ports = rules::opaque_ports(documents, &mut diagnostics);
    let tests = check::validate(documents, &rules, &mut diagnostics);
    let inner = build(&mut rules, &mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(LoadError { diagnostics });
    }
    shadow::warn(&rules, &inner, !opaque_ports.is_empty(), &mut warnings);
    let inner = Inner {
        mode,
        mtls,
        opaque_ports,
        version,
        ..inner
    };
    Ok(Loaded {
        policy: Policy {
            inner: Arc::new(inner),
        },
        warnings,
        tests,
    })
}

/// Every document must say the same `mode` and `mtls` (absent means enforce / strict): one
/// file must not quietly switch the whole policy to audit or to plaintext.
fn agree_on_modes(documents: &[Document], diagnostics: &mut Vec<Diagnostic>) -> (Mode, MtlsMode) {
    let mode_of = |d: &Document| rules::mode_of(d.spec.mode.as_ref());
    let mtls_of = |d: &Document| match d.spec.mtls.as_ref().map(|m| m.value) {
        Some(MtlsDoc::Permissive) => MtlsMode::Permissive,
        Some(MtlsDoc::Strict) | None => MtlsMode::Strict,
    };
    let Some(first) = documents.first() else {
        return (Mode::Enforce, MtlsMode::Strict);
    };
    let (mode, mtls) = (mode_of(first), mtls_of(first));
    let first_place = first.spec.origin.place();
    for d in &documents[1..] {
        if mode_of(d) != mode {
            let at = d.spec.mode.as_ref().map_or(&d.spec.origin, |m| &m.origin);
            diagnostics.push(at.error(format!(
                "mode {} conflicts with mode {} of the document at {first_place}; documents loaded together must agree (absent means enforce)",
                mode_name(mode_of(d)),
                mode_name(mode)
            )));
        }
        if mtls_of(d) != mtls {
            let at = d.spec.mtls.as_ref().map_or(&d.spec.origin, |m| &m.origin);
            diagnostics.push(at.error(format!(
                "mtls {} conflicts with mtls {} of the document at {first_place}; documents loaded together must agree (absent means strict)",
                mtls_name(mtls_of(d)),
                mtls_name(mtls)
            )));
        }
    }
    (mode, mtls)
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    }
}

fn mtls_name(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Strict => "strict",
        MtlsMode::Permissive => "permissive",
    }
}

/// Builds the trie, the routes and the rule table. Records in each [`CompiledPath`] the route
/// it landed on and moves each rule's principals into the table.
///
/// [`CompiledPath`]: rules::CompiledPath
fn build(rules: &mut [CompiledRule<'_>], diagnostics: &mut Vec<Diagnostic>) -> Inner {
    let paths = || {
        rules
            .iter()
            .flat_map(|r| r.to.iter().flatten())
            .flat_map(|to| &to.paths)
    };
    let templates = paths().count();
    let segments = paths().map(|p| p.template.segments().len()).sum();
    let mut router = matchit::Router::new();
    let mut routes: Vec<Route> = Vec::with_capacity(templates);
    let mut shapes = cover::Shapes::with_capacity(templates, segments);
    // Per route: its first template and where it was written (for conflict messages).
    let mut firsts: Vec<(&TemplateRef<'_>, &Origin)> = Vec::with_capacity(templates);
    let mut prefixes: Vec<(Arc<str>, usize)> = Vec::with_capacity(templates);
    // Inserted text → route, built only once a conflict needs naming.
    let mut by_text: HashMap<&str, usize> = HashMap::new();
    for (rule_index, rule) in rules.iter_mut().enumerate() {
        for to in rule.to.iter_mut().flatten() {
            for path in &mut to.paths {
                let slot = shapes.slot(path.template.segments());
                path.route = match shapes.route(slot) {
                    Some(index) => Some(index),
                    // The template as written, not its canonical form: `matchit` renames
                    // parameters by position itself, and `shapes` already gave every template
                    // of this shape this route, so no two inserts differ only in names.
                    None => match router.insert(path.template.as_str(), routes.len()) {
                        Ok(()) => {
                            firsts.push((&path.template, path.origin));
                            routes.push(Route {
                                // Most routes get one template: one exact allocation.
                                entries: Vec::with_capacity(1),
                                mode: Mode::Enforce,
                            });
                            Some(shapes.record(slot, path.template.segments()))
                        }
                        Err(e) => {
                            index_inserted(&mut by_text, &firsts);
                            let other = match &e {
                                matchit::InsertError::Conflict { with } => by_text
                                    .get(with.as_str())
                                    .and_then(|&r| firsts.get(r))
                                    .copied(),
                                _ => None,
                            };
                            diagnostics.push(conflict(&path.template, path.origin, &e, other));
                            None
                        }
                    },
                };
                if let Some(index) = path.route {
                    let template: Arc<str> = Arc::from(path.template.as_str());
                    if routes[index].entries.is_empty() {
                        let len = path.template.literal_prefix().len();
                        prefixes.push((Arc::clone(&template), len));
                    }
                    routes[index].entries.push(Entry {
                        rule: rule_index,
                        template,
                        methods: to.methods.clone(),
                        upgrade: to.upgrade,
                    });
                }
            }
        }
    }
    shapes.merge(&mut routes);
    for route in &mut routes {
        route.mode = route_mode(&route.entries, rules);
    }
    Inner {
        router,
        routes,
        rules: rules
            .iter_mut()
            .map(|r| Rule {
                name: r.name.value.as_str().into(),
                principals: std::mem::take(&mut r.principals),
            })
            .collect(),
        identity_rules: (0..rules.len())
            .filter(|&i| rules[i].to.is_none())
            .collect(),
        nearest: Nearest::new(prefixes),
        mode: Mode::Enforce,
        mtls: MtlsMode::Strict,
        opaque_ports: Vec::new(),
        version: String::new(),
    }
}

/// A route's denials are audit-only when every rule with an entry on it is in audit mode:
/// one enforced rule keeps the whole route enforced, so adding an audit rule to a route never
/// weakens it.
fn route_mode(entries: &[Entry], rules: &[CompiledRule<'_>]) -> Mode {
    let all_audit = !entries.is_empty()
        && entries
            .iter()
            .all(|e| rules.get(e.rule).is_some_and(|r| r.mode == Mode::Audit));
    if all_audit {
        Mode::Audit
    } else {
        Mode::Enforce
    }
}

/// Adds the routes not yet in `by_text` (they are numbered in order), keyed by the text they
/// were inserted as: `matchit` names the route a new one conflicts with by that text.
fn index_inserted<'d>(
    by_text: &mut HashMap<&'d str, usize>,
    firsts: &[(&TemplateRef<'d>, &Origin)],
) {
    for (route, (template, _)) in firsts.iter().enumerate().skip(by_text.len()) {
        by_text.insert(template.as_str(), route);
    }
}

/// A trie insertion failure, as a located user diagnostic; `other` is the route it
/// conflicts with, when matchit names one.
fn conflict(
    template: &TemplateRef<'_>,
    origin: &Origin,
    error: &matchit::InsertError,
    other: Option<(&TemplateRef<'_>, &Origin)>,
) -> Diagnostic {
    match other {
        Some((other, at)) => origin.error(format!(
            "path template {:?} conflicts with {:?} ({}): a {{parameter}} and a {{*catch-all}} cannot start at the same segment",
            template.as_str(),
            other.as_str(),
            at.place()
        )),
        None => origin.error(format!(
            "path template {:?} cannot be routed: {}",
            template.as_str(),
            error.to_string().to_lowercase()
        )),
    }
}

/// FNV-1a (64-bit) over every source name and text, as 12 hex digits.
fn version(sources: &[(String, String)]) -> String {
    let mut hash = Fnv::default();
    for (name, text) in sources {
        hash.write(name);
        hash.write(text);
    }
    hash.hex()
}

/// FNV-1a over what decides requests, for [`compile`] (no source bytes at hand).
fn document_version(documents: &[Document]) -> String {
    let mut hash = Fnv::default();
    for d in documents {
        hash.write(&format!(
            "{:?}{:?}",
            d.spec.mode.as_ref().map(|m| m.value),
            d.spec.mtls.as_ref().map(|m| m.value)
        ));
        for port in &d.spec.opaque_ports {
            hash.write(&port.value.to_string());
        }
        for rule in &d.spec.rules {
            hash.write(&rule.name.value);
            if let Some(mode) = &rule.mode {
                hash.write(&format!("mode {:?}", mode.value));
            }
            rule.principals
                .value
                .iter()
                .for_each(|p| hash.write(&p.value));
            for to in rule.to.iter().flat_map(|t| &t.value) {
                to.methods.value.iter().for_each(|m| hash.write(&m.value));
                to.paths.value.iter().for_each(|p| hash.write(&p.value));
                hash.write(to.upgrade.as_ref().map_or("", |u| u.value.as_str()));
            }
        }
    }
    hash.hex()
}

/// [`Fnv1a`] with a NUL after every field, shown as 12 hex digits: a version label.
#[derive(Default)]
struct Fnv(Fnv1a);

impl Fnv {
    /// Hashes `s` followed by a NUL separator.
    fn write(&mut self, s: &str) {
        self.0.write(s.as_bytes());
        self.0.write(&[0]);
    }

    fn hex(&self) -> String {
        format!("{:016x}", self.0.finish())[..12].to_owned()
    }
}

/// The policy files of a directory as [`Policy::load`](crate::Policy::load) reads them: the
/// `*.yaml` / `*.yml` regular files directly inside `dir` (not recursive), sorted by path.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_source(
    path: &Path,
    sources: &mut Vec<(String, String)>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let len = std::fs::metadata(path).map(|m| m.len());
    match len {
        Ok(len) if len > MAX_SOURCE_BYTES as u64 => {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            diagnostics.push(io_error(path, document::too_large_message(len)));
            return;
        }
        Ok(_) => {}
        Err(e) => {
            diagnostics.push(io_error(path, format!("cannot read: {e}")));
            return;
        }
    }
    match std::fs::read_to_string(path) {
        Ok(text) => sources.push((path.display().to_string(), text)),
        Err(e) => diagnostics.push(io_error(path, format!("cannot read: {e}"))),
    }
}

fn io_error(path: &Path, message: String) -> Diagnostic {
    Origin {
        file: Arc::from(path.display().to_string()),
        line: 1,
        column: 1,
        field: String::new(),
    }
    .error(message)
}
