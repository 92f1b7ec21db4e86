//! Telemetry: what palisade tells operators about the traffic it moves, beside the request
//! path — Prometheus [`metrics`], OTLP [`trace`]s and JSON [`access_log`] lines.
//!
//! Takes a [`TelemetryConfig`] (built by the CLI; nothing here reads the environment) and,
//! from the inbound side, every connection, handshake failure, detection and request
//! ([`observe`] is the tower layer that watches requests), and from the outbound side every
//! connection (`outbound/observe.rs`); passes on the metrics text the admin port serves,
//! spans to the collector and lines to stdout.
//!
//! [`Telemetry::disabled`] records nothing and costs one branch per request: the inbound
//! side's default, and the "off" side of the benchmark.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::reload::StatusHandle;

pub mod access_log;
pub mod metrics;
pub(crate) mod observe;
pub mod trace;

pub use self::access_log::ConnectionRecord;
pub use self::access_log::{AccessLog, AccessLogConfig, AccessLogError, AccessRecord};
pub use self::metrics::Metrics;
pub use self::trace::{TraceConfig, TraceError, Tracing};

/// What to record and where to send it.
#[derive(Clone, Debug, Default)]
pub struct TelemetryConfig {
    /// Export spans over OTLP; `None` (the default) traces nothing.
    pub trace: Option<TraceConfig>,
    /// Access-log settings (default off).
    pub access_log: AccessLogConfig,
    /// The reload status to render as metrics (reloads, failures, certificate expiry).
    pub status: Option<StatusHandle>,
}

/// The telemetry of one proxy; clones share everything.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    parts: Option<Arc<Parts>>,
}

/// What a running telemetry holds.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) metrics: Metrics,
    pub(crate) tracing: Option<Tracing>,
    pub(crate) access_log: Option<AccessLog>,
}

/// The background parts of a [`Telemetry`]: stop them with [`TelemetryTasks::finish`]
/// after the proxy has drained.
#[derive(Debug)]
pub struct TelemetryTasks {
    telemetry: Telemetry,
    writer: Option<access_log::AccessLogWriter>,
}

/// Telemetry cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The trace exporter cannot start.
    #[error("cannot start tracing")]
    Trace(#[source] TraceError),
    /// The access log cannot start.
    #[error("cannot start the access log")]
    AccessLog(#[source] AccessLogError),
}

// === impl Telemetry ===

impl Telemetry {
    /// Records nothing.
    pub fn disabled() -> Telemetry {
        Telemetry { parts: None }
    }

    /// Registers the metrics and starts the trace exporter (if configured) and the
    /// access-log writer (if enabled), writing lines to `access_sink`. Must be called within
    /// a tokio runtime when tracing is configured.
    pub fn start(
        config: TelemetryConfig,
        access_sink: Box<dyn Write + Send>,
    ) -> Result<(Telemetry, TelemetryTasks), TelemetryError> {
        let metrics = Metrics::new(config.status);
        let tracing = config
            .trace
            .as_ref()
            .map(|trace| Tracing::start(trace, metrics.spans_dropped()))
            .transpose()
            .map_err(TelemetryError::Trace)?;
        let (access_log, writer) = if config.access_log.enabled {
            let (log, writer) = AccessLog::start(
                &config.access_log,
                access_sink,
                metrics.access_log_dropped(),
            )
            .map_err(TelemetryError::AccessLog)?;
            (Some(log), Some(writer))
        } else {
            (None, None)
        };
        let telemetry = Telemetry {
            parts: Some(Arc::new(Parts {
                metrics,
                tracing,
                access_log,
            })),
        };
        let tasks = TelemetryTasks {
            telemetry: telemetry.clone(),
            writer,
        };
        Ok((telemetry, tasks))
    }

    /// The metrics, unless disabled.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.parts.as_deref().map(|parts| &parts.metrics)
    }

    pub(crate) fn parts(&self) -> Option<&Arc<Parts>> {
        self.parts.as_ref()
    }
}

// === impl TelemetryTasks ===

impl TelemetryTasks {
    /// Exports the queued spans and writes the queued access-log lines, waiting at most
    /// `limit` for each. Call after the proxy has drained.
    pub async fn finish(self, limit: Duration) {
        let Some(parts) = self.telemetry.parts.clone() else {
            return;
        };
        if let Some(tracing) = &parts.tracing {
            tracing.shutdown(limit).await;
        }
        if parts.access_log.is_some() {
            // The log's flush blocks on its writer thread: not on a runtime thread.
            let flushed = tokio::task::spawn_blocking(move || {
                if let Some(log) = &parts.access_log {
                    log.flush(limit);
                }
            });
            let _ = flushed.await;
        }
        drop(self.writer);
    }
}
