//! The original destination of a connection that iptables redirected to the proxy.

use std::net::SocketAddr;

use tokio::net::TcpStream;

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
