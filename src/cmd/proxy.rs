//! `palisade proxy`: the sidecar itself (inbound side).
//!
//! Loads the pod's identity and the policy, binds the inbound listener and serves until
//! SIGTERM or Ctrl-C, then stops accepting and drains in-flight requests. A bad policy or an
//! unreadable certificate at start-up ends the process with a non-zero status and says what is
//! wrong and where. While serving, policy and identity files are reloaded when they change,
//! every `--reload-interval` and on SIGHUP (see docs/reload.md); a bad file on reload keeps
//! the last good one in force.
//!
//! The environment variable `PALISADE_APP_PROBES` (set by `palisade inject`) lists the app's
//! probes the admin port answers at `/app-health/…` (deploy/README.md); a malformed value
//! stops the proxy at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use palisade_proxy::admin::{
    APP_PROBES_ENV, Admin, AdminConfig, AdminState, AppProbes, DEFAULT_ADMIN_LISTEN, Readiness,
};
use palisade_proxy::config::{DEFAULT_LISTEN, DEFAULT_MAX_REQUESTS_IN_FLIGHT};
use palisade_proxy::inbound::Inbound;
use palisade_proxy::reload::{InitialLoadError, ReloadConfig, Reloader};
use palisade_proxy::telemetry::{AccessLogConfig, Telemetry, TelemetryConfig, TraceConfig};
use palisade_proxy::tls::{IdentityPaths, TrustDomains};

/// Arguments of `palisade proxy`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Policy files or directories (a mounted ConfigMap), loaded as one set.
    #[arg(long = "policy", required = true)]
    policies: Vec<PathBuf>,
    /// Inbound listen address.
    #[arg(long, default_value_t = DEFAULT_LISTEN)]
    inbound: SocketAddr,
    /// The app's address (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    app: SocketAddr,
    /// App ports that speak h2c (HTTP/2 prior knowledge, e.g. gRPC); repeatable.
    #[arg(long = "h2c-app-port")]
    h2c_app_ports: Vec<u16>,
    // Boxed: these paths are most of the struct's size, which `Command` carries inline.
    #[command(flatten)]
    identity: Box<IdentityArgs>,
    /// Worker threads (1 runs everything on one thread, a pod with one core).
    #[arg(long)]
    workers: Option<usize>,
    /// Most requests in flight on the inbound listener at once; past it a request gets 503
    /// `service_unavailable` at once (never queued). See docs/limits.md.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUESTS_IN_FLIGHT)]
    max_requests_in_flight: usize,
    /// Time in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    drain: Duration,
    /// Re-check the policy and identity files this often, in addition to watching them
    /// (heals a missed change); `0` turns the re-check off.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    reload_interval: Duration,
    /// Load the policy and identity once: no watching, no re-check, no SIGHUP handling.
    #[arg(long)]
    no_reload: bool,
    #[command(flatten)]
    outbound: Box<crate::cmd::outbound_args::OutboundArgs>,
    #[command(flatten)]
    telemetry: Box<TelemetryArgs>,
}

/// The admin port, metrics, traces and access logs (docs/telemetry.md).
#[derive(Debug, clap::Args)]
struct TelemetryArgs {
    /// Admin listen address: /metrics, /ready, /live, /status (loopback clients only), and
    /// the app's probes at /app-health/… when PALISADE_APP_PROBES is set (deploy/README.md).
    #[arg(long, default_value_t = DEFAULT_ADMIN_LISTEN)]
    admin: SocketAddr,
    /// No admin listener.
    #[arg(long)]
    no_admin: bool,
    /// Record no metrics, traces or access logs (the admin port still answers probes).
    #[arg(long)]
    no_telemetry: bool,
    /// Fraction of new traces recorded (parent-based: a caller's sampled flag wins).
    /// Default: OTEL_TRACES_SAMPLER_ARG, else 0.01. Traces are exported only when
    /// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
    #[arg(long)]
    trace_sample_ratio: Option<f64>,
    /// Finished spans waiting for export before new ones are dropped (and counted).
    #[arg(long, default_value_t = palisade_proxy::telemetry::trace::DEFAULT_QUEUE)]
    trace_queue: usize,
    /// Write one JSON access-log line per request to stdout.
    #[arg(long)]
    access_log: bool,
    /// Fraction of successful requests logged (refusals and failures are always logged).
    #[arg(long, default_value_t = 1.0)]
    access_log_sample_ratio: f64,
}

/// Where the pod's identity is, and whom it accepts.
#[derive(Debug, clap::Args)]
struct IdentityArgs {
    /// Directory with the pod's identity: tls.crt (chain), tls.key, ca.crt (trust bundle).
    #[arg(long, default_value = IdentityPaths::DEFAULT_DIR)]
    identity_dir: PathBuf,
    /// Certificate chain file (overrides the one in --identity-dir).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Private key file (overrides the one in --identity-dir).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Trust bundle file (overrides the one in --identity-dir).
    #[arg(long)]
    trust_bundle: Option<PathBuf>,
    /// Accepted peer trust domains (default: the proxy's own); repeatable.
    #[arg(long = "trust-domain")]
    trust_domains: Vec<String>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    if args.max_requests_in_flight == 0 {
        bail!("--max-requests-in-flight must be at least 1");
    }
    let runtime = match args.workers {
        Some(0) => bail!("--workers must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<ExitCode> {
    let app_probes = match std::env::var(APP_PROBES_ENV) {
        Ok(json) if !json.trim().is_empty() => {
            AppProbes::from_json(&json).with_context(|| format!("reading {APP_PROBES_ENV}"))?
        }
        _ => AppProbes::default(),
    };
    let identity = *args.identity;
    let mut paths = IdentityPaths::in_dir(&identity.identity_dir);
    if let Some(cert) = identity.cert {
        paths.chain = cert;
    }
    if let Some(key) = identity.key {
        paths.key = key;
    }
    if let Some(bundle) = identity.trust_bundle {
        paths.bundle = bundle;
    }
    let mut reload = ReloadConfig::new(args.policies, paths);
    if !identity.trust_domains.is_empty() {
        let trust = TrustDomains::new(&identity.trust_domains).context("--trust-domain")?;
        reload.trust_domains = Some(trust);
    }
    reload.interval = (!args.reload_interval.is_zero()).then_some(args.reload_interval);
    let reloader = match Reloader::load(reload) {
        Ok(reloader) => reloader,
        Err(InitialLoadError::Policy(error)) => {
            for diagnostic in &error.diagnostics {
                eprintln!("{diagnostic}");
            }
            bail!("the policy does not load; not starting");
        }
        Err(InitialLoadError::Identity(error)) => {
            return Err(error).context("loading the pod's identity");
        }
        Err(error @ InitialLoadError::Tls(_)) => return Err(error.into()),
    };

    let status = reloader.status().snapshot();
    tracing::info!(
        policy.version = %status.policy.version,
        policy.rules = status.policy.rules,
        identity = %status.identity.spiffe_id,
        identity.not_after = status.identity.not_after,
        "policy and identity loaded"
    );
    let telemetry_args = &args.telemetry;
    let mut trace = TraceConfig::from_otel_env(|name| std::env::var(name).ok())
        .context("reading the OTEL_* variables")?;
    if let Some(trace) = &mut trace {
        trace.queue = telemetry_args.trace_queue;
        if let Some(ratio) = telemetry_args.trace_sample_ratio {
            trace.sample_ratio = ratio;
        }
        tracing::info!(endpoint = %trace.endpoint, sample_ratio = trace.sample_ratio, "exporting traces");
    }
    let (telemetry, telemetry_tasks) = if telemetry_args.no_telemetry {
        (Telemetry::disabled(), None)
    } else {
        let config = TelemetryConfig {
            trace,
            access_log: AccessLogConfig {
                enabled: telemetry_args.access_log,
                sample_ratio: telemetry_args.access_log_sample_ratio,
                ..AccessLogConfig::default()
            },
            status: Some(reloader.status()),
        };
        let (telemetry, tasks) =
            Telemetry::start(config, Box::new(std::io::stdout())).context("starting telemetry")?;
        (telemetry, Some(tasks))
    };
    let readiness = Readiness::default();
    let admin = if telemetry_args.no_admin {
        if !app_probes.is_empty() {
            tracing::warn!("--no-admin: the app's probes in {APP_PROBES_ENV} are not answered");
        }
        None
    } else {
        let state = AdminState {
            telemetry: telemetry.clone(),
            status: Some(reloader.status()),
            readiness: readiness.clone(),
        };
        let config = AdminConfig {
            listen: telemetry_args.admin,
        };
        // Not fatal: without the admin port the proxy still enforces policy, and the failing
        // readiness probe makes the problem visible.
        let probes = app_probes.len();
        match Admin::spawn_with_probes(&config, state, app_probes).await {
            Ok(admin) => {
                tracing::info!(listen = %admin.local_addr(), app_probes = probes, "admin listening");
                Some(admin)
            }
            Err(error) => {
                tracing::error!(error = %anyhow::Error::from(error), "no admin port: /ready, /metrics unavailable");
                None
            }
        }
    };

    let mut config = reloader.inbound_config();
    config.listen = args.inbound;
    config.app.ip = args.app.ip();
    config.app.port = args.app.port();
    config.app.h2c_ports = args.h2c_app_ports;
    config.timeouts.drain = args.drain;
    config.limits.max_requests_in_flight = args.max_requests_in_flight;
    let inbound = Inbound::bind_observed(config, telemetry.clone())
        .await
        .with_context(|| format!("binding {}", args.inbound))?;
    tracing::info!(listen = %inbound.local_addr(), app = %args.app, "inbound listening");
    let outbound = args
        .outbound
        .spawn_observed(&reloader, &telemetry, args.drain)
        .await?;
    let reloading = if args.no_reload {
        tracing::info!("reload off: policy and identity stay as loaded");
        None
    } else {
        Some(reloader.spawn())
    };
    readiness.set_ready();
    inbound
        .serve(async {
            shutdown_signal().await;
            // Unready first, so the endpoints controller stops sending while we drain.
            readiness.set_unready();
            // Both sides drain at once: the whole shutdown stays within --drain.
            outbound.drain();
        })
        .await;
    outbound.shutdown().await;
    if let Some(reloading) = reloading {
        reloading.shutdown().await;
    }
    if let Some(tasks) = telemetry_tasks {
        tasks.finish(Duration::from_secs(2)).await;
    }
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    tracing::info!("drained; exiting");
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = ctrl_c => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the proxy");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
}

/// Parses `500ms`, `20s`, `2m`, `1h`, and `0`: the one duration syntax of the CLI.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m or h"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    let seconds = |scale: u64| {
        number
            .checked_mul(scale)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!("{text:?}: unit must be ms, s, m or h")),
    }
}
