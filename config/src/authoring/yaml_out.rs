//! Emitting YAML scalars for proposed policies: every string is written double-quoted with
//! JSON escapes, which YAML reads back verbatim (JSON strings are YAML double-quoted scalars).

/// A double-quoted YAML scalar for `s`.
pub(crate) fn quote(s: &str) -> String {
    // serde_json escapes `"`, `\` and control characters; the result is valid YAML.
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A flow list of double-quoted scalars: `["a", "b"]`.
pub(crate) fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(quote).collect();
    format!("[{}]", quoted.join(", "))
}

/// A rule name derived from free text: lower-case letters, digits and single `-`.
pub(crate) fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "rule".to_owned()
    } else {
        out
    }
}

/// Makes `name` unique among `taken` by appending `-2`, `-3`, … and records it.
pub(crate) fn unique(name: String, taken: &mut std::collections::BTreeSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}
