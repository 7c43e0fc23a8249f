//! Prometheus metric and label names exported by the proxy on `/metrics`.
//!
//! The names follow Linkerd's proxy so that existing dashboards and PromQL carry over;
//! `docs/metrics.md` describes each one.

/// Counter: HTTP requests received.
pub const REQUEST_TOTAL: &str = "request_total";
/// Counter: HTTP responses completed, by status and classification.
pub const RESPONSE_TOTAL: &str = "response_total";
/// Histogram: milliseconds from request headers received to response headers sent.
pub const RESPONSE_LATENCY_MS: &str = "response_latency_ms";
/// Counter: TCP connections opened.
pub const TCP_OPEN_TOTAL: &str = "tcp_open_total";
/// Counter: TCP connections closed.
pub const TCP_CLOSE_TOTAL: &str = "tcp_close_total";
/// Gauge: TCP connections currently open.
pub const TCP_OPEN_CONNECTIONS: &str = "tcp_open_connections";
/// Counter: bytes read from TCP connections.
pub const TCP_READ_BYTES_TOTAL: &str = "tcp_read_bytes_total";
/// Counter: bytes written to TCP connections.
pub const TCP_WRITE_BYTES_TOTAL: &str = "tcp_write_bytes_total";
/// Counter: inbound HTTP requests the proxy answered itself, by reason.
pub const INBOUND_HTTP_ERRORS_TOTAL: &str = "inbound_http_errors_total";
/// Counter: outbound HTTP requests the proxy answered itself, by reason.
pub const OUTBOUND_HTTP_ERRORS_TOTAL: &str = "outbound_http_errors_total";
/// Counter: inbound TCP connections the proxy could not forward, by reason.
pub const INBOUND_TCP_ERRORS_TOTAL: &str = "inbound_tcp_errors_total";
/// Counter: outbound TCP connections the proxy could not forward, by reason.
pub const OUTBOUND_TCP_ERRORS_TOTAL: &str = "outbound_tcp_errors_total";
/// Counter: inbound TLS handshakes that failed, by `reason` (a [`crate::TlsFailure`]).
pub const INBOUND_TLS_HANDSHAKE_ERRORS_TOTAL: &str = "inbound_tls_handshake_errors_total";
/// Counter: outbound TLS handshakes that failed, by `reason` (a [`crate::TlsFailure`]).
pub const OUTBOUND_TLS_HANDSHAKE_ERRORS_TOTAL: &str = "outbound_tls_handshake_errors_total";
/// Gauge: when the proxy's current certificate expires, in seconds since the Unix epoch
/// (Linkerd's name).
pub const IDENTITY_CERT_EXPIRATION_TIMESTAMP_SECONDS: &str =
    "identity_cert_expiration_timestamp_seconds";
/// Counter: certificates the proxy has been issued since start (Linkerd: `identity_cert_refresh_count`).
pub const IDENTITY_CERT_REFRESH_TOTAL: &str = "identity_cert_refresh_total";
/// Counter: connections by the protocol detection found.
pub const TCP_DETECT_TOTAL: &str = "tcp_detect_total";
/// Counter: label sets the proxy refused to create because their family's series cap for
/// that direction was reached (labels `family`, `direction`; issue #20).
pub const PROXY_METRICS_SERIES_DROPPED_TOTAL: &str = "proxy_metrics_series_dropped_total";
/// Gauge: series left out of this scrape because the rendered-size cap was reached.
pub const PROXY_METRICS_RENDER_SKIPPED_SERIES: &str = "proxy_metrics_render_skipped_series";
/// Counter: tap callers the proxy refused, by `reason` (`tls_handshake`, `unauthorized`,
/// `too_many_taps`).
pub const PROXY_TAP_REFUSED_TOTAL: &str = "proxy_tap_refused_total";
/// Gauge: taps running on the proxy now.
pub const PROXY_TAP_ACTIVE: &str = "proxy_tap_active";
/// Counter: spans the proxy exported that the trace collector accepted (docs/tracing.md).
pub const PROXY_TRACE_SPANS_EXPORTED_TOTAL: &str = "proxy_trace_spans_exported_total";
/// Counter: spans the proxy dropped, by `reason` (`queue_full`, `export_failed`).
pub const PROXY_TRACE_SPANS_DROPPED_TOTAL: &str = "proxy_trace_spans_dropped_total";
/// Label of the metrics family a dropped series belonged to (`http`, `tcp`).
pub const LABEL_FAMILY: &str = "family";
/// Gauge: `1`, labelled with the proxy's version.
pub const PROXY_BUILD_INFO: &str = "proxy_build_info";
/// Gauge: when the proxy process started, in seconds since the Unix epoch.
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";

/// Counter: inbound HTTP requests an authorization admitted (docs/authorization.md).
pub const INBOUND_HTTP_AUTHZ_ALLOW_TOTAL: &str = "inbound_http_authz_allow_total";
/// Counter: inbound HTTP requests no authorization admitted (answered 403).
pub const INBOUND_HTTP_AUTHZ_DENY_TOTAL: &str = "inbound_http_authz_deny_total";
/// Counter: inbound HTTP requests that matched no route of a server with routes (404).
pub const INBOUND_HTTP_ROUTE_NOT_FOUND_TOTAL: &str = "inbound_http_route_not_found_total";
/// Counter: inbound HTTP requests answered 429 by the server's local rate limit.
pub const INBOUND_HTTP_LOCAL_RATELIMIT_TOTAL: &str = "inbound_http_local_ratelimit_total";
/// Counter: inbound connections an authorization admitted.
pub const INBOUND_TCP_AUTHZ_ALLOW_TOTAL: &str = "inbound_tcp_authz_allow_total";
/// Counter: inbound connections no authorization admitted (closed before any byte).
pub const INBOUND_TCP_AUTHZ_DENY_TOTAL: &str = "inbound_tcp_authz_deny_total";
/// Counter: inbound connections closed because a new policy no longer admits them.
pub const INBOUND_TCP_AUTHZ_TERMINATE_TOTAL: &str = "inbound_tcp_authz_terminate_total";
/// Label: the kind of the inbound server (`server`, or `default` for a default policy).
pub const LABEL_SRV_KIND: &str = "srv_kind";
/// Label: the name of the inbound server.
pub const LABEL_SRV_NAME: &str = "srv_name";
/// Label: the kind of the inbound route (`HTTPRoute`, `GRPCRoute`, `default`).
pub const LABEL_ROUTE_KIND: &str = "route_kind";
/// Label: the name of the inbound route.
pub const LABEL_ROUTE_NAME: &str = "route_name";
/// Label: the kind of the authorization (`AuthorizationPolicy`, `default`, ...).
pub const LABEL_AUTHZ_KIND: &str = "authz_kind";
/// Label: the name of the authorization (`audit` for an audited server's catch-all).
pub const LABEL_AUTHZ_NAME: &str = "authz_name";

/// Label: `inbound` or `outbound`.
pub const LABEL_DIRECTION: &str = "direction";
/// Label: the request's authority (inbound) or the logical target (outbound).
pub const LABEL_AUTHORITY: &str = "authority";
/// Label: the address the proxy forwards to.
pub const LABEL_TARGET_ADDR: &str = "target_addr";
/// Label: `src` for connections the proxy accepted, `dst` for those it opened.
pub const LABEL_PEER: &str = "peer";
/// Label: `true` when the connection is mTLS, else `no_identity`.
pub const LABEL_TLS: &str = "tls";
/// Label: why a connection has no TLS identity.
pub const LABEL_NO_TLS_REASON: &str = "no_tls_reason";
/// Label: the verified identity of an mTLS client (inbound, with `tls="true"`).
pub const LABEL_CLIENT_ID: &str = "client_id";
/// Label: the verified identity of an mTLS server (outbound, with `tls="true"`).
pub const LABEL_SERVER_ID: &str = "server_id";
/// Label: why a TLS handshake failed (a [`crate::TlsFailure`]).
pub const LABEL_REASON: &str = "reason";
/// Label: the HTTP status code of a response.
pub const LABEL_STATUS_CODE: &str = "status_code";
/// Label: `success` or `failure`.
pub const LABEL_CLASSIFICATION: &str = "classification";
/// Label: the numeric gRPC status of a gRPC response.
pub const LABEL_GRPC_STATUS: &str = "grpc_status";
/// Label: a [`crate::ProxyErrorReason`], on responses and errors the proxy made.
pub const LABEL_ERROR: &str = "error";
/// Label: the protocol detection found (`http/1`, `http/2`, `tls`, `opaque`).
pub const LABEL_PROTOCOL: &str = "protocol";

/// Buckets of [`RESPONSE_LATENCY_MS`], in milliseconds (Linkerd's, for dashboard parity).
pub const LATENCY_BUCKETS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
    10000, 20000, 30000, 40000, 50000,
];

/// Route families (Linkerd's, per route of a Service with routes; docs/routes.md):
/// completed requests by `http_status`/`grpc_status`/`error`, after retries.
pub const OUTBOUND_HTTP_ROUTE_REQUEST_STATUSES_TOTAL: &str =
    "outbound_http_route_request_statuses_total";
/// Histogram, seconds: a route request's arrival to its response head.
pub const OUTBOUND_HTTP_ROUTE_REQUEST_DURATION_SECONDS: &str =
    "outbound_http_route_request_duration_seconds";
/// Retries sent on a route.
pub const OUTBOUND_HTTP_ROUTE_RETRY_REQUESTS_TOTAL: &str =
    "outbound_http_route_retry_requests_total";
/// [`OUTBOUND_HTTP_ROUTE_REQUEST_STATUSES_TOTAL`] of gRPC routes.
pub const OUTBOUND_GRPC_ROUTE_REQUEST_STATUSES_TOTAL: &str =
    "outbound_grpc_route_request_statuses_total";
/// [`OUTBOUND_HTTP_ROUTE_REQUEST_DURATION_SECONDS`] of gRPC routes.
pub const OUTBOUND_GRPC_ROUTE_REQUEST_DURATION_SECONDS: &str =
    "outbound_grpc_route_request_duration_seconds";
/// [`OUTBOUND_HTTP_ROUTE_RETRY_REQUESTS_TOTAL`] of gRPC routes.
pub const OUTBOUND_GRPC_ROUTE_RETRY_REQUESTS_TOTAL: &str =
    "outbound_grpc_route_retry_requests_total";
