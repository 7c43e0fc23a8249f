//! Live request tapping over the public API: the route, its query, and the JSON event every
//! Server-Sent Event carries. The control plane fills these from the proxies'
//! `tap.Tap/Observe` streams; `ferry tap`, `ferry top` and the dashboard read them.
//!
//! Each event of the stream is an SSE `data:` line holding one [`TapEvent`] (default event
//! type `message`). A proxy that cannot be tapped, or the stream ending for a reason, is
//! reported as an SSE event of type [`SSE_EVENT_ERROR`] with an [`crate::control_api::ApiError`]
//! body; the stream itself keeps going while any proxy is tapped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET ?resource=deploy/web&namespace=...`: Server-Sent Events of [`TapEvent`]s.
pub const TAP_PATH: &str = "/api/v1/tap";
/// Requests per second a tap shows when the caller names no `maxRps` (Linkerd's default).
pub const DEFAULT_MAX_RPS: f64 = 100.0;
/// The SSE event type of a non-fatal problem (one proxy unreachable, a stream ended).
pub const SSE_EVENT_ERROR: &str = "tap-error";

/// gRPC metadata of a `tap.Tap/Observe` call asking for unredacted header values
/// (`true`); proxies grant it only to an authorised caller.
pub const UNREDACTED_METADATA: &str = "ferry-tap-unredacted";

/// The query of [`TAP_PATH`]; also what the CLI and the dashboard build it from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapQuery {
    /// The tapped resource, kubectl style: `deploy/voting`, `po/web-1`, `ns/emojivoto`, `svc/emoji`.
    pub resource: String,
    /// Its namespace (default `default`); ignored for `ns/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only requests to this resource (`deploy/emoji`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The namespace of `to` (default: `namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_namespace: Option<String>,
    /// Only requests whose path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only requests with this method (`GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Only requests with this authority (exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Most requests per second shown across all tapped proxies; the rest are skipped
    /// (default [`DEFAULT_MAX_RPS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rps: Option<f64>,
    /// Stop after this many requests (their `req`, `rsp` and `end` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Ask for header values unredacted (`true`); the control plane refuses unless started
    /// with `--tap-allow-unredacted-headers`. Without it, values of headers off the proxies'
    /// allow-list read `[redacted]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_headers: Option<bool>,
}

/// Which of a request's three moments an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapEventKind {
    /// The request's head arrived (`RequestInit`).
    Req,
    /// The response's head was sent (`ResponseInit`).
    Rsp,
    /// The response ended: end of stream, gRPC trailers or reset (`ResponseEnd`).
    End,
}

/// Which side of the tapped proxy saw the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapDirection {
    /// Traffic to the tapped workload (`proxy=in`).
    Inbound,
    /// Traffic from the tapped workload (`proxy=out`).
    Outbound,
}

/// One side of a tapped request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapPeer {
    /// `ip:port`.
    pub addr: String,
    /// Resource labels where known: `namespace`, `pod`, the workload kind (`deployment`),
    /// `service`, `serviceaccount`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One tap event, the `data:` of one SSE message of [`TAP_PATH`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapEvent {
    /// `req`, `rsp` or `end`.
    #[serde(rename = "type")]
    pub kind: TapEventKind,
    /// `<base>:<stream>`: connection and request number within the tapped proxy. The three
    /// events of one request share it; with `tappedPod` it is unique in a merged stream.
    pub id: String,
    /// The pod whose proxy reported the event.
    pub tapped_pod: String,
    /// Its namespace.
    pub tapped_namespace: String,
    /// `inbound` or `outbound`.
    pub proxy_direction: TapDirection,
    /// The client side.
    pub source: TapPeer,
    /// The server side.
    pub destination: TapPeer,
    /// Whether the hop was mutually authenticated: `true`, or why not (`no_identity`,
    /// `no_tls_from_remote`...), as the `tls` metric label.
    pub tls: String,
    /// The client's mTLS identity, when the hop was mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The server's mTLS identity, when the hop was mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// `req`: the method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `req`: `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// `req`: the authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// `req`: the path (with query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `rsp`: the HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `rsp`, `end`: microseconds from the request's head to the response's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_micros: Option<u64>,
    /// `end`: microseconds from the response's head to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_micros: Option<u64>,
    /// `end`: response body bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
    /// `end`: the gRPC status code from the trailers, for gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// `end`: the HTTP/2 reset code, when the stream was reset instead of ending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_error: Option<u32>,
    /// `rsp`, `end`: the reason a proxy gave when it made the response itself instead of the
    /// application (`unauthorized`, `rate-limited`, `connect-timeout`...: the value of its
    /// `l5d-proxy-error` header, a [`crate::ProxyErrorReason`] token). That proxy is the
    /// tapped one, or for an outbound request the destination's proxy (e.g. its policy
    /// denied the request). Absent for the application's responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_error: Option<String>,
    /// Request (`req`), response (`rsp`) or trailer (`end`) headers; values outside the
    /// proxies' allow-list read `[redacted]` unless `showHeaders` was allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// The proxy-error reason a response's `l5d-proxy-error` value names, when it is a
/// well-formed token (lowercase letters, digits, `-` and `_`; at most 64 bytes), so that
/// it prints as one word in a tap line; `None` for anything else.
pub fn proxy_error_token(value: &str) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    ok.then_some(value)
}

/// The gRPC status code name Linkerd's tap prints (`OK`, `Unknown`, ...), as Go's
/// `codes.Code` spells it: `Code(17)` for codes past the known ones.
pub fn grpc_code_name(code: u32) -> String {
    let name = match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => return format!("Code({code})"),
    };
    name.to_string()
}

/// The HTTP/2 error code name for a reset (`CANCEL`, `REFUSED_STREAM`, ...).
pub fn h2_reason_name(code: u32) -> &'static str {
    match code {
        0 => "NO_ERROR",
        1 => "PROTOCOL_ERROR",
        2 => "INTERNAL_ERROR",
        3 => "FLOW_CONTROL_ERROR",
        4 => "SETTINGS_TIMEOUT",
        5 => "STREAM_CLOSED",
        6 => "FRAME_SIZE_ERROR",
        7 => "REFUSED_STREAM",
        8 => "CANCEL",
        9 => "COMPRESSION_ERROR",
        10 => "CONNECT_ERROR",
        11 => "ENHANCE_YOUR_CALM",
        12 => "INADEQUATE_SECURITY",
        13 => "HTTP_1_1_REQUIRED",
        _ => "UNKNOWN",
    }
}
