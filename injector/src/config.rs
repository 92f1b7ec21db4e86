//! Injector settings: what `patch` puts into a pod (image, uid, ports, volumes, resources).
//! Read once at start from `palisade inject --config` (YAML or JSON); every field has a default.

use serde::Deserialize;

/// What the injector adds to a pod. Defaults match `palisade init` and `palisade proxy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectConfig {
    /// Image of the `palisade` binary (init step and proxy). Default `ghcr.io/palisade/palisade:0.1.0`.
    pub image: String,
    /// Image pull policy of the injected containers. Default `IfNotPresent`.
    pub image_pull_policy: String,
    /// The proxy's uid; `palisade init` exempts this uid's traffic from redirection. Default 1337.
    pub proxy_uid: i64,
    /// Native sidecar (init container with `restartPolicy: Always`, Kubernetes ≥ 1.29) or a
    /// classic container for older clusters. Default native.
    pub sidecar: SidecarMode,
    /// Inbound redirect port. Default 15006.
    pub inbound_port: u16,
    /// Outbound redirect port. Default 15001.
    pub outbound_port: u16,
    /// Admin port (/ready, /live, /metrics), never redirected. Default 15020.
    pub admin_port: u16,
    /// CSI driver that writes the pod's SPIFFE identity. Default `spiffe.csi.cert-manager.io`.
    pub identity_csi_driver: String,
    /// ConfigMap holding the pod's policy when the pod has no `palisade.dev/policy`
    /// annotation. Default `palisade-policy`.
    pub default_policy_config_map: String,
    /// Proxy resources; each is overridable per pod by annotation.
    pub resources: ProxyResources,
}

/// How the proxy container is attached to the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always`: ready before the app starts, stopped
    /// after it, so Jobs complete.
    Native,
    /// An ordinary container next to the app (clusters without native sidecars; Jobs will not
    /// complete while the proxy runs).
    Classic,
}

/// The proxy's requests and limits (Kubernetes quantities).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyResources {
    /// CPU request (annotation `palisade.dev/proxy-cpu`). Default `100m`.
    pub cpu_request: String,
    /// Memory request (annotation `palisade.dev/proxy-memory`). Default `64Mi`.
    pub memory_request: String,
    /// CPU limit (annotation `palisade.dev/proxy-cpu-limit`); none by default (no throttling).
    pub cpu_limit: Option<String>,
    /// Memory limit (annotation `palisade.dev/proxy-memory-limit`). Default `256Mi`.
    pub memory_limit: Option<String>,
}

// === impl InjectConfig ===

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            image: "ghcr.io/palisade/palisade:0.1.0".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            proxy_uid: 1337,
            sidecar: SidecarMode::Native,
            inbound_port: 15006,
            outbound_port: 15001,
            admin_port: 15020,
            identity_csi_driver: "spiffe.csi.cert-manager.io".to_owned(),
            default_policy_config_map: "palisade-policy".to_owned(),
            resources: ProxyResources::default(),
        }
    }
}

// === impl ProxyResources ===

impl Default for ProxyResources {
    fn default() -> Self {
        ProxyResources {
            cpu_request: "100m".to_owned(),
            memory_request: "64Mi".to_owned(),
            cpu_limit: None,
            memory_limit: Some("256Mi".to_owned()),
        }
    }
}
