//! Telemetry, traces: one server span per request, W3C trace context in and out, spans
//! exported over OTLP HTTP/protobuf.
//!
//! Takes the request's headers (an incoming `traceparent` / `tracestate` is continued, else a
//! trace starts here) and, when the request ends, what the request path learned about it;
//! passes on the `traceparent` of palisade's span to the app and the finished span to the
//! collector.
//!
//! Sampling is parent-based: a sampled caller's trace is always recorded, an unsampled one
//! never, and a new trace is recorded with probability [`TraceConfig::sample_ratio`].
//! Finished spans go into a bounded queue in front of the exporter; when the collector is
//! slow or down the queue fills and new spans are dropped and counted
//! (`palisade_trace_spans_dropped_total`), never waited for.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Default sampling ratio of new traces: 1 %.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

/// Default capacity of the export queue: 2048 spans.
pub const DEFAULT_QUEUE: usize = 2048;

/// Default most spans per export request: 512.
pub const DEFAULT_BATCH: usize = 512;

/// Where and how to export spans. The CLI fills it from the standard `OTEL_EXPORTER_OTLP_*`
/// variables and its flags; nothing here reads the environment.
#[derive(Clone, PartialEq)]
pub struct TraceConfig {
    /// The OTLP/HTTP traces URL, e.g. `http://collector:4318/v1/traces`.
    pub endpoint: String,
    /// Extra request headers (e.g. an API key from `OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: HashMap<String, String>,
    /// Time one export request may take. Default 10 s.
    pub timeout: Duration,
    /// Probability that a trace started here (no incoming `traceparent`) is recorded, 0.0
    /// to 1.0. Default [`DEFAULT_SAMPLE_RATIO`].
    pub sample_ratio: f64,
    /// Finished spans waiting for export before new ones are dropped. Default
    /// [`DEFAULT_QUEUE`].
    pub queue: usize,
    /// Most spans in one export request. Default [`DEFAULT_BATCH`].
    pub batch: usize,
    /// Longest a finished span waits for its batch to fill. Default 1 s.
    pub flush_interval: Duration,
    /// `service.name` of the resource. Default `palisade`.
    pub service_name: String,
    /// Further resource attributes (e.g. from `OTEL_RESOURCE_ATTRIBUTES`).
    pub resource: Vec<(String, String)>,
}

/// The tracer of one proxy. Cheap to share behind an `Arc`.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Tracing cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The sample ratio is not within 0.0 to 1.0.
    #[error("trace sample ratio {0} is not between 0 and 1")]
    Ratio(f64),
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` asks for a protocol other than `http/protobuf`.
    #[error("otlp protocol {0:?} is not supported (only http/protobuf)")]
    Protocol(String),
    /// A numeric `OTEL_*` variable does not parse.
    #[error("{0} is not a number")]
    Number(&'static str),
    /// The OTLP exporter cannot be built (bad endpoint).
    #[error("cannot build the otlp exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// A span processor that hands finished spans to an export task through a bounded queue.
#[derive(Debug)]
struct QueueProcessor {
    queue: Mutex<Option<mpsc::Sender<Command>>>,
    dropped: Counter,
}

enum Command {
    Span(Box<SpanData>),
    Flush,
}

// === impl TraceConfig ===

impl TraceConfig {
    /// Export to `endpoint` with the defaults documented on each field.
    pub fn new(endpoint: impl Into<String>) -> TraceConfig {
        TraceConfig {
            endpoint: endpoint.into(),
            headers: HashMap::new(),
            timeout: Duration::from_secs(10),
            sample_ratio: DEFAULT_SAMPLE_RATIO,
            queue: DEFAULT_QUEUE,
            batch: DEFAULT_BATCH,
            flush_interval: Duration::from_secs(1),
            service_name: "palisade".to_owned(),
            resource: Vec::new(),
        }
    }
}

impl TraceConfig {
    /// Reads the standard OpenTelemetry variables through `var` (the CLI passes the process
    /// environment; this crate never reads it): `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used
    /// as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended), the matching
    /// `…_HEADERS` (`k=v,k2=v2`, percent-decoded values) and `…_TIMEOUT` (milliseconds),
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` / `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (only
    /// `http/protobuf`), `OTEL_TRACES_SAMPLER_ARG` (the ratio), `OTEL_SERVICE_NAME` and
    /// `OTEL_RESOURCE_ATTRIBUTES`. `Ok(None)` when no endpoint is set, or when
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_otel_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TraceConfig>, TraceError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
        {
            return Ok(None);
        }
        let endpoint = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => traces,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol
            && protocol.trim() != "http/protobuf"
        {
            return Err(TraceError::Protocol(protocol));
        }
        let mut config = TraceConfig::new(endpoint);
        if let Some(headers) =
            set("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| set("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            config.headers = parse_pairs(&headers).collect();
        }
        let timeout = match set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(ms) => Some(("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", ms)),
            None => set("OTEL_EXPORTER_OTLP_TIMEOUT").map(|ms| ("OTEL_EXPORTER_OTLP_TIMEOUT", ms)),
        };
        if let Some((name, ms)) = timeout {
            let ms: u64 = ms.trim().parse().map_err(|_| TraceError::Number(name))?;
            config.timeout = Duration::from_millis(ms);
        }
        if let Some(ratio) = set("OTEL_TRACES_SAMPLER_ARG") {
            config.sample_ratio = ratio
                .trim()
                .parse()
                .map_err(|_| TraceError::Number("OTEL_TRACES_SAMPLER_ARG"))?;
        }
        if let Some(name) = set("OTEL_SERVICE_NAME") {
            config.service_name = name;
        }
        if let Some(attributes) = set("OTEL_RESOURCE_ATTRIBUTES") {
            config.resource = parse_pairs(&attributes).collect();
        }
        Ok(Some(config))
    }
}

/// `k=v,k2=v2` with percent-encoded values (the W3C baggage format OTEL variables use).
fn parse_pairs(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.split(',').filter_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        let value = percent_decode(value.trim());
        Some((key.trim().to_owned(), value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Debug for TraceConfig {
    // Header values may be credentials: print their names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("sample_ratio", &self.sample_ratio)
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .field("service_name", &self.service_name)
            .finish_non_exhaustive()
    }
}

// === impl Tracing ===

impl Tracing {
    /// Builds the exporter and starts its task. Must be called within a tokio runtime.
    /// `dropped` counts spans lost to a full queue.
    pub fn start(config: &TraceConfig, dropped: Counter) -> Result<Tracing, TraceError> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(TraceError::Ratio(config.sample_ratio));
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .with_headers(config.headers.clone())
            .build()
            .map_err(TraceError::Exporter)?;
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        exporter.set_resource(&resource);

        let (queue, commands) = mpsc::channel(config.queue.max(1));
        let task = tokio::spawn(export(
            exporter,
            commands,
            Batching {
                size: config.batch.max(1),
                interval: config.flush_interval,
                dropped: dropped.clone(),
            },
        ));
        let processor = QueueProcessor {
            queue: Mutex::new(Some(queue)),
            dropped,
        };
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("palisade");
        Ok(Tracing {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            task: Mutex::new(Some(task)),
        })
    }

    /// Starts the server span of a request named `name`, as a child of the trace context in
    /// `headers` if there is one, and replaces `traceparent` / `tracestate` in `headers` with
    /// this span's, for the app.
    pub fn start_span(&self, name: Cow<'static, str>, headers: &mut HeaderMap) -> Context {
        let parent = self.propagator.extract(&Headers(headers));
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        let context = parent.with_span(span);
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        self.propagator
            .inject_context(&context, &mut HeadersMut(headers));
        context
    }

    /// Asks the export task to send what is queued now (does not wait for it).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }

    /// Closes the queue and waits (at most `limit`) for the export task to send what was
    /// queued; spans that end later are dropped and counted.
    pub async fn shutdown(&self, limit: Duration) {
        let _ = self.provider.shutdown();
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task
            && tokio::time::timeout(limit, task).await.is_err()
        {
            tracing::warn!("span export did not finish in time; queued spans are lost");
        }
    }
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Reads trace context from request headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes trace context into request headers.
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

// === impl QueueProcessor ===

impl QueueProcessor {
    fn sender(&self) -> Option<mpsc::Sender<Command>> {
        self.queue.lock().ok().and_then(|q| q.clone())
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let Ok(queue) = self.queue.lock() else {
            return;
        };
        let sent = match queue.as_ref() {
            Some(queue) => queue.try_send(Command::Span(Box::new(span))).is_ok(),
            None => false,
        };
        if !sent {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let Some(queue) = self.sender() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        // Requested, not awaited: called on a runtime thread, a blocking wait could stall
        // the export task itself (single-threaded runtime).
        queue
            .try_send(Command::Flush)
            .map_err(|_| OTelSdkError::InternalFailure("export queue full".to_owned()))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Dropping the sender ends the export task after it has sent what is queued.
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        Ok(())
    }
}

/// How the export task batches, and where it counts spans it could not deliver.
struct Batching {
    size: usize,
    interval: Duration,
    dropped: Counter,
}

/// The export task: batches spans and sends them, one request at a time. Spans of a failed
/// export (collector down, timeout) are counted as dropped: the exporter's own retries are
/// bounded by its timeout, and meanwhile the queue absorbs or drops new spans.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut commands: mpsc::Receiver<Command>,
    batching: Batching,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(batching.size);
    let mut ticker = tokio::time::interval(batching.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flush = tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Span(span)) => {
                    batch.push(*span);
                    batch.len() >= batching.size
                }
                Some(Command::Flush) => true,
                None => break,
            },
            _ = ticker.tick() => true,
        };
        if flush && !batch.is_empty() {
            send(&exporter, &mut batch, &batching.dropped).await;
        }
    }
    if !batch.is_empty() {
        send(&exporter, &mut batch, &batching.dropped).await;
    }
}

async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    dropped: &Counter,
) {
    let spans = std::mem::take(batch);
    let count = spans.len();
    if let Err(error) = exporter.export(spans).await {
        dropped.inc_by(count as u64);
        tracing::debug!(%error, spans = count, "span export failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn reads_the_standard_otel_variables() {
        let config = TraceConfig::from_otel_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x=1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ("OTEL_SERVICE_NAME", "orders-sidecar"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.namespace.name=shop"),
        ]))
        .ok()
        .flatten()
        .expect("a config");
        assert_eq!(config.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            config.headers.get("api-key").map(String::as_str),
            Some("a b")
        );
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert!((config.sample_ratio - 0.5).abs() < f64::EPSILON);
        assert_eq!(config.service_name, "orders-sidecar");
        assert_eq!(
            config.resource,
            [("k8s.namespace.name".to_owned(), "shop".to_owned())]
        );
    }

    #[test]
    fn traces_endpoint_wins_and_is_used_as_is() {
        let config = TraceConfig::from_otel_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
        ]));
        assert_eq!(
            config.ok().flatten().map(|c| c.endpoint).as_deref(),
            Some("http://b:4318/custom")
        );
    }

    #[test]
    fn off_without_endpoint_or_when_disabled_and_grpc_is_refused() {
        assert!(matches!(TraceConfig::from_otel_env(env(&[])), Ok(None)));
        let disabled = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(matches!(TraceConfig::from_otel_env(disabled), Ok(None)));
        let grpc = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert!(matches!(
            TraceConfig::from_otel_env(grpc),
            Err(TraceError::Protocol(_))
        ));
    }
}
