//! A request's head kept so that the request can be sent again: a route's retry, a re-send
//! after a pooled connection closed, another endpoint after a failed connect, a mirror's
//! copy. It is the method and version, and the URI and headers written into one buffer.
//!
//! A kept `HeaderMap` clone costs two allocations of its own, one more for every header
//! value still owned by the decoder that read it (the first clone of such bytes moves them
//! to a shared allocation), the URI's likewise, and as many frees: about 1,800
//! instructions per request on HTTP/2. A copy costs one allocation and the bytes it
//! copies. Reading the head back, which only a request sent again does, parses the buffer.

use http::{
    header::{HeaderName, HeaderValue},
    request::Parts,
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, Method, Request, Uri, Version,
};

/// A request's head, copied (see the module's documentation).
pub struct HeadCopy {
    method: Method,
    version: Version,
    /// The URI's scheme, authority, and path and query, each a field or [`ABSENT`]; then
    /// each header: its name as a field, a byte saying whether its value is sensitive, and
    /// its value as a field. A field is its length (4 bytes, little-endian) and its bytes.
    buf: Vec<u8>,
}

/// The buffer's first size, enough for a head without cookies or long tokens written so
/// (a gRPC call from h2load takes under 200 bytes); a larger head grows it.
const INITIAL: usize = 512;

/// The length written for a URI part the request did not have.
const ABSENT: u32 = u32::MAX;

impl HeadCopy {
    /// A copy of `req`'s head (its extensions are not copied).
    pub fn of<B>(req: &Request<B>) -> Self {
        let uri = req.uri();
        let uri_parts = [
            uri.scheme_str(),
            uri.authority().map(Authority::as_str),
            uri.path_and_query().map(PathAndQuery::as_str),
        ];
        // Enough for most heads at once; a larger one grows the buffer.
        let mut buf = Vec::with_capacity(INITIAL);
        for part in uri_parts {
            match part {
                Some(part) => field(&mut buf, part.as_bytes()),
                None => buf.extend_from_slice(&ABSENT.to_le_bytes()),
            }
        }
        for (name, value) in req.headers() {
            field(&mut buf, name.as_str().as_bytes());
            buf.push(u8::from(value.is_sensitive()));
            field(&mut buf, value.as_bytes());
        }
        Self {
            method: req.method().clone(),
            version: req.version(),
            buf,
        }
    }

    /// The head again, as the request had it. `None` only if a part no longer parses,
    /// which a head that `http` held cannot do: the caller then does not send the request
    /// again.
    pub fn parts(&self) -> Option<Parts> {
        let mut fields = Fields(&self.buf);
        let mut uri = http::uri::Parts::default();
        uri.scheme = fields.uri_part()?.map(Scheme::try_from).transpose().ok()?;
        uri.authority = fields
            .uri_part()?
            .map(Authority::try_from)
            .transpose()
            .ok()?;
        uri.path_and_query = fields
            .uri_part()?
            .map(PathAndQuery::try_from)
            .transpose()
            .ok()?;
        let mut headers = HeaderMap::new();
        while !fields.0.is_empty() {
            let name = HeaderName::from_bytes(fields.field()?).ok()?;
            let sensitive = fields.take(1)?[0] == 1;
            let mut value = HeaderValue::from_bytes(fields.field()?).ok()?;
            value.set_sensitive(sensitive);
            headers.append(name, value);
        }
        let mut parts = Request::new(()).into_parts().0;
        parts.method = self.method.clone();
        parts.uri = Uri::from_parts(uri).ok()?;
        parts.version = self.version;
        parts.headers = headers;
        Some(parts)
    }
}

/// Appends `bytes` as a field: its length, then the bytes.
fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
    // No head part comes near 4 GiB (heads are limited to kilobytes); a longer one would
    // fail to parse back, and its request would not be sent again.
    let len = u32::try_from(bytes.len()).unwrap_or(ABSENT);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// The fields of a copy's buffer, read in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn len(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let len = self.len()?;
        self.take(usize::try_from(len).ok()?)
    }

    /// A URI part: `Some(None)` for one the request did not have.
    fn uri_part(&mut self) -> Option<Option<&'a [u8]>> {
        match self.len()? {
            ABSENT => Some(None),
            len => self.take(usize::try_from(len).ok()?).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(req: Request<()>) {
        let copy = HeadCopy::of(&req).parts().expect("parses back");
        let (orig, ()) = req.into_parts();
        assert_eq!(copy.method, orig.method);
        assert_eq!(copy.uri, orig.uri);
        assert_eq!(copy.uri.to_string(), orig.uri.to_string());
        assert_eq!(copy.version, orig.version);
        assert_eq!(copy.headers, orig.headers);
        let order = |h: &HeaderMap| {
            h.iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec(), v.is_sensitive()))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&copy.headers), order(&orig.headers));
    }

    /// Every form of URI, repeated and custom headers in their order, sensitive values,
    /// bytes outside ASCII, an extension method and an empty head come back as they were.
    #[test]
    fn heads_come_back_as_they_were() {
        let mut secret = HeaderValue::from_static("Bearer abc");
        secret.set_sensitive(true);
        round_trip(
            Request::builder()
                .method("POST")
                .uri("http://web.default.svc.cluster.local:8080/api/v1/items?x=1&y=%20")
                .version(Version::HTTP_2)
                .header("content-type", "application/grpc")
                .header("x-canary", "yes")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("authorization", secret)
                .header(
                    "x-bytes",
                    HeaderValue::from_bytes(b"caf\xc3\xa9\t!").unwrap(),
                )
                .header("x-empty", "")
                .body(())
                .unwrap(),
        );
        round_trip(Request::builder().uri("/only/a/path").body(()).unwrap());
        round_trip(
            Request::builder()
                .method("OPTIONS")
                .uri("*")
                .body(())
                .unwrap(),
        );
        round_trip(
            Request::builder()
                .method("CONNECT")
                .uri("example.com:443")
                .body(())
                .unwrap(),
        );
        round_trip(
            Request::builder()
                .method("PURGE-ALL")
                .uri("https://example.com")
                .version(Version::HTTP_10)
                .body(())
                .unwrap(),
        );
    }

    /// A damaged buffer gives `None`, not a panic.
    #[test]
    fn a_damaged_copy_is_refused() {
        let req = Request::builder()
            .uri("/a")
            .header("x-a", "1")
            .body(())
            .unwrap();
        let mut copy = HeadCopy::of(&req);
        let whole = copy.buf.clone();
        // The URI's fields end at 14 bytes: cut there, the head has no headers; cut
        // anywhere else short of the end, a field is missing or short.
        for cut in 0..whole.len() {
            copy.buf = whole[..cut].to_vec();
            assert_eq!(copy.parts().is_some(), cut == 14, "cut at {cut}");
        }
        copy.buf = whole.clone();
        copy.buf[14 + 4] = b'\n';
        assert!(copy.parts().is_none(), "an invalid header name");
    }
}
