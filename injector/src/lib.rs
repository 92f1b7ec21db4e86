//! palisade's mutating admission webhook: turns a pod into a JSONPatch that adds the proxy and
//! its init step and rewrites the app's probes through the proxy's admin port (`patch`,
//! `patch::probes`), wrapped in AdmissionReview v1 (`review`), served over HTTPS (`server`).
//! What a pod gets, the config and the probe rewriting are documented in deploy/README.md.
#![forbid(unsafe_code)]

pub mod config;
pub mod patch;
pub mod review;
pub mod server;

pub use config::{ConfigError, InjectConfig, ProxyResources, SidecarMode, Unmeshed};
pub use patch::{PatchError, patch, proxy_args};
pub use review::{ReviewError, review};
pub use server::{ServerConfig, ServerError, serve};
