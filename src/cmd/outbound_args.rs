//! The outbound flags of `palisade proxy`, and starting the outbound listeners from them.
//!
//! Two ways to use the outbound side (both may be on at once):
//!
//! - transparent (`--outbound-listen [::]:15001`, in a pod after `palisade init`): the app's
//!   outbound TCP arrives redirected; `--mesh-cidr`, `--mesh-port` and `--mesh-destination`
//!   say which original destinations get mutual TLS, `--unmeshed` what happens to the rest;
//! - fixed (`--outbound-fixed 127.0.0.1:7001=10.0.0.2:8080,spiffe://…`, the demo, a laptop):
//!   a local port that stands for one peer, no root needed.
//!
//! Every listener records into the proxy's telemetry, closes connections idle for
//! `--outbound-idle-timeout`, and on shutdown drains for the proxy's `--drain` time.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use palisade_config::SpiffeId;
use palisade_proxy::outbound::{
    Cidr, Destinations, MeshRules, Outbound, OutboundConfig, Running, Unmeshed, Upstream,
};
use palisade_proxy::reload::Reloader;
use palisade_proxy::telemetry::Telemetry;
use palisade_proxy::tls::Identity;

/// Outbound flags of `palisade proxy`.
#[derive(Debug, clap::Args)]
pub(crate) struct OutboundArgs {
    /// Transparent outbound listener (where `palisade init` redirects the app's outbound
    /// TCP), e.g. `[::]:15001`; off when not given.
    #[arg(long, value_name = "ADDR")]
    outbound_listen: Option<SocketAddr>,
    /// Pod network ranges: original destinations inside get mutual TLS (comma-separated,
    /// repeatable).
    #[arg(long = "mesh-cidr", value_delimiter = ',', value_name = "CIDR")]
    mesh_cidrs: Vec<Cidr>,
    /// Ports meshed inside --mesh-cidr (default: every port; comma-separated, repeatable).
    #[arg(long = "mesh-port", value_delimiter = ',', value_name = "PORT")]
    mesh_ports: Vec<u16>,
    /// A destination and the SPIFFE ID it must present: `10.0.0.7:5432=spiffe://td/ns/db/sa/pg`
    /// (repeatable). Meshed whatever --mesh-cidr says.
    #[arg(long = "mesh-destination", value_name = "ADDR=SPIFFE_ID", value_parser = parse_destination)]
    mesh_destinations: Vec<Upstream>,
    /// Meshed destination ports that carry a server-first protocol (MySQL, SMTP…): the
    /// app's first bytes are not awaited (comma-separated, repeatable).
    #[arg(
        long = "outbound-opaque-port",
        value_delimiter = ',',
        value_name = "PORT"
    )]
    outbound_opaque_ports: Vec<u16>,
    /// What happens to original destinations outside the mesh.
    #[arg(long, value_enum, default_value_t = UnmeshedArg::PassThrough)]
    unmeshed: UnmeshedArg,
    /// A local listener standing for one peer:
    /// `127.0.0.1:7001=peer-host:port,spiffe://td/ns/x/sa/y` (the ID part may be left out:
    /// any ID in the trust domains). Repeatable.
    #[arg(long = "outbound-fixed", value_name = "LISTEN=PEER[,SPIFFE_ID]", value_parser = parse_fixed)]
    outbound_fixed: Vec<Fixed>,
    /// Close an outbound connection after this long with no byte either way (`90s`, `30m`,
    /// `1h`).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_idle)]
    outbound_idle_timeout: Duration,
}

/// The outbound listeners of one proxy, serving.
pub(crate) struct OutboundListeners(Vec<Running>);

/// `--unmeshed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum UnmeshedArg {
    /// Connect in plaintext, as without palisade.
    #[default]
    PassThrough,
    /// Close the connection.
    Refuse,
}

/// One `--outbound-fixed`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fixed {
    listen: SocketAddr,
    upstream: Upstream,
}

// === impl OutboundArgs ===

impl OutboundArgs {
    /// Binds every outbound listener the flags ask for and serves them on new tasks, with
    /// the reloader's identity (rotations apply to new connections) and trust domains,
    /// recording into `telemetry`; on shutdown open connections get `drain` to finish.
    /// Nothing asked for: nothing started.
    pub(crate) async fn spawn_observed(
        self,
        reloader: &Reloader,
        telemetry: &Telemetry,
        drain: Duration,
    ) -> Result<OutboundListeners> {
        let mut configs = Vec::new();
        if let Some(listen) = self.outbound_listen {
            let rules = MeshRules {
                cidrs: self.mesh_cidrs,
                ports: self.mesh_ports,
                explicit: self.mesh_destinations,
                unmeshed: match self.unmeshed {
                    UnmeshedArg::PassThrough => Unmeshed::PassThrough,
                    UnmeshedArg::Refuse => Unmeshed::Refuse,
                },
                opaque_ports: self.outbound_opaque_ports,
            };
            configs.push((listen, Destinations::Transparent(rules)));
        } else if !self.mesh_cidrs.is_empty() || !self.mesh_destinations.is_empty() {
            bail!("--mesh-cidr and --mesh-destination need --outbound-listen");
        }
        for fixed in self.outbound_fixed {
            configs.push((fixed.listen, Destinations::Fixed(fixed.upstream)));
        }
        let identity = reloader.identity();
        let mut running = Vec::new();
        for (listen, destinations) in configs {
            let mut config =
                OutboundConfig::new(listen, destinations, Identity::clone(&identity.load()));
            config.identity = identity.clone();
            config.trust = reloader.trust_domains().clone();
            config.timeouts.drain = drain;
            config.timeouts.idle = self.outbound_idle_timeout;
            let described = describe(&config.destinations);
            let outbound = Outbound::bind_observed(config, telemetry.clone())
                .await
                .with_context(|| format!("starting the outbound listener on {listen}"))?;
            tracing::info!(listen = %outbound.local_addr(), to = %described, "outbound listening");
            running.push(outbound.spawn());
        }
        Ok(OutboundListeners(running))
    }
}

// === impl OutboundListeners ===

impl OutboundListeners {
    /// Stops accepting on every listener and starts their drain, without waiting.
    pub(crate) fn drain(&self) {
        for running in &self.0 {
            running.drain();
        }
    }

    /// Drains every listener and waits until their connections have ended (bounded by the
    /// drain time).
    pub(crate) async fn shutdown(self) {
        for running in &self.0 {
            running.drain();
        }
        for running in self.0 {
            running.shutdown().await;
        }
    }
}

fn describe(destinations: &Destinations) -> String {
    match destinations {
        Destinations::Fixed(upstream) => match &upstream.expected {
            Some(id) => format!("{} as {id}", upstream.addr),
            None => upstream.addr.to_string(),
        },
        Destinations::Transparent(rules) => format!(
            "original destination ({} mesh ranges, {} explicit destinations, unmeshed {:?})",
            rules.cidrs.len(),
            rules.explicit.len(),
            rules.unmeshed
        ),
    }
}

/// A positive duration in the CLI syntax (`90s`, `30m`, `1h`; see `parse_duration`).
fn parse_idle(text: &str) -> Result<Duration, String> {
    match super::proxy::parse_duration(text)? {
        idle if idle.is_zero() => Err(format!("{text:?}: the idle timeout must be more than 0")),
        idle => Ok(idle),
    }
}

/// `ADDR=SPIFFE_ID`.
fn parse_destination(text: &str) -> Result<Upstream, String> {
    let (addr, id) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected ADDR=spiffe://…"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address like 10.0.0.7:5432"))?;
    let id = SpiffeId::parse(id).map_err(|e| format!("{id:?}: {e}"))?;
    Ok(Upstream {
        addr,
        expected: Some(id),
    })
}

/// `LISTEN=PEER[,SPIFFE_ID]`; PEER may be a host name, resolved once, here.
fn parse_fixed(text: &str) -> Result<Fixed, String> {
    let parse = || -> Result<Fixed> {
        let (listen, rest) = text
            .split_once('=')
            .ok_or_else(|| anyhow!("expected LISTEN=PEER[,SPIFFE_ID]"))?;
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("{listen:?} is not a listen address like 127.0.0.1:7001"))?;
        let (peer, id) = match rest.split_once(',') {
            Some((peer, id)) => (peer, Some(id)),
            None => (rest, None),
        };
        let addr = peer
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve the peer {peer:?}"))?
            .next()
            .ok_or_else(|| anyhow!("the peer {peer:?} has no address"))?;
        let expected = id
            .map(SpiffeId::parse)
            .transpose()
            .with_context(|| format!("{:?} is not a SPIFFE ID", id.unwrap_or_default()))?;
        Ok(Fixed {
            listen,
            upstream: Upstream { addr, expected },
        })
    };
    parse().map_err(|error| format!("{text:?}: {error:#}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_fixed_destinations() {
        let fixed =
            parse_fixed("127.0.0.1:7001=127.0.0.1:15006,spiffe://cluster.local/ns/b/sa/b").unwrap();
        assert_eq!(fixed.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(fixed.upstream.addr, "127.0.0.1:15006".parse().unwrap());
        assert_eq!(
            fixed.upstream.expected.unwrap().as_str(),
            "spiffe://cluster.local/ns/b/sa/b"
        );
        let any = parse_fixed("[::1]:7001=[::1]:15006").unwrap();
        assert_eq!(any.upstream.expected, None);

        for (bad, message) in [
            ("127.0.0.1:7001", "expected LISTEN=PEER"),
            ("7001=127.0.0.1:15006", "is not a listen address"),
            (
                "127.0.0.1:7001=127.0.0.1:15006,https://x",
                "is not a SPIFFE ID",
            ),
            (
                "127.0.0.1:7001=nowhere.invalid:1",
                "cannot resolve the peer",
            ),
        ] {
            let error = parse_fixed(bad).unwrap_err();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }

    #[test]
    fn parses_idle_timeouts() {
        assert_eq!(parse_idle("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_idle("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(
            parse_idle("1h").unwrap(),
            palisade_proxy::outbound::DEFAULT_IDLE_TIMEOUT
        );
        for bad in ["0s", "1", "1d", "-1s", "s", "1.5h"] {
            assert!(parse_idle(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_mesh_destinations() {
        let upstream = parse_destination("10.0.0.7:5432=spiffe://td/ns/db/sa/pg").unwrap();
        assert_eq!(upstream.addr, "10.0.0.7:5432".parse().unwrap());
        assert!(parse_destination("10.0.0.7=spiffe://td/ns/db/sa/pg").is_err());
        assert!(parse_destination("10.0.0.7:5432").is_err());
        assert!(parse_destination("10.0.0.7:5432=spiffe://TD/x").is_err());
    }
}
