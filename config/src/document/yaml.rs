//! YAML text → a tree of [`Node`]s that each know their line and column.
//!
//! The first half of reading a document: serde-saphyr parses the (multi-document) text under a
//! strict [`Budget`](serde_saphyr::Budget), so YAML bombs (alias expansion), deep nesting and
//! huge inputs fail fast with a located error. The tree is then decoded field by field in
//! [`document`](crate::document), which knows the field paths.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};

use crate::location::{Diagnostic, Origin};

/// Largest policy file or text accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;

/// A YAML value with the place it was written.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// The YAML data model, as far as policies need it.
#[derive(Debug)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float,
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// Parses every document of `text`. Empty documents are skipped.
pub(crate) fn parse_stream(file: &Arc<str>, text: &str) -> Result<Vec<Node>, Diagnostic> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err(at(file, 1, 1).error(too_large(text.len())));
    }
    serde_saphyr::from_multiple_with_options::<Node>(text, options()).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
        let message = match limit_breached(&e) {
            Some(limit) => format!("yaml exceeds the loader's limits: {limit}"),
            None => {
                let message = UserMessageFormatter.format_message(e.without_snippet());
                // `methods: [*]` and `paths: [/items/{id}]` are the usual culprits.
                let hint = if message.contains("alias") || message.contains("flow") {
                    " (quote values that contain '*', '{', '}' or ',', e.g. \"*\" or \"/items/{id}\")"
                } else {
                    ""
                };
                format!("invalid yaml: {message}{hint}")
            }
        };
        at(file, line.max(1), column.max(1)).error(message)
    })
}

/// Which limit a budget error hit, in words (serde-saphyr prints its Debug form).
fn limit_breached(e: &serde_saphyr::Error) -> Option<&'static str> {
    use serde_saphyr::Error;
    use serde_saphyr::budget::BudgetBreach;
    let mut e = e;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = e {
        e = error;
    }
    let Error::Budget { breach, .. } = e else {
        return None;
    };
    Some(match breach {
        BudgetBreach::Depth { .. } => "nested deeper than 32 levels",
        BudgetBreach::Aliases { .. }
        | BudgetBreach::Anchors { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::RecordedAnchorEvents { .. }
        | BudgetBreach::RecordedAnchorBytes { .. } => {
            "too many anchors, aliases or alias expansions (is this a YAML bomb?)"
        }
        _ => "too many nodes, documents or bytes for a policy",
    })
}

/// The message for an input above [`MAX_SOURCE_BYTES`].
pub(crate) fn too_large(len: usize) -> String {
    format!("policy source is {len} bytes; the limit is {MAX_SOURCE_BYTES} bytes")
}

fn at(file: &Arc<str>, line: usize, column: usize) -> Origin {
    Origin {
        file: file.clone(),
        line,
        column,
        field: String::new(),
    }
}

/// Limits sized for policies (a 10 000-rule policy is about 150 000 nodes) that stop alias
/// bombs and deep nesting long before they cost noticeable time or memory.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_SOURCE_BYTES);
    budget.max_depth = 32;
    budget.flow_nesting_limit = 32;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_documents = 1_000;
    budget.max_nodes = 400_000;
    budget.max_events = 1_000_000;
    budget.max_total_scalar_bytes = MAX_SOURCE_BYTES;
    budget.max_recorded_anchor_events = 100_000;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 100_000;
    alias_limits.max_replay_stack_depth = 16;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    options.with_snippet = false;
    options
}

// === impl Node ===

impl Node {
    /// What kind of value this is, for "expected …, found …" messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            value: spanned.value,
            line: spanned.referenced.line() as usize,
            column: spanned.referenced.column() as usize,
        })
    }
}

// === impl Value ===

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any yaml value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i128::try_from(v).map_or(Value::Float, Value::Int))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Float)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}
