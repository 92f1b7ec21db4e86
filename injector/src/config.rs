//! Injector settings: what `patch` puts into a pod (image, uid, ports, volumes, resources,
//! the proxy's mesh settings). Read once at start from `palisade inject --config` (JSON) and
//! checked with [`InjectConfig::validate`]; every field has a default.

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
    /// Pod network ranges (`--mesh-cidr`): the app's outbound connections to these get mutual
    /// TLS. Default none: outbound traffic follows `unmeshed`.
    pub mesh_cidrs: Vec<String>,
    /// Peer trust domains the proxy accepts (`--trust-domain`). Default none: the proxy's own.
    pub trust_domains: Vec<String>,
    /// What the proxy does with outbound connections outside `meshCidrs` (`--unmeshed`).
    /// Default pass-through.
    pub unmeshed: Unmeshed,
    /// Whether pods have IPv6: listeners on `[::]` (dual-stack) and ip6tables rules. `false`
    /// binds `0.0.0.0` and passes `--no-ipv6` to `palisade init`. Default true.
    pub ipv6: bool,
}

/// `--unmeshed` of the injected proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Unmeshed {
    /// Connect in plaintext, as without palisade.
    #[default]
    PassThrough,
    /// Close the connection.
    Refuse,
}

/// Why an injector config is refused at start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A `meshCidrs` entry is not a CIDR `palisade proxy` accepts.
    #[error("meshCidrs: {0:?} is not a CIDR such as 10.244.0.0/16 (no host bits)")]
    MeshCidr(String),
    /// A `trustDomains` entry is not a SPIFFE trust domain.
    #[error(
        "trustDomains: {0:?} is not a trust domain (lower-case letters, digits, '.', '-', '_')"
    )]
    TrustDomain(String),
    /// Two of the proxy's ports are equal.
    #[error("inboundPort, outboundPort and adminPort must differ and not be 0")]
    Ports,
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
            mesh_cidrs: Vec::new(),
            trust_domains: Vec::new(),
            unmeshed: Unmeshed::PassThrough,
            ipv6: true,
        }
    }
}

impl InjectConfig {
    /// Checks what `palisade init` and `palisade proxy` would refuse, so that a bad config
    /// stops the injector rather than every injected pod.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ports = [self.inbound_port, self.outbound_port, self.admin_port];
        if ports.contains(&0)
            || ports[0] == ports[1]
            || ports[0] == ports[2]
            || ports[1] == ports[2]
        {
            return Err(ConfigError::Ports);
        }
        if let Some(bad) = self
            .mesh_cidrs
            .iter()
            .find(|c| crate::patch::cidr(c).is_none())
        {
            return Err(ConfigError::MeshCidr(bad.clone()));
        }
        let is_trust_domain = |d: &str| {
            !d.is_empty()
                && d.len() <= 255
                && d.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
                })
        };
        if let Some(bad) = self.trust_domains.iter().find(|d| !is_trust_domain(d)) {
            return Err(ConfigError::TrustDomain(bad.clone()));
        }
        Ok(())
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
