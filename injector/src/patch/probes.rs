//! Part of step 1 (pure): the app's own probes, rewritten to go through the proxy's admin
//! port. Takes the pod spec and the admin port; passes on the `replace` operations for the
//! rewritten probes and the `PALISADE_APP_PROBES` value the proxy answers them from.
//!
//! Under strict mutual TLS every inbound port of the pod is behind the proxy, and the
//! kubelet has no client certificate: a probe to the app's port would fail (and a `tcpSocket`
//! probe would always succeed, against the proxy). So each `httpGet`, `tcpSocket` and `grpc`
//! probe becomes an `httpGet` on the admin port (never redirected) at
//! `/app-health/<container>/<livez|readyz|startupz>`, with its timings kept, and the proxy
//! makes the original check on loopback (`palisade_proxy::admin::probe`).
//!
//! | original | rewritten to | the proxy checks |
//! |---|---|---|
//! | `httpGet` | `httpGet` admin port, `/app-health/…` | the same GET (path, scheme, headers) on `127.0.0.1:<port>` |
//! | `tcpSocket` | the same | a TCP connect to `127.0.0.1:<port>` |
//! | `grpc` | the same | `grpc.health.v1.Health/Check` (the probe's `service`) over h2c on `127.0.0.1:<port>`; the port is also declared h2c to the proxy |
//! | `exec`, or `host` set (the kubelet probes another host) | unchanged | — |

use std::collections::BTreeSet;

use json_patch::{PatchOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};

use super::PatchError;

/// Every rewritten probe's admin path starts with this.
pub const APP_HEALTH_PREFIX: &str = "/app-health/";

/// The environment variable of the proxy container that carries the original probes.
pub const APP_PROBES_ENV: &str = "PALISADE_APP_PROBES";

/// What rewriting the pod's probes produced.
#[derive(Debug, Default)]
pub(super) struct Rewritten {
    /// `replace` operations, one per rewritten probe (indices of the pod as received).
    pub(super) ops: Vec<PatchOperation>,
    /// Admin path → original check, the JSON of `PALISADE_APP_PROBES`.
    pub(super) probes: Map<String, Value>,
    /// Ports that `grpc` probes target (the app speaks h2c there).
    pub(super) grpc_ports: BTreeSet<u16>,
}

/// The probe fields of a container and the last segment of their admin path.
const KINDS: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// Rewrites every probe of `spec`'s containers and init containers (native sidecars may
/// have probes) that targets the pod itself.
pub(super) fn rewrite(spec: &PodSpec, admin_port: u16) -> Result<Rewritten, PatchError> {
    let mut out = Rewritten::default();
    let lists = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (index, container) in containers.iter().enumerate() {
            let probes = [
                &container.liveness_probe,
                &container.readiness_probe,
                &container.startup_probe,
            ];
            for ((field, kind), probe) in KINDS.into_iter().zip(probes) {
                let Some(probe) = probe else { continue };
                let Some((check, grpc_port)) = original_check(container, probe)? else {
                    continue;
                };
                let path = format!("{APP_HEALTH_PREFIX}{}/{kind}", container.name);
                out.ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: PointerBuf::from_tokens(["spec", list, &index.to_string(), field]),
                    value: rewritten(probe, &path, admin_port),
                }));
                out.probes.insert(path, check);
                out.grpc_ports.extend(grpc_port);
            }
        }
    }
    Ok(out)
}

/// The check the proxy makes for `probe` (and the port, for a gRPC probe), or `None` when
/// the probe is left as it is.
fn original_check(
    container: &Container,
    probe: &Probe,
) -> Result<Option<(Value, Option<u16>)>, PatchError> {
    let mut check = if let Some(get) = &probe.http_get {
        if get.host.as_deref().is_some_and(|h| !h.is_empty()) {
            return Ok(None);
        }
        let mut get_json = json!({ "port": port(container, &get.port)? });
        for (key, value) in [
            ("path", get.path.as_ref().map(|p| json!(p))),
            ("scheme", get.scheme.as_ref().map(|s| json!(s))),
            (
                "httpHeaders",
                get.http_headers
                    .as_ref()
                    .filter(|h| !h.is_empty())
                    .map(|h| json!(h)),
            ),
        ] {
            if let (Some(value), Some(object)) = (value, get_json.as_object_mut()) {
                object.insert(key.to_owned(), value);
            }
        }
        json!({ "httpGet": get_json })
    } else if let Some(tcp) = &probe.tcp_socket {
        if tcp.host.as_deref().is_some_and(|h| !h.is_empty()) {
            return Ok(None);
        }
        json!({ "tcpSocket": { "port": port(container, &tcp.port)? } })
    } else if let Some(grpc) = &probe.grpc {
        let port = port(container, &IntOrString::Int(grpc.port))?;
        let mut grpc_json = json!({ "port": port });
        if let (Some(service), Some(object)) = (
            grpc.service.as_ref().filter(|s| !s.is_empty()),
            grpc_json.as_object_mut(),
        ) {
            object.insert("service".to_owned(), json!(service));
        }
        return Ok(Some((
            with_timeout(json!({ "grpc": grpc_json }), probe),
            Some(port),
        )));
    } else {
        return Ok(None); // exec probes run inside the container
    };
    check = with_timeout(check, probe);
    Ok(Some((check, None)))
}

fn with_timeout(mut check: Value, probe: &Probe) -> Value {
    if let (Some(seconds), Some(object)) = (probe.timeout_seconds, check.as_object_mut()) {
        object.insert("timeoutSeconds".to_owned(), json!(seconds));
    }
    check
}

/// `probe` with its handler replaced by a GET of `path` on the admin port; its timings and
/// thresholds are kept.
fn rewritten(probe: &Probe, path: &str, admin_port: u16) -> Value {
    let mut value = serde_json::to_value(probe).unwrap_or_else(|_| json!({}));
    if let Some(object) = value.as_object_mut() {
        for handler in ["httpGet", "tcpSocket", "grpc", "exec"] {
            object.remove(handler);
        }
        object.insert(
            "httpGet".to_owned(),
            json!({ "path": path, "port": admin_port, "scheme": "HTTP" }),
        );
    }
    value
}

/// A probe's port as a number: named ports are looked up in the container's `ports`.
fn port(container: &Container, port: &IntOrString) -> Result<u16, PatchError> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| PatchError::UnknownProbePort {
                    container: container.name.clone(),
                    port: name.clone(),
                })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PatchError::ProbePortOutOfRange {
            container: container.name.clone(),
            port: number,
        })
}
