//! YAML tree → [`Document`]: the second half of reading a document.
//!
//! Walks the located [`Node`] tree with the field path in hand, so that every finding
//! (unknown field, wrong type, missing field, bad enum value) names its file, line, column and
//! field. Decoding goes on after an error to report as many findings as possible at once.

use std::sync::Arc;

use super::yaml::{Node, Value};
use super::{
    API_VERSION, Document, ExpectDoc, KIND, Metadata, ModeDoc, MtlsDoc, RuleDoc, Spec, TestDoc,
    ToDoc,
};
use crate::location::{Diagnostic, Located, Origin};

type Diags = Vec<Diagnostic>;

/// A mapping whose keys have been checked against the fields it may hold.
struct Fields<'a> {
    origin: Origin,
    entries: Vec<(&'a str, &'a Node)>,
}

pub(super) fn document(file: &Arc<str>, node: &Node, diags: &mut Diags) -> Option<Document> {
    let origin = Origin {
        file: file.clone(),
        line: node.line,
        column: node.column,
        field: String::new(),
    };
    let fields = Fields::new(
        node,
        origin,
        &["apiVersion", "kind", "metadata", "spec", "tests"],
        diags,
    )?;
    let api_version = fields
        .required("apiVersion", diags)
        .and_then(|(n, o)| string(n, o, diags));
    if let Some(v) = &api_version
        && v.value != API_VERSION
    {
        diags.push(v.origin.error(format!(
            "unsupported apiVersion {:?} (expected {API_VERSION:?})",
            v.value
        )));
    }
    let kind = fields
        .required("kind", diags)
        .and_then(|(n, o)| string(n, o, diags));
    if let Some(k) = &kind
        && k.value != KIND
    {
        diags.push(k.origin.error(format!(
            "unsupported kind {:?} (expected {KIND:?})",
            k.value
        )));
    }
    let metadata = fields
        .required("metadata", diags)
        .and_then(|(n, o)| metadata(n, o, diags));
    let spec = fields
        .required("spec", diags)
        .and_then(|(n, o)| spec(n, o, diags));
    let tests = match fields.optional("tests") {
        Some((n, o)) => list(n, &o, diags, test)?,
        None => Vec::new(),
    };
    api_version?;
    kind?;
    Some(Document {
        origin: fields.origin,
        metadata: metadata?,
        spec: spec?,
        tests,
    })
}

fn metadata(node: &Node, origin: Origin, diags: &mut Diags) -> Option<Metadata> {
    let fields = Fields::new(
        node,
        origin,
        &["name", "namespace", "labels", "annotations"],
        diags,
    )?;
    let name = fields
        .required("name", diags)
        .and_then(|(n, o)| non_empty(n, o, diags));
    let namespace = match fields.optional("namespace") {
        Some((n, o)) => Some(non_empty(n, o, diags)?),
        None => None,
    };
    for key in ["labels", "annotations"] {
        if let Some((n, o)) = fields.optional(key) {
            string_map(n, o, diags);
        }
    }
    Some(Metadata {
        name: name?,
        namespace,
    })
}

fn spec(node: &Node, origin: Origin, diags: &mut Diags) -> Option<Spec> {
    let fields = Fields::new(
        node,
        origin,
        &["mode", "mtls", "rules", "opaquePorts"],
        diags,
    )?;
    let mode = fields.optional("mode").map(|(n, o)| mode(n, o, diags));
    let mtls = fields.optional("mtls").map(|(n, o)| {
        let choices = [
            ("strict", MtlsDoc::Strict),
            ("permissive", MtlsDoc::Permissive),
        ];
        choice(n, o, "mtls", &choices, diags)
    });
    let rules = match fields.optional("rules") {
        Some((n, o)) => list(n, &o, diags, rule),
        None => Some(Vec::new()),
    };
    let opaque_ports = match fields.optional("opaquePorts") {
        Some((n, o)) => list(n, &o, diags, integer),
        None => Some(Vec::new()),
    };
    Some(Spec {
        origin: fields.origin,
        mode: mode.map_or(Some(None), |m| m.map(Some))?,
        mtls: mtls.map_or(Some(None), |m| m.map(Some))?,
        rules: rules?,
        opaque_ports: opaque_ports?,
    })
}

fn rule(node: &Node, origin: Origin, diags: &mut Diags) -> Option<RuleDoc> {
    let fields = Fields::new(node, origin, &["name", "from", "to", "mode"], diags)?;
    let name = fields
        .required("name", diags)
        .and_then(|(n, o)| non_empty(n, o, diags));
    let principals = fields.required("from", diags).and_then(|(n, o)| {
        let from = Fields::new(n, o, &["principals"], diags)?;
        let (n, o) = from.required("principals", diags)?;
        let items = list(n, &o, diags, string)?;
        Some(Located::new(items, o))
    });
    let to = match fields.optional("to") {
        Some((n, o)) => {
            let items = list(n, &o, diags, to_entry)?;
            Some(Located::new(items, o))
        }
        None => None,
    };
    let mode = match fields.optional("mode") {
        Some((n, o)) => Some(mode(n, o, diags)?),
        None => None,
    };
    Some(RuleDoc {
        origin: fields.origin,
        name: name?,
        principals: principals?,
        to,
        mode,
    })
}

/// `spec.mode` or a rule's `mode`.
fn mode(node: &Node, origin: Origin, diags: &mut Diags) -> Option<Located<ModeDoc>> {
    let choices = [("enforce", ModeDoc::Enforce), ("audit", ModeDoc::Audit)];
    choice(node, origin, "mode", &choices, diags)
}

fn to_entry(node: &Node, origin: Origin, diags: &mut Diags) -> Option<ToDoc> {
    let fields = Fields::new(node, origin, &["methods", "paths", "upgrade"], diags)?;
    let strings = |key, diags: &mut Diags| {
        let (n, o) = fields.required(key, diags)?;
        let items = list(n, &o, diags, string)?;
        Some(Located::new(items, o))
    };
    let methods = strings("methods", diags);
    let paths = strings("paths", diags);
    let upgrade = match fields.optional("upgrade") {
        Some((n, o)) => Some(string(n, o, diags)?),
        None => None,
    };
    Some(ToDoc {
        origin: fields.origin.clone(),
        methods: methods?,
        paths: paths?,
        upgrade,
    })
}

fn test(node: &Node, origin: Origin, diags: &mut Diags) -> Option<TestDoc> {
    let fields = Fields::new(node, origin, &["peer", "request", "expect", "rule"], diags)?;
    let peer = fields
        .required("peer", diags)
        .and_then(|(n, o)| non_empty(n, o, diags));
    let request = fields
        .required("request", diags)
        .and_then(|(n, o)| non_empty(n, o, diags));
    let expect = fields.required("expect", diags).and_then(|(n, o)| {
        let choices = [("allow", ExpectDoc::Allow), ("deny", ExpectDoc::Deny)];
        choice(n, o, "expect", &choices, diags)
    });
    let rule = match fields.optional("rule") {
        Some((n, o)) => Some(non_empty(n, o, diags)?),
        None => None,
    };
    Some(TestDoc {
        origin: fields.origin,
        peer: peer?,
        request: request?,
        expect: expect?,
        rule,
    })
}

// === scalars and lists ===

fn string(node: &Node, origin: Origin, diags: &mut Diags) -> Option<Located<String>> {
    match &node.value {
        Value::Str(s) => Some(Located::new(s.clone(), origin)),
        _ => {
            diags.push(origin.error(format!("expected a string, found {}", describe(node))));
            None
        }
    }
}

fn non_empty(node: &Node, origin: Origin, diags: &mut Diags) -> Option<Located<String>> {
    let s = string(node, origin, diags)?;
    if s.value.trim().is_empty() {
        diags.push(s.origin.error("must not be empty"));
        return None;
    }
    Some(s)
}

fn integer(node: &Node, origin: Origin, diags: &mut Diags) -> Option<Located<i128>> {
    match &node.value {
        Value::Int(i) => Some(Located::new(*i, origin)),
        _ => {
            diags.push(origin.error(format!("expected an integer, found {}", describe(node))));
            None
        }
    }
}

fn choice<T: Copy>(
    node: &Node,
    origin: Origin,
    what: &str,
    choices: &[(&str, T)],
    diags: &mut Diags,
) -> Option<Located<T>> {
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let Value::Str(_) = node.value else {
        diags.push(origin.error(format!(
            "expected {}, found {}",
            names.join(" or "),
            describe(node)
        )));
        return None;
    };
    let s = string(node, origin, diags)?;
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == s.value) {
        return Some(Located::new(*value, s.origin));
    }
    let hint = match did_you_mean(&s.value, &names) {
        Some(near) => format!("; did you mean `{near}`?"),
        None => String::new(),
    };
    diags.push(s.origin.error(format!(
        "unknown {what} {:?} (expected {}){hint}",
        s.value,
        names.join(" or ")
    )));
    None
}

fn list<T>(
    node: &Node,
    origin: &Origin,
    diags: &mut Diags,
    item: fn(&Node, Origin, &mut Diags) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Seq(items) = &node.value else {
        diags.push(origin.error(format!("expected a list, found {}", describe(node))));
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, n) in items.iter().enumerate() {
        match item(n, origin.index(i, n.line, n.column), diags) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn string_map(node: &Node, origin: Origin, diags: &mut Diags) {
    let Value::Map(entries) = &node.value else {
        diags.push(origin.error(format!("expected a mapping, found {}", describe(node))));
        return;
    };
    for (k, v) in entries {
        let Value::Str(key) = &k.value else {
            let o = origin.field("<key>", k.line, k.column);
            diags.push(o.error(format!("expected a string key, found {}", describe(k))));
            continue;
        };
        string(v, origin.field(key, v.line, v.column), diags);
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Int(i) => format!("an integer ({i}); quote it to make it a string"),
        Value::Bool(b) => format!("a boolean ({b}); quote it to make it a string"),
        _ => node.kind().to_owned(),
    }
}

// === impl Fields ===

impl<'a> Fields<'a> {
    /// Checks that `node` is a mapping whose keys are all in `known`; reports every unknown
    /// key (with a near miss, if any) and returns the mapping.
    fn new(node: &'a Node, origin: Origin, known: &[&str], diags: &mut Diags) -> Option<Self> {
        let Value::Map(map) = &node.value else {
            diags.push(origin.error(format!("expected a mapping, found {}", describe(node))));
            return None;
        };
        let mut entries = Vec::with_capacity(map.len());
        let mut ok = true;
        for (k, v) in map {
            let key_origin = origin.at(k.line, k.column);
            let Value::Str(key) = &k.value else {
                diags.push(key_origin.error(format!("expected a field name, found {}", k.kind())));
                ok = false;
                continue;
            };
            if known.contains(&key.as_str()) {
                entries.push((key.as_str(), v));
                continue;
            }
            ok = false;
            let key_origin = origin.field(key, k.line, k.column);
            let message = match did_you_mean(key, known) {
                Some(near) => format!("unknown field `{key}`; did you mean `{near}`?"),
                None => format!(
                    "unknown field `{key}` (expected one of {})",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            diags.push(key_origin.error(message));
        }
        ok.then_some(Fields { origin, entries })
    }

    fn optional(&self, key: &str) -> Option<(&'a Node, Origin)> {
        let (_, node) = self.entries.iter().find(|(k, _)| *k == key)?;
        Some((node, self.origin.field(key, node.line, node.column)))
    }

    fn required(&self, key: &str, diags: &mut Diags) -> Option<(&'a Node, Origin)> {
        let found = self.optional(key);
        if found.is_none() {
            diags.push(self.origin.error(format!("missing field `{key}`")));
        }
        found
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance over characters: Levenshtein plus a swap of two adjacent
/// characters counting as one edit, so `mdoe` is one edit from `mode`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the distance matrix: i-2, i-1 and i (a transposition looks two rows back).
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let mut d = (previous[j] + usize::from(ca != cb))
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                d = d.min(before[j - 1] + 1);
            }
            current[j + 1] = d;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let known = ["principals", "methods", "paths", "opaquePorts"];
        let cases = [
            ("principal", Some("principals")),
            ("pricipals", Some("principals")),
            ("method", Some("methods")),
            ("Paths", Some("paths")),
            ("opaqueport", Some("opaquePorts")),
            ("mehtods", Some("methods")),
            ("hosts", None),
            ("x", None),
        ];
        for (word, expected) in cases {
            assert_eq!(did_you_mean(word, &known), expected, "{word}");
        }
    }

    #[test]
    fn suggests_enum_values() {
        assert_eq!(did_you_mean("allowed", &["allow", "deny"]), Some("allow"));
        assert_eq!(
            did_you_mean("enforcing", &["enforce", "audit"]),
            Some("enforce")
        );
        assert_eq!(did_you_mean("off", &["strict", "permissive"]), None);
    }

    #[test]
    fn suggests_transposed_letters() {
        // A swap of two adjacent letters is one edit, so short words get a suggestion too.
        let known = ["mode", "mtls", "rules", "opaquePorts"];
        assert_eq!(did_you_mean("mdoe", &known), Some("mode"));
        assert_eq!(did_you_mean("mlts", &known), Some("mtls"));
        assert_eq!(did_you_mean("rlues", &known), Some("rules"));
        assert_eq!(did_you_mean("omde", &known), Some("mode"));
        assert_eq!(did_you_mean("doem", &known), None);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("mdoe", "mode"), 1);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("abc", "ca"), 3); // optimal string alignment, not full Damerau
        assert_eq!(edit_distance("abcdef", "badcfe"), 3);
    }
}
