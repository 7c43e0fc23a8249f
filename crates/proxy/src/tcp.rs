//! Opaque TCP forwarding: bytes both ways, half-close passed on, errors counted by reason.

use ferry_api::ProxyErrorReason;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::{
    errors::ProxyError,
    io::{Counted, Rewind},
    listener::Side,
    metrics::ErrorKind,
    tls::ClientStream,
    upstream::Upstream,
};

/// Forwards `client` to `target` (over `early` when a connection is already open) until
/// both directions have closed. When one side finishes sending, the other side's write half
/// is shut down, so half-closed protocols work.
pub async fn forward<C>(
    mut client: C,
    target: Option<&Upstream>,
    early: Option<Counted<TcpStream>>,
    side: &Side,
) where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let Some(target) = target else {
        side.registry
            .error(side.direction, ErrorKind::Tcp, ProxyErrorReason::NoRoute);
        tracing::debug!("opaque connection with no known destination closed");
        return;
    };
    // An early connection is only kept for plaintext targets (see `serve.rs`).
    let opened = match early {
        Some(upstream) => Ok(ClientStream::Plain(upstream)),
        None => match target.connect().await {
            Ok((stream, backend)) => {
                let connector = backend.connector();
                connector
                    .secure(connector.count(stream))
                    .await
                    .map_err(|e| ProxyError::from_connect(&e))
            }
            Err(err) => Err(err),
        },
    };
    let mut upstream = match opened {
        Ok(upstream) => upstream,
        Err(err) => {
            side.registry
                .error(side.direction, ErrorKind::Tcp, err.reason);
            tracing::debug!(error = %err, "opaque connection not forwarded");
            return;
        }
    };
    // Plaintext on both sides: the kernel moves the bytes (`splice.rs`).
    let plain_client =
        (&mut client as &mut dyn std::any::Any).downcast_mut::<Rewind<Counted<TcpStream>>>();
    let copied = match (plain_client, &mut upstream) {
        (Some(client), ClientStream::Plain(upstream)) => {
            crate::splice::bidirectional(client, upstream).await
        }
        (_, upstream) => tokio::io::copy_bidirectional(&mut client, upstream).await,
    };
    match copied {
        Ok((up, down)) => tracing::trace!(up, down, "opaque connection closed"),
        Err(error) => tracing::debug!(%error, "opaque connection ended with an error"),
    }
}
