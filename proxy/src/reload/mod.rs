//! Live reload of the policy and the pod's identity, beside the request path.
//!
//! Takes the policy paths, the identity files and the accepted trust domains
//! ([`ReloadConfig`]); passes on the two pointers the inbound side reads —
//! `Arc<ArcSwap<Policy>>` (read once per request) and `Arc<ArcSwap<rustls::ServerConfig>>`
//! (read once per handshake) — and swaps them when the files change. A [`StatusHandle`] tells
//! what is in force and what failed.
//!
//! When it checks: on an inotify event in a directory holding a watched file ([`watch`];
//! briefly debounced), on every [`ReloadConfig::interval`] tick (heals a missed event; an
//! unchanged re-check reads the files but loads nothing, see [`fingerprint`]), on SIGHUP,
//! and on [`ReloadTask::reload_now`]. Loading and compiling run on the blocking pool, never on
//! a connection's task.
//!
//! What a swap means: a request is decided by the one policy it read; a handshake uses the
//! one TLS config it read, and an established connection keeps its session. A policy or an
//! identity that does not load leaves the last good one in force; the failure is logged,
//! counted by kind and kept in the [`ReloadStatus`]. Reload never makes the proxy unready.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_config::{LoadError, LoadOptions, Loaded, Policy};
use rustls::ServerConfig;
use tokio::sync::{mpsc, oneshot, watch as signal_watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use self::fingerprint::{Fingerprint, Fnv};
use self::status::unix_now;
use crate::config::InboundConfig;
use crate::tls::{Identity, IdentityError, IdentityPaths, TlsError, TrustDomains, server_config};

pub mod fingerprint;
pub mod status;
pub mod watch;

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

/// A running reloader (from [`Reloader::spawn`]).
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

/// What made the reload task check the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// An inotify event (after the debounce).
    Event,
    /// The interval.
    Interval,
    /// SIGHUP or [`ReloadTask::reload_now`]: load even if nothing seems to have changed.
    Forced,
}

/// What the reload task listens to.
struct Inputs {
    events: mpsc::Receiver<()>,
    watch: Option<watch::Watch>,
    hangup: Option<Hangup>,
    requests: mpsc::Receiver<oneshot::Sender<()>>,
    shutdown: signal_watch::Receiver<bool>,
}

/// One identity that loaded, ready to be put in force.
struct NewIdentity {
    identity: Identity,
    tls: Arc<ServerConfig>,
    version: String,
}

/// One identity that did not.
struct IdentityFailure {
    kind: String,
    message: String,
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

    async fn run(mut self, inputs: Inputs) {
        let Inputs {
            mut events,
            mut watch,
            mut hangup,
            mut requests,
            mut shutdown,
        } = inputs;
        // Whatever changed between `load` and the watch being set up.
        self.check(Trigger::Event).await;
        let mut interval = self.config.interval.filter(|p| !p.is_zero()).map(|period| {
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });

        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = events.recv() => {
                    self.debounce(&mut events).await;
                    self.check(Trigger::Event).await;
                }
                () = tick(&mut interval) => {
                    if let Some(watch) = &mut watch {
                        watch.rewatch();
                    }
                    self.check(Trigger::Interval).await;
                }
                () = hangup_received(&mut hangup) => {
                    tracing::info!("sighup: reloading policy and identity");
                    self.check(Trigger::Forced).await;
                }
                Some(done) = requests.recv() => {
                    self.check(Trigger::Forced).await;
                    let _ = done.send(());
                }
            }
        }
    }

    /// Waits until events stop for the debounce time, or ten debounce times in all.
    async fn debounce(&self, events: &mut mpsc::Receiver<()>) {
        let quiet = self.config.debounce;
        let give_up = Instant::now() + quiet * 10;
        while Instant::now() < give_up {
            match tokio::time::timeout(quiet, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn watched_directories(&self) -> BTreeSet<PathBuf> {
        let identity = &self.config.identity;
        let files = self
            .config
            .policy_paths
            .iter()
            .map(PathBuf::as_path)
            .chain([
                identity.chain.as_path(),
                identity.key.as_path(),
                identity.bundle.as_path(),
            ]);
        watch::directories(files)
    }

    async fn check(&mut self, trigger: Trigger) {
        tracing::debug!(?trigger, "checking policy and identity files");
        let force = trigger == Trigger::Forced;
        self.check_policy(force).await;
        self.check_identity(force).await;
    }

    async fn check_policy(&mut self, force: bool) {
        let paths = self.config.policy_paths.clone();
        let options = self.config.load_options.clone();
        let seen = self.seen_policy;
        let outcome = tokio::task::spawn_blocking(move || {
            let fingerprint = Fingerprint::of_policy(&paths);
            let loaded = (force || fingerprint != seen).then(|| Policy::load(&paths, &options));
            (fingerprint, loaded)
        })
        .await;
        let (fingerprint, loaded) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, "policy reload task failed; keeping the policy in force");
                return;
            }
        };
        self.seen_policy = fingerprint;
        match loaded {
            None => {}
            Some(Ok(loaded)) => self.install_policy(loaded),
            Some(Err(error)) => self.policy_failed(&error),
        }
    }

    fn install_policy(&self, loaded: Loaded) {
        log_warnings(&loaded);
        let previous = self.policy.load();
        let policy = loaded.policy;
        if policy.version() == previous.version() {
            tracing::debug!(policy.version = policy.version(), "policy unchanged");
            return;
        }
        tracing::info!(
            policy.version = policy.version(),
            policy.previous = previous.version(),
            policy.rules = policy.rule_count(),
            "policy reloaded"
        );
        let (version, rules) = (policy.version().to_owned(), policy.rule_count());
        self.policy.store(Arc::new(policy));
        self.status.update(|s| {
            s.policy.version.clone_from(&version);
            s.policy.rules = rules;
            s.policy.loaded_at = unix_now();
            s.policy.loads += 1;
        });
    }

    fn policy_failed(&self, error: &LoadError) {
        let in_force = self.policy.load();
        for diagnostic in &error.diagnostics {
            tracing::warn!(%diagnostic, policy.version = in_force.version(),
                "policy reload failed; keeping the policy in force");
        }
        let message = error
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        self.status.update(|s| {
            record_failure(
                &mut s.policy.failures,
                &mut s.policy.last_error,
                POLICY_INVALID,
                &message,
            )
        });
    }

    async fn check_identity(&mut self, force: bool) {
        let paths = self.config.identity.clone();
        let trust = self.trust.clone();
        let seen = self.seen_identity;
        let outcome = tokio::task::spawn_blocking(move || {
            let fingerprint = Fingerprint::of_identity(&paths);
            let loaded = (force || fingerprint != seen).then(|| load_identity(&paths, &trust));
            (fingerprint, loaded)
        })
        .await;
        let (fingerprint, loaded) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, "identity reload task failed; keeping the identity in force");
                return;
            }
        };
        self.seen_identity = fingerprint;
        match loaded {
            None => {}
            Some(Ok(new)) => self.install_identity(new),
            Some(Err(failure)) => self.identity_failed(&failure),
        }
    }

    fn install_identity(&self, new: NewIdentity) {
        let in_force = self.identity.load();
        if new.identity.id() != in_force.id() {
            let message = format!(
                "{}: SPIFFE ID changed from {} to {}; a running pod keeps its identity",
                self.config.identity.chain.display(),
                in_force.id(),
                new.identity.id()
            );
            self.identity_failed(&IdentityFailure {
                kind: IDENTITY_ID_CHANGED.to_owned(),
                message,
            });
            return;
        }
        let current = self.status.snapshot().identity.version.clone();
        if new.version == current {
            tracing::debug!(identity.version = %current, "identity unchanged");
            return;
        }
        tracing::info!(
            identity.version = %new.version,
            identity.previous = %current,
            identity.id = %new.identity.id(),
            identity.not_after = new.identity.not_after(),
            "identity reloaded"
        );
        let not_after = new.identity.not_after();
        self.tls.store(new.tls);
        self.identity.store(Arc::new(new.identity));
        self.status.update(|s| {
            s.identity.version.clone_from(&new.version);
            s.identity.not_after = not_after;
            s.identity.loaded_at = unix_now();
            s.identity.loads += 1;
        });
    }

    fn identity_failed(&self, failure: &IdentityFailure) {
        let in_force = self.status.snapshot();
        tracing::warn!(
            error = %failure.message,
            kind = %failure.kind,
            identity.version = %in_force.identity.version,
            "identity reload failed; keeping the identity in force"
        );
        self.status.update(|s| {
            record_failure(
                &mut s.identity.failures,
                &mut s.identity.last_error,
                &failure.kind,
                &failure.message,
            );
        });
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

/// Loads the identity files and builds the server config (on the blocking pool).
fn load_identity(
    paths: &IdentityPaths,
    trust: &TrustDomains,
) -> Result<NewIdentity, IdentityFailure> {
    let identity = Identity::load(paths).map_err(|error| IdentityFailure {
        kind: identity_kind(&error),
        message: error_chain(&error),
    })?;
    let tls = server_config(&identity, trust).map_err(|error| IdentityFailure {
        kind: IDENTITY_TLS_CONFIG.to_owned(),
        message: error_chain(&error),
    })?;
    let version = identity_version(&identity, paths);
    Ok(NewIdentity {
        identity,
        tls,
        version,
    })
}

/// `identity_` + the error's label: the failure kind counted.
fn identity_kind(error: &IdentityError) -> String {
    format!("{IDENTITY_PREFIX}{}", error.as_label())
}

/// A short hash of the chain presented and the bundle file (never the key).
fn identity_version(identity: &Identity, paths: &IdentityPaths) -> String {
    let mut hash = Fnv::new();
    for cert in identity.chain() {
        hash.bytes(cert.as_ref());
    }
    hash.bytes(&[0xff]);
    if let Ok(bundle) = std::fs::read(&paths.bundle) {
        hash.bytes(&bundle);
    }
    hash.short_hex()
}

/// The error and each of its causes, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn record_failure(
    failures: &mut std::collections::BTreeMap<String, u64>,
    last_error: &mut Option<ReloadFailure>,
    kind: &str,
    message: &str,
) {
    *failures.entry(kind.to_owned()).or_default() += 1;
    *last_error = Some(ReloadFailure {
        kind: kind.to_owned(),
        message: message.to_owned(),
        at: unix_now(),
    });
}

fn log_warnings(loaded: &Loaded) {
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "policy warning");
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Option<Hangup> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for sighup");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<Hangup> {
    None
}

async fn hangup_received(hangup: &mut Option<Hangup>) {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        if signal.recv().await.is_some() {
            return;
        }
        *hangup = None;
    }
    #[cfg(not(unix))]
    let _ = hangup;
    std::future::pending().await
}
