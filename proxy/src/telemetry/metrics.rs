//! Telemetry, metrics: the Prometheus families palisade records and their exposition.
//!
//! Takes what the request path observed (a finished request's labels and duration, a failed
//! handshake's reason, a detection outcome, a connection opening and closing), what the
//! outbound side observed (each connection's outcome and peer, its connect time, the bytes it
//! carried and how it ended) and the reload status; passes on the OpenMetrics text the admin
//! port serves on `/metrics`.
//!
//! Recording is an atomic add on a pre-registered family; label values are small enums or
//! shared strings (`Arc<str>`, interned per route template and per peer connection), so a
//! request allocates no label text. Each inbound connection keeps the handles of the few
//! request series it recorded last ([`PeerSeries`]): a request that repeats one finds them by
//! comparing a few bytes and a pointer, without hashing its labels or locking a family. The
//! reload status and the certificate expiry are read only when a scrape renders them. Labels have bounded cardinality: route *templates*
//! (never raw paths), a fixed set of methods and status classes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::reload::StatusHandle;

/// Most distinct route templates labelled; past it a route is counted as `other` (a policy
/// with more templates than this is unusual, and the label set must stay bounded).
pub const MAX_ROUTES: usize = 512;

/// Most request series one connection keeps resolved (method × route × status class ×
/// decision combinations it saw last); past it the oldest is replaced.
const SERIES_PER_CONNECTION: usize = 8;

/// Upper bounds of the request-duration histogram buckets, in seconds (0.5 ms … 30 s).
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Which side of the proxy a request crossed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// From a peer to the app (the inbound listener): `inbound`.
    Inbound,
    /// From the app to a peer (the outbound listener): `outbound`.
    Outbound,
}

/// The request method: the registered ones, everything else `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum MethodLabel {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `PATCH`.
    Patch,
    /// `OPTIONS`.
    Options,
    /// `CONNECT`.
    Connect,
    /// `TRACE`.
    Trace,
    /// Any extension method: `other`.
    Other,
}

/// The decision label: what the policy said and what palisade did about it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DecisionLabel {
    /// Allowed by a rule: `allow`.
    Allow,
    /// Denied, 403: `deny`.
    Deny,
    /// Audit mode: the policy would deny; forwarded anyway: `audit_deny`.
    AuditDeny,
    /// The request target could not be normalized (400), no decision was made: `invalid`.
    Invalid,
}

/// `1xx` … `5xx`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusClass {
    /// 100–199.
    Informational,
    /// 200–299.
    Success,
    /// 300–399.
    Redirection,
    /// 400–499.
    ClientError,
    /// 500–599 (and anything out of range).
    ServerError,
}

/// Protocol detection outcome (permissive mode).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DetectOutcome {
    /// The first bytes were a TLS ClientHello: `tls`.
    Tls,
    /// The first bytes were not TLS: `plaintext`.
    Plaintext,
    /// The client sent nothing within the detect timeout: `timeout`.
    Timeout,
    /// The client closed or the read failed: `error`.
    Error,
}

/// What became of one outbound connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum OutboundOutcome {
    /// Carried over mutual TLS to a verified peer: `meshed`.
    Meshed,
    /// Carried in plaintext to an unmeshed destination: `passed_through`.
    PassedThrough,
    /// Closed without connecting (unmeshed destination refused, or a loop): `refused`.
    Refused,
    /// Connecting failed (TCP connect, TLS handshake, peer identity): `failed`.
    Failed,
}

/// How a carried outbound connection ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CloseReason {
    /// The app or the destination closed it: `closed`.
    Closed,
    /// A read or write failed (reset): `error`.
    Error,
    /// No byte either way for the idle timeout: `idle_timeout`.
    IdleTimeout,
    /// Still open when the drain time after shutdown was up: `drain_timeout`.
    DrainTimeout,
}

/// Label values written as fixed text.
macro_rules! label_values {
    ($($ty:ty { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl $ty {
            /// The label text.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )+};
}

label_values! {
    Direction { Inbound => "inbound", Outbound => "outbound" }
    MethodLabel {
        Get => "GET", Head => "HEAD", Post => "POST", Put => "PUT", Delete => "DELETE",
        Patch => "PATCH", Options => "OPTIONS", Connect => "CONNECT", Trace => "TRACE",
        Other => "other",
    }
    DecisionLabel { Allow => "allow", Deny => "deny", AuditDeny => "audit_deny", Invalid => "invalid" }
    StatusClass {
        Informational => "1xx", Success => "2xx", Redirection => "3xx", ClientError => "4xx",
        ServerError => "5xx",
    }
    DetectOutcome { Tls => "tls", Plaintext => "plaintext", Timeout => "timeout", Error => "error" }
    OutboundOutcome {
        Meshed => "meshed", PassedThrough => "passed_through", Refused => "refused",
        Failed => "failed",
    }
    CloseReason {
        Closed => "closed", Error => "error", IdleTimeout => "idle_timeout",
        DrainTimeout => "drain_timeout",
    }
}

/// Labels of `palisade_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Which side.
    pub direction: Direction,
    /// The method.
    pub method: MethodLabel,
    /// The route template that matched (or the nearest rule's template on a denial); empty
    /// when no route matched.
    pub route: Arc<str>,
    /// The response status class.
    pub status_class: StatusClass,
    /// What the policy decided.
    pub decision: DecisionLabel,
    /// The peer's Kubernetes namespace (`/ns/<ns>/…` of its SPIFFE ID); empty if none.
    pub peer_namespace: Arc<str>,
    /// The peer's service account (`…/sa/<sa>`); empty if none.
    pub peer_sa: Arc<str>,
}

/// A finished request's labels besides its direction, route and peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestClass {
    /// The method.
    pub method: MethodLabel,
    /// The response status class.
    pub status_class: StatusClass,
    /// What the policy decided.
    pub decision: DecisionLabel,
}

/// The request series of one connection's peer: `palisade_requests_total` and
/// `palisade_request_duration_seconds` with the direction and peer fixed, and the handles of
/// the last [`SERIES_PER_CONNECTION`] series recorded, so that a request like a recent one
/// costs two atomic adds and a histogram bucket, not two hashed family lookups.
///
/// The handles share their series with the families (a scrape sees every count); palisade
/// never removes a series, so a kept handle is never stale.
#[derive(Debug)]
pub struct PeerSeries {
    metrics: Metrics,
    direction: Direction,
    peer_namespace: Arc<str>,
    peer_sa: Arc<str>,
    /// Tried, never waited for: a contended cache falls back to the families.
    resolved: Mutex<Resolved>,
}

/// The series a connection recorded last, at most [`SERIES_PER_CONNECTION`].
#[derive(Debug, Default)]
struct Resolved {
    series: Vec<Series>,
    /// The entry replaced next once `series` is full.
    oldest: usize,
}

/// One request series' handles.
#[derive(Debug)]
struct Series {
    class: RequestClass,
    /// An interned route label: found by pointer.
    route: Arc<str>,
    requests: Counter,
    duration: Histogram,
}

/// Labels of `palisade_request_duration_seconds` (no peer: histograms are the costly series).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    direction: Direction,
    method: MethodLabel,
    route: Arc<str>,
    status_class: StatusClass,
    decision: DecisionLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: DetectOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Labels of `palisade_outbound_connections_total`: the outcome and the destination peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabels {
    /// What became of the connection.
    pub outcome: OutboundOutcome,
    /// Why it was refused or failed (`unmeshed`, `loop`, `connect`, `connect_timeout`,
    /// `handshake`, `handshake_timeout`, `no_spiffe_id`, `tls_config`, `orig_dst`,
    /// `drain_timeout`); empty for meshed and passed-through connections.
    pub reason: &'static str,
    /// The peer's namespace (`/ns/<ns>/…` of its SPIFFE ID: the verified one when meshed,
    /// the expected one when a meshed connection failed); empty if none.
    pub peer_namespace: Arc<str>,
    /// The peer's service account (`…/sa/<sa>`); empty if none.
    pub peer_sa: Arc<str>,
}

/// Labels of the outbound byte counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundPeerLabels {
    outcome: OutboundOutcome,
    peer_namespace: Arc<str>,
    peer_sa: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundOutcomeLabels {
    outcome: OutboundOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    reason: CloseReason,
}

/// The byte counters of one carried outbound connection, resolved once so that each copied
/// chunk costs one atomic add.
#[derive(Clone, Debug)]
pub struct OutboundBytes {
    /// Bytes from the app to the destination (`palisade_outbound_sent_bytes_total`).
    pub sent: Counter,
    /// Bytes from the destination to the app (`palisade_outbound_received_bytes_total`).
    pub received: Counter,
}

/// Every metric palisade records, registered once. Clone shares the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    handshake_failures: Family<ReasonLabels, Counter>,
    detections: Family<OutcomeLabels, Counter>,
    connections_open: Gauge,
    connections_accepted: Counter,
    spans_dropped: Counter,
    access_log_dropped: Counter,
    outbound: OutboundFamilies,
    routes: RwLock<HashMap<Box<str>, Arc<str>>>,
    empty: Arc<str>,
    other: Arc<str>,
}

/// The outbound side's families.
#[derive(Debug)]
struct OutboundFamilies {
    connections: Family<OutboundLabels, Counter>,
    open: Gauge,
    connect_durations: Family<OutboundOutcomeLabels, Histogram>,
    handshake_failures: Family<ReasonLabels, Counter>,
    sent: Family<OutboundPeerLabels, Counter>,
    received: Family<OutboundPeerLabels, Counter>,
    closed: Family<CloseLabels, Counter>,
}

/// Renders the reload status at scrape time.
#[derive(Debug)]
struct ReloadCollector(StatusHandle);

// === impl Metrics ===

impl Metrics {
    /// Registers every family. With `status`, a scrape also renders the reload counters, the
    /// policy and identity in force and the certificate expiry.
    pub fn new(status: Option<StatusHandle>) -> Metrics {
        let mut registry = Registry::with_prefix("palisade");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by direction, method, route template, status class, decision and peer",
            requests.clone(),
        );
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request head to the end of the response body",
            durations.clone(),
        );
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Inbound TLS handshakes that failed, by reason",
            handshake_failures.clone(),
        );
        let detections = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "protocol_detections",
            "Permissive mode: protocol detection outcomes (tls, plaintext, timeout, error)",
            detections.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Inbound connections currently open",
            connections_open.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "Inbound connections accepted",
            connections_accepted.clone(),
        );
        let spans_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Finished spans dropped because the export queue was full (collector slow or down)",
            spans_dropped.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let outbound = OutboundFamilies::register(&mut registry);
        if let Some(status) = status {
            registry.register_collector(Box::new(ReloadCollector(status)));
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests,
                durations,
                handshake_failures,
                detections,
                connections_open,
                connections_accepted,
                spans_dropped,
                access_log_dropped,
                outbound,
                routes: RwLock::new(HashMap::new()),
                empty: Arc::from(""),
                other: Arc::from("other"),
            }),
        }
    }

    /// Counts one finished request and its duration, looking both series up by their labels.
    /// A connection's requests go through its [`PeerSeries`] instead, which keeps the
    /// handles of the series it used last.
    pub fn request(&self, labels: &RequestLabels, duration: Duration) {
        let inner = &*self.inner;
        inner.requests.get_or_create(labels).inc();
        inner
            .durations
            .get_or_create(&DurationLabels::of(labels))
            .observe(duration.as_secs_f64());
    }

    /// The request series of a connection crossing `direction` from the peer in
    /// `peer_namespace` with service account `peer_sa` (empty strings for none).
    pub fn peer_series(
        &self,
        direction: Direction,
        peer_namespace: Arc<str>,
        peer_sa: Arc<str>,
    ) -> PeerSeries {
        PeerSeries {
            metrics: self.clone(),
            direction,
            peer_namespace,
            peer_sa,
            resolved: Mutex::new(Resolved::default()),
        }
    }

    /// Counts a failed inbound handshake; `reason` is a
    /// [`HandshakeFailure::as_label`](crate::tls::HandshakeFailure::as_label) (or `timeout`,
    /// `no_spiffe_id`).
    pub fn handshake_failed(&self, reason: &'static str) {
        self.inner
            .handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one protocol detection.
    pub fn detected(&self, outcome: DetectOutcome) {
        self.inner
            .detections
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a connection as accepted and open until the guard is dropped.
    pub fn connection(&self) -> OpenConnection {
        self.inner.connections_accepted.inc();
        self.inner.connections_open.inc();
        OpenConnection(self.clone())
    }

    /// The route label for `template`: the shared interned string (no allocation once seen),
    /// empty for none, `other` past [`MAX_ROUTES`].
    pub fn route(&self, template: Option<&str>) -> Arc<str> {
        let inner = &*self.inner;
        let Some(template) = template.filter(|t| !t.is_empty()) else {
            return inner.empty.clone();
        };
        if let Ok(routes) = inner.routes.read()
            && let Some(route) = routes.get(template)
        {
            return route.clone();
        }
        let Ok(mut routes) = inner.routes.write() else {
            return inner.other.clone();
        };
        if routes.len() >= MAX_ROUTES {
            return inner.other.clone();
        }
        routes
            .entry(template.into())
            .or_insert_with(|| Arc::from(template))
            .clone()
    }

    /// The empty label value, shared.
    pub fn empty(&self) -> Arc<str> {
        self.inner.empty.clone()
    }

    /// The same metrics in the Prometheus text format 0.0.4 (for scrapers that do not ask for
    /// OpenMetrics).
    pub fn render_prometheus(&self) -> String {
        to_prometheus_text(&self.render())
    }

    /// The counter of dropped spans (the trace exporter increments it).
    pub fn spans_dropped(&self) -> Counter {
        self.inner.spans_dropped.clone()
    }

    /// The counter of dropped access-log lines (the access log increments it).
    pub fn access_log_dropped(&self) -> Counter {
        self.inner.access_log_dropped.clone()
    }

    /// Counts an outbound connection as open until the guard is dropped.
    pub fn outbound_connection(&self) -> OpenOutboundConnection {
        self.inner.outbound.open.inc();
        OpenOutboundConnection(self.clone())
    }

    /// Counts an outbound connection's outcome (once per connection).
    pub fn outbound_outcome(&self, labels: &OutboundLabels) {
        self.inner.outbound.connections.get_or_create(labels).inc();
    }

    /// Records how long connecting took (TCP connect, and the TLS handshake when meshed).
    pub fn outbound_connect_duration(&self, outcome: OutboundOutcome, elapsed: Duration) {
        self.inner
            .outbound
            .connect_durations
            .get_or_create(&OutboundOutcomeLabels { outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a failed outbound handshake; `reason` is a
    /// [`HandshakeFailure::as_label`](crate::tls::HandshakeFailure::as_label) (or `timeout`,
    /// `no_spiffe_id`).
    pub fn outbound_handshake_failed(&self, reason: &'static str) {
        self.inner
            .outbound
            .handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The byte counters of a connection with this outcome and peer.
    pub fn outbound_bytes(
        &self,
        outcome: OutboundOutcome,
        peer_namespace: &Arc<str>,
        peer_sa: &Arc<str>,
    ) -> OutboundBytes {
        let labels = OutboundPeerLabels {
            outcome,
            peer_namespace: peer_namespace.clone(),
            peer_sa: peer_sa.clone(),
        };
        let outbound = &self.inner.outbound;
        OutboundBytes {
            sent: outbound.sent.get_or_create(&labels).clone(),
            received: outbound.received.get_or_create(&labels).clone(),
        }
    }

    /// Counts how a carried outbound connection ended.
    pub fn outbound_closed(&self, reason: CloseReason) {
        self.inner
            .outbound
            .closed
            .get_or_create(&CloseLabels { reason })
            .inc();
    }

    /// The OpenMetrics text of every family, as `/metrics` serves it.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(error) =
            prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
        {
            tracing::warn!(%error, "cannot render metrics");
        }
        text
    }
}

// === impl DurationLabels ===

impl DurationLabels {
    /// The duration series of a request's labels: the same without the peer.
    fn of(labels: &RequestLabels) -> Self {
        DurationLabels {
            direction: labels.direction,
            method: labels.method,
            route: labels.route.clone(),
            status_class: labels.status_class,
            decision: labels.decision,
        }
    }
}

// === impl PeerSeries ===

impl PeerSeries {
    /// Counts one finished request of this peer and its duration; `route` is an interned
    /// label from [`PeerSeries::route`] or [`Metrics::route`] (`None`: no route matched).
    pub fn request(&self, class: RequestClass, route: Option<&Arc<str>>, duration: Duration) {
        let route = route.unwrap_or(&self.metrics.inner.empty);
        let seconds = duration.as_secs_f64();
        if let Ok(resolved) = self.resolved.try_lock()
            && let Some(series) = resolved.find(class, route)
        {
            series.requests.inc();
            series.duration.observe(seconds);
            return;
        }
        let series = self.resolve(class, route);
        series.requests.inc();
        series.duration.observe(seconds);
        if let Ok(mut resolved) = self.resolved.try_lock() {
            resolved.keep(series);
        }
    }

    /// The route label for `template`, as [`Metrics::route`] gives it; a route this
    /// connection recorded lately is found without the shared map.
    pub fn route(&self, template: Option<&str>) -> Arc<str> {
        let Some(template) = template.filter(|t| !t.is_empty()) else {
            return self.metrics.inner.empty.clone();
        };
        if let Ok(resolved) = self.resolved.try_lock()
            && let Some(series) = resolved.series.iter().find(|s| *s.route == *template)
        {
            return series.route.clone();
        }
        self.metrics.route(Some(template))
    }

    /// The series' handles, from the families (created there if new).
    fn resolve(&self, class: RequestClass, route: &Arc<str>) -> Series {
        let inner = &*self.metrics.inner;
        let labels = RequestLabels {
            direction: self.direction,
            method: class.method,
            route: route.clone(),
            status_class: class.status_class,
            decision: class.decision,
            peer_namespace: self.peer_namespace.clone(),
            peer_sa: self.peer_sa.clone(),
        };
        let requests = inner.requests.get_or_create_owned(&labels);
        let duration = inner
            .durations
            .get_or_create_owned(&DurationLabels::of(&labels));
        Series {
            class,
            route: route.clone(),
            requests,
            duration,
        }
    }
}

// === impl Resolved ===

impl Resolved {
    fn find(&self, class: RequestClass, route: &Arc<str>) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.class == class && Arc::ptr_eq(&s.route, route))
    }

    /// Keeps `series`, replacing the oldest one when full.
    fn keep(&mut self, series: Series) {
        if self.series.len() < SERIES_PER_CONNECTION {
            // Grown one at a time (only on a miss): most connections see one or two series,
            // and every connection carries this.
            self.series.reserve_exact(1);
            self.series.push(series);
        } else if let Some(slot) = self.series.get_mut(self.oldest) {
            *slot = series;
            self.oldest = (self.oldest + 1) % SERIES_PER_CONNECTION;
        }
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4, for scrapers that do not accept
/// OpenMetrics (`promtool check metrics`, older agents): a counter family's `HELP` and
/// `TYPE` name gains its `_total` (as its samples have), and `# UNIT` and `# EOF` go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut counters = std::collections::HashSet::new();
    for line in &lines {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in lines {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(kind);
                out.push_str(name);
                out.push_str(suffix);
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The buckets of `palisade_request_duration_seconds`.
fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// An open connection, counted in `palisade_connections_open` until dropped.
#[derive(Debug)]
pub struct OpenConnection(Metrics);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.inner.connections_open.dec();
    }
}

/// An open outbound connection, counted in `palisade_outbound_connections_open` until
/// dropped.
#[derive(Debug)]
pub struct OpenOutboundConnection(Metrics);

impl Drop for OpenOutboundConnection {
    fn drop(&mut self) {
        self.0.inner.outbound.open.dec();
    }
}

// === impl OutboundFamilies ===

impl OutboundFamilies {
    fn register(registry: &mut Registry) -> OutboundFamilies {
        let families = OutboundFamilies {
            connections: Family::default(),
            open: Gauge::default(),
            connect_durations: Family::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            ),
            handshake_failures: Family::default(),
            sent: Family::default(),
            received: Family::default(),
            closed: Family::default(),
        };
        registry.register(
            "outbound_connections",
            "Outbound connections by outcome (meshed, passed_through, refused, failed), reason and destination peer",
            families.connections.clone(),
        );
        registry.register(
            "outbound_connections_open",
            "Outbound connections currently open",
            families.open.clone(),
        );
        registry.register(
            "outbound_connect_duration_seconds",
            "Time to connect to the destination: TCP connect, and the TLS handshake when meshed",
            families.connect_durations.clone(),
        );
        registry.register(
            "outbound_tls_handshake_failures",
            "Outbound TLS handshakes with meshed peers that failed, by reason",
            families.handshake_failures.clone(),
        );
        registry.register(
            "outbound_sent_bytes",
            "Bytes copied from the app to the destination",
            families.sent.clone(),
        );
        registry.register(
            "outbound_received_bytes",
            "Bytes copied from the destination to the app",
            families.received.clone(),
        );
        registry.register(
            "outbound_connections_closed",
            "Carried outbound connections by how they ended (closed, error, idle_timeout, drain_timeout)",
            families.closed.clone(),
        );
        families
    }
}

// === impl MethodLabel ===

impl MethodLabel {
    /// The label of `method`.
    pub fn of(method: &http::Method) -> MethodLabel {
        match *method {
            http::Method::GET => MethodLabel::Get,
            http::Method::HEAD => MethodLabel::Head,
            http::Method::POST => MethodLabel::Post,
            http::Method::PUT => MethodLabel::Put,
            http::Method::DELETE => MethodLabel::Delete,
            http::Method::PATCH => MethodLabel::Patch,
            http::Method::OPTIONS => MethodLabel::Options,
            http::Method::CONNECT => MethodLabel::Connect,
            http::Method::TRACE => MethodLabel::Trace,
            _ => MethodLabel::Other,
        }
    }
}

// === impl StatusClass ===

impl StatusClass {
    /// The class of `status`.
    pub fn of(status: http::StatusCode) -> StatusClass {
        match status.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

// === impl ReloadCollector ===

impl Collector for ReloadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.0.snapshot();

        let mut reloads = encoder.encode_descriptor(
            "reloads",
            "Successful loads of the policy and the identity (the one at start-up included)",
            None,
            MetricType::Counter,
        )?;
        for (kind, loads) in [
            ("policy", status.policy.loads),
            ("identity", status.identity.loads),
        ] {
            ConstCounter::new(loads).encode(reloads.encode_family(&KindLabels {
                kind: kind.to_owned(),
            })?)?;
        }

        let mut failures = encoder.encode_descriptor(
            "reload_failures",
            "Reloads that failed (the last good policy or identity stayed in force), by kind",
            None,
            MetricType::Counter,
        )?;
        for (kind, count) in status.failures() {
            ConstCounter::new(count).encode(failures.encode_family(&KindLabels {
                kind: kind.to_owned(),
            })?)?;
        }

        let expiry = encoder.encode_descriptor(
            "certificate_expiry_timestamp_seconds",
            "When the pod's certificate chain in force stops being valid (earliest notAfter), unix seconds",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(status.identity.not_after).encode(expiry)?;

        let loaded = encoder.encode_descriptor(
            "policy_loaded_timestamp_seconds",
            "When the policy in force was loaded, unix seconds",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(status.policy.loaded_at).unwrap_or(i64::MAX))
            .encode(loaded)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(metrics: &Metrics, route: &str, decision: DecisionLabel) -> RequestLabels {
        RequestLabels {
            direction: Direction::Inbound,
            method: MethodLabel::of(&http::Method::GET),
            route: metrics.route(Some(route)),
            status_class: StatusClass::of(http::StatusCode::OK),
            decision,
            peer_namespace: Arc::from("web"),
            peer_sa: Arc::from("frontend"),
        }
    }

    #[test]
    fn renders_request_counters_with_template_labels() {
        let metrics = Metrics::new(None);
        let l = labels(&metrics, "/api/v1/items/{id}", DecisionLabel::Allow);
        metrics.request(&l, Duration::from_millis(3));
        metrics.request(&l, Duration::from_millis(4));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"palisade_requests_total{direction="inbound",method="GET",route="/api/v1/items/{id}",status_class="2xx",decision="allow",peer_namespace="web",peer_sa="frontend"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("palisade_request_duration_seconds_count{"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn prometheus_text_names_counter_families_with_total() {
        let metrics = Metrics::new(None);
        let l = labels(&metrics, "/a", DecisionLabel::Allow);
        metrics.request(&l, Duration::from_millis(1));
        let text = metrics.render_prometheus();
        assert!(
            text.contains("# TYPE palisade_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP palisade_requests_total Requests"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE palisade_connections_open gauge\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn peer_series_count_what_the_families_count_and_stay_bounded() {
        let (cached, direct) = (Metrics::new(None), Metrics::new(None));
        let (ns, sa): (Arc<str>, Arc<str>) = (Arc::from("web"), Arc::from("frontend"));
        let series = cached.peer_series(Direction::Inbound, ns.clone(), sa.clone());
        let methods = [MethodLabel::Get, MethodLabel::Post, MethodLabel::Delete];
        let decisions = [DecisionLabel::Allow, DecisionLabel::Deny];
        // 3 routes (one of them none) × 3 methods × 2 decisions: more combinations than a
        // connection keeps, revisited in turn, so that kept handles are both hit and replaced.
        for round in 0..3u64 {
            for (r, route) in [None, Some("/a"), Some("/b/{id}")].into_iter().enumerate() {
                for method in methods {
                    for decision in decisions {
                        let class = RequestClass {
                            method,
                            status_class: StatusClass::Success,
                            decision,
                        };
                        let duration = Duration::from_millis(round * 7 + r as u64);
                        let label = series.route(route);
                        assert!(Arc::ptr_eq(&label, &cached.route(route)));
                        series.request(class, route.map(|_| &label), duration);
                        direct.request(
                            &RequestLabels {
                                direction: Direction::Inbound,
                                method,
                                route: direct.route(route),
                                status_class: StatusClass::Success,
                                decision,
                                peer_namespace: ns.clone(),
                                peer_sa: sa.clone(),
                            },
                            duration,
                        );
                    }
                }
            }
        }
        // The same samples (a family lists its series in hash order: sorted to compare).
        let sorted = |text: String| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        let text = cached.render();
        assert_eq!(sorted(text.clone()), sorted(direct.render()));
        assert!(
            text.contains(
                r#"palisade_requests_total{direction="inbound",method="POST",route="/b/{id}",status_class="2xx",decision="deny",peer_namespace="web",peer_sa="frontend"} 3"#
            ),
            "{text}"
        );
        let kept = series.resolved.lock().map(|r| r.series.len()).unwrap_or(0);
        assert_eq!(kept, SERIES_PER_CONNECTION);
    }

    #[test]
    fn routes_are_interned_and_bounded() {
        let metrics = Metrics::new(None);
        let a = metrics.route(Some("/a"));
        let b = metrics.route(Some("/a"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*metrics.route(None), "");
        for i in 0..MAX_ROUTES {
            metrics.route(Some(&format!("/r/{i}")));
        }
        assert_eq!(&*metrics.route(Some("/new")), "other");
    }

    #[test]
    fn renders_outbound_families() {
        let metrics = Metrics::new(None);
        let (ns, sa): (Arc<str>, Arc<str>) = (Arc::from("shop"), Arc::from("orders"));
        let open = metrics.outbound_connection();
        metrics.outbound_outcome(&OutboundLabels {
            outcome: OutboundOutcome::Meshed,
            reason: "",
            peer_namespace: ns.clone(),
            peer_sa: sa.clone(),
        });
        metrics.outbound_connect_duration(OutboundOutcome::Meshed, Duration::from_millis(2));
        metrics.outbound_handshake_failed("unexpected_peer_id");
        let bytes = metrics.outbound_bytes(OutboundOutcome::Meshed, &ns, &sa);
        bytes.sent.inc_by(10);
        bytes.received.inc_by(32);
        metrics.outbound_closed(CloseReason::IdleTimeout);
        let text = metrics.render();
        for expected in [
            r#"palisade_outbound_connections_total{outcome="meshed",reason="",peer_namespace="shop",peer_sa="orders"} 1"#,
            "palisade_outbound_connections_open 1",
            r#"palisade_outbound_connect_duration_seconds_count{outcome="meshed"} 1"#,
            r#"palisade_outbound_tls_handshake_failures_total{reason="unexpected_peer_id"} 1"#,
            r#"palisade_outbound_sent_bytes_total{outcome="meshed",peer_namespace="shop",peer_sa="orders"} 10"#,
            r#"palisade_outbound_received_bytes_total{outcome="meshed",peer_namespace="shop",peer_sa="orders"} 32"#,
            r#"palisade_outbound_connections_closed_total{reason="idle_timeout"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
        drop(open);
        assert!(
            metrics
                .render()
                .contains("palisade_outbound_connections_open 0")
        );
    }

    #[test]
    fn method_and_status_labels() {
        assert_eq!(MethodLabel::of(&http::Method::PATCH), MethodLabel::Patch);
        let odd = http::Method::from_bytes(b"PROPFIND").unwrap_or_default();
        assert_eq!(MethodLabel::of(&odd), MethodLabel::Other);
        assert_eq!(
            StatusClass::of(http::StatusCode::FORBIDDEN),
            StatusClass::ClientError
        );
        assert_eq!(
            StatusClass::of(http::StatusCode::BAD_GATEWAY),
            StatusClass::ServerError
        );
    }
}
