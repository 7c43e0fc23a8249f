//! The emoji-voting demo app that `ferry demo` runs in a local mesh: a `web` front end
//! (HTTP/1) calling `emoji` and `voting` (gRPC), and a `vote-bot`. Voting still looks emojis
//! up through emoji's old HTTP/1 endpoint, retired for the bottom half of the list, so those
//! votes fail — the broken hop that Ferry's `stat` and `tap` find without touching the app.
//!
//! # Layout
//! - [`emojis`]: the list, and which half the old endpoint still serves.
//! - [`proto`]: hand-written protobuf messages (no `protoc`) and unary gRPC plumbing.
//! - [`serve`]: the HTTP/1 + h2c server loop every workload uses.
//! - [`emoji`], [`voting`], [`web`]: the three services, each a [`serve::Handler`].
//! - [`bot`]: the traffic generator.
//!
//! Each workload runs as its own process: `ferry-emojivoto web|emoji|voting|vote-bot`.

use std::net::SocketAddr;

pub mod bot;
pub mod emoji;
pub mod emojis;
pub mod proto;
pub mod serve;
pub mod voting;
pub mod web;

/// How a workload reaches a peer: the address it connects to (in the mesh, its proxy's
/// upstream listener, or on a cluster the service's name, which the sidecar intercepts) and
/// the authority it names the peer by (`emoji-svc.emojivoto:8080`), which is what proxies
/// record and taps show.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Where to connect: `HOST:PORT`, the host an IP address (`[v6]` in brackets) or a DNS
    /// name resolved on each connect.
    pub addr: String,
    /// The `Host` / `:authority` of requests.
    pub authority: String,
}

impl Peer {
    /// A peer named by its socket address.
    pub fn direct(addr: SocketAddr) -> Self {
        Self {
            addr: addr.to_string(),
            authority: addr.to_string(),
        }
    }

    /// A peer at `addr` (as [`parse_addr`] accepts it) named `authority`, or by its address
    /// when `None`.
    pub fn new(addr: String, authority: Option<String>) -> Self {
        let authority = authority.unwrap_or_else(|| addr.clone());
        Self { addr, authority }
    }
}

/// Checks a peer address: `HOST:PORT` with an IP address (`[v6]` in brackets) or a DNS name
/// as host and a port from 1 to 65535. Returns it unchanged.
pub fn parse_addr(s: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("{s:?} is not HOST:PORT ({why})"));
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return bad("no port");
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return bad("the port is not a number from 1 to 65535"),
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty() || host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return bad("the host is neither an IP address nor a DNS name");
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn peer_addresses_are_socket_addresses_or_dns_names_with_a_port() {
        for ok in [
            "127.0.0.1:8080",
            "[::1]:80",
            "emoji-svc.emojivoto:8080",
            "emoji-svc.emojivoto.svc.cluster.local.:8080",
            "localhost:1",
        ] {
            assert_eq!(parse_addr(ok).as_deref(), Ok(ok));
        }
        for (bad, why) in [
            ("emoji-svc", "no port"),
            ("emoji-svc:http", "the port is not a number"),
            ("emoji-svc:0", "the port is not a number"),
            ("emoji-svc:65536", "the port is not a number"),
            (":8080", "neither an IP address nor a DNS name"),
            ("emoji_svc:8080", "neither an IP address nor a DNS name"),
            ("http://emoji:8080", "neither an IP address nor a DNS name"),
            ("::1:80", "neither an IP address nor a DNS name"),
        ] {
            let err = parse_addr(bad).unwrap_err();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }
}
