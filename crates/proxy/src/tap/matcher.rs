//! An `ObserveRequest.Match` compiled once, when a tap starts, into a tree that a request
//! is tested against without allocating: addresses and ports of both sides, destination
//! labels, and the request's scheme, method, authority and path.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use linkerd2_proxy_api::tap::observe_request::r#match::{self as pb, http, tcp};

/// A match that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// A `Seq`, `Not`, `Tcp`, `Http` or `StringMatch` with nothing set.
    #[error("empty {0} match")]
    Empty(&'static str),
    /// A netmask without an IP, or a mask wider than the address.
    #[error("invalid netmask: {0}")]
    Netmask(String),
    /// A port range outside 0..=65535 or with `min > max`.
    #[error("invalid port range {min}..={max}")]
    Ports {
        /// The lower bound.
        min: u32,
        /// The upper bound.
        max: u32,
    },
    /// An HTTP method or scheme that cannot be read.
    #[error("invalid {0} in the http match")]
    Http(&'static str),
}

/// What a request is matched on.
pub struct Input<'a> {
    /// The client's address.
    pub source: SocketAddr,
    /// The server's address (the endpoint, for outbound; the application, for inbound).
    pub destination: SocketAddr,
    /// The destination's labels.
    pub destination_labels: &'a BTreeMap<String, String>,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The method.
    pub method: &'a ::http::Method,
    /// The authority.
    pub authority: &'a str,
    /// The path, with its query.
    pub path: &'a str,
}

/// A compiled match.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// Every request (an `ObserveRequest` without a match).
    Always,
    /// All of these.
    All(Vec<Matcher>),
    /// Any of these.
    Any(Vec<Matcher>),
    /// Not this.
    Not(Box<Matcher>),
    /// On the client's address.
    Source(Tcp),
    /// On the server's address.
    Destination(Tcp),
    /// A destination label with this exact value.
    DestinationLabel(String, String),
    /// A route label: the proxy knows no routes yet, so never matches.
    RouteLabel,
    /// The request's scheme (`http`, `https`).
    Scheme(String),
    /// The request's method.
    Method(::http::Method),
    /// The request's authority.
    Authority(Text),
    /// The request's path.
    Path(Text),
}

/// A TCP address match.
#[derive(Clone, Debug)]
pub enum Tcp {
    /// Inside `ip/mask`.
    Net {
        /// The network address.
        ip: IpAddr,
        /// Prefix length.
        mask: u8,
    },
    /// Port in `min..=max`.
    Ports(u16, u16),
}

/// A string match.
#[derive(Clone, Debug)]
pub enum Text {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
}

impl Matcher {
    /// Compiles `m`; `None` (no match given) matches every request.
    pub fn compile(
        m: Option<&linkerd2_proxy_api::tap::observe_request::Match>,
    ) -> Result<Self, MatchError> {
        let Some(m) = m else { return Ok(Self::Always) };
        let Some(inner) = &m.r#match else {
            return Err(MatchError::Empty("match"));
        };
        Ok(match inner {
            pb::Match::All(seq) => Self::All(compile_seq(seq)?),
            pb::Match::Any(seq) => Self::Any(compile_seq(seq)?),
            pb::Match::Not(m) => Self::Not(Box::new(Self::compile(Some(m))?)),
            pb::Match::Source(t) => Self::Source(compile_tcp(t)?),
            pb::Match::Destination(t) => Self::Destination(compile_tcp(t)?),
            pb::Match::DestinationLabel(l) => {
                Self::DestinationLabel(l.key.clone(), l.value.clone())
            }
            pb::Match::RouteLabel(_) => Self::RouteLabel,
            pb::Match::Http(h) => compile_http(h)?,
        })
    }

    /// Whether `input` matches.
    pub fn matches(&self, input: &Input<'_>) -> bool {
        match self {
            Self::Always => true,
            Self::All(ms) => ms.iter().all(|m| m.matches(input)),
            Self::Any(ms) => ms.iter().any(|m| m.matches(input)),
            Self::Not(m) => !m.matches(input),
            Self::Source(t) => t.matches(input.source),
            Self::Destination(t) => t.matches(input.destination),
            Self::DestinationLabel(k, v) => input.destination_labels.get(k) == Some(v),
            Self::RouteLabel => false,
            Self::Scheme(s) => s.eq_ignore_ascii_case(input.scheme),
            Self::Method(m) => m == input.method,
            Self::Authority(t) => t.matches(input.authority),
            Self::Path(t) => t.matches(input.path),
        }
    }
}

impl Tcp {
    fn matches(&self, addr: SocketAddr) -> bool {
        match *self {
            Self::Ports(min, max) => (min..=max).contains(&addr.port()),
            Self::Net { ip, mask } => in_net(addr.ip().to_canonical(), ip, mask),
        }
    }
}

impl Text {
    fn matches(&self, s: &str) -> bool {
        match self {
            Self::Exact(e) => e == s,
            Self::Prefix(p) => s.starts_with(p.as_str()),
        }
    }
}

fn in_net(addr: IpAddr, net: IpAddr, mask: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = u32::MAX.checked_shl(32 - u32::from(mask)).unwrap_or(0);
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = u128::MAX.checked_shl(128 - u32::from(mask)).unwrap_or(0);
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

fn compile_seq(seq: &pb::Seq) -> Result<Vec<Matcher>, MatchError> {
    seq.matches
        .iter()
        .map(|m| Matcher::compile(Some(m)))
        .collect()
}

fn compile_tcp(t: &pb::Tcp) -> Result<Tcp, MatchError> {
    match &t.r#match {
        None => Err(MatchError::Empty("tcp")),
        Some(tcp::Match::Ports(r)) => {
            let (min, max) = (r.min, if r.max == 0 { r.min } else { r.max });
            match (u16::try_from(min), u16::try_from(max)) {
                (Ok(lo), Ok(hi)) if lo <= hi => Ok(Tcp::Ports(lo, hi)),
                _ => Err(MatchError::Ports {
                    min: r.min,
                    max: r.max,
                }),
            }
        }
        Some(tcp::Match::Netmask(n)) => {
            let ip: IpAddr =
                n.ip.ok_or_else(|| MatchError::Netmask("no ip".into()))?
                    .try_into()
                    .map_err(|e| MatchError::Netmask(format!("{e}")))?;
            let width = if ip.is_ipv4() { 32 } else { 128 };
            let mask = if n.mask == 0 { width } else { n.mask };
            if mask > width {
                return Err(MatchError::Netmask(format!("/{mask} is wider than {ip}")));
            }
            Ok(Tcp::Net {
                ip,
                mask: mask as u8,
            })
        }
    }
}

fn compile_http(h: &pb::Http) -> Result<Matcher, MatchError> {
    let text = |s: &http::StringMatch| match &s.r#match {
        None => Err(MatchError::Empty("string")),
        Some(http::string_match::Match::Exact(e)) => Ok(Text::Exact(e.clone())),
        Some(http::string_match::Match::Prefix(p)) => Ok(Text::Prefix(p.clone())),
    };
    match &h.r#match {
        None => Err(MatchError::Empty("http")),
        Some(http::Match::Scheme(s)) => {
            let scheme =
                ::http::uri::Scheme::try_from(s.clone()).map_err(|_| MatchError::Http("scheme"))?;
            Ok(Matcher::Scheme(scheme.as_str().to_string()))
        }
        Some(http::Match::Method(m)) => {
            let method =
                ::http::Method::try_from(m.clone()).map_err(|_| MatchError::Http("method"))?;
            Ok(Matcher::Method(method))
        }
        // The proxy lowercases request authorities; so does the match.
        Some(http::Match::Authority(s)) => Ok(Matcher::Authority(match text(s)? {
            Text::Exact(e) => Text::Exact(e.to_ascii_lowercase()),
            Text::Prefix(p) => Text::Prefix(p.to_ascii_lowercase()),
        })),
        Some(http::Match::Path(s)) => Ok(Matcher::Path(text(s)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::tap::observe_request::Match;

    fn input<'a>(labels: &'a BTreeMap<String, String>, method: &'a ::http::Method) -> Input<'a> {
        Input {
            source: "10.0.0.5:40000".parse().unwrap(),
            destination: "10.1.2.3:8080".parse().unwrap(),
            destination_labels: labels,
            scheme: "http",
            method,
            authority: "emoji.emojivoto:8080",
            path: "/api/vote?choice=:bacon:",
        }
    }

    fn m(inner: pb::Match) -> Match {
        Match {
            r#match: Some(inner),
        }
    }

    fn net(ip: [u8; 4], mask: u32) -> Match {
        m(pb::Match::Destination(pb::Tcp {
            r#match: Some(tcp::Match::Netmask(tcp::Netmask {
                ip: Some(IpAddr::from(ip).into()),
                mask,
            })),
        }))
    }

    fn path(prefix: &str) -> Match {
        m(pb::Match::Http(pb::Http {
            r#match: Some(http::Match::Path(http::StringMatch {
                r#match: Some(http::string_match::Match::Prefix(prefix.into())),
            })),
        }))
    }

    #[test]
    fn matches_nets_ports_labels_and_paths() {
        let labels = BTreeMap::from([("deployment".to_string(), "emoji".to_string())]);
        let get = ::http::Method::GET;
        let i = input(&labels, &get);
        let yes = |mm: Match| Matcher::compile(Some(&mm)).unwrap().matches(&i);
        assert!(Matcher::compile(None).unwrap().matches(&i));
        assert!(yes(net([10, 1, 0, 0], 16)));
        assert!(!yes(net([10, 2, 0, 0], 16)));
        assert!(yes(net([10, 1, 2, 3], 0)), "mask 0 means the whole address");
        assert!(yes(path("/api/")));
        assert!(!yes(path("/web")));
        let ports = m(pb::Match::Source(pb::Tcp {
            r#match: Some(tcp::Match::Ports(tcp::PortRange {
                min: 40000,
                max: 40010,
            })),
        }));
        assert!(yes(ports.clone()));
        let label = |v: &str| {
            m(pb::Match::DestinationLabel(pb::Label {
                key: "deployment".into(),
                value: v.into(),
            }))
        };
        assert!(yes(label("emoji")));
        assert!(!yes(label("voting")));
        let all = m(pb::Match::All(pb::Seq {
            matches: vec![label("emoji"), path("/api"), ports],
        }));
        assert!(yes(all));
        let any = m(pb::Match::Any(pb::Seq {
            matches: vec![label("voting"), path("/web")],
        }));
        assert!(!yes(any.clone()));
        assert!(yes(m(pb::Match::Not(Box::new(any)))));
        let post = m(pb::Match::Http(pb::Http {
            r#match: Some(http::Match::Method(::http::Method::POST.into())),
        }));
        assert!(!yes(post));
    }

    #[test]
    fn rejects_malformed_matches() {
        assert!(Matcher::compile(Some(&Match { r#match: None })).is_err());
        let bad = m(pb::Match::Source(pb::Tcp {
            r#match: Some(tcp::Match::Ports(tcp::PortRange { min: 9, max: 3 })),
        }));
        assert!(Matcher::compile(Some(&bad)).is_err());
        assert!(Matcher::compile(Some(&net([10, 0, 0, 0], 33))).is_err());
    }
}
