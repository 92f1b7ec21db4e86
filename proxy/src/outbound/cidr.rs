//! Address ranges (`10.0.0.0/8`, `fd00::/8`) for the outbound mesh rules and `palisade init`'s
//! excluded destinations.
//!
//! Takes the text a user writes and passes on a [`Cidr`] that can say whether an address is
//! inside it. Host bits must be zero (`10.0.0.1/8` is refused: it usually hides a typo).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address with its host bits zero and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A CIDR could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/`, or an address that does not parse.
    #[error("{0:?} is not an address range like 10.0.0.0/8 or fd00::/8")]
    Syntax(String),
    /// The prefix length is larger than the address.
    #[error("{text:?}: prefix length must be at most {max}")]
    Prefix {
        /// What was written.
        text: String,
        /// 32 or 128.
        max: u8,
    },
    /// Bits past the prefix are set.
    #[error("{text:?} has host bits set; did you mean {network}/{prefix}?")]
    HostBits {
        /// What was written.
        text: String,
        /// The network with the host bits cleared.
        network: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
}

// === impl Cidr ===

impl Cidr {
    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// true for an IPv4 range.
    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    /// true when `addr` is inside this range. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                mask(u128::from(u32::from(addr)), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                mask(u128::from(addr), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `value` (an address of `bits` bits) with everything past `prefix` cleared.
fn mask(value: u128, bits: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let host = u32::from(bits - prefix);
    let ones = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    value & (ones >> host << host)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let syntax = || CidrError::Syntax(text.to_owned());
        let (addr, prefix) = text.split_once('/').ok_or_else(syntax)?;
        let network: IpAddr = addr.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix.parse() {
            Ok(prefix) if prefix <= max => prefix,
            _ => {
                return Err(CidrError::Prefix {
                    text: text.to_owned(),
                    max,
                });
            }
        };
        let masked = match network {
            IpAddr::V4(v4) => IpAddr::from(Ipv4Addr::from(
                u32::try_from(mask(u128::from(u32::from(v4)), 32, prefix)).unwrap_or(0),
            )),
            IpAddr::V6(v6) => IpAddr::from(Ipv6Addr::from(mask(u128::from(v6), 128, prefix))),
        };
        if masked != network {
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                network: masked,
                prefix,
            });
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_and_matches() {
        let table: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.0.0.1", true),
            ("10.0.0.0/8", "fd00::1", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("192.0.2.7/32", "192.0.2.7", true),
            ("192.0.2.7/32", "192.0.2.8", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
            ("2001:db8::1/128", "2001:db8::1", true),
            ("2001:db8::/33", "2001:db8:8000::1", false),
        ];
        for (cidr, addr, inside) in table {
            let parsed: Cidr = cidr.parse().unwrap();
            assert_eq!(parsed.to_string(), *cidr);
            assert_eq!(
                parsed.contains(addr.parse().unwrap()),
                *inside,
                "{cidr} contains {addr}"
            );
        }
    }

    #[test]
    fn rejects_bad_ranges() {
        let table: &[(&str, &str)] = &[
            ("10.0.0.0", "is not an address range"),
            ("10.0.0.0/", "is not an address range"),
            ("10.0.0.0/+8", "is not an address range"),
            ("10.0.0/8", "is not an address range"),
            ("10.0.0.0/33", "prefix length must be at most 32"),
            ("fd00::/129", "prefix length must be at most 128"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
            ("fd00::1/64", "did you mean fd00::/64?"),
        ];
        for (text, message) in table {
            let error = text.parse::<Cidr>().unwrap_err().to_string();
            assert!(error.contains(message), "{text}: {error}");
        }
    }
}
