//! Errors the proxy answers itself, classified once: each becomes a [`ProxyError`] whose
//! [`ProxyErrorReason`] gives the status, the `l5d-proxy-error`/`ferry-proxy-error` header
//! value and the metric label, so all three always agree.

use std::error::Error as _;

use bytes::Bytes;
use ferry_api::{headers, ProxyErrorReason};
use http::{header, HeaderValue, Response, StatusCode};

use crate::{
    backend::SendError,
    connect::{ConnectError, ConnectErrorKind},
};

/// A response the proxy makes instead of forwarding one.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct ProxyError {
    /// Why.
    pub reason: ProxyErrorReason,
    /// A human-readable account, sent in the body (and `grpc-message` for gRPC callers).
    pub detail: String,
    /// The HTTP and gRPC statuses when the reason's own do not apply (an injected fault
    /// names its own).
    pub statuses: Option<(StatusCode, u16)>,
}

/// gRPC status codes the proxy uses.
mod grpc {
    pub const INVALID_ARGUMENT: u16 = 3;
    pub const PERMISSION_DENIED: u16 = 7;
    pub const DEADLINE_EXCEEDED: u16 = 4;
    pub const RESOURCE_EXHAUSTED: u16 = 8;
    pub const ABORTED: u16 = 10;
    pub const UNKNOWN: u16 = 2;
    pub const UNAVAILABLE: u16 = 14;
}

impl ProxyError {
    /// An error with its reason and detail.
    pub fn new(reason: ProxyErrorReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            statuses: None,
        }
    }

    /// The same error answered with these HTTP and gRPC statuses.
    pub fn with_statuses(mut self, http: StatusCode, grpc: u16) -> Self {
        self.statuses = Some((http, grpc));
        self
    }

    /// The HTTP status for HTTP callers.
    pub fn status(&self) -> StatusCode {
        if let Some((http, _)) = self.statuses {
            return http;
        }
        match self.reason {
            ProxyErrorReason::MalformedRequest => StatusCode::BAD_REQUEST,
            ProxyErrorReason::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyErrorReason::NoRoute | ProxyErrorReason::NoEndpoints => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyErrorReason::ConnectTimeout
            | ProxyErrorReason::ResponseHeadTimeout
            | ProxyErrorReason::BodyIdleTimeout
            | ProxyErrorReason::RequestTimeout
            | ProxyErrorReason::BackendRequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            // A fault carries its own status (see `ProxyError::with_status`); without one, 500.
            ProxyErrorReason::FaultInjected => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyErrorReason::ConnectRefused
            | ProxyErrorReason::ConnectFailed
            | ProxyErrorReason::UpstreamReset
            | ProxyErrorReason::UpstreamProtocol
            | ProxyErrorReason::TlsHandshake(_) => StatusCode::BAD_GATEWAY,
            ProxyErrorReason::LoopDetected => StatusCode::LOOP_DETECTED,
            ProxyErrorReason::ClientWriteTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyErrorReason::IdentityRequired | ProxyErrorReason::Unauthorized(_) => {
                StatusCode::FORBIDDEN
            }
            ProxyErrorReason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The gRPC status for gRPC callers (who get HTTP 200 with `grpc-status`).
    pub fn grpc_status(&self) -> u16 {
        if let Some((_, grpc)) = self.statuses {
            return grpc;
        }
        match self.reason {
            ProxyErrorReason::MalformedRequest => grpc::INVALID_ARGUMENT,
            ProxyErrorReason::HeadersTooLarge => grpc::RESOURCE_EXHAUSTED,
            ProxyErrorReason::ConnectTimeout
            | ProxyErrorReason::ResponseHeadTimeout
            | ProxyErrorReason::ClientWriteTimeout
            | ProxyErrorReason::BodyIdleTimeout
            | ProxyErrorReason::RequestTimeout
            | ProxyErrorReason::BackendRequestTimeout => grpc::DEADLINE_EXCEEDED,
            ProxyErrorReason::FaultInjected => grpc::UNKNOWN,
            ProxyErrorReason::LoopDetected => grpc::ABORTED,
            ProxyErrorReason::IdentityRequired | ProxyErrorReason::Unauthorized(_) => {
                grpc::PERMISSION_DENIED
            }
            ProxyErrorReason::RateLimited => grpc::RESOURCE_EXHAUSTED,
            ProxyErrorReason::NoRoute
            | ProxyErrorReason::NoEndpoints
            | ProxyErrorReason::ConnectRefused
            | ProxyErrorReason::ConnectFailed
            | ProxyErrorReason::UpstreamReset
            | ProxyErrorReason::UpstreamProtocol
            | ProxyErrorReason::TlsHandshake(_) => grpc::UNAVAILABLE,
        }
    }

    /// The response: plain text for HTTP callers, a trailers-only response for gRPC ones.
    /// Returns the status labels to record alongside.
    pub fn to_response(&self, grpc: bool) -> (Response<Bytes>, u16, Option<u16>) {
        let reason = HeaderValue::from_static(self.reason.as_str());
        let mut builder = Response::builder()
            .header(headers::L5D_PROXY_ERROR, reason.clone())
            .header(headers::FERRY_PROXY_ERROR, reason);
        let (rsp, grpc_status) = if grpc {
            let code = self.grpc_status();
            builder = builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", code)
                .header("grpc-message", grpc_message(&self.detail));
            (builder.body(Bytes::new()), Some(code))
        } else {
            builder = builder
                .status(self.status())
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
            let body = format!("ferry-proxy: {}: {}\n", self.reason, self.detail);
            (builder.body(Bytes::from(body)), None)
        };
        let rsp = rsp.expect("static headers are valid");
        let status = rsp.status().as_u16();
        (rsp, status, grpc_status)
    }

    /// The upstream did not start answering within `timeout`.
    pub fn response_head_timeout(target: &str, timeout: std::time::Duration) -> Self {
        Self::new(
            ProxyErrorReason::ResponseHeadTimeout,
            format!("{target}: no response head within {timeout:?}"),
        )
    }

    /// Classifies a failure to exchange a request with a backend.
    pub fn from_send(err: &SendError, target: &str) -> Self {
        match err {
            SendError::Connect(e) => Self::from_connect(e),
            SendError::Pool(e) => Self::from_client(e, target),
            SendError::H2(e) => {
                Self::new(ProxyErrorReason::UpstreamReset, format!("{target}: {e}"))
            }
            SendError::Closed => {
                Self::new(ProxyErrorReason::UpstreamReset, format!("{target}: {err}"))
            }
            SendError::ResponseHeadTimeout(limit) => Self::response_head_timeout(target, *limit),
            SendError::RouteTimeout(which) => which.error(target),
        }
    }

    /// Classifies an error from hyper's client.
    fn from_hyper(err: &hyper::Error, target: &str) -> Self {
        let reason = if err.is_parse() || err.is_parse_status() {
            ProxyErrorReason::UpstreamProtocol
        } else {
            ProxyErrorReason::UpstreamReset
        };
        Self::new(reason, format!("{target}: {err}"))
    }

    /// Classifies an error from the upstream HTTP client.
    pub fn from_client(err: &hyper_util::client::legacy::Error, target: &str) -> Self {
        let mut source = err.source();
        while let Some(e) = source {
            if let Some(c) = e.downcast_ref::<ConnectError>() {
                return Self::from_connect(c);
            }
            source = e.source();
        }
        let mut source = err.source();
        while let Some(e) = source {
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                return Self::from_hyper(h, target);
            }
            source = e.source();
        }
        Self::new(ProxyErrorReason::UpstreamReset, format!("{target}: {err}"))
    }

    /// Classifies a failure to connect.
    pub fn from_connect(err: &ConnectError) -> Self {
        let reason = match err.kind {
            ConnectErrorKind::Refused => ProxyErrorReason::ConnectRefused,
            ConnectErrorKind::Timeout => ProxyErrorReason::ConnectTimeout,
            ConnectErrorKind::Resolve => ProxyErrorReason::NoRoute,
            ConnectErrorKind::Other => ProxyErrorReason::ConnectFailed,
            ConnectErrorKind::Tls(failure) => ProxyErrorReason::TlsHandshake(failure),
        };
        let mut detail = err.to_string();
        if let Some(source) = err.source() {
            detail = format!("{detail}: {source}");
        }
        Self::new(reason, detail)
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec) and must be a valid header.
fn grpc_message(detail: &str) -> HeaderValue {
    let mut out = String::with_capacity(detail.len());
    for b in detail.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).expect("percent-encoded text is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_grpc_responses_carry_the_reason() {
        for reason in ProxyErrorReason::ALL {
            let err = ProxyError::new(reason, "to 127.0.0.1:1 — gone 100%");
            let (rsp, status, grpc) = err.to_response(false);
            assert!(rsp.status().is_client_error() || rsp.status().is_server_error());
            assert_eq!(status, rsp.status().as_u16());
            assert_eq!(grpc, None);
            assert_eq!(rsp.headers()[headers::L5D_PROXY_ERROR], reason.as_str());
            assert_eq!(rsp.headers()[headers::FERRY_PROXY_ERROR], reason.as_str());
            assert!(std::str::from_utf8(rsp.body())
                .unwrap()
                .contains(reason.as_str()));

            let (rsp, status, grpc) = err.to_response(true);
            assert_eq!(status, 200);
            assert_eq!(
                rsp.headers()["grpc-status"],
                grpc.unwrap().to_string().as_str()
            );
            assert_ne!(grpc, Some(0));
            assert_eq!(
                rsp.headers()["grpc-message"],
                "to 127.0.0.1:1 %E2%80%94 gone 100%25"
            );
            assert_eq!(rsp.headers()[headers::L5D_PROXY_ERROR], reason.as_str());
        }
    }
}
