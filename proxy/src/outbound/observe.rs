//! Beside every step of an outbound connection: what it tells operators.
//!
//! Takes what each step learned (the destination and the identity it must prove, the route's
//! refusal or the connector's failure, the verified peer, the connect time, the bytes and
//! how the connection ended) and passes on, once per connection, the Prometheus series of
//! the outbound side and, when the access log is on, one JSON line. The line is written when
//! the [`Observed`] value is dropped, so a connection whose task is aborted (drain time
//! exhausted) still gets one.
//!
//! With telemetry disabled nothing is allocated or recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use palisade_config::SpiffeId;

use super::detect::Protocol;
use super::flow::Flow;
use crate::telemetry::access_log::{ConnectionRecord, timestamp};
use crate::telemetry::metrics::{
    CloseReason, OpenOutboundConnection, OutboundLabels, OutboundOutcome,
};
use crate::telemetry::{Parts, Telemetry};

/// One outbound connection, watched from accept to close.
pub(crate) struct Observed {
    recording: Option<Recording>,
}

/// What a recorded connection has learned so far.
struct Recording {
    parts: Arc<Parts>,
    _open: OpenOutboundConnection,
    at: SystemTime,
    started: Instant,
    client: SocketAddr,
    destination: Option<SocketAddr>,
    expected: Option<SpiffeId>,
    peer: Option<SpiffeId>,
    outcome: Option<OutboundOutcome>,
    reason: &'static str,
    alpn: Option<&'static str>,
    resumed: Option<bool>,
    connect: Option<Duration>,
    flow: Option<Arc<Flow>>,
}

/// A connection that reached its destination.
pub(crate) struct Connected<'a> {
    /// Meshed or passed through.
    pub(crate) outcome: OutboundOutcome,
    /// The verified peer (meshed).
    pub(crate) peer: Option<&'a SpiffeId>,
    /// The ALPN offered (meshed).
    pub(crate) protocol: Option<Protocol>,
    /// Whether the TLS session was resumed (meshed).
    pub(crate) resumed: Option<bool>,
    /// Time to connect.
    pub(crate) connect: Duration,
}

// === impl Observed ===

impl Observed {
    /// Starts watching a connection accepted from `client`.
    pub(crate) fn accept(telemetry: &Telemetry, client: SocketAddr) -> Observed {
        let recording = telemetry.parts().map(|parts| Recording {
            _open: parts.metrics.outbound_connection(),
            parts: parts.clone(),
            at: SystemTime::now(),
            started: Instant::now(),
            client,
            destination: None,
            expected: None,
            peer: None,
            outcome: None,
            reason: "",
            alpn: None,
            resumed: None,
            connect: None,
            flow: None,
        });
        Observed { recording }
    }

    /// Where the connection goes and who the peer must be.
    pub(crate) fn destination(&mut self, addr: SocketAddr, expected: Option<&SpiffeId>) {
        if let Some(recording) = &mut self.recording {
            recording.destination = Some(addr);
            recording.expected = expected.cloned();
        }
    }

    /// The connection reached its destination; returns the flow its bytes are counted in.
    pub(crate) fn connected(&mut self, connected: Connected<'_>) -> Arc<Flow> {
        let Some(recording) = &mut self.recording else {
            return Flow::new(None);
        };
        let metrics = &recording.parts.metrics;
        let (namespace, service_account) = peer_labels(recording, connected.peer);
        metrics.outbound_outcome(&OutboundLabels {
            outcome: connected.outcome,
            reason: "",
            peer_namespace: namespace.clone(),
            peer_sa: service_account.clone(),
        });
        metrics.outbound_connect_duration(connected.outcome, connected.connect);
        let counters = metrics.outbound_bytes(connected.outcome, &namespace, &service_account);
        let flow = Flow::new(Some(counters));
        recording.outcome = Some(connected.outcome);
        recording.peer = connected.peer.cloned();
        recording.alpn = connected.protocol.and_then(|protocol| match protocol {
            Protocol::H2 => Some("h2"),
            Protocol::Opaque => None,
        });
        recording.resumed = connected.resumed;
        recording.connect = Some(connected.connect);
        recording.flow = Some(flow.clone());
        flow
    }

    /// The carried connection ended for `reason`.
    pub(crate) fn closed(&mut self, reason: CloseReason) {
        if let Some(recording) = &mut self.recording {
            recording.parts.metrics.outbound_closed(reason);
            recording.reason = reason.as_str();
        }
    }

    /// The route refused the connection (`reason`: [`Refusal::as_label`](super::Refusal)).
    pub(crate) fn refused(&mut self, reason: &'static str) {
        self.ended(OutboundOutcome::Refused, reason, None);
    }

    /// Connecting failed: `reason` is a [`ConnectError::as_label`](super::ConnectError)
    /// (or `orig_dst`), `handshake` the TLS failure's label if the handshake failed,
    /// `connect` the time spent trying.
    pub(crate) fn failed(
        &mut self,
        reason: &'static str,
        handshake: Option<&'static str>,
        connect: Option<Duration>,
    ) {
        if let (Some(recording), Some(handshake)) = (&self.recording, handshake) {
            recording.parts.metrics.outbound_handshake_failed(handshake);
        }
        self.ended(OutboundOutcome::Failed, reason, connect);
    }

    fn ended(&mut self, outcome: OutboundOutcome, reason: &'static str, connect: Option<Duration>) {
        let Some(recording) = &mut self.recording else {
            return;
        };
        let (namespace, service_account) = peer_labels(recording, None);
        let metrics = &recording.parts.metrics;
        metrics.outbound_outcome(&OutboundLabels {
            outcome,
            reason,
            peer_namespace: namespace,
            peer_sa: service_account,
        });
        if let Some(connect) = connect {
            metrics.outbound_connect_duration(outcome, connect);
        }
        recording.outcome = Some(outcome);
        recording.reason = reason;
        recording.connect = connect;
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let drained = CloseReason::DrainTimeout.as_str();
        match &self.recording {
            // Still connecting when its task was aborted at the end of the drain.
            Some(recording) if recording.outcome.is_none() => {
                self.ended(OutboundOutcome::Failed, drained, None);
            }
            // Carried, and never told how it ended: aborted at the end of the drain too.
            Some(recording) if recording.reason.is_empty() && recording.flow.is_some() => {
                self.closed(CloseReason::DrainTimeout);
            }
            _ => {}
        }
        let Some(recording) = self.recording.take() else {
            return;
        };
        let Some(log) = &recording.parts.access_log else {
            return;
        };
        let outcome = recording.outcome.unwrap_or(OutboundOutcome::Failed);
        let always = matches!(outcome, OutboundOutcome::Refused | OutboundOutcome::Failed);
        if !log.sampled(always) {
            return;
        }
        let (sent, received) = recording
            .flow
            .as_ref()
            .map_or((0, 0), |flow| (flow.sent(), flow.received()));
        log.send_connection(ConnectionRecord {
            timestamp: timestamp(recording.at),
            direction: "outbound",
            client: recording.client.to_string(),
            destination: recording.destination.map(|addr| addr.to_string()),
            peer_id: recording.peer.map(|id| id.as_str().to_owned()),
            expected_peer_id: recording.expected.map(|id| id.as_str().to_owned()),
            outcome: outcome.as_str(),
            reason: recording.reason.to_owned(),
            alpn: recording.alpn,
            tls_resumed: recording.resumed,
            connect_ms: recording.connect.map(millis),
            duration_ms: millis(recording.started.elapsed()),
            bytes_sent: sent,
            bytes_received: received,
        });
    }
}

/// The namespace and service account labels of the verified peer, else of the expected one.
fn peer_labels(recording: &Recording, peer: Option<&SpiffeId>) -> (Arc<str>, Arc<str>) {
    let metrics = &recording.parts.metrics;
    let id = peer.or(recording.expected.as_ref());
    let label = |part: Option<&str>| part.map_or_else(|| metrics.empty(), Arc::from);
    (
        label(id.and_then(SpiffeId::namespace)),
        label(id.and_then(SpiffeId::service_account)),
    )
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
