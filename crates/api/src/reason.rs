//! The reasons a proxy answers a request, or drops a connection, itself.

use std::fmt;

/// Why the proxy, not the application, produced a response or ended a connection.
///
/// The same token is the value of the `l5d-proxy-error` and `ferry-proxy-error` headers and
/// of the `error` metric label, so a user can go from a response to its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyErrorReason {
    /// The request was malformed or ambiguous (e.g. conflicting framing headers).
    MalformedRequest,
    /// The request's headers exceed the configured limits.
    HeadersTooLarge,
    /// No upstream is known for the request's authority or the connection's destination.
    NoRoute,
    /// The destination exists but has no endpoints (or discovery has not answered in time).
    NoEndpoints,
    /// The upstream refused the connection.
    ConnectRefused,
    /// Connecting to the upstream took longer than the connect timeout.
    ConnectTimeout,
    /// Connecting to the upstream failed for another reason (unreachable, reset, ...).
    ConnectFailed,
    /// The upstream closed or broke the connection before answering.
    UpstreamReset,
    /// The upstream answered with something that is not valid HTTP.
    UpstreamProtocol,
    /// The request would reach this proxy again (its target is one of the proxy's own
    /// listeners), so forwarding it would loop forever.
    LoopDetected,
    /// The proxy requires an mTLS client identity on inbound connections
    /// (`--inbound-require-identity`) and the client had none.
    IdentityRequired,
    /// The mTLS handshake with the upstream's proxy failed, for the reason carried.
    TlsHandshake(TlsFailure),
    /// The upstream had the request but did not start its response (the head) within the
    /// response-head timeout.
    ResponseHeadTimeout,
    /// The client did not take any of what the proxy was writing to it for the client-write
    /// timeout; its connection was closed. Never sent (the client is not reading), only
    /// counted.
    ClientWriteTimeout,
    /// A response body from the upstream brought nothing for the body-idle timeout; the
    /// response was cut off (its head had already gone to the client).
    BodyIdleTimeout,
    /// A route's `timeouts.request` ran out before the response head came (retries
    /// included).
    RequestTimeout,
    /// A route's `timeouts.backendRequest` ran out on one try before its response head came.
    BackendRequestTimeout,
    /// A route's fault-injection filter aborted the request (an `HTTPFault`, or a backend
    /// the route names that does not resolve).
    FaultInjected,
    /// No inbound authorization admits the request or connection, for the reason carried
    /// (docs/authorization.md).
    Unauthorized(AuthzFailure),
    /// The inbound server's local rate limit refused the request.
    RateLimited,
}

/// Why an inbound request was not authorized.
///
/// `NoAuthorization` is the token `unauthorized`; the JWT failures are
/// `unauthorized-jwt-<what>`: the authorizations that would admit the client by its network
/// and identity all require a token, and the first of them failed this way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthzFailure {
    /// No authorization admits the client's address and identity.
    NoAuthorization,
    /// The request carries no token (no `Authorization: Bearer`, or no named header).
    JwtMissing,
    /// The token is not a JWT (not three base64url parts, not JSON, not bearer).
    JwtMalformed,
    /// The token's signature does not verify with the key it names.
    JwtBadSignature,
    /// The token names a key (`kid`) the issuer's key set does not hold, or an algorithm
    /// none of its keys can verify.
    JwtUnknownKey,
    /// The token's `exp` has passed (beyond the leeway).
    JwtExpired,
    /// The token's `nbf` is still ahead (beyond the leeway).
    JwtNotYetValid,
    /// The token's `iss` is not the required issuer.
    JwtWrongIssuer,
    /// The token's `aud` names none of the required audiences.
    JwtWrongAudience,
    /// The token lacks a required claim (`exp` included), or has none of its values.
    JwtMissingClaim,
}

impl AuthzFailure {
    /// Every failure, for documentation and exhaustive tests.
    pub const ALL: [AuthzFailure; 10] = [
        Self::NoAuthorization,
        Self::JwtMissing,
        Self::JwtMalformed,
        Self::JwtBadSignature,
        Self::JwtUnknownKey,
        Self::JwtExpired,
        Self::JwtNotYetValid,
        Self::JwtWrongIssuer,
        Self::JwtWrongAudience,
        Self::JwtMissingClaim,
    ];
}

/// Why a TLS handshake between two proxies failed.
///
/// The `reason` label of the `*_tls_handshake_errors_total` counters is [`Self::as_label`];
/// a proxy-made response names it in `l5d-proxy-error` as `tls-handshake-<reason>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The peer's certificate does not chain to our trust anchors (or the peer said ours
    /// does not chain to its anchors).
    UnknownCa,
    /// The peer's certificate is valid but names another identity than the expected one.
    NameMismatch,
    /// A certificate in the chain is expired or not yet valid.
    Expired,
    /// A client reached our identity over TLS without presenting a certificate.
    NoClientCert,
    /// This proxy has no certificate yet (identity not ready), so it cannot open mTLS.
    NoLocalIdentity,
    /// Anything else: a protocol error, a version mismatch, a closed connection.
    Other,
}

impl TlsFailure {
    /// Every failure, for documentation and exhaustive tests.
    pub const ALL: [TlsFailure; 6] = [
        Self::UnknownCa,
        Self::NameMismatch,
        Self::Expired,
        Self::NoClientCert,
        Self::NoLocalIdentity,
        Self::Other,
    ];

    /// The `reason` label value.
    pub const fn as_label(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::NameMismatch => "name_mismatch",
            Self::Expired => "expired",
            Self::NoClientCert => "no_client_cert",
            Self::NoLocalIdentity => "no_local_identity",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_label())
    }
}

impl ProxyErrorReason {
    /// Every reason, for documentation and exhaustive tests.
    pub const ALL: [ProxyErrorReason; 34] = [
        Self::MalformedRequest,
        Self::HeadersTooLarge,
        Self::NoRoute,
        Self::NoEndpoints,
        Self::ConnectRefused,
        Self::ConnectTimeout,
        Self::ConnectFailed,
        Self::UpstreamReset,
        Self::UpstreamProtocol,
        Self::LoopDetected,
        Self::IdentityRequired,
        Self::TlsHandshake(TlsFailure::UnknownCa),
        Self::TlsHandshake(TlsFailure::NameMismatch),
        Self::TlsHandshake(TlsFailure::Expired),
        Self::TlsHandshake(TlsFailure::NoClientCert),
        Self::TlsHandshake(TlsFailure::NoLocalIdentity),
        Self::TlsHandshake(TlsFailure::Other),
        Self::ResponseHeadTimeout,
        Self::ClientWriteTimeout,
        Self::BodyIdleTimeout,
        Self::RequestTimeout,
        Self::BackendRequestTimeout,
        Self::FaultInjected,
        Self::Unauthorized(AuthzFailure::NoAuthorization),
        Self::Unauthorized(AuthzFailure::JwtMissing),
        Self::Unauthorized(AuthzFailure::JwtMalformed),
        Self::Unauthorized(AuthzFailure::JwtBadSignature),
        Self::Unauthorized(AuthzFailure::JwtUnknownKey),
        Self::Unauthorized(AuthzFailure::JwtExpired),
        Self::Unauthorized(AuthzFailure::JwtNotYetValid),
        Self::Unauthorized(AuthzFailure::JwtWrongIssuer),
        Self::Unauthorized(AuthzFailure::JwtWrongAudience),
        Self::Unauthorized(AuthzFailure::JwtMissingClaim),
        Self::RateLimited,
    ];

    /// The stable token used in headers and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed-request",
            Self::HeadersTooLarge => "headers-too-large",
            Self::NoRoute => "no-route",
            Self::NoEndpoints => "no-endpoints",
            Self::ConnectRefused => "connect-refused",
            Self::ConnectTimeout => "connect-timeout",
            Self::ConnectFailed => "connect-failed",
            Self::UpstreamReset => "upstream-reset",
            Self::UpstreamProtocol => "upstream-protocol",
            Self::LoopDetected => "loop-detected",
            Self::IdentityRequired => "identity-required",
            Self::ResponseHeadTimeout => "response-head-timeout",
            Self::ClientWriteTimeout => "client-write-timeout",
            Self::BodyIdleTimeout => "body-idle-timeout",
            Self::RequestTimeout => "request-timeout",
            Self::BackendRequestTimeout => "backend-request-timeout",
            Self::FaultInjected => "fault-injected",
            Self::RateLimited => "rate-limited",
            Self::Unauthorized(f) => match f {
                AuthzFailure::NoAuthorization => "unauthorized",
                AuthzFailure::JwtMissing => "unauthorized-jwt-missing",
                AuthzFailure::JwtMalformed => "unauthorized-jwt-malformed",
                AuthzFailure::JwtBadSignature => "unauthorized-jwt-bad-signature",
                AuthzFailure::JwtUnknownKey => "unauthorized-jwt-unknown-key",
                AuthzFailure::JwtExpired => "unauthorized-jwt-expired",
                AuthzFailure::JwtNotYetValid => "unauthorized-jwt-not-yet-valid",
                AuthzFailure::JwtWrongIssuer => "unauthorized-jwt-wrong-issuer",
                AuthzFailure::JwtWrongAudience => "unauthorized-jwt-wrong-audience",
                AuthzFailure::JwtMissingClaim => "unauthorized-jwt-missing-claim",
            },
            Self::TlsHandshake(f) => match f {
                TlsFailure::UnknownCa => "tls-handshake-unknown-ca",
                TlsFailure::NameMismatch => "tls-handshake-name-mismatch",
                TlsFailure::Expired => "tls-handshake-expired",
                TlsFailure::NoClientCert => "tls-handshake-no-client-cert",
                TlsFailure::NoLocalIdentity => "tls-handshake-no-local-identity",
                TlsFailure::Other => "tls-handshake-failed",
            },
        }
    }

    /// Parses a token produced by [`Self::as_str`].
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == token)
    }
}

impl fmt::Display for ProxyErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for reason in ProxyErrorReason::ALL {
            assert!(seen.insert(reason.as_str()), "duplicate token {reason}");
            assert_eq!(ProxyErrorReason::from_token(reason.as_str()), Some(reason));
        }
        assert_eq!(ProxyErrorReason::from_token("nonsense"), None);
    }
}
