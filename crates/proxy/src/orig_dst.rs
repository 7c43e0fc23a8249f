//! The original destination of a connection that iptables redirected to the proxy, and
//! the stand-in in-process tests use where no iptables rule can redirect.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Where a side's connections learn their original destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OrigDst {
    /// `SO_ORIGINAL_DST`, as the iptables redirect sets it.
    #[default]
    Socket,
    /// Every accepted connection counts as redirected to this address. No flag sets it:
    /// it lets in-process tests (no root, no iptables) exercise the redirected path.
    Fixed(SocketAddr),
}

impl OrigDst {
    /// The original destination of `sock`, when it was redirected.
    pub fn of(&self, sock: &TcpStream) -> Option<SocketAddr> {
        match self {
            Self::Socket => original_dst(sock),
            Self::Fixed(addr) => Some(*addr),
        }
    }
}

/// `SO_ORIGINAL_DST` of `sock`, when it differs from the address the proxy accepted on
/// (i.e. when the connection was redirected). `None` without conntrack or redirection.
pub fn original_dst(sock: &TcpStream) -> Option<SocketAddr> {
    let local = sock.local_addr().ok()?;
    let sock = socket2::SockRef::from(sock);
    let orig = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    let orig = orig.ok()?.as_socket()?;
    (orig != local).then_some(orig)
}
