//! Step 1 of the webhook, pure: a pod (and the injector's config) in, a JSON Patch out that adds
//! `palisade-init` (iptables), the proxy (native or classic sidecar) and their volumes — or
//! `None` when the pod is to be left alone. `review.rs` wraps the answer in an AdmissionReview.
//!
//! # Probes
//! The kubelet probes the pod IP without a client certificate, so under strict mTLS an app's
//! own probe would be refused by the proxy. Rather than exclude the probed ports from
//! redirection (which would open them to every client without mTLS), the app's probes are
//! rewritten to the proxy's admin port, which makes the original check on loopback: see
//! [`probes`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

use crate::config::{InjectConfig, SidecarMode, Unmeshed};

pub mod probes;

pub use probes::{APP_HEALTH_PREFIX, APP_PROBES_ENV};

/// Pod annotation: `"false"` leaves the pod alone.
pub const ANNOTATION_INJECT: &str = "palisade.dev/inject";
/// Pod annotation: name of the ConfigMap holding the pod's policy.
pub const ANNOTATION_POLICY: &str = "palisade.dev/policy";
/// Pod annotation: comma-separated inbound ports not redirected to the proxy.
pub const ANNOTATION_EXCLUDE_INBOUND_PORTS: &str = "palisade.dev/exclude-inbound-ports";
/// Pod annotation: comma-separated outbound destination ports not redirected.
pub const ANNOTATION_EXCLUDE_OUTBOUND_PORTS: &str = "palisade.dev/exclude-outbound-ports";
/// Pod annotation: comma-separated outbound destination CIDRs not redirected.
pub const ANNOTATION_EXCLUDE_OUTBOUND_CIDRS: &str = "palisade.dev/exclude-outbound-cidrs";
/// Pod annotation: comma-separated app ports that speak h2c (HTTP/2 without TLS, e.g. gRPC);
/// the proxy forwards to them over HTTP/2.
pub const ANNOTATION_H2C_PORTS: &str = "palisade.dev/h2c-ports";
/// Pod annotation: proxy CPU request.
pub const ANNOTATION_PROXY_CPU: &str = "palisade.dev/proxy-cpu";
/// Pod annotation: proxy memory request.
pub const ANNOTATION_PROXY_MEMORY: &str = "palisade.dev/proxy-memory";
/// Pod annotation: proxy CPU limit.
pub const ANNOTATION_PROXY_CPU_LIMIT: &str = "palisade.dev/proxy-cpu-limit";
/// Pod annotation: proxy memory limit.
pub const ANNOTATION_PROXY_MEMORY_LIMIT: &str = "palisade.dev/proxy-memory-limit";
/// Annotation the injector sets on pods it patched.
pub const ANNOTATION_STATUS: &str = "palisade.dev/status";

/// Name of the init container that installs the iptables rules.
pub const INIT_CONTAINER: &str = "palisade-init";
/// Name of the proxy container (an init container in native mode).
pub const PROXY_CONTAINER: &str = "palisade";
/// Volume with the pod's SPIFFE identity (tls.crt, tls.key, ca.crt).
pub const IDENTITY_VOLUME: &str = "palisade-identity";
/// Volume with the pod's policy ConfigMap.
pub const POLICY_VOLUME: &str = "palisade-policy";
/// Where the identity is mounted in the proxy.
pub const IDENTITY_DIR: &str = "/var/run/palisade/identity";
/// Where the policy ConfigMap is mounted in the proxy.
pub const POLICY_DIR: &str = "/etc/palisade/policy";

/// Why a pod that should be meshed cannot be patched (the webhook then refuses the pod).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// The pod has no spec.
    #[error("pod has no spec")]
    NoSpec,
    /// An annotation's value does not parse.
    #[error("annotation {key}: invalid value {value:?}: {reason}")]
    InvalidAnnotation {
        /// The annotation key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A probe names a container port that the container does not declare.
    #[error("container {container}: probe port {port:?} is not a declared container port")]
    UnknownProbePort {
        /// The container.
        container: String,
        /// The named port.
        port: String,
    },
    /// A probe's port is not 1-65535.
    #[error("container {container}: probe port {port} is not a port (1-65535)")]
    ProbePortOutOfRange {
        /// The container.
        container: String,
        /// The port.
        port: i32,
    },
    /// The pod already uses a name the injector needs.
    #[error("pod already has a {what} named {name:?}")]
    NameTaken {
        /// `volume` or `container`.
        what: &'static str,
        /// The name.
        name: &'static str,
    },
}

/// The JSON Patch that meshes `pod`, or `None` when the pod is left alone: opted out with
/// `palisade.dev/inject: "false"`, on the host network (iptables would rewrite the node's
/// rules), or already injected (it has a container named `palisade`), so a second pass is a
/// no-op.
///
/// # Security
/// Fails (never silently skips) when the pod asks for something it cannot get, e.g. a
/// malformed exclusion annotation: the webhook refuses such a pod rather than run it unmeshed.
pub fn patch(pod: &Pod, config: &InjectConfig) -> Result<Option<Patch>, PatchError> {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotation(annotations, key);
    if annotation(ANNOTATION_INJECT) == Some("false") {
        return Ok(None);
    }
    let spec = pod.spec.as_ref().ok_or(PatchError::NoSpec)?;
    if spec.host_network == Some(true) {
        return Ok(None);
    }
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    let all = init_containers.iter().chain(&spec.containers);
    if all.clone().any(|c| c.name == PROXY_CONTAINER) {
        return Ok(None);
    }
    if all.clone().any(|c| c.name == INIT_CONTAINER) {
        return Err(PatchError::NameTaken {
            what: "container",
            name: INIT_CONTAINER,
        });
    }
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    for name in [IDENTITY_VOLUME, POLICY_VOLUME] {
        if volumes.iter().any(|v| v.name == name) {
            return Err(PatchError::NameTaken {
                what: "volume",
                name,
            });
        }
    }

    let inbound = parse_ports(
        ANNOTATION_EXCLUDE_INBOUND_PORTS,
        annotation(ANNOTATION_EXCLUDE_INBOUND_PORTS),
    )?;
    let mut h2c = parse_ports(ANNOTATION_H2C_PORTS, annotation(ANNOTATION_H2C_PORTS))?;
    let probes = probes::rewrite(spec, config.admin_port)?;
    h2c.extend(&probes.grpc_ports);
    let outbound = parse_ports(
        ANNOTATION_EXCLUDE_OUTBOUND_PORTS,
        annotation(ANNOTATION_EXCLUDE_OUTBOUND_PORTS),
    )?;
    let cidrs = parse_cidrs(annotation(ANNOTATION_EXCLUDE_OUTBOUND_CIDRS))?;
    let resources = resources(config, annotations)?;
    let policy = match annotation(ANNOTATION_POLICY) {
        Some(name) if is_dns_label(name) => name,
        Some(name) => {
            return Err(PatchError::InvalidAnnotation {
                key: ANNOTATION_POLICY,
                value: name.to_owned(),
                reason: "not a ConfigMap name",
            });
        }
        None => config.default_policy_config_map.as_str(),
    };

    let init = init_container(config, &inbound, &outbound, &cidrs);
    let proxy = proxy_container(config, resources, &h2c, &probes.probes);
    // The probe replacements come first: they address containers by their index in the pod
    // as received, before our init containers are inserted.
    let mut ops = probes.ops;
    let (first, sidecar) = match config.sidecar {
        SidecarMode::Native => (vec![init, proxy], None),
        SidecarMode::Classic => (vec![init], Some(proxy)),
    };
    if spec.init_containers.is_none() {
        ops.push(add(&["spec", "initContainers"], Value::Array(first)));
    } else {
        // First, so other init containers already run meshed.
        for (index, container) in first.into_iter().enumerate() {
            ops.push(add(
                &["spec", "initContainers", &index.to_string()],
                container,
            ));
        }
    }
    if let Some(proxy) = sidecar {
        ops.push(add(&["spec", "containers", "-"], proxy));
    }
    let new_volumes = [
        json!({
            "name": IDENTITY_VOLUME,
            "csi": {
                "driver": config.identity_csi_driver,
                "readOnly": true,
                "volumeAttributes": { "csi.cert-manager.io/fs-group": config.proxy_uid.to_string() },
            },
        }),
        json!({ "name": POLICY_VOLUME, "configMap": { "name": policy } }),
    ];
    if spec.volumes.is_none() {
        ops.push(add(&["spec", "volumes"], json!(new_volumes)));
    } else {
        ops.extend(
            new_volumes
                .into_iter()
                .map(|v| add(&["spec", "volumes", "-"], v)),
        );
    }
    if annotations.is_none() {
        ops.push(add(
            &["metadata", "annotations"],
            json!({ ANNOTATION_STATUS: "injected" }),
        ));
    } else {
        ops.push(add(
            &["metadata", "annotations", ANNOTATION_STATUS],
            json!("injected"),
        ));
    }
    Ok(Some(Patch(ops)))
}

type Annotations = std::collections::BTreeMap<String, String>;

fn annotation<'a>(annotations: Option<&'a Annotations>, key: &str) -> Option<&'a str> {
    annotations.and_then(|a| a.get(key)).map(String::as_str)
}

/// An `add` operation; the tokens are escaped (`/` → `~1`, `~` → `~0`).
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

fn init_container(
    config: &InjectConfig,
    inbound: &BTreeSet<u16>,
    outbound: &BTreeSet<u16>,
    cidrs: &[String],
) -> Value {
    let mut args = vec![
        "init".to_owned(),
        format!("--inbound-port={}", config.inbound_port),
        format!("--outbound-port={}", config.outbound_port),
        format!("--admin-port={}", config.admin_port),
        format!("--proxy-uid={}", config.proxy_uid),
    ];
    if !config.ipv6 {
        args.push("--no-ipv6".to_owned());
    }
    if !inbound.is_empty() {
        args.push(format!("--exclude-inbound-ports={}", join(inbound)));
    }
    if !outbound.is_empty() {
        args.push(format!("--exclude-outbound-ports={}", join(outbound)));
    }
    if !cidrs.is_empty() {
        args.push(format!("--exclude-outbound-cidrs={}", cidrs.join(",")));
    }
    json!({
        "name": INIT_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        // iptables needs uid 0 and NET_ADMIN/NET_RAW in the pod's network namespace; nothing
        // else, and the container exits before the app starts.
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "memory": "64Mi" },
        },
    })
}

/// The `palisade proxy` arguments (without the leading `proxy`): listeners on every address
/// of the pod at the ports `palisade init` redirects to, the mounted policy and identity, and
/// the mesh settings of the injector's config.
pub fn proxy_args(config: &InjectConfig, h2c_ports: &BTreeSet<u16>) -> Vec<String> {
    // `[::]` is dual-stack (IPv4 clients arrive IPv4-mapped); `init` redirects both families.
    let any = if config.ipv6 { "[::]" } else { "0.0.0.0" };
    let mut args = vec![
        format!("--policy={POLICY_DIR}"),
        format!("--identity-dir={IDENTITY_DIR}"),
        format!("--inbound={any}:{}", config.inbound_port),
        format!("--admin={any}:{}", config.admin_port),
        format!("--outbound-listen={any}:{}", config.outbound_port),
        format!(
            "--unmeshed={}",
            match config.unmeshed {
                Unmeshed::PassThrough => "pass-through",
                Unmeshed::Refuse => "refuse",
            }
        ),
    ];
    if !config.mesh_cidrs.is_empty() {
        args.push(format!("--mesh-cidr={}", config.mesh_cidrs.join(",")));
    }
    args.extend(
        config
            .trust_domains
            .iter()
            .map(|domain| format!("--trust-domain={domain}")),
    );
    args.extend(
        h2c_ports
            .iter()
            .map(|port| format!("--h2c-app-port={port}")),
    );
    args
}

fn proxy_container(
    config: &InjectConfig,
    resources: Value,
    h2c_ports: &BTreeSet<u16>,
    app_probes: &Map<String, Value>,
) -> Value {
    let probe = |path: &str, failure: u32, period: u32| {
        json!({
            "httpGet": { "path": path, "port": config.admin_port },
            "periodSeconds": period,
            "failureThreshold": failure,
        })
    };
    let mut proxy = json!({
        "name": PROXY_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": std::iter::once("proxy".to_owned()).chain(proxy_args(config, h2c_ports)).collect::<Vec<_>>(),
        "ports": [{ "name": "palisade-admin", "containerPort": config.admin_port, "protocol": "TCP" }],
        "volumeMounts": [
            { "name": IDENTITY_VOLUME, "mountPath": IDENTITY_DIR, "readOnly": true },
            { "name": POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": true },
        ],
        "startupProbe": probe("/ready", 60, 1),
        "readinessProbe": probe("/ready", 3, 5),
        "livenessProbe": probe("/live", 3, 10),
        "resources": resources,
        "securityContext": {
            "runAsUser": config.proxy_uid,
            "runAsGroup": config.proxy_uid,
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    });
    if let Some(object) = proxy.as_object_mut() {
        if config.sidecar == SidecarMode::Native {
            object.insert("restartPolicy".to_owned(), json!("Always"));
        }
        if !app_probes.is_empty() {
            let probes = Value::Object(app_probes.clone()).to_string();
            object.insert(
                "env".to_owned(),
                json!([{ "name": APP_PROBES_ENV, "value": probes }]),
            );
        }
    }
    proxy
}

fn resources(
    config: &InjectConfig,
    annotations: Option<&Annotations>,
) -> Result<Value, PatchError> {
    let annotation = |key: &str| annotation(annotations, key);
    let pick = |key: &'static str, default: Option<&str>| -> Result<Option<String>, PatchError> {
        match annotation(key) {
            Some(value) if is_quantity(value) => Ok(Some(value.to_owned())),
            Some(value) => Err(PatchError::InvalidAnnotation {
                key,
                value: value.to_owned(),
                reason: "not a Kubernetes quantity",
            }),
            None => Ok(default.map(str::to_owned)),
        }
    };
    let r = &config.resources;
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(v) = pick(ANNOTATION_PROXY_CPU, Some(&r.cpu_request))? {
        requests.insert("cpu".to_owned(), json!(v));
    }
    if let Some(v) = pick(ANNOTATION_PROXY_MEMORY, Some(&r.memory_request))? {
        requests.insert("memory".to_owned(), json!(v));
    }
    if let Some(v) = pick(ANNOTATION_PROXY_CPU_LIMIT, r.cpu_limit.as_deref())? {
        limits.insert("cpu".to_owned(), json!(v));
    }
    if let Some(v) = pick(ANNOTATION_PROXY_MEMORY_LIMIT, r.memory_limit.as_deref())? {
        limits.insert("memory".to_owned(), json!(v));
    }
    let mut out = serde_json::Map::new();
    if !requests.is_empty() {
        out.insert("requests".to_owned(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".to_owned(), Value::Object(limits));
    }
    Ok(Value::Object(out))
}

fn parse_ports(key: &'static str, value: Option<&str>) -> Result<BTreeSet<u16>, PatchError> {
    let mut ports = BTreeSet::new();
    for item in value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match item.parse::<u16>() {
            Ok(port) if port != 0 => {
                ports.insert(port);
            }
            _ => {
                return Err(PatchError::InvalidAnnotation {
                    key,
                    value: value.unwrap_or_default().to_owned(),
                    reason: "expected comma-separated ports 1-65535",
                });
            }
        }
    }
    Ok(ports)
}

fn parse_cidrs(value: Option<&str>) -> Result<Vec<String>, PatchError> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            cidr(item).ok_or_else(|| PatchError::InvalidAnnotation {
                key: ANNOTATION_EXCLUDE_OUTBOUND_CIDRS,
                value: value.unwrap_or_default().to_owned(),
                reason: "expected comma-separated CIDRs such as 10.0.0.0/8 (no host bits)",
            })
        })
        .collect()
}

/// `text` in the canonical form `palisade init` and `palisade proxy` accept (an address, `/`,
/// a prefix length, no bits set past the prefix), or `None`.
pub(crate) fn cidr(text: &str) -> Option<String> {
    let (addr, len) = text.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u32 = len.parse().ok()?;
    let (bits, width) = match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    if len > width {
        return None;
    }
    let host_bits = if len == width {
        0
    } else {
        bits & (u128::MAX >> (128 - width + len))
    };
    (host_bits == 0).then(|| format!("{addr}/{len}"))
}

/// A Kubernetes resource quantity: a decimal number then an optional suffix.
fn is_quantity(value: &str) -> bool {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &value[digits.len()..];
    let number_ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1
        && digits != ".";
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    );
    number_ok && suffix_ok
}

/// An RFC 1123 DNS subdomain (a ConfigMap name).
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn join(ports: &BTreeSet<u16>) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
