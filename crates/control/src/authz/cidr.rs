//! Client networks: `10.0.0.0/8`, `fd00::/8`, or an address alone (a host network).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use linkerd2_proxy_api::net;

/// An IP network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network's address (host bits cleared).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// Why a network could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network: expected an address, or address/prefix such as 10.0.0.0/8")]
pub struct CidrError(pub String);

impl Cidr {
    /// Every IPv4 address.
    pub const ALL_V4: Cidr = Cidr {
        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        prefix: 0,
    };
    /// Every IPv6 address.
    pub const ALL_V6: Cidr = Cidr {
        addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        prefix: 0,
    };

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Whether `other` lies inside this network (same family).
    pub fn contains(&self, other: &Cidr) -> bool {
        let ((a, width), (b, other_width)) = (Self::bits(self.addr), Self::bits(other.addr));
        if width != other_width || other.prefix < self.prefix {
            return false;
        }
        let mask = mask(self.prefix);
        a & mask == b & mask
    }

    /// The network as Linkerd's message.
    pub fn to_proto(self) -> net::IpNetwork {
        net::IpNetwork {
            ip: Some(self.addr.into()),
            prefix_len: u32::from(self.prefix),
        }
    }
}

fn mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(err)?,
            None => width,
        };
        // Host bits are cleared, as Kubernetes and Linkerd read `10.1.2.3/8`.
        let (bits, _) = Self::bits(addr);
        let bits = bits & mask(prefix);
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from((bits >> 96) as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(bits)),
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses a comma-separated list (`--cluster-networks`).
pub fn parse_list(s: &str) -> Result<Vec<Cidr>, CidrError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_addresses_and_refuses_the_rest() {
        let n: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert!(n.contains(&"10.9.0.0/16".parse().unwrap()));
        assert!(!n.contains(&"11.0.0.0/16".parse().unwrap()));
        assert!(!n.contains(&"0.0.0.0/0".parse().unwrap()));
        assert!(!Cidr::ALL_V6.contains(&n));
        for bad in ["10.0.0.0/33", "fd00::/129", "ten", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(parse_list("10.0.0.0/8, fd00::/8").unwrap().len(), 2);
    }
}
