//! The cases, as data. Each names the CVE or the attack class it covers. The allowlist every
//! target enforces is ../shared/bench/allowlist.txt: `GET /api/v1/items`,
//! `GET /api/v1/items/{id}`, `POST /api/v1/orders`, for the `frontend` identity; `/admin`
//! stands for everything else.

use std::time::Duration;

use super::client::{Step, block, frame, hpack_indexed_literal, hpack_int, hpack_literal};
use super::verdict::Reach;

/// Attack categories, in the order of the table in SECURITY.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Category {
    Path,
    Method,
    Host,
    HeaderInjection,
    Smuggling,
    Upgrade,
    H2Translation,
    Flood,
    SlowClient,
    Identity,
}

pub(crate) const CATEGORIES: [Category; 10] = [
    Category::Path,
    Category::Method,
    Category::Host,
    Category::HeaderInjection,
    Category::Smuggling,
    Category::Upgrade,
    Category::H2Translation,
    Category::Flood,
    Category::SlowClient,
    Category::Identity,
];

/// Which certificate the client presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Who {
    /// The allowlisted identity.
    Frontend,
    /// Same CA and trust domain, not in the allowlist.
    Stranger,
    NoCert,
    OtherCa,
    Expired,
    ForeignTrustDomain,
    LookalikeTrustDomain,
    TwoUriSans,
    DnsOnly,
    NoClientAuthEku,
}

/// One adversarial case.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) category: Category,
    /// The CVE or attack class.
    pub(crate) covers: &'static str,
    pub(crate) who: Who,
    pub(crate) h2: bool,
    pub(crate) steps: Vec<Step>,
    pub(crate) reach: Reach,
    /// The server must close the connection (or send GOAWAY) within this long.
    pub(crate) bound: Option<Duration>,
    /// After the case, a fresh connection must still be served (floods).
    pub(crate) liveness: bool,
}

impl Case {
    fn new(
        category: Category,
        name: &str,
        covers: &'static str,
        h2: bool,
        steps: Vec<Step>,
        sent: usize,
    ) -> Case {
        Case {
            name: name.to_owned(),
            category,
            covers,
            who: Who::Frontend,
            h2,
            steps,
            reach: Reach::AtMost(sent),
            bound: None,
            liveness: false,
        }
    }

    fn bounded(mut self, limit: Duration) -> Case {
        self.bound = Some(limit);
        self
    }

    fn live(mut self) -> Case {
        self.liveness = true;
        self
    }
}

fn send(bytes: impl Into<Vec<u8>>) -> Step {
    Step::Send(bytes.into())
}

fn pause(ms: u64) -> Step {
    Step::Pause(Duration::from_millis(ms))
}

fn h1(
    category: Category,
    name: &str,
    covers: &'static str,
    raw: impl Into<Vec<u8>>,
    sent: usize,
) -> Case {
    Case::new(category, name, covers, false, vec![send(raw)], sent)
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: app\r\n\r\n")
}

/// A request smuggled behind another: a request to a denied path.
const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: app\r\n\r\n";

/// An h2 HEADERS frame (END_HEADERS, and END_STREAM if `end`) with pseudo-headers then
/// `extra`, all as raw literals.
pub(crate) fn h2_headers(
    stream: u32,
    method: &[u8],
    path: &[u8],
    extra: &[(&[u8], &[u8])],
    end: bool,
) -> Vec<u8> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", method),
        (b":scheme", b"https"),
        (b":path", path),
        (b":authority", b"app"),
    ];
    fields.extend_from_slice(extra);
    let flags = 0x4 | if end { 0x1 } else { 0 };
    frame(0x1, flags, stream, &block(&fields))
}

fn h2(category: Category, name: &str, covers: &'static str, frames: Vec<u8>, sent: usize) -> Case {
    Case::new(category, name, covers, true, vec![send(frames)], sent)
}

pub(crate) fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    path(&mut cases);
    method(&mut cases);
    host(&mut cases);
    header_injection(&mut cases);
    smuggling(&mut cases);
    upgrade(&mut cases);
    h2_translation(&mut cases);
    flood(&mut cases);
    slow(&mut cases);
    identity(&mut cases);
    cases
}

fn path(cases: &mut Vec<Case>) {
    use Category::Path;
    let targets: &[(&str, &'static str)] = &[
        ("/admin", "baseline: a path outside the allowlist"),
        (
            "/api/v1/items/../../../admin",
            "dot-segment traversal (CVE-2019-9901)",
        ),
        (
            "/api/v1/items/x/../../../../admin",
            "dot-segment traversal past the root",
        ),
        (
            "/api/v1/items/%2e%2e/%2e%2e/%2e%2e/admin",
            "encoded dot segments (CVE-2021-31920 class)",
        ),
        (
            "/api/v1/items/%2E%2E/%2E%2E/%2E%2E/admin",
            "encoded dot segments, upper-case hex",
        ),
        (
            "/api/v1/items/.%2e/.%2e/.%2e/admin",
            "half-encoded dot segments",
        ),
        (
            "/api/v1/items/..%2fadmin",
            "encoded slash (CVE-2019-9901, CVE-2021-31920)",
        ),
        (
            "/api/v1/items/..%2F..%2F..%2Fadmin",
            "encoded slash, upper-case",
        ),
        (
            "/api/v1/items%2f..%2f..%2f..%2fadmin",
            "encoded slash joining segments",
        ),
        (
            "/api/v1/items/..%5c..%5c..%5cadmin",
            "encoded backslash (IIS/Windows reading)",
        ),
        (
            "/api/v1/items/..\\..\\..\\admin",
            "raw backslash as separator",
        ),
        (
            "/api/v1/items/%252e%252e%252fadmin",
            "double encoding (decoded twice by the app)",
        ),
        (
            "/api/v1/items/%252e%252e/%252e%252e/%252e%252e/admin",
            "double-encoded dot segments",
        ),
        (
            "/api/v1/items/%25252e%25252e%25252fadmin",
            "triple encoding",
        ),
        (
            "/api/v1/items/x%252f..%252f..%252f..%252fadmin",
            "double-encoded slash",
        ),
        (
            "/api/v1/items;/../../../admin",
            "path parameter before traversal (CVE-2021-39156 class)",
        ),
        ("/api/v1/items/..;/..;/..;/admin", "Tomcat ..; traversal"),
        (
            "/admin;/api/v1/items",
            "matrix parameter hiding the real path",
        ),
        ("/admin%3b/api/v1/items", "encoded semicolon"),
        ("//admin", "leading double slash (CVE-2021-39155 class)"),
        (
            "///api/v1/items/../../../admin",
            "repeated slashes and traversal",
        ),
        (
            "/api/v1/items//../../admin",
            "empty segment before traversal",
        ),
        (
            "/api/v1/items/x%00/../../../admin",
            "encoded NUL truncation",
        ),
        ("/api/v1/items/x%00", "encoded NUL"),
        (
            "/admin%00/api/v1/items",
            "NUL truncation to a denied prefix",
        ),
        ("/API/V1/ITEMS", "case folding: upper-case path"),
        ("/Admin", "case folding of a denied path"),
        (
            "/api/v1/items/x#/../../../admin",
            "fragment in the request target",
        ),
        ("/api/v1/items/x%23/../../../admin", "encoded fragment"),
        (
            "/api/v1/items/x%3f/../../../admin",
            "encoded query delimiter",
        ),
        ("/api/v1/items/x?/../../../admin", "traversal in the query"),
        ("/api/v1/items/%u002e%u002e/admin", "IIS %u encoding"),
        (
            "/api/v1/items/%c0%ae%c0%ae/%c0%ae%c0%ae/%c0%ae%c0%ae/admin",
            "overlong UTF-8 dots (CVE-2000-0884 class)",
        ),
        ("/api/v1/items/%ef%bc%8e%ef%bc%8e/admin", "full-width dots"),
        ("/api/v1/items/admin.", "trailing dot"),
        ("/admin.", "trailing dot on a denied path"),
        ("/admin/", "trailing slash on a denied path"),
        ("/admin/.", "trailing dot segment"),
        ("/api/v1/items/.../admin", "triple dot segment"),
        ("/api/v1/items/x/%2e", "encoded single dot"),
        ("/api/v1/items/x%09/../../../admin", "encoded tab"),
        ("/api/v1/items/x%20/../../../admin", "encoded space"),
        ("/api/v1/items/x::$DATA", "NTFS alternate data stream"),
        ("http://app/admin", "absolute-form target"),
        (
            "http://app/api/v1/items/../../../admin",
            "absolute-form with traversal",
        ),
        ("https://evil@app/admin", "absolute-form with userinfo"),
        ("HTTP://app/admin", "absolute-form, upper-case scheme"),
        ("api/v1/items", "relative target without a leading slash"),
        ("/./admin", "single dot segment at the root"),
        (
            "/api/v1/orders/../items",
            "traversal landing on an allowed path (must be forwarded normalized)",
        ),
    ];
    for (target, covers) in targets {
        cases.push(h1(Path, &format!("GET {target}"), covers, get(target), 1));
    }
    let long = format!("/api/v1/items/{}", "a".repeat(9000));
    cases.push(h1(
        Path,
        "GET very long path",
        "oversized request target",
        get(&long),
        1,
    ));
    cases.push(h1(
        Path,
        "GET raw non-ASCII dots",
        "raw UTF-8 in the request target",
        [
            b"GET /api/v1/items/\xef\xbc\x8e\xef\xbc\x8e/admin HTTP/1.1\r\nHost: app\r\n\r\n"
                .as_slice(),
        ]
        .concat(),
        1,
    ));
}

fn method(cases: &mut Vec<Case>) {
    use Category::Method;
    let raws: &[(&str, &str, &'static str)] = &[
        (
            "get lower-case",
            "get /api/v1/items HTTP/1.1\r\nHost: app\r\n\r\n",
            "method case folding",
        ),
        (
            "GeT mixed-case",
            "GeT /api/v1/items HTTP/1.1\r\nHost: app\r\n\r\n",
            "method case folding",
        ),
        (
            "post lower-case to orders",
            "post /api/v1/orders HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n",
            "method case folding",
        ),
        (
            "DELETE allowed path",
            "DELETE /api/v1/items/1 HTTP/1.1\r\nHost: app\r\n\r\n",
            "method outside the allowlist",
        ),
        (
            "POST to GET-only path",
            "POST /api/v1/items HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n",
            "method outside the allowlist",
        ),
        (
            "HEAD on GET-only path",
            "HEAD /api/v1/items HTTP/1.1\r\nHost: app\r\n\r\n",
            "HEAD vs GET confusion",
        ),
        (
            "PROPFIND",
            "PROPFIND /api/v1/items HTTP/1.1\r\nHost: app\r\n\r\n",
            "extension method",
        ),
        (
            "TRACE",
            "TRACE /api/v1/items HTTP/1.1\r\nHost: app\r\n\r\n",
            "TRACE (cross-site tracing)",
        ),
        (
            "OPTIONS *",
            "OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n",
            "asterisk-form",
        ),
        (
            "GET with X-HTTP-Method-Override",
            "GET /api/v1/items/1 HTTP/1.1\r\nHost: app\r\nX-HTTP-Method-Override: DELETE\r\n\r\n",
            "method override header",
        ),
        (
            "POST with X-HTTP-Method-Override",
            "POST /api/v1/orders HTTP/1.1\r\nHost: app\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n",
            "method override header",
        ),
        (
            "GET with X-HTTP-Method",
            "GET /api/v1/items/1 HTTP/1.1\r\nHost: app\r\nX-HTTP-Method: PUT\r\n\r\n",
            "method override header",
        ),
        (
            "GET with X-Method-Override",
            "GET /api/v1/items/1 HTTP/1.1\r\nHost: app\r\nX-Method-Override: PATCH\r\n\r\n",
            "method override header",
        ),
        (
            "GET with X-Original-Method",
            "GET /api/v1/items/1 HTTP/1.1\r\nHost: app\r\nX-Original-Method: DELETE\r\n\r\n",
            "method override header",
        ),
        (
            "method with trailing tab",
            "GET\t/api/v1/items HTTP/1.1\r\nHost: app\r\n\r\n",
            "request-line whitespace",
        ),
        (
            "double space in request line",
            "GET  /admin HTTP/1.1\r\nHost: app\r\n\r\n",
            "request-line whitespace",
        ),
        (
            "method with NUL",
            "GE\0T /api/v1/items HTTP/1.1\r\nHost: app\r\n\r\n",
            "NUL in method",
        ),
    ];
    for (name, raw, covers) in raws {
        cases.push(h1(Method, name, covers, *raw, 1));
    }
}

fn host(cases: &mut Vec<Case>) {
    use Category::Host;
    let raws: &[(&str, &str, &'static str)] = &[
        (
            "missing Host",
            "GET /api/v1/items HTTP/1.1\r\n\r\n",
            "missing Host",
        ),
        (
            "missing Host, HTTP/1.0",
            "GET /api/v1/items HTTP/1.0\r\n\r\n",
            "missing Host",
        ),
        (
            "duplicate Host",
            "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nHost: evil\r\n\r\n",
            "duplicate Host",
        ),
        (
            "Host with userinfo",
            "GET /api/v1/items HTTP/1.1\r\nHost: evil@app\r\n\r\n",
            "Host odd forms",
        ),
        (
            "Host with path",
            "GET /api/v1/items HTTP/1.1\r\nHost: app/admin\r\n\r\n",
            "Host odd forms",
        ),
        (
            "empty Host",
            "GET /api/v1/items HTTP/1.1\r\nHost:\r\n\r\n",
            "Host odd forms",
        ),
        (
            "Host with bad port",
            "GET /api/v1/items HTTP/1.1\r\nHost: app:99999999\r\n\r\n",
            "Host odd forms",
        ),
        (
            "absolute-form vs Host",
            "GET http://evil/admin HTTP/1.1\r\nHost: app\r\n\r\n",
            "absolute-form authority differs from Host",
        ),
        (
            "Host space before colon",
            "GET /api/v1/items HTTP/1.1\r\nHost : evil\r\n\r\n",
            "space before colon",
        ),
        (
            "X-Forwarded-Host",
            "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-Forwarded-Host: spoofed\r\n\r\n",
            "forwarded-host routing override",
        ),
        (
            "X-Original-URL",
            "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-Original-URL: /admin?spoof\r\n\r\n",
            "X-Original-URL rewrite (Symfony/IIS)",
        ),
        (
            "X-Rewrite-URL",
            "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-Rewrite-URL: /admin?spoof\r\n\r\n",
            "X-Rewrite-URL rewrite",
        ),
    ];
    for (name, raw, covers) in raws {
        cases.push(h1(Host, name, covers, *raw, 1));
    }
}

fn header_injection(cases: &mut Vec<Case>) {
    use Category::HeaderInjection;
    let raws: &[(&str, &[u8], &'static str)] = &[
        ("NUL in header value", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-A: a\0b\r\n\r\n", "NUL in a field value"),
        ("bare CR in header value", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-A: a\rGET /admin HTTP/1.1\r\n\r\n", "bare CR (header injection)"),
        ("bare LF line endings", b"GET /api/v1/items HTTP/1.1\nHost: app\n\n", "bare LF as line terminator"),
        ("bare LF before smuggled line", b"GET /api/v1/items HTTP/1.1\r\nHost: app\nX-A: 1\n\nGET /admin HTTP/1.1\r\nHost: app\r\n\r\n", "bare LF desync"),
        ("space before colon", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-Forwarded-Client-Cert : spoofed\r\n\r\n", "space before colon"),
        ("tab before colon", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-A\t: 1\r\n\r\n", "whitespace before colon"),
        ("obs-fold continuation", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-A: a\r\n spoofed\r\n\r\n", "obs-fold"),
        ("obs-fold of XFCC", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-Other: 1\r\n X-Forwarded-Client-Cert: spoofed\r\n\r\n", "obs-fold hiding a field"),
        ("empty header name", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\n: spoofed\r\n\r\n", "empty field name"),
        ("header name with space", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX A: 1\r\n\r\n", "invalid field name"),
        ("header name with slash", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX/A: 1\r\n\r\n", "invalid field name"),
        ("non-ASCII header value", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-A: \xff\xfe\r\n\r\n", "obs-text in a field value"),
        ("non-ASCII header name", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-\xc3\xa9: 1\r\n\r\n", "non-token field name"),
        ("line without colon", b"GET /api/v1/items HTTP/1.1\r\nHost: app\r\nGET /admin HTTP/1.1\r\n\r\n", "request line as a field"),
        ("CR in request target", b"GET /api/v1/items\r/admin HTTP/1.1\r\nHost: app\r\n\r\n", "CR in the request line"),
        ("HTTP/0.9-style request", b"GET /admin\r\n\r\n", "HTTP/0.9 request line"),
        ("HTTP/2.0 version in h1", b"GET /admin HTTP/2.0\r\nHost: app\r\n\r\n", "bogus version"),
        ("HTTP/1.2 version", b"GET /admin HTTP/1.2\r\nHost: app\r\n\r\n", "bogus version"),
    ];
    for (name, raw, covers) in raws {
        cases.push(h1(HeaderInjection, name, covers, raw.to_vec(), 1));
    }
    let huge = format!(
        "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    cases.push(h1(
        HeaderInjection,
        "200 KB header",
        "huge header (memory)",
        huge,
        1,
    ));
    let many: String = (0..500).map(|i| format!("X-{i}: {i}\r\n")).collect();
    cases.push(h1(
        HeaderInjection,
        "500 headers",
        "many headers (memory, CPU)",
        format!("GET /api/v1/items HTTP/1.1\r\nHost: app\r\n{many}\r\n"),
        1,
    ));
    let many_cookies: String = (0..300).map(|i| format!("Cookie: c{i}=1\r\n")).collect();
    cases.push(h1(
        HeaderInjection,
        "300 Cookie fields",
        "many repeated fields",
        format!("GET /api/v1/items HTTP/1.1\r\nHost: app\r\n{many_cookies}\r\n"),
        1,
    ));
}

fn post(extra: &str, body: &str) -> String {
    format!("POST /api/v1/orders HTTP/1.1\r\nHost: app\r\n{extra}\r\n{body}")
}

fn smuggling(cases: &mut Vec<Case>) {
    use Category::Smuggling;
    let chunked_smuggle = format!("0\r\n\r\n{SMUGGLED}");
    let te_cl_body = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let list: Vec<(&str, String, &'static str)> = vec![
        (
            "CL.TE",
            post(
                &format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "CL.TE request smuggling",
        ),
        (
            "TE.CL",
            post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                &te_cl_body,
            ),
            "TE.CL request smuggling",
        ),
        (
            "TE.CL, TE first",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &te_cl_body,
            ),
            "TE.CL request smuggling",
        ),
        (
            "TE xchunked",
            post(
                &format!(
                    "Transfer-Encoding: xchunked\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation",
        ),
        (
            "TE space before colon",
            post(
                &format!(
                    "Transfer-Encoding : chunked\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (space before colon)",
        ),
        (
            "TE tab value",
            post(
                &format!(
                    "Transfer-Encoding:\tchunked\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (tab)",
        ),
        (
            "TE chunked + identity",
            post(
                &format!(
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (two fields)",
        ),
        (
            "TE identity, chunked",
            post("Transfer-Encoding: identity, chunked\r\n", &chunked_smuggle),
            "TE obfuscation (list)",
        ),
        (
            "TE chunked, identity",
            post(
                &format!(
                    "Transfer-Encoding: chunked, identity\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (chunked not last)",
        ),
        (
            "TE quoted",
            post(
                &format!(
                    "Transfer-Encoding: \"chunked\"\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (quoted)",
        ),
        (
            "TE mixed case",
            post(
                &format!(
                    "Transfer-Encoding: cHuNkEd\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (case)",
        ),
        (
            "TE underscore name",
            post(
                &format!(
                    "Transfer_Encoding: chunked\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (underscore)",
        ),
        (
            "TE obs-fold",
            post(
                &format!(
                    "X-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (obs-fold)",
        ),
        (
            "TE newline in name",
            post(
                &format!(
                    "Transfer-Encoding\n: chunked\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (LF in name)",
        ),
        (
            "TE chunk",
            post(
                &format!(
                    "Transfer-Encoding: chunk\r\nContent-Length: {}\r\n",
                    chunked_smuggle.len()
                ),
                &chunked_smuggle,
            ),
            "TE obfuscation (unknown coding)",
        ),
        (
            "duplicate CL differing",
            post("Content-Length: 0\r\nContent-Length: 35\r\n", SMUGGLED),
            "duplicate Content-Length",
        ),
        (
            "duplicate CL equal",
            post("Content-Length: 35\r\nContent-Length: 35\r\n", SMUGGLED),
            "duplicate Content-Length",
        ),
        (
            "CL list",
            post("Content-Length: 0, 35\r\n", SMUGGLED),
            "Content-Length list",
        ),
        (
            "CL plus sign",
            post("Content-Length: +35\r\n", SMUGGLED),
            "Content-Length with +",
        ),
        (
            "CL leading zeros",
            post("Content-Length: 0035\r\n", SMUGGLED),
            "Content-Length leading zeros",
        ),
        (
            "CL negative",
            post("Content-Length: -1\r\n", SMUGGLED),
            "negative Content-Length",
        ),
        (
            "CL hex",
            post("Content-Length: 0x23\r\n", SMUGGLED),
            "hex Content-Length",
        ),
        (
            "CL overflow",
            post("Content-Length: 18446744073709551617\r\n", SMUGGLED),
            "Content-Length integer overflow",
        ),
        (
            "CL space inside",
            post("Content-Length: 3 5\r\n", SMUGGLED),
            "Content-Length with inner space",
        ),
        (
            "chunk size overflow",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("10000000000000023\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            ),
            "chunk-size integer overflow",
        ),
        (
            "chunk size leading zeros",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("0000000000000000000000023\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            ),
            "chunk-size overflow by zero padding",
        ),
        (
            "chunk size negative",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("-23\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            ),
            "negative chunk size",
        ),
        (
            "chunk ext with LF",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("2;a\nxx\r\n23\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            ),
            "LF in chunk extension (CVE-2023-… chunk-ext class)",
        ),
        (
            "chunk bare LF terminators",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("2\nxx\n0\n\n{SMUGGLED}"),
            ),
            "bare LF in chunked framing",
        ),
        (
            "chunk data longer than size",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("1\r\nxx\r\n0\r\n\r\n{SMUGGLED}"),
            ),
            "chunk overrun",
        ),
        (
            "pipelined allowed then denied",
            format!("{}{SMUGGLED}", get("/api/v1/items")),
            "pipelining",
        ),
        (
            "pipelined POST with body then denied",
            format!("{}{SMUGGLED}", post("Content-Length: 5\r\n", "hello")),
            "pipelining after a body",
        ),
        (
            "GET with CL body",
            format!(
                "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            "GET with a body (CL.0 class)",
        ),
        (
            "GET with chunked body",
            format!(
                "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
                SMUGGLED.len()
            ),
            "GET with a body",
        ),
        (
            "HEAD with CL body",
            format!(
                "HEAD /api/v1/items HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            "HEAD with a body",
        ),
        (
            "Connection: content-length",
            post(
                &format!(
                    "Connection: Content-Length\r\nContent-Length: {}\r\n",
                    SMUGGLED.len()
                ),
                SMUGGLED,
            ),
            "Connection naming a framing field",
        ),
        (
            "Connection: transfer-encoding",
            post(
                "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            "Connection naming a framing field",
        ),
        (
            "HTTP/1.0 with TE",
            format!(
                "POST /api/v1/orders HTTP/1.0\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{chunked_smuggle}",
                chunked_smuggle.len()
            ),
            "HTTP/1.0 with Transfer-Encoding",
        ),
        (
            "HTTP/1.0 keep-alive pipelined",
            format!("GET /api/v1/items HTTP/1.0\r\nConnection: keep-alive\r\n\r\n{SMUGGLED}"),
            "HTTP/1.0 keep-alive pipelining",
        ),
        (
            "Expect 100-continue then smuggle",
            post("Expect: 100-continue\r\nContent-Length: 0\r\n", SMUGGLED),
            "Expect handling desync",
        ),
    ];
    for (name, raw, covers) in list {
        cases.push(h1(Smuggling, name, covers, raw, 1));
    }
}

fn upgrade(cases: &mut Vec<Case>) {
    use Category::Upgrade;
    let ws = "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let then =
        |first: &str, second: Vec<u8>| vec![send(first.to_owned()), pause(300), send(second)];
    cases.push(Case::new(
        Upgrade,
        "WebSocket upgrade then request in tunnel",
        "WebSocket tunnel smuggling",
        false,
        then(ws, SMUGGLED.into()),
        2,
    ));
    let ws_bad = ws.replace("Version: 13", "Version: 1337");
    cases.push(Case::new(
        Upgrade,
        "WebSocket bad version then request",
        "WebSocket version desync (nginx/varnish class)",
        false,
        then(&ws_bad, SMUGGLED.into()),
        2,
    ));
    let mut h2_in_tunnel = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2_in_tunnel.extend(frame(0x4, 0, 0, &[]));
    h2_in_tunnel.extend(h2_headers(1, b"GET", b"/admin", &[], true));
    let h2c = "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n";
    cases.push(Case::new(
        Upgrade,
        "h2c upgrade smuggling",
        "h2c upgrade smuggling (BishopFox 2020)",
        false,
        then(h2c, h2_in_tunnel.clone()),
        2,
    ));
    let h2c_post = "POST /api/v1/orders HTTP/1.1\r\nHost: app\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\nContent-Length: 0\r\n\r\n";
    cases.push(Case::new(
        Upgrade,
        "h2c upgrade on POST",
        "h2c upgrade smuggling",
        false,
        then(h2c_post, h2_in_tunnel),
        2,
    ));
    let connect = "CONNECT app:80 HTTP/1.1\r\nHost: app:80\r\n\r\n";
    cases.push(Case::new(
        Upgrade,
        "CONNECT then request",
        "CONNECT tunnelling",
        false,
        then(connect, SMUGGLED.into()),
        2,
    ));
    cases.push(h1(
        Upgrade,
        "Upgrade without Connection",
        "Upgrade field alone",
        "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\n\r\n",
        1,
    ));
    cases.push(h1(
        Upgrade,
        "Upgrade to denied path",
        "upgrade on a denied route",
        "GET /admin HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        1,
    ));
    let ws_post = "POST /api/v1/orders HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n";
    cases.push(Case::new(
        Upgrade,
        "upgrade on POST then request",
        "WebSocket tunnel smuggling",
        false,
        then(ws_post, SMUGGLED.into()),
        2,
    ));
    cases.push(h1(
        Upgrade,
        "h2 preface over TLS http/1.1",
        "protocol confusion",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        0,
    ));
}

fn h2_translation(cases: &mut Vec<Case>) {
    use Category::H2Translation;
    let simple: Vec<(&str, Vec<u8>, &'static str)> = vec![
        (
            "h2 :path /admin",
            h2_headers(1, b"GET", b"/admin", &[], true),
            "baseline over h2",
        ),
        (
            "h2 :path traversal",
            h2_headers(1, b"GET", b"/api/v1/items/../../../admin", &[], true),
            "dot segments in :path",
        ),
        (
            "h2 :path encoded traversal",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items/%2e%2e/%2e%2e/%2e%2e/admin",
                &[],
                true,
            ),
            "encoded dot segments in :path",
        ),
        (
            "h2 :path double encoded",
            h2_headers(1, b"GET", b"/api/v1/items/%252e%252e%252fadmin", &[], true),
            "double encoding in :path",
        ),
        (
            "h2 :path CRLF",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items HTTP/1.1\r\nHost: app\r\n\r\nGET /admin",
                &[],
                true,
            ),
            "CRLF injection via :path (H2.CRLF)",
        ),
        (
            "h2 :path with space",
            h2_headers(1, b"GET", b"/api/v1/items /admin", &[], true),
            "space in :path",
        ),
        (
            "h2 empty :path",
            h2_headers(1, b"GET", b"", &[], true),
            "empty :path",
        ),
        (
            "h2 :path asterisk",
            h2_headers(1, b"OPTIONS", b"*", &[], true),
            "asterisk :path",
        ),
        (
            "h2 :path relative",
            h2_headers(1, b"GET", b"admin", &[], true),
            ":path without leading slash",
        ),
        (
            "h2 :path absolute",
            h2_headers(1, b"GET", b"http://app/admin", &[], true),
            "absolute-form :path",
        ),
        (
            "h2 :path fragment",
            h2_headers(1, b"GET", b"/api/v1/items/x#/../../../admin", &[], true),
            "fragment in :path",
        ),
        (
            "h2 :method with space",
            h2_headers(1, b"GET /admin HTTP/1.1\r\n", b"/api/v1/items", &[], true),
            "request-line injection via :method",
        ),
        (
            "h2 lower-case method",
            h2_headers(1, b"get", b"/api/v1/items", &[], true),
            "method case over h2",
        ),
        (
            "h2 header value CRLF",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items",
                &[(b"x-a", b"1\r\n\r\nGET /admin HTTP/1.1\r\nHost: app")],
                true,
            ),
            "CRLF in a field value (H2.CRLF)",
        ),
        (
            "h2 header name CRLF",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items",
                &[(b"x-a\r\nx-forwarded-client-cert", b"spoofed")],
                true,
            ),
            "CRLF in a field name",
        ),
        (
            "h2 header name colon",
            h2_headers(1, b"GET", b"/api/v1/items", &[(b"x-a:b", b"spoofed")], true),
            "colon in a field name",
        ),
        (
            "h2 upper-case header name",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items",
                &[(b"X-Forwarded-Client-Cert", b"spoofed")],
                true,
            ),
            "upper-case field name over h2",
        ),
        (
            "h2 connection header",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items",
                &[(b"connection", b"close, x-a")],
                true,
            ),
            "connection-specific field over h2",
        ),
        (
            "h2 transfer-encoding",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items",
                &[(b"transfer-encoding", b"chunked")],
                true,
            ),
            "connection-specific field over h2",
        ),
        (
            "h2 upgrade header",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items",
                &[(b"upgrade", b"websocket")],
                true,
            ),
            "connection-specific field over h2",
        ),
        (
            "h2 te gzip",
            h2_headers(1, b"GET", b"/api/v1/items", &[(b"te", b"gzip")], true),
            "TE other than trailers over h2",
        ),
        (
            "h2 duplicate :path",
            frame(
                0x1,
                0x5,
                1,
                &block(&[
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":path", b"/api/v1/items"),
                    (b":path", b"/admin"),
                    (b":authority", b"app"),
                ]),
            ),
            "duplicate pseudo-header",
        ),
        (
            "h2 pseudo after regular",
            frame(
                0x1,
                0x5,
                1,
                &block(&[
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b"x-a", b"1"),
                    (b":path", b"/admin"),
                    (b":authority", b"app"),
                ]),
            ),
            "pseudo-header after a regular field",
        ),
        (
            "h2 missing :path",
            frame(
                0x1,
                0x5,
                1,
                &block(&[
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", b"app"),
                ]),
            ),
            "missing :path",
        ),
        (
            "h2 authority with CRLF",
            frame(
                0x1,
                0x5,
                1,
                &block(&[
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":path", b"/api/v1/items"),
                    (b":authority", b"app\r\nx-forwarded-client-cert: spoofed"),
                ]),
            ),
            "CRLF in :authority",
        ),
        (
            "h2 host header smuggle",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items",
                &[(b"host", b"app\r\n\r\nGET /admin HTTP/1.1")],
                true,
            ),
            "CRLF in host",
        ),
        (
            "h2 XFCC spoof",
            h2_headers(
                1,
                b"GET",
                b"/api/v1/items",
                &[(
                    b"x-forwarded-client-cert",
                    b"By=spoofed;URI=spiffe://cluster.local/ns/ops/sa/admin",
                )],
                true,
            ),
            "XFCC spoofing over h2",
        ),
    ];
    for (name, frames, covers) in simple {
        cases.push(h2(H2Translation, name, covers, frames, 1));
    }
    // H2.CL: a content-length shorter than the DATA that follows.
    let mut h2cl = h2_headers(
        1,
        b"POST",
        b"/api/v1/orders",
        &[(b"content-length", b"0")],
        false,
    );
    h2cl.extend(frame(0x0, 0x1, 1, SMUGGLED.as_bytes()));
    cases.push(h2(
        H2Translation,
        "H2.CL",
        "H2.CL request smuggling (content-length vs DATA)",
        h2cl,
        1,
    ));
    let mut h2te = h2_headers(
        1,
        b"POST",
        b"/api/v1/orders",
        &[(b"transfer-encoding", b"chunked")],
        false,
    );
    h2te.extend(frame(
        0x0,
        0x1,
        1,
        format!("0\r\n\r\n{SMUGGLED}").as_bytes(),
    ));
    cases.push(h2(
        H2Translation,
        "H2.TE",
        "H2.TE request smuggling",
        h2te,
        1,
    ));
    let mut h2cl_long = h2_headers(
        1,
        b"POST",
        b"/api/v1/orders",
        &[(b"content-length", b"100")],
        false,
    );
    h2cl_long.extend(frame(0x0, 0x1, 1, SMUGGLED.as_bytes()));
    cases.push(h2(
        H2Translation,
        "H2.CL longer than DATA",
        "H2.CL request smuggling",
        h2cl_long,
        1,
    ));
    let mut get_body = h2_headers(1, b"GET", b"/api/v1/items", &[], false);
    get_body.extend(frame(0x0, 0x1, 1, SMUGGLED.as_bytes()));
    cases.push(h2(
        H2Translation,
        "h2 GET with DATA",
        "GET with a body over h2",
        get_body,
        1,
    ));
}

fn flood(cases: &mut Vec<Case>) {
    use Category::Flood;
    let limit = Duration::from_secs(10);
    let mut rapid = Vec::new();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        rapid.extend(h2_headers(id, b"GET", b"/api/v1/items", &[], true));
        rapid.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    cases.push(
        h2(
            Flood,
            "Rapid Reset",
            "CVE-2023-44487 (HTTP/2 Rapid Reset)",
            rapid,
            1000,
        )
        .bounded(limit)
        .live(),
    );
    let mut made_you_reset = Vec::new();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        made_you_reset.extend(h2_headers(id, b"GET", b"/api/v1/items", &[], false));
        // WINDOW_UPDATE with a zero increment: the server must reset the stream.
        made_you_reset.extend(frame(0x8, 0, id, &0u32.to_be_bytes()));
    }
    cases.push(
        h2(
            Flood,
            "MadeYouReset",
            "CVE-2025-8671 (MadeYouReset)",
            made_you_reset,
            1000,
        )
        .bounded(limit)
        .live(),
    );
    let mut continuation = h2_headers(1, b"GET", b"/api/v1/items", &[], true);
    // Take END_HEADERS off the HEADERS frame, then never end the block.
    continuation[4] = 0x1;
    let filler = {
        let mut out = Vec::new();
        for i in 0..300 {
            hpack_literal(format!("x-flood-{i}").as_bytes(), &[b'a'; 40], &mut out);
        }
        out
    };
    for _ in 0..200 {
        continuation.extend(frame(0x9, 0, 1, &filler[..filler.len().min(16_000)]));
    }
    cases.push(
        h2(
            Flood,
            "CONTINUATION flood",
            "CVE-2024-27316 class (CONTINUATION flood)",
            continuation,
            1,
        )
        .bounded(limit)
        .live(),
    );
    let mut bomb_block = Vec::new();
    for (name, value) in [
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"https"),
        (b":path", b"/api/v1/items"),
        (b":authority", b"app"),
    ] {
        hpack_literal(name, value, &mut bomb_block);
    }
    hpack_indexed_literal(b"x-bomb", &[b'b'; 4000], &mut bomb_block);
    for _ in 0..4000 {
        // Index 62: the entry just added to the dynamic table.
        hpack_int(0x80, 7, 62, &mut bomb_block);
    }
    cases.push(
        h2(
            Flood,
            "HPACK bomb",
            "HPACK bomb (dynamic-table amplification)",
            frame(0x1, 0x5, 1, &bomb_block),
            1,
        )
        .live(),
    );
    let mut pings = Vec::new();
    for i in 0..20_000u64 {
        pings.extend(frame(0x6, 0, 0, &i.to_be_bytes()));
    }
    cases.push(h2(Flood, "PING flood", "CVE-2019-9512 (ping flood)", pings, 0).live());
    let mut settings = Vec::new();
    for _ in 0..20_000 {
        settings.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
    }
    cases.push(
        h2(
            Flood,
            "SETTINGS flood",
            "CVE-2019-9515 (settings flood)",
            settings,
            0,
        )
        .live(),
    );
    let mut streams = Vec::new();
    for i in 0..2000u32 {
        streams.extend(h2_headers(2 * i + 1, b"GET", b"/api/v1/items", &[], false));
    }
    cases.push(
        h2(
            Flood,
            "open-stream flood",
            "stream concurrency exhaustion",
            streams,
            2000,
        )
        .live(),
    );
    let mut empty = h2_headers(1, b"POST", b"/api/v1/orders", &[], false);
    for _ in 0..20_000 {
        empty.extend(frame(0x0, 0, 1, &[]));
    }
    cases.push(
        h2(
            Flood,
            "empty DATA flood",
            "CVE-2019-9518 (empty frames flood)",
            empty,
            1,
        )
        .live(),
    );
}

fn slow(cases: &mut Vec<Case>) {
    use Category::SlowClient;
    let limit = Duration::from_secs(15);
    let mut drip = vec![send("GET /api/v1/items HTTP/1.1\r\nHost: app\r\n")];
    for i in 0..14 {
        drip.push(pause(1000));
        drip.push(send(format!("X-{i}: 1\r\n")));
    }
    drip.push(pause(1000));
    cases.push(
        Case::new(
            SlowClient,
            "slowloris header drip",
            "slowloris (header-read time)",
            false,
            drip,
            1,
        )
        .bounded(limit)
        .live(),
    );
    let stall = vec![
        send("GET /api/v1/items HTTP/1.1\r\nHost: app\r\n"),
        pause(14_000),
    ];
    cases.push(
        Case::new(
            SlowClient,
            "stalled request head",
            "slowloris (incomplete head)",
            false,
            stall,
            1,
        )
        .bounded(limit)
        .live(),
    );
    let body_stall = vec![send(post("Content-Length: 100\r\n", "x")), pause(14_000)];
    cases.push(
        Case::new(
            SlowClient,
            "stalled POST body",
            "slow POST (R.U.D.Y.)",
            false,
            body_stall,
            1,
        )
        .bounded(limit)
        .live(),
    );
    let idle = vec![pause(14_000)];
    cases.push(
        Case::new(
            SlowClient,
            "silent connection",
            "idle connection after handshake",
            false,
            idle,
            0,
        )
        .bounded(limit)
        .live(),
    );
    let mut h2_stall = h2_headers(1, b"GET", b"/api/v1/items", &[], true);
    h2_stall[4] = 0x1; // no END_HEADERS: the block never ends
    cases.push(
        Case::new(
            SlowClient,
            "h2 unfinished header block",
            "slowloris over h2",
            true,
            vec![send(h2_stall), pause(14_000)],
            1,
        )
        .bounded(limit)
        .live(),
    );
}

fn identity(cases: &mut Vec<Case>) {
    use Category::Identity;
    let spellings = [
        "X-Forwarded-Client-Cert",
        "x-forwarded-client-cert",
        "X-FORWARDED-CLIENT-CERT",
        "X_Forwarded_Client_Cert",
        "x-forwarded-client-cert\0",
    ];
    for spelling in spellings {
        cases.push(h1(
            Identity,
            &format!("XFCC spoof {spelling:?}"),
            "XFCC spoofing",
            format!("GET /api/v1/items HTTP/1.1\r\nHost: app\r\n{spelling}: By=spoofed;URI=spiffe://cluster.local/ns/ops/sa/admin\r\n\r\n"),
            1,
        ));
    }
    cases.push(h1(
        Identity,
        "XFCC twice",
        "XFCC spoofing (duplicate fields)",
        "GET /api/v1/items HTTP/1.1\r\nHost: app\r\nx-forwarded-client-cert: spoofed\r\nx-forwarded-client-cert: spoofed2\r\n\r\n",
        1,
    ));
    for field in [
        "X-SSL-Client-Cert",
        "X-Client-Cert",
        "SSL-Client-Cert",
        "X-SPIFFE-ID",
        "X-Client-Verify",
        "Forwarded",
        "X-Forwarded-For",
        "X-Real-IP",
    ] {
        cases.push(h1(
            Identity,
            &format!("{field} spoof"),
            "identity header spoofing",
            format!("GET /api/v1/items HTTP/1.1\r\nHost: app\r\n{field}: spoofed\r\n\r\n"),
            1,
        ));
    }
    let who: [(Who, &str, &'static str); 9] = [
        (
            Who::Stranger,
            "valid SVID not in the allowlist",
            "authorization by identity",
        ),
        (Who::NoCert, "no client certificate", "mTLS required"),
        (
            Who::OtherCa,
            "certificate from another CA",
            "untrusted chain",
        ),
        (Who::Expired, "expired certificate", "expired chain"),
        (
            Who::ForeignTrustDomain,
            "foreign trust domain",
            "SPIFFE trust domain check",
        ),
        (
            Who::LookalikeTrustDomain,
            "trust domain cluster.local.evil.com",
            "SPIFFE trust domain look-alike",
        ),
        (
            Who::TwoUriSans,
            "two URI SANs",
            "SVID with several URI SANs",
        ),
        (
            Who::DnsOnly,
            "DNS-only certificate",
            "certificate without a SPIFFE ID",
        ),
        (Who::NoClientAuthEku, "no clientAuth EKU", "EKU check"),
    ];
    for (who, name, covers) in who {
        let mut case = h1(Identity, name, covers, get("/api/v1/items"), 1);
        case.who = who;
        case.reach = Reach::Nothing;
        cases.push(case);
    }
}
