//! `palisade import openapi`: an OpenAPI 3.0/3.1 document → a proposed `ApiPolicy`.
//!
//! Takes the spec text (YAML or JSON) and passes on policy YAML with one rule, and one `to`
//! entry, per operation: the OpenAPI path template (`/pets/{petId}`) becomes the path template,
//! the operation's method upper-cased. Principals come from the operation's
//! `x-palisade-principals`, else the `--principal` flags, else the root's
//! `x-palisade-principals`; when none is known the rule is written with `principals: []` and a
//! comment, which `palisade check` rejects until the author fills it in.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::yaml_out::{list, quote, slug, unique};
use crate::template::Template;

/// The operation keys of an OpenAPI path item, in the order they are emitted.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// The extension naming the callers of an operation (or, at the root, of all of them).
pub const PRINCIPALS_EXTENSION: &str = "x-palisade-principals";

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Principals for operations without their own `x-palisade-principals`.
    pub principals: Vec<String>,
    /// `metadata.name` of the policy; default: the spec's `info.title`, slugged.
    pub name: Option<String>,
}

/// Why a spec could not be imported. `Display` names the file and, where known, the place.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The JSON does not parse.
    #[error("{file}:{line}:{column}: invalid json: {message}")]
    Json {
        /// The spec's name.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The YAML does not parse.
    #[error("{file}: invalid yaml: {message}")]
    Yaml {
        /// The spec's name.
        file: String,
        /// What the parser said (with its location).
        message: String,
    },
    /// The document is not an OpenAPI 3.0/3.1 document.
    #[error("{file}: {message}")]
    NotOpenApi {
        /// The spec's name.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A field has the wrong shape.
    #[error("{file}: {field}: {message}")]
    Field {
        /// The spec's name.
        file: String,
        /// The field path, e.g. `paths["/pets"].get.x-palisade-principals`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Parses `text` (OpenAPI 3.0 or 3.1, YAML or JSON) and returns policy YAML.
pub fn import_openapi(
    file: &str,
    text: &str,
    options: &ImportOptions,
) -> Result<String, ImportError> {
    let spec = parse(file, text)?;
    let root = spec
        .as_object()
        .ok_or_else(|| not_openapi(file, "the document is not a mapping"))?;
    match root.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0") || v.starts_with("3.1") => {}
        Some(v) => {
            return Err(not_openapi(
                file,
                &format!("openapi version {v:?} is not supported (expected 3.0.x or 3.1.x)"),
            ));
        }
        None if root.contains_key("swagger") => {
            return Err(not_openapi(
                file,
                "swagger 2.0 documents are not supported; convert to OpenAPI 3 first",
            ));
        }
        None => {
            return Err(not_openapi(
                file,
                "missing field `openapi` (is this an OpenAPI 3 document?)",
            ));
        }
    }
    let root_principals = principals_at(file, root, PRINCIPALS_EXTENSION)?;
    let name = match &options.name {
        Some(n) => n.clone(),
        None => root
            .get("info")
            .and_then(|i| i.get("title"))
            .and_then(Value::as_str)
            .map_or_else(|| "imported".to_owned(), slug),
    };
    let paths = match root.get("paths") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(field(file, "paths", "expected a mapping")),
    };

    let mut out = String::new();
    out.push_str(&format!(
        "# Imported from {file} by `palisade import openapi`.\n"
    ));
    out.push_str("# Review every rule: one per operation. Rules with `principals: []` fail\n");
    out.push_str("# `palisade check` until you name who may call them.\n");
    out.push_str("apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\n");
    out.push_str(&format!(
        "metadata: {{ name: {} }}\nspec:\n  rules:\n",
        quote(&name)
    ));
    let mut taken = BTreeSet::new();
    let mut count = 0;
    for (path, item) in &paths {
        let at = format!("paths[{}]", quote(path));
        let item = item
            .as_object()
            .ok_or_else(|| field(file, &at, "expected a mapping"))?;
        let template = convert_path(path).map_err(|message| field(file, &at, &message))?;
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let op_at = format!("{at}.{method}");
            let operation = operation
                .as_object()
                .ok_or_else(|| field(file, &op_at, "expected a mapping"))?;
            let own = principals_at(file, operation, &format!("{op_at}.{PRINCIPALS_EXTENSION}"))?;
            let principals = own
                .or_else(|| (!options.principals.is_empty()).then(|| options.principals.clone()))
                .or_else(|| root_principals.clone())
                .unwrap_or_default();
            let upper = method.to_ascii_uppercase();
            let rule_name = match operation.get("operationId").and_then(Value::as_str) {
                Some(id) => slug(id),
                None => slug(&format!("{method} {path}")),
            };
            let rule_name = unique(rule_name, &mut taken);
            if let Some(summary) = operation.get("summary").and_then(Value::as_str) {
                out.push_str(&format!(
                    "    # {}\n",
                    summary.lines().next().unwrap_or_default()
                ));
            }
            out.push_str(&format!("    - name: {}\n", quote(&rule_name)));
            if principals.is_empty() {
                out.push_str("      # TODO: who may call this? e.g. spiffe://cluster.local/ns/<ns>/sa/<sa>\n");
            }
            out.push_str(&format!(
                "      from: {{ principals: {} }}\n",
                list(principals.iter().map(String::as_str))
            ));
            out.push_str(&format!(
                "      to:\n        - methods: [{upper}]\n          paths: [{}]\n",
                quote(&template)
            ));
            count += 1;
        }
    }
    if count == 0 {
        out.push_str("    []\n");
    }
    Ok(out)
}

fn parse(file: &str, text: &str) -> Result<Value, ImportError> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| ImportError::Json {
            file: file.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        });
    }
    serde_saphyr::from_str(text).map_err(|e| ImportError::Yaml {
        file: file.to_owned(),
        message: e.to_string(),
    })
}

/// Converts an OpenAPI path template to a palisade one: `{id}` stays; a parameter name that
/// is not an identifier (`{pet-id}`) becomes one (`{pet_id}`); a segment mixing text and a
/// parameter (`{name}.json`) becomes a whole-segment parameter, since palisade parameters are
/// whole segments.
fn convert_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    let mut out = String::new();
    let mut names = BTreeSet::new();
    for segment in path[1..].split('/') {
        out.push('/');
        match (segment.find('{'), segment.find('}')) {
            (None, None) => out.push_str(segment),
            (Some(open), Some(close)) if open < close => {
                let mut name = identifier(&segment[open + 1..close]);
                let mut n = 2;
                let base = name.clone();
                while !names.insert(name.clone()) {
                    name = format!("{base}{n}");
                    n += 1;
                }
                out.push('{');
                out.push_str(&name);
                out.push('}');
            }
            _ => return Err(format!("unbalanced '{{' or '}}' in path {path:?}")),
        }
    }
    Template::parse(&out).map_err(|e| format!("cannot be a palisade path template: {e}"))?;
    Ok(out)
}

fn identifier(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'p');
    }
    out
}

fn principals_at(
    file: &str,
    object: &Map<String, Value>,
    at: &str,
) -> Result<Option<Vec<String>>, ImportError> {
    let Some(value) = object.get(PRINCIPALS_EXTENSION) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .ok_or_else(|| field(file, at, "expected a list of principals"))?;
    let mut out = Vec::new();
    for item in items {
        let s = item
            .as_str()
            .ok_or_else(|| field(file, at, "expected a list of strings"))?;
        out.push(s.to_owned());
    }
    Ok(Some(out))
}

fn not_openapi(file: &str, message: &str) -> ImportError {
    ImportError::NotOpenApi {
        file: file.to_owned(),
        message: message.to_owned(),
    }
}

fn field(file: &str, at: &str, message: &str) -> ImportError {
    ImportError::Field {
        file: file.to_owned(),
        field: at.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests;
