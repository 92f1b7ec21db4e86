//! `palisade inject`: the mutating admission webhook (see deploy/README.md). Parses the flags,
//! reads the optional injector config (JSON), binds the listener, logs its address and runs
//! `palisade_injector::serve` until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_injector::{InjectConfig, ServerConfig};

/// Arguments of `palisade inject`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Listen address of the HTTPS server.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Serving certificate chain (PEM); re-read when it changes.
    #[arg(long)]
    cert: PathBuf,
    /// Serving private key (PEM); re-read when it changes.
    #[arg(long)]
    key: PathBuf,
    /// Injector config (JSON: image, proxyUid, sidecar "native"|"classic", resources,
    /// meshCidrs, trustDomains, unmeshed, ipv6, …; see deploy/README.md); defaults when not
    /// given.
    #[arg(long)]
    config: Option<PathBuf>,
    /// How often the certificate files are checked for changes, in seconds.
    #[arg(long, default_value_t = 10)]
    reload_interval_secs: u64,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let inject = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<InjectConfig>(&text)
                .with_context(|| format!("{}: invalid injector config", path.display()))?
        }
        None => InjectConfig::default(),
    };
    inject
        .validate()
        .context("invalid injector config (--config)")?;
    let mut config = ServerConfig::new(args.cert, args.key, inject);
    config.reload_interval = Duration::from_secs(args.reload_interval_secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("reading the listen address")?;
        tracing::info!(listen = %addr, "inject listening");
        tokio::select! {
            served = palisade_injector::serve(listener, config) => {
                served.context("serving the webhook")?;
            }
            () = shutdown_signal() => tracing::info!("inject stopping"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
