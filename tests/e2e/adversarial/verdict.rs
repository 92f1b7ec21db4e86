//! The judge: given what reached the oracle during one case, is anything outside the
//! allowlist among it under any plausible backend reading?
//!
//! A forwarded request target is read the way backends have been known to read paths —
//! percent-decoding (once, twice), `\` as `/`, `;` parameters dropped, case folded, cut at NUL,
//! at `#` or at `?`, trailing dots and slashes dropped — in every combination of up to three
//! such steps; slash merging and dot segments are applied to each reading by `normalize`.
//! Every reading must be allowed by the policy for the request's method (and for any method
//! an override header names, and for GET when the method is HEAD).

use std::collections::HashSet;

use palisade_config::{Peer, Policy, normalize};

use super::oracle::{Arrived, Head};

/// Header fields through which a backend may take another method.
const METHOD_OVERRIDES: [&str; 4] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
];

/// What a case allows to reach the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// At most this many requests, each allowed under every reading.
    AtMost(usize),
    /// Nothing at all (the client must not be admitted).
    Nothing,
}

/// Everything wrong with what arrived; empty means the case passed.
pub(crate) fn violations(
    arrived: &Arrived,
    reach: Reach,
    policy: &Policy,
    peer: &Peer,
) -> Vec<String> {
    let mut found = Vec::new();
    for sample in &arrived.garbage {
        found.push(format!(
            "unparseable bytes reached the app: {:?}",
            String::from_utf8_lossy(sample)
        ));
    }
    match reach {
        Reach::Nothing if !arrived.heads.is_empty() => {
            found.push(format!(
                "{} request(s) from a client that must not be admitted reached the app",
                arrived.heads.len()
            ));
        }
        Reach::AtMost(n) if arrived.heads.len() > n => {
            found.push(format!(
                "{} request heads reached the app for {n} sent (smuggled)",
                arrived.heads.len()
            ));
        }
        _ => {}
    }
    for head in &arrived.heads {
        judge_head(head, policy, peer, &mut found);
    }
    found
}

fn judge_head(head: &Head, policy: &Policy, peer: &Peer, found: &mut Vec<String>) {
    let what = format!("{} {}", head.method, head.target);
    if head.tunneled {
        found.push(format!("{what}: read inside an upgraded tunnel"));
    }
    let count = |name: &str| {
        head.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    let te = count("transfer-encoding");
    let cl = count("content-length");
    let te_is_chunked = head.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case(b"chunked")
    });
    if cl > 1 || te > 1 || (te == 1 && cl == 1) || (te == 1 && !te_is_chunked) {
        found.push(format!("{what}: forwarded with ambiguous framing"));
    }
    for (name, value) in &head.headers {
        if name.bytes().any(|b| b.is_ascii_control())
            || value.iter().any(|b| *b == 0 || *b == b'\r' || *b == b'\n')
        {
            found.push(format!("{what}: control character in a forwarded header"));
        }
    }
    let mut methods = vec![head.method.clone(), head.method.to_ascii_uppercase()];
    if head.method.eq_ignore_ascii_case("HEAD") {
        methods.push("GET".to_owned());
    }
    for (name, value) in &head.headers {
        if METHOD_OVERRIDES
            .iter()
            .any(|o| name.eq_ignore_ascii_case(o))
        {
            methods.push(String::from_utf8_lossy(value).trim().to_ascii_uppercase());
        }
    }
    methods.sort();
    methods.dedup();
    let Some(path) = path_of(&head.target) else {
        found.push(format!(
            "{what}: target is not origin-form or absolute-form"
        ));
        return;
    };
    for reading in readings(path) {
        for method in &methods {
            if !allowed(policy, method, &reading, peer) {
                found.push(format!(
                    "{what}: read as {method} {reading:?}, which the policy denies"
                ));
                return;
            }
        }
    }
}

/// Fields through which a client could claim an identity, an address or another URL.
const IDENTITY_FIELDS: [&str; 14] = [
    "x-forwarded-client-cert",
    "x-ssl-client-cert",
    "x-client-cert",
    "ssl-client-cert",
    "x-spiffe-id",
    "x-client-verify",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
    "x-http-method-override",
];

/// Identity and override fields (in any spelling, `_` for `-` included) whose value carries
/// the marker `spoof`: the client's claim reached the app. A field whose name itself
/// carries the marker counts too.
pub(crate) fn spoofed(arrived: &Arrived) -> Vec<String> {
    let mut found = Vec::new();
    for head in &arrived.heads {
        for (name, value) in &head.headers {
            let dashed = name.to_ascii_lowercase().replace('_', "-");
            let value = String::from_utf8_lossy(value).to_ascii_lowercase();
            let identity = IDENTITY_FIELDS.contains(&dashed.trim_end_matches('\0'));
            if dashed.contains("spoof") || (identity && value.contains("spoof")) {
                found.push(format!(
                    "{} {}: spoofed header reached the app: {name}",
                    head.method, head.target
                ));
            }
        }
    }
    found
}

/// The path (with query) of an origin-form or absolute-form target.
fn path_of(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return Some(target);
    }
    let lower = target.to_ascii_lowercase();
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| lower.starts_with(scheme).then(|| &target[scheme.len()..]))?;
    Some(rest.find('/').map_or("/", |at| &rest[at..]))
}

type Reading = fn(&str) -> String;

const READINGS: [Reading; 9] = [
    decode,
    |p| p.replace('\\', "/"),
    strip_params,
    |p| p.to_ascii_lowercase(),
    |p| cut_at(p, '\0'),
    |p| cut_at(p, '#'),
    |p| cut_at(p, '?'),
    |p| {
        let trimmed = p.trim_end_matches(['.', '/']);
        if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed.to_owned()
        }
    },
    |p| {
        p.strip_suffix('/')
            .filter(|s| !s.is_empty())
            .unwrap_or(p)
            .to_owned()
    },
];

/// Every reading of `path` made of up to three steps.
pub(crate) fn readings(path: &str) -> HashSet<String> {
    let mut seen: HashSet<String> = HashSet::from([path.to_owned()]);
    let mut frontier = vec![path.to_owned()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for p in &frontier {
            for read in READINGS {
                let r = read(p);
                if seen.insert(r.clone()) {
                    next.push(r);
                }
            }
        }
        frontier = next;
    }
    seen
}

fn cut_at(p: &str, c: char) -> String {
    p.split(c).next().unwrap_or_default().to_owned()
}

/// Percent-decodes every valid escape once.
fn decode(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = hex(bytes[i + 1])
                .zip(hex(bytes[i + 2]))
                .map(|(h, l)| h * 16 + l)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Drops `;params` from every segment (Tomcat, Jetty, Spring).
fn strip_params(p: &str) -> String {
    let (path, query) = p.split_once('?').map_or((p, None), |(a, b)| (a, Some(b)));
    let stripped: Vec<&str> = path
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect();
    let mut out = stripped.join("/");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Whether `policy` allows `method` on `reading`. A reading `normalize` refuses is first made
/// literal (each byte `normalize` refuses becomes `_`; the readings above already cover the
/// other interpretations of those bytes).
pub(crate) fn allowed(policy: &Policy, method: &str, reading: &str, peer: &Peer) -> bool {
    let literal = literal(reading);
    match normalize(&literal) {
        Ok(target) => policy.decide(method, target.path(), peer).is_allowed(),
        Err(_) => false,
    }
}

fn literal(reading: &str) -> String {
    // `normalize` refuses targets past 8 KiB; shorten long segments instead, which keeps the
    // segment structure the policy decides on.
    let shortened: String;
    let reading = if reading.len() > palisade_config::normalize::MAX_TARGET_LEN {
        shortened = reading
            .split('/')
            .map(|segment| segment.get(..64).unwrap_or(segment))
            .collect::<Vec<_>>()
            .join("/");
        shortened.as_str()
    } else {
        reading
    };
    let bytes = reading.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = (i + 2 < bytes.len())
                .then(|| hex(bytes[i + 1]).zip(hex(bytes[i + 2])))
                .flatten()
                .map(|(h, l)| h * 16 + l);
            match escape {
                Some(byte) if byte == b'/' || byte == b'\\' || byte < 0x20 || byte == 0x7f => {
                    out.push('_');
                }
                Some(_) => out.push_str(&reading[i..i + 3]),
                None => {
                    out.push('_');
                    i += 1;
                    continue;
                }
            }
            i += 3;
            continue;
        }
        if b == b'\\' || b == b'#' || b <= 0x20 || b >= 0x7f {
            out.push('_');
        } else {
            out.push(b as char);
        }
        i += 1;
    }
    if out.is_empty() || !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields<'a> = &'a [(&'a str, &'a str)];

    fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> Head {
        Head {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            tunneled: false,
        }
    }

    /// The judge itself: what it must let through and what it must catch.
    #[test]
    fn judge_catches_what_backends_would_misread() {
        let policy = super::super::targets::policy();
        let peer = Peer::Spiffe(
            palisade_config::SpiffeId::parse(super::super::targets::FRONTEND).expect("id"),
        );
        let judge = |heads: Vec<Head>, reach| {
            let arrived = Arrived {
                heads,
                ..Arrived::default()
            };
            let mut found = violations(&arrived, reach, &policy, &peer);
            found.extend(spoofed(&arrived));
            found
        };
        for ok in [
            "/api/v1/items",
            "/api/v1/items/42",
            "/api/v1/items/a;b",
            "/api/v1/items/X.",
            "http://app/api/v1/items",
        ] {
            let found = judge(vec![head("GET", ok, &[])], Reach::AtMost(1));
            assert!(found.is_empty(), "{ok}: {found:?}");
        }
        let bad: &[(&str, &str, Fields<'_>)] = &[
            ("GET", "/admin", &[]),
            ("GET", "/api/v1/items/%252e%252e%252fadmin", &[]),
            ("GET", "/api/v1/items/..%2fadmin", &[]),
            ("GET", "/api/v1/items/..\\..\\..\\admin", &[]),
            ("GET", "/api/v1/items/x%00/../../../admin", &[]),
            ("GET", "/api/v1/items;/../../../admin", &[]),
            ("GET", "/API/V1/ITEMS", &[]),
            ("HEAD", "/api/v1/items", &[]),
            ("GET", "*", &[]),
            (
                "GET",
                "/api/v1/items/1",
                &[("x-http-method-override", "DELETE")],
            ),
            (
                "GET",
                "/api/v1/items",
                &[("x-forwarded-client-cert", "By=spoofed")],
            ),
            (
                "POST",
                "/api/v1/orders",
                &[("content-length", "1"), ("transfer-encoding", "chunked")],
            ),
        ];
        for (method, target, headers) in bad {
            let found = judge(vec![head(method, target, headers)], Reach::AtMost(1));
            assert!(
                !found.is_empty(),
                "{method} {target} {headers:?} was not caught"
            );
        }
        let two = vec![
            head("GET", "/api/v1/items", &[]),
            head("GET", "/api/v1/items", &[]),
        ];
        assert!(
            !judge(two, Reach::AtMost(1)).is_empty(),
            "a smuggled second head"
        );
        assert!(!judge(vec![head("GET", "/api/v1/items", &[])], Reach::Nothing).is_empty());
    }
}
