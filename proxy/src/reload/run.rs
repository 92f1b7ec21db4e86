//! The reload task's loop: waits for a file event (then debounces), an interval tick, SIGHUP
//! or a [`ReloadTask::reload_now`](super::ReloadTask::reload_now) request, and runs one
//! check of the policy and the identity for each.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot, watch as signal_watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::{Reloader, watch};

/// What made the reload task check the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// An inotify event (after the debounce).
    Event,
    /// The interval.
    Interval,
    /// SIGHUP or [`super::ReloadTask::reload_now`]: load even if nothing seems to have
    /// changed.
    Forced,
}

/// What the reload task listens to.
pub(super) struct Inputs {
    pub(super) events: mpsc::Receiver<()>,
    pub(super) watch: Option<watch::Watch>,
    pub(super) hangup: Option<Hangup>,
    pub(super) requests: mpsc::Receiver<oneshot::Sender<()>>,
    pub(super) shutdown: signal_watch::Receiver<bool>,
}

// === impl Reloader ===

impl Reloader {
    /// The task: one check per trigger until shutdown.
    pub(super) async fn run(mut self, inputs: Inputs) {
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

    /// The directories holding the policy and identity files.
    pub(super) fn watched_directories(&self) -> BTreeSet<PathBuf> {
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
pub(super) type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
pub(super) type Hangup = ();

#[cfg(unix)]
pub(super) fn hangup_signal() -> Option<Hangup> {
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
pub(super) fn hangup_signal() -> Option<Hangup> {
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
