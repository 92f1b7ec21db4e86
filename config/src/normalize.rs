//! Normalize step: the single path-normalization function.
//!
//! Takes in the raw request target exactly as the client sent it (the HTTP/1.1 request-line
//! target or the h2 `:path`, before any other parsing) and passes on a [`RequestTarget`]: a
//! canonical [`NormalizedPath`] for `authorize` and `forward`, plus the query, untouched.
//! [`normalize`] is the only constructor of [`NormalizedPath`], so a value of that type proves
//! the path went through here; the proxy authorizes and forwards that same value.
//!
//! # The rules, in order
//!
//! 1. Targets longer than [`MAX_TARGET_LEN`] bytes are rejected ([`NormalizeError::TooLong`]).
//! 2. The form is recognized. Origin-form (`/path?query`) is the normal case. Absolute-form
//!    (`http://host/path?query`, scheme `http` or `https` in any case) is reduced to
//!    origin-form: its authority takes no part in the decision but must be well-formed and
//!    must not carry userinfo (`http://user@host/`, deprecated by RFC 9110 §4.2.4, is
//!    rejected). An empty path (`http://host`, `http://host?q`) becomes `/`. Asterisk-form
//!    (`*`) and authority-form (`host:port`) are refused with errors for which
//!    [`NormalizeError::is_denied_form`] is true (the proxy answers 403, not 400). Anything
//!    else, including the empty target, is malformed.
//! 3. Anywhere in the target: NUL, any other control character (0x00-0x1F, 0x7F), a raw space,
//!    a raw non-ASCII byte and `#` are rejected. The query (everything after the first `?`)
//!    is checked for exactly these and is otherwise returned untouched.
//! 4. In the path: a raw backslash is rejected, and every `%` must be followed by two hex
//!    digits (so `%`, `%4`, `%zz` and IIS-style `%u002e` are malformed). The decoded byte of
//!    every escape is checked too: `%00` (NUL), any encoded control character (`%01`-`%1F`,
//!    `%7F`), `%2F` (slash) and `%5C` (backslash), in either hex case, are rejected. These
//!    checks read the input once, so only the input's own escapes count: `%252F` is `%25`
//!    followed by the literal text `2F`, not an encoded slash, and stays as it is.
//! 5. Escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%41` → `A`,
//!    `%2e` → `.`); every other escape keeps its byte and gets upper-case hex (`%3b` → `%3B`,
//!    `%c0%ae` → `%C0%AE`). Decoding happens once: `%25` stays `%25`, so `%252e` is
//!    `%252e`. Overlong UTF-8 forms such as `%C0%AE` or `%E0%80%AE` are not unreserved
//!    characters (they are bytes >= 0x80), so they stay encoded and never become `.` or `/`.
//! 6. Dot segments are removed as RFC 3986 §5.2.4 says, on the decoded segments: `.` goes,
//!    `..` removes the segment before it and never climbs above the root (`/../a` → `/a`), a
//!    final `.` or `..` leaves a trailing slash (`/a/b/..` → `/a/`). An empty segment counts
//!    as a segment here (`/a/b//../c` → `/a/b/c`).
//! 7. Repeated slashes are merged (`//a///b` → `/a/b`).
//!
//! Nothing else changes: matching is case-sensitive, `;` is an ordinary character (`..;` is a
//! literal segment, not a dot segment, and no matrix parameters are stripped), trailing dots
//! stay (`/a/b.` is not `/a/b`), a trailing slash stays, and characters that RFC 3986 does not
//! allow unencoded but that are not listed above (`"`, `<`, `{`, `|`, …) pass through as sent.
//!
//! When a target breaks several rules, the error names the first violation reading left to
//! right (after the length check).
//!
//! # Properties
//!
//! The output path starts with `/`; contains no `//`, no `.` or `..` segment, no `%2F`, `%5C`
//! or `%00`, no control, space, `#`, `?`, backslash or non-ASCII byte, and no lower-case hex
//! digit in an escape; and normalizing it again gives it back unchanged. The property tests
//! in `normalize/tests.rs` and the `normalize` fuzz target check exactly this.
//!
//! # Cost
//!
//! One pass over the target, and one allocation for the output path (plus one for the query
//! when there is one). Segments without `%` are copied whole.

use std::fmt;

/// The longest request target accepted, in bytes (path, query and, for absolute-form, scheme
/// and authority together).
pub const MAX_TARGET_LEN: usize = 8 * 1024;

/// A request target after normalization: the canonical path and the original query.
///
/// Built only by [`normalize`] (and [`normalize_absolute`], its form for a target in parts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTarget {
    path: NormalizedPath,
    query: Option<String>,
}

/// A canonical request path (see the module documentation for what canonical means).
///
/// # Security
///
/// Only [`normalize`] (through [`normalize_absolute`] too) builds a `NormalizedPath`. The
/// proxy authorizes a `NormalizedPath` and forwards that same value, so the application
/// receives exactly the path that was authorized, whatever its own path handling would have
/// done with the original target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NormalizedPath(String);

/// Why a request target was refused.
///
/// Every variant except [`AsteriskForm`](NormalizeError::AsteriskForm) and
/// [`AuthorityForm`](NormalizeError::AuthorityForm) means the target is malformed (400).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NormalizeError {
    /// The target is longer than [`MAX_TARGET_LEN`].
    #[error("request target is {len} bytes long, more than the maximum of {MAX_TARGET_LEN}")]
    TooLong {
        /// Length of the rejected target in bytes.
        len: usize,
    },
    /// The target is empty.
    #[error("empty request target")]
    Empty,
    /// Asterisk-form (`OPTIONS *`): denied by policy in v1alpha1.
    #[error("asterisk-form request target ('*') is not allowed")]
    AsteriskForm,
    /// Authority-form (`CONNECT host:port`): denied by policy in v1alpha1.
    #[error("authority-form request target (host:port) is not allowed")]
    AuthorityForm,
    /// Neither origin-form, absolute-form, asterisk-form nor authority-form.
    #[error("request target must be origin-form (/path) or absolute-form (http://host/path)")]
    UnrecognizedForm,
    /// Absolute-form with a scheme other than `http` or `https`.
    #[error("absolute-form request target must use the http or https scheme")]
    UnsupportedScheme,
    /// Absolute-form with userinfo (`http://user@host/`).
    #[error("absolute-form request target must not contain userinfo ('@')")]
    Userinfo,
    /// Absolute-form with an empty authority or one with characters a host and port can't have.
    #[error("absolute-form request target has an empty or invalid authority")]
    InvalidAuthority,
    /// A NUL byte, raw or percent-encoded (`%00`).
    #[error("request target contains NUL (raw or %00)")]
    Nul,
    /// A raw control character other than NUL (0x01-0x1F, 0x7F).
    #[error("request target contains a control character")]
    ControlCharacter,
    /// A percent-encoded control character other than NUL (`%01`-`%1F`, `%7F`).
    #[error("path contains a percent-encoded control character")]
    EncodedControlCharacter,
    /// A raw space.
    #[error("request target contains a raw space")]
    Space,
    /// A raw byte >= 0x80.
    #[error("request target contains a raw non-ASCII byte")]
    NonAscii,
    /// A `#`: fragments are never sent to servers, so one in a target is an attack or a bug.
    #[error("request target contains a fragment ('#')")]
    Fragment,
    /// A raw backslash in the path.
    #[error("path contains a backslash")]
    Backslash,
    /// `%5C` (backslash) in the path, either hex case.
    #[error("path contains an encoded backslash (%5C)")]
    EncodedBackslash,
    /// `%2F` (slash) in the path, either hex case.
    #[error("path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// A `%` not followed by two hex digits (includes `%u0041`).
    #[error("path contains malformed percent-encoding (expected '%' and two hex digits)")]
    MalformedPercentEncoding,
}

/// Normalizes a request target (origin-form or absolute-form, with optional query) per the
/// rules in the module documentation. The only constructor of [`NormalizedPath`]
/// ([`normalize_absolute`] runs the same steps on a target given in parts).
///
/// # Security
///
/// Give this the target exactly as received. Pass the result, not the original, to both
/// `decide` and `forward`.
pub fn normalize(target: &str) -> Result<RequestTarget, NormalizeError> {
    if target.len() > MAX_TARGET_LEN {
        return Err(NormalizeError::TooLong { len: target.len() });
    }
    normalize_origin(strip_to_origin_form(target)?)
}

/// Normalizes an absolute-form target given as its parts, as HTTP/2 sends it (`:scheme`,
/// `:authority`, `:path`): the same checks and the same result as [`normalize`] of
/// `scheme://authority path_and_query`, without joining them into a new string first.
///
/// `path_and_query` must start with `/`; anything else is normalized as the joined string,
/// so that every rare form gets exactly [`normalize`]'s answer.
pub fn normalize_absolute(
    scheme: &str,
    authority: &str,
    path_and_query: &str,
) -> Result<RequestTarget, NormalizeError> {
    if !path_and_query.starts_with('/') {
        return normalize(&format!("{scheme}://{authority}{path_and_query}"));
    }
    let len = scheme.len() + "://".len() + authority.len() + path_and_query.len();
    if len > MAX_TARGET_LEN {
        return Err(NormalizeError::TooLong { len });
    }
    // In the order `normalize` meets them: a forbidden byte anywhere first, then the shape.
    check_query(scheme)?;
    check_query(authority)?;
    check_query(path_and_query)?;
    if split_scheme_name(scheme).is_none() {
        return Err(NormalizeError::UnrecognizedForm);
    }
    check_absolute(scheme, authority)?;
    normalize_origin(path_and_query)
}

/// The path-and-query of an origin-form target (or of an absolute-form one, stripped),
/// normalized.
fn normalize_origin(path_and_query: &str) -> Result<RequestTarget, NormalizeError> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let path = normalize_path(path)?;
    if let Some(query) = query {
        check_query(query)?;
    }
    Ok(RequestTarget {
        path,
        query: query.map(str::to_owned),
    })
}

// === impl RequestTarget ===

impl RequestTarget {
    /// The canonical path.
    pub fn path(&self) -> &NormalizedPath {
        &self.path
    }

    /// The original query, untouched, without the `?`; `Some("")` for a target ending in `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The canonical path and the original query.
    pub fn into_parts(self) -> (NormalizedPath, Option<String>) {
        (self.path, self.query)
    }
}

// === impl NormalizedPath ===

impl NormalizedPath {
    /// The canonical path, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical path as an owned string, without copying it (for the request that is
    /// forwarded).
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for NormalizedPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl NormalizeError ===

impl NormalizeError {
    /// True for asterisk-form / authority-form targets: the proxy answers 403 (denied by
    /// policy), not 400 (malformed).
    pub fn is_denied_form(&self) -> bool {
        matches!(
            self,
            NormalizeError::AsteriskForm | NormalizeError::AuthorityForm
        )
    }
}

// === request-target forms ===

/// Returns the path-and-query of an origin-form or absolute-form target: empty or starting
/// with `/` or `?`.
fn strip_to_origin_form(target: &str) -> Result<&str, NormalizeError> {
    if target.starts_with('/') {
        return Ok(target);
    }
    // The rare forms: report a forbidden byte before judging the shape, so that e.g.
    // "a b" is a space, not an unrecognized form.
    check_query(target)?;
    match target {
        "" => Err(NormalizeError::Empty),
        "*" => Err(NormalizeError::AsteriskForm),
        _ => match split_scheme(target) {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
                let (authority, path_and_query) = rest.split_at(authority_end);
                check_absolute(scheme, authority)?;
                Ok(path_and_query)
            }
            None if is_authority_form(target) => Err(NormalizeError::AuthorityForm),
            None => Err(NormalizeError::UnrecognizedForm),
        },
    }
}

/// Splits `scheme://rest` (RFC 3986 scheme syntax) into `(scheme, rest)`.
fn split_scheme(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    Some((split_scheme_name(scheme)?, rest))
}

/// `scheme` if it has RFC 3986 scheme syntax.
fn split_scheme_name(scheme: &str) -> Option<&str> {
    let mut chars = scheme.chars();
    let first_is_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_is_alpha && rest_ok).then_some(scheme)
}

/// The scheme and authority of an absolute-form target: `http` or `https`, and a host
/// without userinfo.
fn check_absolute(scheme: &str, authority: &str) -> Result<(), NormalizeError> {
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(NormalizeError::UnsupportedScheme);
    }
    check_authority(authority)
}

/// A byte a host or port may contain: unreserved, sub-delims, `:` and the IPv6 brackets.
fn is_authority_byte(b: u8) -> bool {
    AUTHORITY_BYTES[usize::from(b)]
}

/// [`is_authority_byte`] as a table: one load per byte of every h2 `:authority`.
const AUTHORITY_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = in_authority(b as u8);
        b += 1;
    }
    table
};

/// The definition behind [`AUTHORITY_BYTES`].
const fn in_authority(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
        )
}

fn check_authority(authority: &str) -> Result<(), NormalizeError> {
    if authority.is_empty() {
        return Err(NormalizeError::InvalidAuthority);
    }
    for b in authority.bytes() {
        match b {
            b'@' => return Err(NormalizeError::Userinfo),
            b'\\' => return Err(NormalizeError::Backslash),
            _ if is_authority_byte(b) => {}
            _ => return Err(NormalizeError::InvalidAuthority),
        }
    }
    Ok(())
}

/// `host:port` as CONNECT sends it: a non-empty host and a port of 1 to 5 digits.
fn is_authority_form(target: &str) -> bool {
    let Some((host, port)) = target.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host.bytes().all(is_authority_byte)
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
}

// === byte classes ===

/// What a raw byte of the target is, for the checks of rules 3 and 4.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Copied as it is.
    Plain,
    Slash,
    Percent,
    Backslash,
    /// Rejected anywhere in the target.
    Forbidden(Forbidden),
}

/// The bytes of rule 3.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forbidden {
    Nul,
    Control,
    Space,
    NonAscii,
    Hash,
}

const fn class_of(b: u8) -> Class {
    match b {
        0 => Class::Forbidden(Forbidden::Nul),
        0x01..=0x1F | 0x7F => Class::Forbidden(Forbidden::Control),
        b' ' => Class::Forbidden(Forbidden::Space),
        0x80..=0xFF => Class::Forbidden(Forbidden::NonAscii),
        b'#' => Class::Forbidden(Forbidden::Hash),
        b'/' => Class::Slash,
        b'%' => Class::Percent,
        b'\\' => Class::Backslash,
        _ => Class::Plain,
    }
}

impl From<Forbidden> for NormalizeError {
    fn from(forbidden: Forbidden) -> Self {
        match forbidden {
            Forbidden::Nul => NormalizeError::Nul,
            Forbidden::Control => NormalizeError::ControlCharacter,
            Forbidden::Space => NormalizeError::Space,
            Forbidden::NonAscii => NormalizeError::NonAscii,
            Forbidden::Hash => NormalizeError::Fragment,
        }
    }
}

/// [`class_of`] for every byte, so the hot loop is one load per byte.
static CLASSES: [Class; 256] = {
    let mut table = [Class::Plain; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = class_of(b as u8);
        b += 1;
    }
    table
};

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The byte encoded by the escape starting at `bytes[at]` (a `%`), if it is well-formed.
fn decode_escape(bytes: &[u8], at: usize) -> Option<u8> {
    let hi = hex_value(*bytes.get(at + 1)?)?;
    let lo = hex_value(*bytes.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Rule 4 for the byte an escape decodes to.
fn check_decoded(byte: u8) -> Result<(), NormalizeError> {
    match byte {
        0 => Err(NormalizeError::Nul),
        0x01..=0x1F | 0x7F => Err(NormalizeError::EncodedControlCharacter),
        b'/' => Err(NormalizeError::EncodedSlash),
        b'\\' => Err(NormalizeError::EncodedBackslash),
        _ => Ok(()),
    }
}

/// Rule 3: the query (and the rare target forms) may hold anything but these.
fn check_query(query: &str) -> Result<(), NormalizeError> {
    for b in query.bytes() {
        if let Class::Forbidden(forbidden) = CLASSES[usize::from(b)] {
            return Err(forbidden.into());
        }
    }
    Ok(())
}

// === the path ===

/// Rules 4 to 7 on a path that is empty or starts with `/`.
fn normalize_path(path: &str) -> Result<NormalizedPath, NormalizeError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len().max(1));
    // True once an empty segment was written: only then can the output hold `//`.
    let mut has_empty_segment = false;
    // Start of the current segment; the byte before it (if any) is a `/`.
    let mut start = usize::from(bytes.first() == Some(&b'/'));
    loop {
        let (end, has_escape) = scan_segment(bytes, start)?;
        let is_last = end == bytes.len();
        let segment_start = out.len();
        out.push('/');
        if has_escape {
            push_decoded(&mut out, &bytes[start..end]);
        } else {
            out.push_str(&path[start..end]);
        }
        let is_dot_segment = match &out[segment_start + 1..] {
            "." => {
                out.truncate(segment_start);
                true
            }
            ".." => {
                out.truncate(segment_start);
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
                true
            }
            // A final empty segment is a trailing slash, which merging leaves alone.
            "" if !is_last => {
                has_empty_segment = true;
                false
            }
            _ => false,
        };
        if is_last {
            // A final `.` or `..` leaves the directory it named: "/a/b/.." is "/a/".
            if is_dot_segment {
                out.push('/');
            }
            break;
        }
        start = end + 1;
    }
    if has_empty_segment {
        merge_slashes(&mut out);
    }
    Ok(NormalizedPath(out))
}

/// Checks the segment starting at `start` (rule 3 and 4) and returns where it ends (the next
/// `/` or the end of the path) and whether it has an escape.
fn scan_segment(bytes: &[u8], start: usize) -> Result<(usize, bool), NormalizeError> {
    let mut has_escape = false;
    let mut i = start;
    loop {
        // Most bytes are plain: skip runs of them in a tight loop.
        i += bytes[i..]
            .iter()
            .position(|&b| CLASSES[usize::from(b)] != Class::Plain)
            .unwrap_or(bytes.len() - i);
        let Some(&b) = bytes.get(i) else { break };
        match CLASSES[usize::from(b)] {
            Class::Plain => i += 1,
            Class::Slash => break,
            Class::Percent => {
                let decoded =
                    decode_escape(bytes, i).ok_or(NormalizeError::MalformedPercentEncoding)?;
                check_decoded(decoded)?;
                has_escape = true;
                i += 3;
            }
            Class::Backslash => return Err(NormalizeError::Backslash),
            Class::Forbidden(forbidden) => return Err(forbidden.into()),
        }
    }
    Ok((i, has_escape))
}

/// Rule 5 on a segment that [`scan_segment`] accepted.
fn push_decoded(out: &mut String, segment: &[u8]) {
    let mut i = 0;
    while let Some(&b) = segment.get(i) {
        // `scan_segment` accepted only ASCII bytes and well-formed escapes, so a `%` always
        // decodes here.
        let escape = if b == b'%' {
            decode_escape(segment, i)
        } else {
            None
        };
        match escape {
            Some(decoded) if is_unreserved(decoded) => {
                out.push(char::from(decoded));
                i += 3;
            }
            Some(decoded) => {
                out.push('%');
                out.push(char::from(UPPER_HEX[usize::from(decoded >> 4)]));
                out.push(char::from(UPPER_HEX[usize::from(decoded & 0x0F)]));
                i += 3;
            }
            None => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
}

/// Rule 7: collapses every run of `/` into one.
fn merge_slashes(out: &mut String) {
    let mut previous_was_slash = false;
    out.retain(|c| {
        let keep = !(c == '/' && previous_was_slash);
        previous_was_slash = c == '/';
        keep
    });
}

#[cfg(test)]
mod tests;
