//! Path templates: the `paths:` a rule allows (`/api/v1/items/{id}`, final `{*rest}`).
//!
//! Takes the template text a user wrote and produces a [`Template`]: literal segments,
//! `{name}` (exactly one non-empty segment) and a final `{*name}` (one or more remaining
//! segments). No regular expressions. A template that could never match a path produced by
//! [`normalize`](crate::normalize()) (`//`, dot segments, `%2F`, lower-case percent hex, …) is
//! rejected here, because such a rule would silently allow nothing. Templates differing only in
//! parameter names have the same [`Template::canonical`] form and share one route.
//!
//! Parsing borrows: [`TemplateRef`] is a template whose segments point into the text, which is
//! what the compiler keeps for each of its (possibly 20 000) templates; a [`Template`] is the
//! same parse copied into owned strings.

use std::fmt;

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// One `/`-separated piece of a [`Template`]. `S` is the text: `String` in a [`Template`],
/// `&str` borrowed from the template's text while compiling.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment<S = String> {
    /// Matches exactly this text (already in normalized form).
    Literal(S),
    /// `{name}`: exactly one non-empty segment.
    Param(S),
    /// `{*name}`: one or more remaining segments; always last.
    CatchAll(S),
}

/// A parsed template that borrows its text: the same checks as [`Template::parse`], no copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TemplateRef<'t> {
    source: &'t str,
    segments: Vec<Segment<&'t str>>,
}

/// Why a path template was rejected. `Display` is the message users see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is the empty string.
    #[error("path template is empty")]
    Empty,
    /// The template does not start with `/`.
    #[error("path template {0:?} must start with '/'")]
    NoLeadingSlash(String),
    /// A `{` without its `}` in the same segment.
    #[error("unclosed '{{' in {0:?}")]
    Unclosed(String),
    /// A `}` without a `{`.
    #[error("unmatched '}}' in {0:?}")]
    Unmatched(String),
    /// A parameter that is not a whole segment (`/items/x{id}`).
    #[error("a parameter must be a whole segment (\"/{{name}}/\") in {0:?}")]
    PartialSegment(String),
    /// A parameter whose name is not an identifier.
    #[error("parameter name {name:?} is not an identifier (letters, digits, '_') in {template:?}")]
    BadName {
        /// The name as written.
        name: String,
        /// The whole template.
        template: String,
    },
    /// Two parameters with the same name.
    #[error("duplicate parameter name {name:?} in {template:?}")]
    DuplicateName {
        /// The repeated name.
        name: String,
        /// The whole template.
        template: String,
    },
    /// `{*name}` that is not the last segment.
    #[error("catch-all {{*{name}}} must be the last segment in {template:?}")]
    CatchAllNotLast {
        /// The catch-all's name.
        name: String,
        /// The whole template.
        template: String,
    },
    /// A bare `*` segment, which would only match a literal `*`.
    #[error(
        "'*' matches only a literal '*' in {0:?}; use {{*rest}} to match the remaining segments"
    )]
    Star(String),
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in {0:?}")]
    BadPercent(String),
    /// The template can never match a normalized path.
    #[error("{template:?} never matches: {why}")]
    NeverMatches {
        /// The whole template.
        template: String,
        /// Which normalization rule excludes it.
        why: NeverMatches,
    },
    /// A character that must be percent-encoded in a path.
    #[error("character {ch:?} must be percent-encoded in {template:?} (write {encoded})")]
    MustEncode {
        /// The character.
        ch: char,
        /// Its percent-encoded UTF-8 form.
        encoded: String,
        /// The whole template.
        template: String,
    },
}

/// The normalization rule that makes a template unmatchable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NeverMatches {
    /// `//`: normalized paths have no empty segments.
    #[error("normalized paths never contain \"//\"")]
    EmptySegment,
    /// `.` or `..` segments are removed by normalization.
    #[error("normalized paths never contain \".\" or \"..\" segments")]
    DotSegment,
    /// `%2F`: encoded slashes are rejected.
    #[error("requests with an encoded '/' (%2F) are rejected")]
    EncodedSlash,
    /// `\` or `%5C`: backslashes are rejected.
    #[error("requests with a backslash ('\\' or %5C) are rejected")]
    Backslash,
    /// NUL or another control character.
    #[error("requests with control characters are rejected")]
    Control,
    /// `#`: fragments are rejected.
    #[error("requests with '#' are rejected")]
    Fragment,
    /// `?`: the query is never part of the matched path.
    #[error("the query ('?…') is not part of the matched path")]
    Query,
    /// Lower-case percent hex (`%3a`): normalization upper-cases it.
    #[error("normalized paths use upper-case percent-encoding (write {0})")]
    LowerHex(String),
    /// An encoded unreserved character (`%41`): normalization decodes it.
    #[error("normalization decodes {encoded} to {decoded:?} (write {decoded:?})")]
    EncodedUnreserved {
        /// `%41`.
        encoded: String,
        /// `A`.
        decoded: char,
    },
}

// === impl Template ===

impl Template {
    /// Parses a template. See the module documentation for the syntax.
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let parsed = TemplateRef::parse(s)?;
        Ok(Template {
            source: s.to_owned(),
            segments: parsed.segments.iter().map(Segment::to_owned).collect(),
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The segments after the leading `/`.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The route-trie form with parameter names replaced by their position (`{s2}`,
    /// `{*s3}`), so that `/items/{id}` and `/items/{item}` are the same route.
    pub fn canonical(&self) -> String {
        canonical(&self.segments, self.source.len())
    }

    /// The literal text before the first parameter (`/api/v1/items/` for
    /// `/api/v1/items/{id}`); used to name the nearest route of a denied request.
    pub fn literal_prefix(&self) -> &str {
        literal_prefix(&self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// === impl TemplateRef ===

impl<'t> TemplateRef<'t> {
    /// Parses a template (see the module documentation), borrowing `s`.
    pub(crate) fn parse(s: &'t str) -> Result<TemplateRef<'t>, TemplateError> {
        if s.is_empty() {
            return Err(TemplateError::Empty);
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(TemplateError::NoLeadingSlash(s.to_owned()));
        };
        // One pass to parse every segment (so the first malformed one is reported), then the
        // whole-template rules; neither allocates beyond the segment list itself. The
        // character check's errors come first: it runs in full only when the pass met a byte
        // outside [`PLAIN`] or a malformed segment.
        let last = rest.bytes().filter(|&b| b == b'/').count();
        let mut segments = Vec::with_capacity(last + 1);
        let split = split_segments(s, rest, &mut segments);
        if !matches!(split, Ok(true)) {
            check_chars(s)?;
        }
        split?;
        for (i, seg) in segments.iter().enumerate() {
            let name = match *seg {
                Segment::Param(n) => n,
                Segment::CatchAll(n) if i == last => n,
                Segment::CatchAll(n) => {
                    return Err(TemplateError::CatchAllNotLast {
                        name: n.to_owned(),
                        template: s.to_owned(),
                    });
                }
                Segment::Literal(_) => continue,
            };
            let seen = segments[..i].iter().any(
                |earlier| matches!(*earlier, Segment::Param(n) | Segment::CatchAll(n) if n == name),
            );
            if seen {
                return Err(TemplateError::DuplicateName {
                    name: name.to_owned(),
                    template: s.to_owned(),
                });
            }
        }
        Ok(TemplateRef {
            source: s,
            segments,
        })
    }

    /// The template as written.
    pub(crate) fn as_str(&self) -> &'t str {
        self.source
    }

    /// The segments after the leading `/`.
    pub(crate) fn segments(&self) -> &[Segment<&'t str>] {
        &self.segments
    }

    /// [`Template::literal_prefix`].
    pub(crate) fn literal_prefix(&self) -> &'t str {
        literal_prefix(self.source)
    }
}

// === impl Segment ===

impl Segment<&str> {
    fn to_owned(&self) -> Segment {
        match *self {
            Segment::Literal(l) => Segment::Literal(l.to_owned()),
            Segment::Param(n) => Segment::Param(n.to_owned()),
            Segment::CatchAll(n) => Segment::CatchAll(n.to_owned()),
        }
    }
}

/// The canonical form of `segments` (see [`Template::canonical`]); `len` is the source's length.
fn canonical<S: AsRef<str>>(segments: &[Segment<S>], len: usize) -> String {
    let mut out = String::with_capacity(len + 4);
    for (i, seg) in segments.iter().enumerate() {
        out.push('/');
        match seg {
            Segment::Literal(l) => out.push_str(l.as_ref()),
            Segment::Param(_) => push_param(&mut out, "{s", i),
            Segment::CatchAll(_) => push_param(&mut out, "{*s", i),
        }
    }
    out
}

/// The text before the first `{`.
fn literal_prefix(source: &str) -> &str {
    match source.bytes().position(|b| b == b'{') {
        Some(i) => source.get(..i).unwrap_or(source),
        None => source,
    }
}

/// Parses the segments of `rest` (`template` after its leading `/`) into `segments`, in one
/// pass over the bytes; `Ok(true)` when every byte is in [`PLAIN`] (then [`check_chars`] has
/// nothing to find). A segment holding a brace needs more than a literal's checks.
fn split_segments<'t>(
    template: &str,
    rest: &'t str,
    segments: &mut Vec<Segment<&'t str>>,
) -> Result<bool, TemplateError> {
    let (mut start, mut braces, mut plain) = (0, false, true);
    for (i, b) in rest.bytes().enumerate() {
        plain &= PLAIN[usize::from(b)];
        match b {
            // `/` is ASCII, so `start..i` is on character boundaries.
            b'/' => {
                let seg = rest.get(start..i).unwrap_or_default();
                segments.push(parse_segment(template, seg, braces, false)?);
                (start, braces) = (i + 1, false);
            }
            b'{' | b'}' => braces = true,
            _ => {}
        }
    }
    let seg = rest.get(start..).unwrap_or_default();
    segments.push(parse_segment(template, seg, braces, true)?);
    Ok(plain)
}

/// Whole-template character checks: things normalization never lets through.
fn check_chars(s: &str) -> Result<(), TemplateError> {
    // The common case, one table lookup a byte: nothing but characters that need no check.
    if s.bytes().all(|b| PLAIN[usize::from(b)]) {
        return Ok(());
    }
    let never = |why| TemplateError::NeverMatches {
        template: s.to_owned(),
        why,
    };
    let bytes = s.as_bytes();
    for (i, ch) in s.char_indices() {
        match ch {
            '\\' => return Err(never(NeverMatches::Backslash)),
            '#' => return Err(never(NeverMatches::Fragment)),
            '?' => return Err(never(NeverMatches::Query)),
            c if c.is_control() => return Err(never(NeverMatches::Control)),
            '%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                    return Err(TemplateError::BadPercent(s.to_owned()));
                };
                let hex = hex.unwrap_or_default();
                match value {
                    b'/' => return Err(never(NeverMatches::EncodedSlash)),
                    b'\\' => return Err(never(NeverMatches::Backslash)),
                    v if v < 0x20 || v == 0x7f => return Err(never(NeverMatches::Control)),
                    v if is_unreserved(v) => {
                        return Err(never(NeverMatches::EncodedUnreserved {
                            encoded: format!("%{hex}"),
                            decoded: char::from(v),
                        }));
                    }
                    _ if hex.bytes().any(|b| b.is_ascii_lowercase()) => {
                        return Err(never(NeverMatches::LowerHex(format!(
                            "%{}",
                            hex.to_ascii_uppercase()
                        ))));
                    }
                    _ => {}
                }
            }
            c if is_pchar(c) || c == '/' || c == '{' || c == '}' => {}
            c => {
                let mut buf = [0u8; 4];
                let encoded = c
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect();
                return Err(TemplateError::MustEncode {
                    ch: c,
                    encoded,
                    template: s.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// The bytes [`check_chars`] accepts without looking further: ASCII `pchar`s except `%`, and
/// `/`, `{`, `}`.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        // `b < 128`: an ASCII character.
        let c = b as u8 as char;
        table[b] = is_pchar(c) || c == '/' || c == '{' || c == '}';
        b += 1;
    }
    table
};

/// Appends `{s<i>}` (or `{*s<i>}`) without a temporary string or the formatting machinery
/// (the compiler calls this for every parameter of every template).
fn push_param(out: &mut String, open: &str, i: usize) {
    out.push_str(open);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = i;
    loop {
        at -= 1;
        // `n % 10` is a single digit.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
    out.push('}');
}

/// One segment of `template`; `braces`: whether `seg` holds a `{` or `}`.
fn parse_segment<'t>(
    template: &str,
    seg: &'t str,
    braces: bool,
    is_last: bool,
) -> Result<Segment<&'t str>, TemplateError> {
    let never = |why| TemplateError::NeverMatches {
        template: template.to_owned(),
        why,
    };
    if seg.is_empty() {
        // A trailing slash (`/api/`) is a real, normalized path; an empty segment elsewhere
        // is `//`.
        return if is_last {
            Ok(Segment::Literal(""))
        } else {
            Err(never(NeverMatches::EmptySegment))
        };
    }
    if seg == "." || seg == ".." {
        return Err(never(NeverMatches::DotSegment));
    }
    if seg == "*" {
        return Err(TemplateError::Star(template.to_owned()));
    }
    if !braces {
        return Ok(Segment::Literal(seg));
    }
    // Byte scans: the braces are ASCII, and segments are too short for `str::find` to pay off.
    let Some(open) = seg.bytes().position(|b| b == b'{') else {
        if seg.bytes().any(|b| b == b'}') {
            return Err(TemplateError::Unmatched(template.to_owned()));
        }
        return Ok(Segment::Literal(seg));
    };
    let Some(close) = seg.bytes().position(|b| b == b'}') else {
        return Err(TemplateError::Unclosed(template.to_owned()));
    };
    if close < open {
        return Err(TemplateError::Unmatched(template.to_owned()));
    }
    if open != 0 || close != seg.len() - 1 {
        return Err(TemplateError::PartialSegment(template.to_owned()));
    }
    let inner = &seg[1..close];
    let (catch_all, name) = match inner.strip_prefix('*') {
        Some(name) => (true, name),
        None => (false, inner),
    };
    if !is_identifier(name) {
        return Err(TemplateError::BadName {
            name: name.to_owned(),
            template: template.to_owned(),
        });
    }
    Ok(if catch_all {
        Segment::CatchAll(name)
    } else {
        Segment::Param(name)
    })
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` without `%` (handled separately).
const fn is_pchar(c: char) -> bool {
    c.is_ascii()
        && (is_unreserved(c as u8)
            || matches!(
                c,
                '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '=' | ':' | '@'
            ))
}

#[cfg(test)]
mod tests;
