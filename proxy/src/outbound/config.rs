//! Settings of the outbound side: where it listens, which destinations are in the mesh and
//! what they must prove, and what happens to the rest.
//!
//! Only values: the CLI (`palisade proxy --outbound…`) or a test builds an
//! [`OutboundConfig`] and hands it to [`Outbound::bind`](super::Outbound::bind).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_config::SpiffeId;

use super::Cidr;
use crate::tls::{Identity, TrustDomains};

/// Default transparent outbound listen address: every interface, port 15001 (where
/// `palisade init` redirects the app's outbound TCP).
pub const DEFAULT_OUTBOUND_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 15001);

/// Default idle timeout of a carried outbound connection: 1 hour.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Everything one outbound listener needs.
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    /// Address the listener binds.
    pub listen: SocketAddr,
    /// Where accepted connections go.
    pub destinations: Destinations,
    /// The pod's SVID, presented to every meshed peer. A rotation (the reloader swaps it)
    /// takes effect for the next connection; open connections keep their session.
    pub identity: Arc<ArcSwap<Identity>>,
    /// Trust domains a meshed peer's SPIFFE ID may be in.
    pub trust: TrustDomains,
    /// Timeouts.
    pub timeouts: OutboundTimeouts,
}

/// How the destination of an accepted connection is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destinations {
    /// Non-transparent mode (the demo, a laptop): every connection goes to one peer over
    /// mutual TLS. The listener's address stands for that peer.
    Fixed(Upstream),
    /// Transparent mode: iptables redirected the app's connection here; its original
    /// destination decides.
    Transparent(MeshRules),
}

/// A meshed peer: where to connect and who it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The peer's address (its pod IP and the app port; the peer's iptables send it to its
    /// palisade inbound listener).
    pub addr: SocketAddr,
    /// The SPIFFE ID the peer must present. `None` accepts any ID in the trust domains.
    pub expected: Option<SpiffeId>,
}

/// Which original destinations are meshed (transparent mode).
///
/// A destination is meshed when it is listed in `explicit`, or when its address is inside
/// one of `cidrs` and its port is in `ports` (every port when `ports` is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshRules {
    /// Pod networks: destinations inside get mutual TLS.
    pub cidrs: Vec<Cidr>,
    /// Ports that are meshed inside `cidrs`; empty means every port.
    pub ports: Vec<u16>,
    /// Destinations with the exact SPIFFE ID they must present. These are meshed whatever
    /// `cidrs` and `ports` say.
    pub explicit: Vec<Upstream>,
    /// What happens to every other destination.
    pub unmeshed: Unmeshed,
    /// Destination ports whose protocol is not sniffed (server-first protocols such as
    /// MySQL or SMTP, which would otherwise wait [`OutboundTimeouts::detect`]).
    pub opaque_ports: Vec<u16>,
}

/// What the outbound side does with a destination outside the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unmeshed {
    /// Connect in plaintext, as if palisade were not there (the default: calls to the
    /// internet and to unmeshed services keep working).
    #[default]
    PassThrough,
    /// Close the connection: only meshed peers are reachable.
    Refuse,
}

/// Timeouts of the outbound side. Every field has a default ([`OutboundTimeouts::default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundTimeouts {
    /// Time to connect to the destination. Default 5 s.
    pub connect: Duration,
    /// Time for the TLS handshake with a meshed peer. Default 10 s.
    pub handshake: Duration,
    /// Time to wait for the app's first bytes on a meshed connection, to offer ALPN `h2`
    /// for an HTTP/2 preface. A silent app (server-first protocol) proceeds after this.
    /// Default 1 s.
    pub detect: Duration,
    /// On shutdown, time open connections get to finish before they are closed.
    /// Default 20 s.
    pub drain: Duration,
    /// A carried connection with no byte either way for this long is closed (both sides).
    /// Default 1 h, as Envoy's TCP proxy: long enough for quiet database or message-broker
    /// connections that keep themselves alive, short enough that connections whose peer
    /// vanished without a FIN or RST do not pile up forever.
    pub idle: Duration,
}

// === impl OutboundConfig ===

impl OutboundConfig {
    /// A listener on `listen` for `destinations`, trusting the identity's own trust domain,
    /// with default timeouts.
    pub fn new(listen: SocketAddr, destinations: Destinations, identity: Identity) -> Self {
        Self {
            listen,
            destinations,
            trust: TrustDomains::of(identity.id()),
            identity: Arc::new(ArcSwap::from_pointee(identity)),
            timeouts: OutboundTimeouts::default(),
        }
    }
}

// === impl OutboundTimeouts ===

impl Default for OutboundTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            detect: Duration::from_secs(1),
            drain: Duration::from_secs(20),
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}
