//! One accepted connection, start to end: find where its bytes would go, detect the
//! protocol, then serve it as HTTP or forward it as opaque TCP.
//!
//! Server-speaks-first protocols (MySQL, SMTP, ...) must not wait on detection. When a
//! client has sent nothing within [`SPEAK_FIRST_WINDOW`] and the connection's target is
//! known, the proxy connects to the target and forwards whichever side speaks first: bytes
//! from the server mean opaque TCP at once. The added delay for such protocols is at most
//! the window plus one connect.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::{io::AsyncReadExt, net::TcpStream, time::Instant};
use tracing::Instrument;

use crate::{
    authz::conn::ConnAuthz,
    config::Authority,
    detect::{detect, Detected},
    forward::{Dest, HttpService},
    inbound_tls::{self, Checked},
    io::{Counted, Rewind},
    listener::{ListenerKind, Side},
    metrics::{Peer, Protocol, TcpLabels, Tls},
    state::ConnGuard,
    tap::{ConnMeta, PeerTls},
    upstream::Upstream,
};

/// How long a silent client may take before the proxy connects ahead to hear whether the
/// server speaks first. HTTP and TLS clients send their first bytes immediately.
pub const SPEAK_FIRST_WINDOW: Duration = Duration::from_millis(10);

/// Serves one accepted connection until it closes.
pub async fn serve(side: Arc<Side>, kind: Arc<ListenerKind>, sock: TcpStream, peer: SocketAddr) {
    let Ok(local) = sock.local_addr() else { return };
    let orig_dst = match *kind {
        ListenerKind::Upstream { .. } => None,
        _ => side.orig_dst.of(&sock),
    };
    let target: Option<Upstream> = match (&*kind, orig_dst) {
        // Redirected inbound traffic goes where the client sent it: the original destination
        // (the pod IP), so a port the app binds to loopback stays private exactly as without
        // the mesh. The opt-in loopback mode sends it to that port on the app's host instead.
        (ListenerKind::Inbound { forward }, Some(orig)) => {
            let ip = match forward {
                _ if !side.inbound_forward_loopback => orig.ip(),
                Upstream::Addr(b) => b.target_addr().ip(),
                Upstream::Balanced(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            };
            Some(
                side.upstreams
                    .get(&Authority::from(SocketAddr::new(ip, orig.port()))),
            )
        }
        (ListenerKind::Inbound { forward }, None) => Some(forward.clone()),
        (ListenerKind::Upstream { upstream, .. }, _) => Some(upstream.clone()),
        // Redirected outbound traffic is looked up by its original destination; a
        // connection to the proxy's own listener is not (HTTP answers it `loop-detected`).
        (ListenerKind::Outbound, Some(orig)) if !side.is_own_listener(orig) => {
            Some(side.upstreams.by_orig_dst(orig).await)
        }
        (ListenerKind::Outbound, orig) => orig.map(|o| side.upstreams.get(&Authority::from(o))),
    };
    let target_label: Arc<str> = match &target {
        Some(u) => u.label(),
        None => local.to_string().into(),
    };
    let metrics = side.registry.tcp(TcpLabels {
        direction: side.direction,
        peer: Peer::Src,
        target_addr: target_label.clone(),
        tls: side.tls.clone(),
    });
    let io = Counted::new(sock, metrics).with_write_limit(
        side.timeouts
            .client_write
            .map(|t| crate::io::WriteLimit::new(t, side.registry.clone(), side.direction)),
    );
    let guard = side.connections.register(
        kind.name(),
        local,
        peer,
        target.as_ref().map(Upstream::label),
    );
    let span = tracing::debug_span!("conn", listener = kind.name(), %peer, target = %target_label);
    let meta = ConnMeta::new(peer, local);
    dispatch(side, kind, io, target, orig_dst, &guard, meta)
        .instrument(span)
        .await;
    drop(guard);
}

/// Detects the protocol of an accepted, counted connection and serves it.
async fn dispatch(
    side: Arc<Side>,
    kind: Arc<ListenerKind>,
    mut io: Counted<TcpStream>,
    target: Option<Upstream>,
    orig_dst: Option<SocketAddr>,
    guard: &ConnGuard,
    meta: ConnMeta,
) {
    let opaque_port = target
        .as_ref()
        .is_some_and(|u| side.opaque_ports.contains(&u.port()));
    // With identity on, meshed peers send TLS even to opaque ports: look at those bytes too.
    let inbound_identity = match &*kind {
        ListenerKind::Inbound { .. } => side.identity.clone(),
        _ => None,
    };
    let mut buf = BytesMut::new();
    let (detected, early) = if opaque_port && inbound_identity.is_none() {
        (Detected::Protocol(Protocol::Opaque), None)
    } else {
        // Never connect ahead to the application for a client its policy does not admit:
        // silent clients are plaintext, so the decision needs only the address.
        let admitted = || match (&*kind, &side.inbound_authz, &target) {
            (ListenerKind::Inbound { .. }, Some(policies), Some(t)) => policies
                .port(t.port())
                .current()
                .admit(crate::authz::Client {
                    ip: meta.peer.ip(),
                    identity: None,
                })
                .is_ok(),
            _ => true,
        };
        match detect_or_race(&mut io, &mut buf, target.as_ref(), &side, &admitted).await {
            Ok(d) => d,
            Err(error) => {
                tracing::debug!(%error, "connection failed during detection");
                return;
            }
        }
    };
    let Detected::Protocol(mut protocol) = detected else {
        return;
    };
    if opaque_port && protocol != Protocol::Tls {
        protocol = Protocol::Opaque;
    }
    side.registry.detected(side.direction, protocol);
    guard.set_protocol(protocol);
    let io = match inbound_identity {
        None => io,
        Some(identity) => {
            let label = target.as_ref().map_or_else(|| "".into(), Upstream::label);
            match inbound_tls::check(&identity, &side, protocol, io, &mut buf, label).await {
                Checked::Plain(io) => io,
                Checked::Done => return,
                Checked::Refuse(io) => {
                    let io = Rewind::new(buf.freeze(), io);
                    return inbound_tls::refuse(protocol, io, &side).await;
                }
                Checked::Terminated(tls, side) => {
                    let conn = Terminated {
                        side,
                        kind,
                        target,
                        orig_dst,
                        opaque_port,
                        meta,
                    };
                    return conn.serve(*tls, guard).await;
                }
            }
        }
    };
    let io = Rewind::new(buf.freeze(), io);
    serve_protocol(side, kind, protocol, io, target, orig_dst, early, meta).await
}

/// An inbound connection whose mTLS the proxy terminated.
struct Terminated {
    /// The inbound side, labelled with the client's identity.
    side: Arc<Side>,
    kind: Arc<ListenerKind>,
    target: Option<Upstream>,
    orig_dst: Option<SocketAddr>,
    opaque_port: bool,
    meta: ConnMeta,
}

impl Terminated {
    /// Detects the decrypted stream's protocol, as for plaintext, and serves it.
    async fn serve(self, mut io: inbound_tls::Terminated, guard: &ConnGuard) {
        let mut buf = BytesMut::new();
        let protocol = if self.opaque_port {
            Protocol::Opaque
        } else {
            let deadline = Instant::now() + self.side.timeouts.detect;
            match detect(&mut io, &mut buf, deadline).await {
                Ok(Detected::Protocol(p)) => p,
                Ok(Detected::Closed) => return,
                Err(error) => {
                    tracing::debug!(%error, "mtls connection failed during detection");
                    return;
                }
            }
        };
        guard.set_protocol(protocol);
        let client_id = match &self.side.tls {
            Tls::Client(id) => Some(id.clone()),
            _ => None,
        };
        let meta = ConnMeta {
            tls: Some(PeerTls { client_id }),
            ..self.meta
        };
        let io = Rewind::new(buf.freeze(), io);
        serve_protocol(
            self.side,
            self.kind,
            protocol,
            io,
            self.target,
            self.orig_dst,
            None,
            meta,
        )
        .await
    }
}

/// Serves a connection whose protocol is known: HTTP, or opaque bytes.
#[allow(clippy::too_many_arguments)]
async fn serve_protocol<I>(
    side: Arc<Side>,
    kind: Arc<ListenerKind>,
    protocol: Protocol,
    io: I,
    target: Option<Upstream>,
    orig_dst: Option<SocketAddr>,
    early: Option<Counted<TcpStream>>,
    meta: ConnMeta,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Redirected traffic for one of the proxy's own ports (inbound: the pod's own address, so
    // any of its listeners' ports; outbound: one of its listeners) is refused: HTTP gets
    // `loop-detected`, anything else is closed and counted.
    let inbound_loop = matches!(&*kind, ListenerKind::Inbound { .. })
        && orig_dst.is_some_and(|o| side.is_own_port(o.port()));
    let looped = inbound_loop
        || (matches!(&*kind, ListenerKind::Outbound)
            && orig_dst.is_some_and(|o| side.is_own_listener(o)));
    // Inbound authorization: once here for the connection, or per request on the HTTP path.
    let mut request_authz = None;
    let mut revocable = None;
    if let (ListenerKind::Inbound { .. }, Some(policies), Some(t), false) =
        (&*kind, &side.inbound_authz, &target, inbound_loop)
    {
        let peer = crate::authz::conn::Peer {
            ip: meta.peer.ip(),
            identity: match &side.tls {
                Tls::Client(id) => Some(id.clone()),
                _ => None,
            },
            target: t.label(),
            registry: side.registry.clone(),
            counted: Default::default(),
        };
        let http = matches!(protocol, Protocol::Http1 | Protocol::Http2);
        match crate::authz::conn::decide(policies.port(t.port()), peer, http).await {
            ConnAuthz::Refused => return,
            ConnAuthz::PerRequest(a) => request_authz = Some(a),
            ConnAuthz::Admitted(r) => revocable = r,
        }
    }
    let served = serve_authorized(
        side,
        kind,
        protocol,
        io,
        target,
        orig_dst,
        early,
        meta,
        (inbound_loop, looped),
        request_authz,
    );
    match revocable {
        None => served.await,
        // A connection a new policy no longer admits is closed (dropping its future).
        Some(r) => {
            tokio::select! {
                () = served => {}
                () = r.revoked() => {}
            }
        }
    }
}

/// Serves a connection whose protocol is known and that is authorized.
#[allow(clippy::too_many_arguments)]
async fn serve_authorized<I>(
    side: Arc<Side>,
    kind: Arc<ListenerKind>,
    protocol: Protocol,
    io: I,
    target: Option<Upstream>,
    orig_dst: Option<SocketAddr>,
    early: Option<Counted<TcpStream>>,
    meta: ConnMeta,
    (inbound_loop, looped): (bool, bool),
    request_authz: Option<Arc<crate::authz::conn::RequestAuthz>>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            let dest = match (&*kind, target) {
                (
                    ListenerKind::Upstream {
                        upstream,
                        authority,
                    },
                    _,
                ) => Dest::Fixed {
                    upstream: upstream.clone(),
                    authority: Some(authority.clone()),
                },
                (ListenerKind::Inbound { .. }, _) if inbound_loop => {
                    Dest::Loop(orig_dst.expect("a loop has an original destination"))
                }
                (ListenerKind::Inbound { .. }, Some(upstream)) => Dest::Fixed {
                    upstream,
                    authority: None,
                },
                (ListenerKind::Outbound, Some(upstream)) => match orig_dst {
                    Some(addr) => Dest::OrigDst { addr, upstream },
                    None => Dest::ByAuthority,
                },
                _ => Dest::ByAuthority,
            };
            let svc = HttpService::new(side.clone(), dest, meta).authorized(request_authz);
            crate::http::serve(protocol, io, svc, &side).await;
        }
        Protocol::Tls | Protocol::Opaque if looped => {
            tracing::debug!(orig_dst = ?orig_dst, "refusing redirected traffic for the proxy's own port");
            side.registry.error(
                side.direction,
                crate::metrics::ErrorKind::Tcp,
                ferry_api::ProxyErrorReason::LoopDetected,
            );
        }
        Protocol::Tls | Protocol::Opaque => {
            crate::tcp::forward(io, target.as_ref(), early, &side).await
        }
    }
}

/// Detects the protocol; for a silent client with a known target, races the client's
/// first bytes against the server's. Returns the upstream connection when one was opened
/// and is still of use.
async fn detect_or_race(
    io: &mut Counted<TcpStream>,
    buf: &mut BytesMut,
    target: Option<&Upstream>,
    side: &Side,
    admitted: &(dyn Fn() -> bool + Sync),
) -> std::io::Result<(Detected, Option<Counted<TcpStream>>)> {
    let deadline = Instant::now() + side.timeouts.detect;
    let Some(upstream) = target else {
        return Ok((detect(io, buf, deadline).await?, None));
    };
    // Reads (not readiness, which may be spurious) decide who spoke: a read is cancel-safe.
    match tokio::time::timeout(SPEAK_FIRST_WINDOW, io.read_buf(buf)).await {
        Ok(Ok(0)) => return Ok((Detected::Closed, None)),
        Ok(Ok(_)) => return Ok((detect(io, buf, deadline).await?, None)),
        Ok(Err(e)) => return Err(e),
        Err(_silent) if admitted() => tracing::trace!("client silent; connecting ahead"),
        Err(_silent) => return Ok((detect(io, buf, deadline).await?, None)),
    }
    let Ok((early, backend)) = upstream.connect().await else {
        // Nobody to hear from: wait for the client, and report the failure when forwarding.
        return Ok((detect(io, buf, deadline).await?, None));
    };
    if backend.connector().peer_identity().is_some() {
        // A meshed peer's proxy never speaks before our TLS client: wait for the client.
        drop(early);
        return Ok((detect(io, buf, deadline).await?, None));
    }
    let mut peek = [0u8; 1];
    tokio::select! {
        read = io.read_buf(buf) => {
            if read? == 0 {
                return Ok((Detected::Closed, None));
            }
            let detected = detect(io, buf, deadline).await?;
            // A client that turns out to speak opaque bytes keeps the connection opened for it.
            let keep = matches!(detected, Detected::Protocol(Protocol::Opaque | Protocol::Tls));
            Ok((detected, keep.then(|| backend.connector().count(early))))
        }
        peeked = early.peek(&mut peek) => {
            // Bytes, or the server closing: either way the server acted first.
            peeked?;
            tracing::debug!("server spoke first");
            Ok((Detected::Protocol(Protocol::Opaque), Some(backend.connector().count(early))))
        }
        _ = tokio::time::sleep_until(deadline) => {
            Ok((Detected::Protocol(Protocol::Opaque), Some(backend.connector().count(early))))
        }
    }
}
