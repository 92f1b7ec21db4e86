//! Live reload of the policy and the pod's identity, beside the request path.
//!
//! Takes the policy paths, the identity files and the accepted trust domains
//! ([`ReloadConfig`]); passes on the two pointers the inbound side reads —
//! `Arc<ArcSwap<Policy>>` (read once per request) and `Arc<ArcSwap<rustls::ServerConfig>>`
//! (read once per handshake) — and swaps them when the files change. A [`StatusHandle`] tells
//! what is in force and what failed.
//!
//! When it checks (`run`): on an inotify event in a directory holding a watched file (`watch`;
//! briefly debounced), on every [`ReloadConfig::interval`] tick (heals a missed event; an
//! unchanged re-check reads the files but loads nothing, see `fingerprint`), on SIGHUP, and
//! on [`ReloadTask::reload_now`]. Each check runs `policy` then `identity`; loading and
//! compiling run on the blocking pool, never on a connection's task. docs/reload.md tells the
//! whole story.
//!
//! What a swap means: a request is decided by the one policy it read; a handshake uses the
//! one TLS config it read, and an established connection keeps its session. A policy or an
//! identity that does not load leaves the last good one in force; the failure is logged,
//! counted by kind and kept in the [`ReloadStatus`]. Reload never makes the proxy unready.

use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_config::{LoadError, LoadOptions, Loaded, Policy};
use rustls::ServerConfig;
use tokio::sync::{mpsc, oneshot, watch as signal_watch};
use tokio::task::JoinHandle;

use self::fingerprint::{Fingerprint, short_hex};
use self::run::{Inputs, hangup_signal};
use self::status::unix_now;
use crate::config::InboundConfig;
use crate::tls::{Identity, IdentityError, IdentityPaths, TlsError, TrustDomains, server_config};

mod fingerprint;
mod identity;
mod policy;
mod run;
pub mod status;
mod watch;

pub use self::status::{
    IDENTITY_ID_CHANGED, IDENTITY_PREFIX, IDENTITY_TLS_CONFIG, IdentityStatus, POLICY_INVALID,
    PolicyStatus, ReloadFailure, ReloadStatus, StatusHandle,
};

/// Default time between two re-checks of the files: 10 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Default quiet time after a file event before reloading: 100 ms.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// What to reload and when. [`ReloadConfig::new`] fills in the documented defaults.
#[derive(Clone, Debug)]
pub struct ReloadConfig {
    /// Policy files and directories, loaded together as by [`Policy::load`].
    pub policy_paths: Vec<PathBuf>,
    /// Options for [`Policy::load`]. Default: [`LoadOptions::default`].
    pub load_options: LoadOptions,
    /// The identity files.
    pub identity: IdentityPaths,
    /// Peer trust domains accepted on inbound handshakes. Default `None`: the trust domain of
    /// the identity loaded at start. Fixed for the life of the reloader.
    pub trust_domains: Option<TrustDomains>,
    /// Re-check the files this often, whatever the watches say. Default
    /// [`DEFAULT_INTERVAL`]; `None` disables it.
    pub interval: Option<Duration>,
    /// After a file event, wait until no further event came for this long (at most ten times
    /// as long in all) before reloading, so a writer's several files are read together.
    /// Default [`DEFAULT_DEBOUNCE`].
    pub debounce: Duration,
    /// Watch the directories of the files with inotify. Default `true`.
    pub watch: bool,
    /// Reload on SIGHUP. Default `true`. The first reloader with this set installs a
    /// process-wide SIGHUP handler, after which SIGHUP no longer ends the process.
    pub sighup: bool,
}

/// The loaded policy and identity, and the pointers the inbound side reads. Built by
/// [`Reloader::load`]; started by [`Reloader::spawn`].
pub struct Reloader {
    config: ReloadConfig,
    trust: TrustDomains,
    policy: Arc<ArcSwap<Policy>>,
    tls: Arc<ArcSwap<ServerConfig>>,
    identity: Arc<ArcSwap<Identity>>,
    status: StatusHandle,
    seen_policy: Fingerprint,
    seen_identity: Fingerprint,
}

/// A running reloader (from [`Reloader::spawn`]). Dropping it stops the reloading, as
/// [`ReloadTask::shutdown`] does; what is in force stays in force.
pub struct ReloadTask {
    requests: mpsc::Sender<oneshot::Sender<()>>,
    shutdown: signal_watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The policy or identity in place at start-up does not load. Later failures are not
/// errors: they are logged, counted and kept in the [`ReloadStatus`].
#[derive(Debug, thiserror::Error)]
pub enum InitialLoadError {
    /// The policy does not load; every diagnostic is in the [`LoadError`].
    #[error("the policy does not load")]
    Policy(#[source] LoadError),
    /// The identity files do not hold a usable SVID.
    #[error("cannot load the pod's identity")]
    Identity(#[source] IdentityError),
    /// No TLS server config can be built from the identity.
    #[error("cannot build the tls server configuration")]
    Tls(#[source] TlsError),
}

// === impl ReloadConfig ===

impl ReloadConfig {
    /// Reload `policy_paths` and `identity` with the defaults documented on each field.
    pub fn new(policy_paths: Vec<PathBuf>, identity: IdentityPaths) -> ReloadConfig {
        ReloadConfig {
            policy_paths,
            load_options: LoadOptions::default(),
            identity,
            trust_domains: None,
            interval: Some(DEFAULT_INTERVAL),
            debounce: DEFAULT_DEBOUNCE,
            watch: true,
            sighup: true,
        }
    }
}

// === impl Reloader ===

impl Reloader {
    /// Loads the policy and the identity once and builds the TLS server config. Start-up
    /// calls this; its errors should end the process (there is nothing good to keep yet).
    pub fn load(config: ReloadConfig) -> Result<Reloader, InitialLoadError> {
        let seen_policy = Fingerprint::of_policy(&config.policy_paths);
        let loaded = Policy::load(&config.policy_paths, &config.load_options)
            .map_err(InitialLoadError::Policy)?;
        log_warnings(&loaded);
        let seen_identity = Fingerprint::of_identity(&config.identity);
        let identity = Identity::load(&config.identity).map_err(InitialLoadError::Identity)?;
        let trust = config
            .trust_domains
            .clone()
            .unwrap_or_else(|| TrustDomains::of(identity.id()));
        let tls = server_config(&identity, &trust).map_err(InitialLoadError::Tls)?;
        let version = identity_version(&identity, &config.identity);

        let status = StatusHandle::default();
        let policy = loaded.policy;
        status.update(|s| {
            s.policy = PolicyStatus {
                version: policy.version().to_owned(),
                rules: policy.rule_count(),
                loaded_at: unix_now(),
                paths: config.policy_paths.clone(),
                loads: 1,
                ..PolicyStatus::default()
            };
            s.identity = IdentityStatus {
                version: version.clone(),
                spiffe_id: identity.id().to_string(),
                not_after: identity.not_after(),
                loaded_at: unix_now(),
                chain: config.identity.chain.clone(),
                key: config.identity.key.clone(),
                bundle: config.identity.bundle.clone(),
                loads: 1,
                ..IdentityStatus::default()
            };
        });
        Ok(Reloader {
            trust,
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            tls: Arc::new(ArcSwap::new(tls)),
            identity: Arc::new(ArcSwap::from_pointee(identity)),
            status,
            seen_policy,
            seen_identity,
            config,
        })
    }

    /// The policy in force; the inbound side reads it once per request.
    pub fn policy(&self) -> Arc<ArcSwap<Policy>> {
        self.policy.clone()
    }

    /// The TLS server config in force; the inbound side reads it once per handshake.
    pub fn tls(&self) -> Arc<ArcSwap<ServerConfig>> {
        self.tls.clone()
    }

    /// The identity in force (for building client configs, or showing the SVID).
    pub fn identity(&self) -> Arc<ArcSwap<Identity>> {
        self.identity.clone()
    }

    /// The accepted peer trust domains.
    pub fn trust_domains(&self) -> &TrustDomains {
        &self.trust
    }

    /// What is in force and what failed.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// An inbound configuration (defaults as in [`InboundConfig::new`]) whose policy and TLS
    /// config are this reloader's: what it swaps in, the inbound side uses.
    pub fn inbound_config(&self) -> InboundConfig {
        let identity = self.identity.load();
        let mut config = InboundConfig::new(
            Policy::clone(&self.policy.load()),
            self.tls.load_full(),
            identity.id().clone(),
        );
        config.policy = self.policy.clone();
        config.tls = self.tls.clone();
        config
    }

    /// Starts watching on a new task. Must be called within a tokio runtime. A watch or
    /// signal that cannot be set up is logged and left out; the interval still runs.
    pub fn spawn(self) -> ReloadTask {
        let (requests, requests_rx) = mpsc::channel(4);
        let (shutdown, shutdown_rx) = signal_watch::channel(false);
        // Set up before returning, so that a change made right after `spawn` is seen.
        let (wake, events) = mpsc::channel(1);
        let watch = self.config.watch.then(|| self.watch(wake)).flatten();
        let hangup = if self.config.sighup {
            hangup_signal()
        } else {
            None
        };
        let task = tokio::spawn(self.run(Inputs {
            events,
            watch,
            hangup,
            requests: requests_rx,
            shutdown: shutdown_rx,
        }));
        ReloadTask {
            requests,
            shutdown,
            task,
        }
    }

    fn watch(&self, wake: mpsc::Sender<()>) -> Option<watch::Watch> {
        let dirs = self.watched_directories();
        match watch::Watch::start(dirs.clone(), wake) {
            Ok(watch) => {
                tracing::info!(dirs = ?dirs, "watching for policy and identity changes");
                Some(watch)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch files; relying on the interval and SIGHUP");
                None
            }
        }
    }
}

// === impl ReloadTask ===

impl ReloadTask {
    /// Checks the policy and identity files now, loading them even if they seem unchanged
    /// (what SIGHUP does), and returns when that is done. Returns false if the task has
    /// stopped.
    pub async fn reload_now(&self) -> bool {
        let (done, wait) = oneshot::channel();
        if self.requests.send(done).await.is_err() {
            return false;
        }
        wait.await.is_ok()
    }

    /// Stops watching; what is in force stays in force.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "reload task failed");
        }
    }
}

fn log_warnings(loaded: &Loaded) {
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "policy warning");
    }
}

/// A short hash of the chain presented and the bundle file (never the key).
fn identity_version(identity: &Identity, paths: &IdentityPaths) -> String {
    let mut hash = palisade_config::Fnv1a::new();
    for cert in identity.chain() {
        hash.write(cert.as_ref());
    }
    hash.write(&[0xff]);
    if let Ok(bundle) = std::fs::read(&paths.bundle) {
        hash.write(&bundle);
    }
    short_hex(hash.finish())
}
