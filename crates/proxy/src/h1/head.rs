//! Message heads for the HTTP/1.1 fast path: parse a request or response head with
//! `httparse` and write the head the next hop gets, without the hop-by-hop headers
//! (RFC 9110 §7.6.1). A request the fast path does not handle is reported as
//! [`Parsed::General`], before anything was sent, so the general path can take it whole.

use std::ops::Range;

use http::StatusCode;

use crate::http::MAX_HEADERS;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding, ending with the zero-size chunk and the trailers.
    Chunked,
    /// Everything until the sender closes (a response only).
    UntilClose,
}

/// What parsing a head found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The head is not complete yet.
    Partial,
    /// The request is not for the fast path; why, for `/state`.
    General(&'static str),
    /// The request is malformed, or (`too_large`) its head is over the limits; why.
    Refused {
        /// Over the header count or size limits (431) rather than malformed (400).
        too_large: bool,
        /// What was wrong.
        why: &'static str,
    },
    /// The head, `T`, and the rewritten head in the output buffer.
    Done(T),
}

/// A request head the fast path forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Length of the head in the input.
    pub len: usize,
    /// The body's framing: `Empty` or `Length`.
    pub framing: Framing,
    /// The client asked to close the connection after this exchange.
    pub close: bool,
    /// `HEAD`: the response has no body whatever its headers say.
    pub head_method: bool,
    /// The method is idempotent (RFC 9110 §9.2.2): the request may be sent again.
    pub idempotent: bool,
    /// The `Host` header's value, within the input.
    pub host: Range<usize>,
    /// The request names a trace context (`traceparent`, `b3`, `x-b3-*`; [`crate::trace`]).
    pub trace: bool,
}

/// A response head.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseHead {
    /// A 1xx other than 101: dropped, as hyper's client does; the real response follows.
    Informational {
        /// Length of the head in the input.
        len: usize,
    },
    /// The final response.
    Final {
        /// Length of the head in the input.
        len: usize,
        /// Its status code.
        status: u16,
        /// Its body's framing.
        framing: Framing,
        /// The upstream connection cannot carry another request after it.
        close: bool,
    },
}

/// A response head the fast path cannot forward: the upstream does not speak HTTP/1.1
/// properly. The text says what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

/// Bodies at most this large are read whole before the request is sent (so a request on
/// the fast path can always be sent again on a fresh connection); larger ones stream
/// through the general path.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Headers that describe one connection, never forwarded.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The tokens of `Connection` headers, in `headers`.
fn connection_tokens<'a>(headers: &'a [httparse::Header<'a>]) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Whether a `Connection` header names other headers (anything but `close`/`keep-alive`).
fn names_headers(headers: &[httparse::Header<'_>]) -> bool {
    connection_tokens(headers)
        .any(|t| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
}

/// Whether `name` is named by a `Connection` header, and so is hop-by-hop. Headers the
/// message needs to be understood are never dropped this way.
fn named_by_connection(name: &str, headers: &[httparse::Header<'_>]) -> bool {
    if ["host", "content-length", "content-type"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
    {
        return false;
    }
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: digits only.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// What is wrong with a head `httparse` refused.
fn refused<T>(e: httparse::Error) -> Parsed<T> {
    let why = match e {
        httparse::Error::TooManyHeaders => {
            return Parsed::Refused {
                too_large: true,
                why: "more header fields than allowed",
            }
        }
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::Status => "invalid status",
    };
    Parsed::Refused {
        too_large: false,
        why,
    }
}

/// Parses the request head at the start of `input`; when it is for the fast path, writes
/// the head to forward into `out` (cleared first).
pub fn parse_request(input: &[u8], out: &mut Vec<u8>) -> Parsed<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return refused(e),
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::General("not HTTP/1.1");
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return Parsed::General("not an origin-form request target");
    }
    let base = input.as_ptr() as usize;
    let (mut host, mut hosts) = (0..0, 0);
    let (mut length, mut lengths, mut chunked) = (None, 0, false);
    let mut trace = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            let start = h.value.as_ptr() as usize - base;
            host = start..start + h.value.len();
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match content_length(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => {
                    return Parsed::Refused {
                        too_large: false,
                        why: "invalid or conflicting content-length",
                    }
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 §6.3: a request whose last coding is not chunked cannot be framed.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Parsed::Refused {
                    too_large: false,
                    why: "transfer-encoding does not end in chunked",
                };
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            return Parsed::General("upgrade or expect");
        } else if name.eq_ignore_ascii_case("content-type")
            && h.value.starts_with(b"application/grpc")
        {
            return Parsed::General("grpc");
        } else if crate::trace::is_context_header(name) {
            trace = true;
        }
    }
    if hosts != 1 || std::str::from_utf8(&input[host.clone()]).is_err() {
        return Parsed::General("not exactly one host header");
    }
    if chunked || lengths > 1 {
        return Parsed::General("streamed or ambiguous body");
    }
    let framing = match length {
        None | Some(0) => Framing::Empty,
        Some(n) if n <= MAX_BUFFERED_BODY => Framing::Length(n),
        Some(_) => return Parsed::General("large body"),
    };
    let mut close = false;
    for token in connection_tokens(req.headers) {
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if token.eq_ignore_ascii_case(b"upgrade") {
            return Parsed::General("upgrade or expect");
        }
    }
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let named = names_headers(req.headers);
    let hop = |name: &str| is_hop_by_hop(name) || (named && named_by_connection(name, req.headers));
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("te") {
            // gRPC's `te: trailers` is the one TE value that means anything end to end.
            if h.value.eq_ignore_ascii_case(b"trailers") {
                write_header(out, "te", b"trailers");
            }
        } else if !hop(h.name) {
            write_header(out, h.name, h.value);
        }
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Done(RequestHead {
        len,
        framing,
        close,
        head_method: method == "HEAD",
        idempotent: crate::http::is_idempotent(method.as_bytes()),
        host,
        trace,
    })
}

/// Parses the response head at the start of `input` to a request (`head_method` when it
/// was `HEAD`); for a final response, writes the head the client gets into `out` (cleared
/// first), with `connection: close` when `close_client` or when the body runs to the close.
pub fn parse_response(
    input: &[u8],
    head_method: bool,
    close_client: bool,
    out: &mut Vec<u8>,
) -> Result<Parsed<ResponseHead>, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut rsp = httparse::Response::new(&mut headers);
    let len = match rsp.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse("too many headers")),
        Err(_) => return Err(BadResponse("invalid HTTP/1 response head")),
    };
    let (Some(version), Some(status)) = (rsp.version, rsp.code) else {
        return Err(BadResponse("invalid HTTP/1 response head"));
    };
    match status {
        101 => {
            return Err(BadResponse(
                "101 Switching Protocols to a request without Upgrade",
            ))
        }
        100..=199 => return Ok(Parsed::Done(ResponseHead::Informational { len })),
        _ => {}
    }
    let mut length = None;
    let mut coding_chunked = None;
    let mut keep_alive = false;
    let mut close = version == 0;
    for h in rsp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match content_length(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Err(BadResponse("invalid or conflicting content-length")),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding decides whether the body is chunked.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            coding_chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    for token in connection_tokens(rsp.headers) {
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            keep_alive = true;
        }
    }
    if version == 0 && keep_alive && (length.is_some() || coding_chunked.is_some()) {
        close = false;
    }
    let bodiless = head_method || status == 204 || status == 304;
    let framing = match (coding_chunked, length) {
        _ if bodiless => Framing::Empty,
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::UntilClose,
        (None, Some(0)) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    };
    if framing == Framing::UntilClose {
        close = true;
    }
    out.clear();
    // httparse accepts any three digits; http's StatusCode only 100-999, as here.
    let code = StatusCode::from_u16(status).map_err(|_| BadResponse("invalid status code"))?;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(b' ');
    let reason = match rsp.reason {
        Some(r) if !r.is_empty() => r,
        _ => code.canonical_reason().unwrap_or(""),
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = names_headers(rsp.headers);
    let hop = |name: &str| is_hop_by_hop(name) || (named && named_by_connection(name, rsp.headers));
    for h in rsp.headers.iter() {
        let framing_header =
            coding_chunked.is_some() && h.name.eq_ignore_ascii_case("content-length");
        if !framing_header && !hop(h.name) {
            write_header(out, h.name, h.value);
        }
    }
    if framing == Framing::Chunked || (bodiless && coding_chunked == Some(true)) {
        write_header(out, "transfer-encoding", b"chunked");
    }
    if close_client || framing == Framing::UntilClose {
        write_header(out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Done(ResponseHead::Final {
        len,
        status,
        framing,
        close,
    }))
}

/// A request head as routes see it ([`crate::policy::RequestView`]): read again from the
/// client's bytes (already accepted by [`parse_request`]), only for requests to services
/// with routes. The request line is split once; a header is found by scanning the head's
/// lines when a match asks for it, which costs less than parsing every header again.
pub struct RawRequest<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    /// The header lines, after the request line.
    headers: &'a [u8],
}

impl<'a> RawRequest<'a> {
    /// The head at the start of `input`.
    pub fn parse(input: &'a [u8]) -> Option<Self> {
        let end = memchr::memchr(b'\n', input)?;
        let line = input[..end].strip_suffix(b"\r").unwrap_or(&input[..end]);
        let mut parts = line.splitn(3, |&b| b == b' ');
        let method = std::str::from_utf8(parts.next()?).ok()?;
        let target = std::str::from_utf8(parts.next()?).ok()?;
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        Some(Self {
            method,
            path,
            query,
            headers: &input[end + 1..],
        })
    }
}

impl crate::policy::RequestView for RawRequest<'_> {
    fn method(&self) -> &str {
        self.method
    }
    fn path(&self) -> &str {
        self.path
    }
    fn query(&self) -> Option<&str> {
        self.query
    }
    fn any_header(&self, name: &http::HeaderName, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let name = name.as_str().as_bytes();
        let mut rest = self.headers;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let line = &rest[..end];
            rest = &rest[end + 1..];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            // `name:` at the start of the line, case-insensitively.
            if line.len() > name.len()
                && line[name.len()] == b':'
                && line[..name.len()].eq_ignore_ascii_case(name)
                && f(line[name.len() + 1..].trim_ascii())
            {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> (Parsed<RequestHead>, String) {
        let mut out = Vec::new();
        let parsed = parse_request(raw.as_bytes(), &mut out);
        (parsed, String::from_utf8(out).unwrap())
    }

    fn response(raw: &str, head_method: bool) -> (Parsed<ResponseHead>, String) {
        let mut out = Vec::new();
        let parsed = parse_response(raw.as_bytes(), head_method, false, &mut out).unwrap();
        (parsed, String::from_utf8(out).unwrap())
    }

    #[test]
    fn requests_lose_their_hop_by_hop_headers() {
        let raw = "POST /a?b HTTP/1.1\r\nHost: App:80\r\nConnection: keep-alive, X-Secret\r\n\
                   X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nContent-Length: 2\r\n\
                   X-App: kept\r\n\r\nhi";
        let (parsed, out) = request(raw);
        let Parsed::Done(head) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(head.len, raw.len() - 2);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(!head.close && !head.head_method);
        assert_eq!(&raw[head.host], "App:80");
        assert_eq!(
            out,
            "POST /a?b HTTP/1.1\r\nHost: App:80\r\nte: trailers\r\nContent-Length: 2\r\nX-App: kept\r\n\r\n"
        );
    }

    #[test]
    fn unusual_requests_go_to_the_general_path() {
        for raw in [
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\ncontent-type: application/grpc\r\n\r\n",
        ] {
            assert!(matches!(request(raw).0, Parsed::General(_)), "{raw}");
        }
        for (raw, too_large) in [
            ("GET / HTTP/1.1\r\nHost a\r\n\r\n", false),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", false),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                false,
            ),
            (
                &format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(101)),
                true,
            ),
        ] {
            let parsed = request(raw).0;
            assert!(
                matches!(parsed, Parsed::Refused { too_large: t, .. } if t == too_large),
                "{raw}: {parsed:?}"
            );
        }
        assert_eq!(request("GET / HTTP/1.1\r\nHost: a\r\n").0, Parsed::Partial);
    }

    #[test]
    fn close_and_head_are_noticed() {
        let (Parsed::Done(head), _) =
            request("HEAD / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n")
        else {
            panic!()
        };
        assert!(head.close && head.head_method);
        assert_eq!(head.framing, Framing::Empty);
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let cases: &[(&str, bool, Framing, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                false,
                Framing::Length(3),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                true,
                Framing::Empty,
                false,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::Empty,
                false,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Empty,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::UntilClose,
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose, true),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                Framing::Length(1),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                false,
                Framing::Length(1),
                false,
            ),
        ];
        for &(raw, head_method, framing, close) in cases {
            let (parsed, _) = response(raw, head_method);
            let Parsed::Done(ResponseHead::Final {
                framing: f,
                close: c,
                status,
                ..
            }) = parsed
            else {
                panic!("{raw}: {parsed:?}")
            };
            assert_eq!((f, c), (framing, close), "{raw}");
            assert!(status >= 200);
        }
    }

    #[test]
    fn responses_are_rewritten_for_the_client() {
        let raw =
            "HTTP/1.1 200 \r\nConnection: x-trace\r\nX-Trace: 1\r\nTransfer-Encoding: chunked\r\n\
                   Content-Length: 3\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\n\r\n";
        let (_, out) = response(raw, false);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-App: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
            true,
            &mut out,
        )
        .unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("connection: close\r\n\r\n"));
    }

    #[test]
    fn bad_responses_are_refused() {
        for raw in [
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        ] {
            assert!(
                parse_response(raw.as_bytes(), false, false, &mut Vec::new()).is_err(),
                "{raw}"
            );
        }
        let (parsed, _) = response("HTTP/1.1 100 Continue\r\n\r\n", false);
        assert_eq!(
            parsed,
            Parsed::Done(ResponseHead::Informational { len: 25 })
        );
        assert_eq!(response("HTTP/1.1 200 OK\r\n", false).0, Parsed::Partial);
    }

    #[test]
    fn routes_read_the_raw_head_as_hyper_would() {
        use crate::policy::RequestView;
        let head =
            b"GET /api/v1?x=1 HTTP/1.1\r\nHost: web\r\nX-Canary:  yes \r\nx-canary: no\r\n\r\nbody";
        let r = RawRequest::parse(head).unwrap();
        assert_eq!(
            (r.method(), r.path(), r.query()),
            ("GET", "/api/v1", Some("x=1"))
        );
        let canary = http::HeaderName::from_static("x-canary");
        let mut seen = Vec::new();
        assert!(!r.any_header(&canary, &mut |v| {
            seen.push(v.to_vec());
            false
        }));
        assert_eq!(
            seen,
            [b"yes".to_vec(), b"no".to_vec()],
            "every value, trimmed"
        );
        assert!(r.any_header(&canary, &mut |v| v == b"no"));
        let body = http::HeaderName::from_static("body");
        assert!(
            !r.any_header(&body, &mut |_| true),
            "the body is not a header"
        );
    }
}
