//! Locations: where in which file a value was written, and the findings that point there.
//!
//! Every value read from a policy document carries an [`Origin`] (file, line, column and field
//! path such as `spec.rules[1].to[0].paths[2]`) from the moment it is decoded, so that every
//! later step (template parsing, compilation, `tests:`) reports a [`Diagnostic`] a person can
//! act on. The loader hands a [`LoadError`] (all errors found) or warnings on to the caller.

use std::fmt;
use std::sync::Arc;

/// How serious a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy is rejected.
    Error,
    /// The policy loads, but something in it is probably not what its author meant.
    Warning,
}

/// One finding with its place: `file:line:column`, field path and message.
///
/// `Display` prints `orders.yaml:14:11: spec.rules[1].to[0].paths[2]: unclosed '{' in
/// "/api/v1/items/{id"`; warnings print `…: warning: …`. Lines and columns are 1-based and count
/// characters. `field` is empty for findings about the YAML text itself (syntax, limits) and
/// is then left out of the printed form.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The source name as given to the loader (a path or `source_name`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Field path, e.g. `spec.rules[1].to[0].paths[2]`; empty for YAML-level findings.
    pub field: String,
    /// What is wrong, lower-case, no trailing period.
    pub message: String,
}

/// Every error found while loading a policy (not just the first).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The errors, in source order per file; each has [`Severity::Error`].
    pub diagnostics: Vec<Diagnostic>,
}

/// Where a decoded value was written: file, line, column and field path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Source name (shared by every value of one file).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Field path, e.g. `spec.rules[0].name`.
    pub field: String,
}

/// A decoded value together with the place it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub origin: Origin,
}

// === impl Diagnostic ===

impl Diagnostic {
    /// `true` for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

// === impl LoadError ===

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.diagnostics.as_slice() {
            [] => f.write_str("invalid policy"),
            [one] => one.fmt(f),
            [first, rest @ ..] => write!(f, "{first} (and {} more errors)", rest.len()),
        }
    }
}

// === impl Origin ===

impl Origin {
    /// The origin of a child field: `spec` + `rules` = `spec.rules`.
    pub fn field(&self, name: &str, line: usize, column: usize) -> Origin {
        let field = if self.field.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.field)
        };
        Origin {
            file: self.file.clone(),
            line,
            column,
            field,
        }
    }

    /// The same field at another line and column (e.g. a mapping key rather than its value).
    pub fn at(&self, line: usize, column: usize) -> Origin {
        Origin {
            line,
            column,
            ..self.clone()
        }
    }

    /// The origin of a sequence element: `spec.rules` + 1 = `spec.rules[1]`.
    pub fn index(&self, index: usize, line: usize, column: usize) -> Origin {
        Origin {
            file: self.file.clone(),
            line,
            column,
            field: format!("{}[{index}]", self.field),
        }
    }

    /// An error at this place.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Error, message.into())
    }

    /// A warning at this place.
    pub fn warning(&self, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Warning, message.into())
    }

    /// `file:line:column`, for messages that refer to another place.
    pub fn place(&self) -> String {
        format!("{}:{}:{}", self.file, self.line, self.column)
    }

    fn diagnostic(&self, severity: Severity, message: String) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.file.to_string(),
            line: self.line,
            column: self.column,
            field: self.field.clone(),
            message,
        }
    }
}

// === impl Located ===

impl<T> Located<T> {
    /// Pairs a value with its origin.
    pub fn new(value: T, origin: Origin) -> Self {
        Located { value, origin }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            file: Arc::from("orders.yaml"),
            line: 1,
            column: 1,
            field: String::new(),
        }
    }

    #[test]
    fn prints_error_with_field_path() {
        let o = origin()
            .field("spec", 2, 1)
            .field("rules", 3, 3)
            .index(1, 14, 5)
            .field("to", 14, 5)
            .index(0, 14, 7)
            .field("paths", 14, 9)
            .index(2, 14, 11);
        let d = o.error("unclosed '{' in \"/api/v1/items/{id\"");
        assert_eq!(
            d.to_string(),
            "orders.yaml:14:11: spec.rules[1].to[0].paths[2]: unclosed '{' in \"/api/v1/items/{id\""
        );
    }

    #[test]
    fn prints_warning_and_omits_empty_field() {
        assert_eq!(
            origin().warning("w").to_string(),
            "orders.yaml:1:1: warning: w"
        );
        assert_eq!(origin().error("e").to_string(), "orders.yaml:1:1: e");
    }
}
