//! Step 2 of an outbound connection: decide where it goes.
//!
//! Takes the original destination (or the fixed upstream) and the mesh rules and passes on
//! a [`Route`]: originate mutual TLS to a meshed peer, pass plaintext through, or refuse.
//! A pure function, so every case is a table test.

use std::net::SocketAddr;

use super::{Destinations, MeshRules, Unmeshed, Upstream};

/// Where one outbound connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A meshed peer: mutual TLS with the pod's SVID, the peer's ID verified.
    Mesh(Upstream),
    /// Outside the mesh, allowed: plaintext TCP to the original destination.
    PassThrough(SocketAddr),
    /// Not forwarded; the connection is closed.
    Refuse(Refusal),
}

/// Why a connection is refused. Only [`route`] builds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The destination is outside the mesh and the config refuses unmeshed destinations.
    Unmeshed,
    /// The client connected to the outbound listener itself (no redirect): forwarding would
    /// loop back into palisade.
    Loop,
}

/// The route for a connection whose original destination is `orig_dst`; `None` means it was
/// not redirected (it reached the listener directly).
pub fn route(destinations: &Destinations, orig_dst: Option<SocketAddr>) -> Route {
    match destinations {
        Destinations::Fixed(upstream) => Route::Mesh(upstream.clone()),
        Destinations::Transparent(rules) => match orig_dst {
            None => Route::Refuse(Refusal::Loop),
            Some(dst) => transparent(rules, dst),
        },
    }
}

fn transparent(rules: &MeshRules, dst: SocketAddr) -> Route {
    let canonical = SocketAddr::new(dst.ip().to_canonical(), dst.port());
    if let Some(upstream) = rules.explicit.iter().find(|u| u.addr == canonical) {
        return Route::Mesh(upstream.clone());
    }
    let in_cidr = rules.cidrs.iter().any(|cidr| cidr.contains(canonical.ip()));
    let on_port = rules.ports.is_empty() || rules.ports.contains(&canonical.port());
    if in_cidr && on_port {
        return Route::Mesh(Upstream {
            addr: canonical,
            expected: None,
        });
    }
    match rules.unmeshed {
        Unmeshed::PassThrough => Route::PassThrough(canonical),
        Unmeshed::Refuse => Route::Refuse(Refusal::Unmeshed),
    }
}

// === impl Refusal ===

impl Refusal {
    /// A short label for logs and metrics.
    pub fn as_label(&self) -> &'static str {
        match self {
            Refusal::Unmeshed => "unmeshed",
            Refusal::Loop => "loop",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use palisade_config::SpiffeId;

    use super::*;

    const DB: &str = "spiffe://cluster.local/ns/data/sa/db";

    fn rules(unmeshed: Unmeshed) -> Destinations {
        Destinations::Transparent(MeshRules {
            cidrs: vec![
                "10.0.0.0/16".parse().unwrap(),
                "fd00:10::/64".parse().unwrap(),
            ],
            ports: vec![80, 8080],
            explicit: vec![Upstream {
                addr: "192.0.2.5:5432".parse().unwrap(),
                expected: Some(SpiffeId::parse(DB).unwrap()),
            }],
            unmeshed,
            opaque_ports: Vec::new(),
        })
    }

    fn mesh(addr: &str, expected: Option<&str>) -> Route {
        Route::Mesh(Upstream {
            addr: addr.parse().unwrap(),
            expected: expected.map(|id| SpiffeId::parse(id).unwrap()),
        })
    }

    #[test]
    fn routes_by_original_destination() {
        let pass = |addr: &str| Route::PassThrough(addr.parse().unwrap());
        let table: Vec<(Unmeshed, Option<&str>, Route)> = vec![
            (
                Unmeshed::PassThrough,
                Some("10.0.3.4:8080"),
                mesh("10.0.3.4:8080", None),
            ),
            (
                Unmeshed::PassThrough,
                Some("[fd00:10::2]:80"),
                mesh("[fd00:10::2]:80", None),
            ),
            (
                Unmeshed::PassThrough,
                Some("[::ffff:10.0.3.4]:80"),
                mesh("10.0.3.4:80", None),
            ),
            (
                Unmeshed::PassThrough,
                Some("192.0.2.5:5432"),
                mesh("192.0.2.5:5432", Some(DB)),
            ),
            (
                Unmeshed::Refuse,
                Some("192.0.2.5:5432"),
                mesh("192.0.2.5:5432", Some(DB)),
            ),
            // In the CIDR, on a port outside the mesh.
            (
                Unmeshed::PassThrough,
                Some("10.0.3.4:9090"),
                pass("10.0.3.4:9090"),
            ),
            (
                Unmeshed::Refuse,
                Some("10.0.3.4:9090"),
                Route::Refuse(Refusal::Unmeshed),
            ),
            // Outside every CIDR.
            (
                Unmeshed::PassThrough,
                Some("198.51.100.1:80"),
                pass("198.51.100.1:80"),
            ),
            (
                Unmeshed::Refuse,
                Some("198.51.100.1:80"),
                Route::Refuse(Refusal::Unmeshed),
            ),
            (
                Unmeshed::PassThrough,
                Some("192.0.2.5:5433"),
                pass("192.0.2.5:5433"),
            ),
            // Not redirected: someone connected to the listener itself.
            (Unmeshed::PassThrough, None, Route::Refuse(Refusal::Loop)),
            (Unmeshed::Refuse, None, Route::Refuse(Refusal::Loop)),
        ];
        for (unmeshed, dst, expected) in table {
            let dst = dst.map(|d| d.parse().unwrap());
            assert_eq!(
                route(&rules(unmeshed), dst),
                expected,
                "{dst:?} {unmeshed:?}"
            );
        }
    }

    #[test]
    fn every_port_when_none_listed() {
        let destinations = Destinations::Transparent(MeshRules {
            cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            unmeshed: Unmeshed::Refuse,
            ..MeshRules::default()
        });
        let dst = "10.0.9.9:31337".parse().unwrap();
        assert_eq!(
            route(&destinations, Some(dst)),
            mesh("10.0.9.9:31337", None)
        );
    }

    #[test]
    fn fixed_ignores_the_original_destination() {
        let upstream = Upstream {
            addr: "127.0.0.1:15006".parse().unwrap(),
            expected: Some(SpiffeId::parse(DB).unwrap()),
        };
        let destinations = Destinations::Fixed(upstream.clone());
        assert_eq!(route(&destinations, None), Route::Mesh(upstream.clone()));
        let dst = "198.51.100.1:80".parse().unwrap();
        assert_eq!(route(&destinations, Some(dst)), Route::Mesh(upstream));
    }
}
