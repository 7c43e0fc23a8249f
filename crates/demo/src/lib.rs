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
/// upstream listener) and the authority it names the peer by (`emoji-svc.emojivoto:8080`),
/// which is what proxies record and taps show.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` / `:authority` of requests.
    pub authority: String,
}

impl Peer {
    /// A peer named by its address.
    pub fn direct(addr: SocketAddr) -> Self {
        Self {
            addr,
            authority: addr.to_string(),
        }
    }

    /// A peer at `addr` named `authority`, or by its address when `None`.
    pub fn new(addr: SocketAddr, authority: Option<String>) -> Self {
        let authority = authority.unwrap_or_else(|| addr.to_string());
        Self { addr, authority }
    }
}
