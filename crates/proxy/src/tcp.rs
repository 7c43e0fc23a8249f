//! Opaque TCP forwarding: bytes both ways, half-close passed on, errors counted by reason.

use ferry_api::ProxyErrorReason;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::{io::Counted, listener::Side, metrics::ErrorKind, upstream::Upstream};

/// Forwards `client` to `target` (over `early` when a connection is already open) until
/// both directions have closed. When one side finishes sending, the other side's write half
/// is shut down, so half-closed protocols work.
pub async fn forward<C>(
    mut client: C,
    target: Option<&Upstream>,
    early: Option<Counted<TcpStream>>,
    side: &Side,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Some(target) = target else {
        side.registry
            .error(side.direction, ErrorKind::Tcp, ProxyErrorReason::NoRoute);
        tracing::debug!("opaque connection with no known destination closed");
        return;
    };
    let mut upstream = match early {
        Some(upstream) => upstream,
        None => match target.connect().await {
            Ok((stream, backend)) => backend.connector().count(stream),
            Err(err) => {
                side.registry
                    .error(side.direction, ErrorKind::Tcp, err.reason);
                tracing::debug!(error = %err, "opaque connection not forwarded");
                return;
            }
        },
    };
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::trace!(up, down, "opaque connection closed"),
        Err(error) => tracing::debug!(%error, "opaque connection ended with an error"),
    }
}
