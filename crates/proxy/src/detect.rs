//! Protocol detection: decides from a connection's first bytes whether it carries HTTP/1,
//! HTTP/2 (prior knowledge, gRPC included), TLS, or something else (opaque TCP).
//!
//! Detection never waits to be sure: it decides as soon as the bytes rule every protocol but
//! one out, reads at most [`MAX_DETECT_BYTES`], and gives up (opaque) at its deadline. What
//! to do when the client says nothing at all is the caller's business (see `serve.rs`).

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    time::Instant,
};

use crate::metrics::Protocol;

/// The most bytes detection reads before deciding a connection is opaque.
pub const MAX_DETECT_BYTES: usize = 8 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest method Ferry will recognise as HTTP/1 (`PROPPATCH`, `UNSUBSCRIBE`, ... fit).
const MAX_METHOD_LEN: usize = 24;

/// What detection found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// The protocol, decided on the bytes in the buffer.
    Protocol(Protocol),
    /// The client closed the connection before sending anything.
    Closed,
}

/// Reads from `io` into `buf` until the protocol is known, `buf` holds [`MAX_DETECT_BYTES`],
/// or `deadline` passes (then opaque, as a slow client is not worth stalling).
pub async fn detect<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    deadline: Instant,
) -> std::io::Result<Detected> {
    buf.reserve(MAX_DETECT_BYTES.saturating_sub(buf.len()));
    loop {
        if let Some(protocol) = classify(buf) {
            return Ok(Detected::Protocol(protocol));
        }
        if buf.len() >= MAX_DETECT_BYTES {
            return Ok(Detected::Protocol(Protocol::Opaque));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_elapsed) => return Ok(Detected::Protocol(Protocol::Opaque)),
            Ok(Ok(0)) if buf.is_empty() => return Ok(Detected::Closed),
            // The client half-closed mid-way: whatever it sent is forwarded as bytes.
            Ok(Ok(0)) => return Ok(Detected::Protocol(Protocol::Opaque)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Decides on the bytes so far, or `None` when more are needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    let first = *buf.first()?;
    if first == b'P' && buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return None;
    }
    if buf.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    // A TLS record of type handshake (22), protocol major version 3.
    if first == 0x16 {
        return match buf.get(1) {
            None => None,
            Some(3) => Some(Protocol::Tls),
            Some(_) => Some(Protocol::Opaque),
        };
    }
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
            Some(if is_http1_request_line(line) {
                Protocol::Http1
            } else {
                Protocol::Opaque
            })
        }
        // A CR at the very end may be the first half of the line's CRLF.
        None if plausible_request_line_prefix(buf.strip_suffix(b"\r").unwrap_or(buf)) => None,
        None => Some(Protocol::Opaque),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `METHOD SP TARGET SP HTTP/1.x`, per RFC 9112 §3.
fn is_http1_request_line(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.len() <= MAX_METHOD_LEN
        && method.iter().all(|&b| is_tchar(b))
        && !target.is_empty()
        && target.iter().all(|&b| b > b' ' && b != 0x7f)
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// Whether `buf`, which holds no line end yet, could still begin an HTTP/1 request line.
fn plausible_request_line_prefix(buf: &[u8]) -> bool {
    match buf.iter().position(|&b| b == b' ') {
        None => buf.len() <= MAX_METHOD_LEN && buf.iter().all(|&b| is_tchar(b)),
        Some(sp) => {
            sp > 0 && sp <= MAX_METHOD_LEN && buf[..sp].iter().all(|&b| is_tchar(b)) && {
                // The target and a version prefix: no control bytes, at most one more space.
                let rest = &buf[sp + 1..];
                rest.iter().all(|&b| b >= b' ' && b != 0x7f)
                    && rest.iter().filter(|&&b| b == b' ').count() <= 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn classifies_complete_prefaces() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(b"POST /a?b=c HTTP/1.0\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"GET / HTTP/1.1\n"), Some(Protocol::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Some(Protocol::Tls)
        );
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Some(Protocol::Opaque)
        );
        assert_eq!(classify(b"GET / HTTP/2.0\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET  / HTTP/1.1\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Protocol::Opaque));
        assert_eq!(
            classify(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
            Some(Protocol::Opaque)
        );
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Some(Protocol::Opaque));
    }

    #[test]
    fn waits_only_while_a_prefix_is_plausible() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"G"), None);
        assert_eq!(classify(b"GET /index"), None);
        assert_eq!(classify(b"GET /index HTTP/1."), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(&[0x16]), None);
        // Found writing the `detect` fuzz target (a decision must hold for longer inputs): a
        // segment ending between the request line's CR and LF was taken for opaque bytes.
        assert_eq!(classify(b"GET / HTTP/1.1\r"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"GET /\r"), None);
        assert_eq!(classify(b"GET /\rx"), Some(Protocol::Opaque));
        // Rules HTTP out at the first impossible byte rather than waiting for a line end.
        assert_eq!(classify(b"\x00"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GE\x01"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET /a b c"), Some(Protocol::Opaque));
        assert_eq!(
            classify(b"AVERYLONGMETHODNAMETHATISNOTHTTP"),
            Some(Protocol::Opaque)
        );
    }

    #[tokio::test]
    async fn detect_reads_across_segments_and_stops_at_the_deadline() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        client.write_all(b"GET /slow").await.unwrap();
        let mut buf = BytesMut::new();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b" HTTP/1.1\r\n\r\n").await.unwrap();
            client
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            detect(&mut server, &mut buf, deadline).await.unwrap(),
            Detected::Protocol(Protocol::Http1)
        );
        assert!(buf.starts_with(b"GET /slow HTTP/1.1"));
        let _client = writer.await.unwrap();

        let (_silent, mut server) = tokio::io::duplex(1024);
        let mut buf = BytesMut::new();
        let deadline = Instant::now() + Duration::from_millis(30);
        assert_eq!(
            detect(&mut server, &mut buf, deadline).await.unwrap(),
            Detected::Protocol(Protocol::Opaque)
        );
    }

    #[tokio::test]
    async fn detect_reports_a_close_before_any_byte() {
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let mut buf = BytesMut::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            detect(&mut server, &mut buf, deadline).await.unwrap(),
            Detected::Closed
        );
    }
}
