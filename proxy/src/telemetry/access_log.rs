//! Telemetry, access log: one JSON line per finished request, and one per outbound
//! connection, written off the request path.
//!
//! Takes an [`AccessRecord`] from the request's observer when the request ends (or a
//! [`ConnectionRecord`] from the outbound side when a connection ends); passes it
//! through a bounded queue to a writer thread that serializes it and writes one line to its
//! sink (stdout in `palisade proxy`). A full queue drops the line and counts it
//! (`palisade_access_log_dropped_total`): a slow stdout never slows a request.
//!
//! # Security
//!
//! A record holds only what its fields name: the normalized path (never the query string,
//! where tokens travel), no header values (no `Authorization`, `Cookie`, …), no certificate
//! or key material. Only the peer's verified SPIFFE ID identifies the caller. A connection
//! record holds addresses, identities, counts and times: never a byte of what was carried.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// Default capacity of the queue between requests and the writer: 4096 lines.
pub const DEFAULT_QUEUE: usize = 4096;

/// Access-log settings. Default: off.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogConfig {
    /// Write access-log lines at all. Default `false`.
    pub enabled: bool,
    /// Fraction of *successful* requests logged, 0.0 to 1.0. Requests palisade refused or
    /// that failed (status ≥ 400) and audit-mode would-be denials are always logged.
    /// Default 1.0.
    pub sample_ratio: f64,
    /// Lines that may wait for the writer before new ones are dropped. Default
    /// [`DEFAULT_QUEUE`].
    pub queue: usize,
}

/// One access-log line.
#[derive(Clone, Debug, Serialize)]
pub struct AccessRecord {
    /// When the request head arrived, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// The request ID palisade gave it (also sent to the app and in error bodies).
    pub request_id: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The peer's verified SPIFFE ID, or `unauthenticated`.
    pub peer_id: String,
    /// The request method as received.
    pub method: String,
    /// The normalized path that was authorized (never the query string); absent when the
    /// target could not be normalized.
    pub path: Option<String>,
    /// The route template that matched (or the denial's template); absent if none.
    pub route: Option<String>,
    /// `allow`, `deny`, `audit_deny` or `invalid`.
    pub decision: &'static str,
    /// The rule that allowed the request, or the nearest rule of a denial.
    pub rule: Option<String>,
    /// Why, in the words of `palisade explain` (`denied: route /x exists but rule r does
    /// not allow this method`), or why the target is malformed.
    pub reason: String,
    /// The response status.
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'static str,
    /// Time to the response head, milliseconds.
    pub response_ms: f64,
    /// Time to the end of the response body, milliseconds.
    pub duration_ms: f64,
    /// Request body bytes, as declared by `content-length` (absent when not declared).
    pub bytes_in: Option<u64>,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// The W3C trace ID of the request's span, when tracing is on.
    pub trace_id: Option<String>,
}

/// One access-log line for an outbound connection (L4: no request fields).
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionRecord {
    /// When the app's connection was accepted, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// `outbound`.
    pub direction: &'static str,
    /// The app's address (the connecting socket).
    pub client: String,
    /// Where the connection went (or was meant to go): the original destination or the
    /// fixed peer; absent when it could not be read.
    pub destination: Option<String>,
    /// The verified SPIFFE ID of a meshed peer; absent otherwise.
    pub peer_id: Option<String>,
    /// The SPIFFE ID the peer had to present, when one was configured.
    pub expected_peer_id: Option<String>,
    /// `meshed`, `passed_through`, `refused` or `failed`.
    pub outcome: &'static str,
    /// Why it was refused or failed, or how a carried connection ended (`closed`, `error`,
    /// `idle_timeout`, `drain_timeout`).
    pub reason: String,
    /// ALPN offered to a meshed peer: `h2`, or absent (opaque bytes).
    pub alpn: Option<&'static str>,
    /// Whether the TLS session was resumed (meshed only).
    pub tls_resumed: Option<bool>,
    /// Time to connect (TCP, and the TLS handshake when meshed), milliseconds.
    pub connect_ms: Option<f64>,
    /// Time from accept to close, milliseconds.
    pub duration_ms: f64,
    /// Bytes copied from the app to the destination.
    pub bytes_sent: u64,
    /// Bytes copied from the destination to the app.
    pub bytes_received: u64,
}

/// The sending side of the access log; clones share the queue.
#[derive(Clone, Debug)]
pub struct AccessLog {
    queue: SyncSender<Entry>,
    dropped: Counter,
    sampler: Arc<Sampler>,
}

/// The writer thread. It ends when every [`AccessLog`] clone is gone; dropping this handle
/// detaches it (use [`AccessLog::flush`] to wait for queued lines).
#[derive(Debug)]
pub struct AccessLogWriter {
    _thread: JoinHandle<()>,
}

/// What goes through the queue.
#[derive(Debug)]
enum Entry {
    Line(Box<AccessRecord>),
    Connection(Box<ConnectionRecord>),
    Flush(SyncSender<()>),
}

/// Picks which successful requests are logged: every n-th in proportion to the ratio.
#[derive(Debug)]
struct Sampler {
    ratio: f64,
    seen: AtomicU64,
}

/// The access log cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The sample ratio is not within 0.0 to 1.0.
    #[error("access-log sample ratio {0} is not between 0 and 1")]
    Ratio(f64),
    /// The writer thread cannot be spawned.
    #[error("cannot start the access-log writer")]
    Spawn(#[source] std::io::Error),
}

// === impl AccessLogConfig ===

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            sample_ratio: 1.0,
            queue: DEFAULT_QUEUE,
        }
    }
}

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer thread writing to `sink`; `dropped` counts lines lost to a full
    /// queue.
    pub fn start(
        config: &AccessLogConfig,
        sink: Box<dyn Write + Send>,
        dropped: Counter,
    ) -> Result<(AccessLog, AccessLogWriter), AccessLogError> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(AccessLogError::Ratio(config.sample_ratio));
        }
        let (queue, lines) = sync_channel(config.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("palisade-access-log".to_owned())
            .spawn(move || write_lines(lines, sink))
            .map_err(AccessLogError::Spawn)?;
        let log = AccessLog {
            queue,
            dropped,
            sampler: Arc::new(Sampler {
                ratio: config.sample_ratio,
                seen: AtomicU64::new(0),
            }),
        };
        Ok((log, AccessLogWriter { _thread: thread }))
    }

    /// Whether a request gets a line: always when `always` (refusals, failures, audit
    /// denials), else by the sample ratio.
    pub fn sampled(&self, always: bool) -> bool {
        always || self.sampler.next()
    }

    /// Queues one line; drops and counts it when the writer is behind.
    pub fn send(&self, record: AccessRecord) {
        match self.queue.try_send(Entry::Line(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Queues one outbound connection line; drops and counts it when the writer is behind.
    pub fn send_connection(&self, record: ConnectionRecord) {
        match self.queue.try_send(Entry::Connection(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Waits (at most `limit`) until the lines queued so far are written and flushed.
    pub fn flush(&self, limit: Duration) {
        let (done, wait) = sync_channel(1);
        let deadline = Instant::now() + limit;
        let mut entry = Entry::Flush(done);
        loop {
            match self.queue.try_send(entry) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    entry = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

fn write_lines(entries: Receiver<Entry>, mut sink: Box<dyn Write + Send>) {
    let mut line = Vec::with_capacity(512);
    let mut waiting = Vec::new();
    while let Ok(first) = entries.recv() {
        // Write what is queued, then flush once: lines show up promptly, bursts batch.
        let mut next = Some(first);
        while let Some(entry) = next {
            line.clear();
            let encoded = match entry {
                Entry::Line(record) => Some(serde_json::to_writer(&mut line, &record)),
                Entry::Connection(record) => Some(serde_json::to_writer(&mut line, &record)),
                Entry::Flush(done) => {
                    waiting.push(done);
                    None
                }
            };
            if let Some(Ok(())) = encoded {
                line.push(b'\n');
                // A closed stdout loses the line; keep draining so senders never block.
                let _ = sink.write_all(&line);
            }
            next = entries.try_recv().ok();
        }
        let _ = sink.flush();
        for done in waiting.drain(..) {
            let _ = done.try_send(());
        }
    }
}

// === impl Sampler ===

impl Sampler {
    fn next(&self) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        if self.ratio <= 0.0 {
            return false;
        }
        // Request n is logged when floor(n * ratio) steps up: exactly `ratio` of them, evenly.
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.ratio).floor() > (n * self.ratio).floor()
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-22T17:45:22.123Z`).
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil: days since 1970-01-01 → (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_369_522_123);
        assert_eq!(timestamp(t), "2026-11-22T17:45:22.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn samples_the_configured_fraction() {
        let sampler = Sampler {
            ratio: 0.25,
            seen: AtomicU64::new(0),
        };
        let kept = (0..1000).filter(|_| sampler.next()).count();
        assert_eq!(kept, 250);
    }
}
