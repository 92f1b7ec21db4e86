//! One check of the policy: compare the files' fingerprint, load and compile on the blocking
//! pool if they changed, then swap the new [`Policy`] in, or keep the one in force and record
//! why the new one failed.

use std::sync::Arc;

use palisade_config::{LoadError, Loaded, Policy};

use super::fingerprint::Fingerprint;
use super::status::{POLICY_INVALID, record_failure, unix_now};
use super::{Reloader, log_warnings};

// === impl Reloader ===

impl Reloader {
    /// Loads the policy again if its files changed (or `force`), and puts it in force.
    pub(super) async fn check_policy(&mut self, force: bool) {
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
}
