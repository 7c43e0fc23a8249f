//! Validating a request's authority before it becomes a metrics label: a client's `Host`
//! (or `:authority`) is whatever bytes it sent, and a label must not be (issue #20: 300
//! requests with distinct 20 KB `Host` headers made one `/metrics` 181 MB). A single byte
//! scan, done once per connection and authority (routes cache their metrics handles).

/// The label value of an authority that is not a valid `host[:port]`.
pub const INVALID: &str = "invalid";

/// Longest authority accepted as a label, in bytes (a DNS name's longest text form).
pub const MAX_AUTHORITY_LEN: usize = 253;

/// `raw` when it is a valid `host[:port]` of at most [`MAX_AUTHORITY_LEN`] bytes — the host
/// a DNS name (letters, digits, `-`, `_`, labels of 1–63 bytes, an optional final dot), an
/// IPv4 address or a bracketed IPv6 address, the port 0–65535 — or the empty string;
/// otherwise [`INVALID`].
pub fn authority_label(raw: &str) -> &str {
    if raw.is_empty() || is_valid(raw.as_bytes()) {
        raw
    } else {
        INVALID
    }
}

fn is_valid(a: &[u8]) -> bool {
    if a.len() > MAX_AUTHORITY_LEN {
        return false;
    }
    let (host, port) = if a.first() == Some(&b'[') {
        let Some(end) = a.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &a[1..end];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match &a[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&a[..=end], Some(port)),
            _ => return false,
        }
    } else {
        match a.iter().rposition(|&b| b == b':') {
            Some(i) => (&a[..i], Some(&a[i + 1..])),
            None => (a, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty()
            || port.len() > 5
            || !port.iter().all(u8::is_ascii_digit)
            || port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) > 65535
        {
            return false;
        }
    }
    host.first() == Some(&b'[') || is_dns_name(host)
}

/// A DNS name or dotted IPv4 address: labels of 1–63 letters, digits, `-` or `_`.
fn is_dns_name(host: &[u8]) -> bool {
    let host = host.strip_suffix(b".").unwrap_or(host);
    !host.is_empty()
        && host.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_authorities_are_kept() {
        for ok in [
            "web",
            "web:8080",
            "web.default.svc.cluster.local:80",
            "web.default.svc.cluster.local.",
            "10.0.0.1:80",
            "[::1]:8080",
            "[fe80::1]",
            "_srv.example",
            "",
        ] {
            assert_eq!(authority_label(ok), ok);
        }
        let longest = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(longest.len(), MAX_AUTHORITY_LEN);
        assert_eq!(authority_label(&longest), longest);
    }

    #[test]
    fn anything_else_is_invalid() {
        let long = "a".repeat(20 * 1024);
        let label64 = format!("{}.example", "a".repeat(64));
        let too_long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62)
        );
        for bad in [
            long.as_str(),
            label64.as_str(),
            too_long.as_str(),
            "a b",
            "web:",
            "web:99999",
            "web:80a",
            "a..b",
            ".web",
            "we\"b",
            "web/path",
            "[::1",
            "[::1]x",
            "[zz]:80",
            "user@web",
            "ünïcode.example",
        ] {
            assert_eq!(authority_label(bad), INVALID, "{bad:?}");
        }
    }
}
