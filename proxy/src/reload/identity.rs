//! One check of the identity: compare the fingerprint of chain, key and bundle, load and
//! verify them and build a new TLS server config on the blocking pool if they changed, then
//! swap both in, or keep the ones in force and record why the new files failed.

use std::sync::Arc;

use rustls::ServerConfig;

use super::fingerprint::Fingerprint;
use super::status::{
    IDENTITY_ID_CHANGED, IDENTITY_PREFIX, IDENTITY_TLS_CONFIG, record_failure, unix_now,
};
use super::{Reloader, identity_version};
use crate::error_chain::ErrorChain;
use crate::tls::{Identity, IdentityError, IdentityPaths, TrustDomains, server_config};

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

// === impl Reloader ===

impl Reloader {
    /// Loads the identity again if its files changed (or `force`), and puts it in force.
    pub(super) async fn check_identity(&mut self, force: bool) {
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

/// Loads the identity files and builds the server config (on the blocking pool).
fn load_identity(
    paths: &IdentityPaths,
    trust: &TrustDomains,
) -> Result<NewIdentity, IdentityFailure> {
    let identity = Identity::load(paths).map_err(|error| IdentityFailure {
        kind: identity_kind(&error),
        message: ErrorChain(&error).to_string(),
    })?;
    let tls = server_config(&identity, trust).map_err(|error| IdentityFailure {
        kind: IDENTITY_TLS_CONFIG.to_owned(),
        message: ErrorChain(&error).to_string(),
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
