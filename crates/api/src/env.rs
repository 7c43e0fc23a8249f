//! Environment variable names: each is the twin of the command-line flag of the same name.

/// `--inbound-listen`: address of the proxy's inbound listener.
pub const PROXY_INBOUND_LISTEN: &str = "FERRY_PROXY_INBOUND_LISTEN";
/// `--inbound-forward`: where the proxy sends inbound traffic (the application).
pub const PROXY_INBOUND_FORWARD: &str = "FERRY_PROXY_INBOUND_FORWARD";
/// `--outbound-listen`: address of the proxy's generic outbound listener.
pub const PROXY_OUTBOUND_LISTEN: &str = "FERRY_PROXY_OUTBOUND_LISTEN";
/// `--admin-listen`: address of the admin server.
pub const PROXY_ADMIN_LISTEN: &str = "FERRY_PROXY_ADMIN_LISTEN";
/// `--tap-listen`: address of the tap server.
pub const PROXY_TAP_LISTEN: &str = "FERRY_PROXY_TAP_LISTEN";
/// `--upstream LOCAL=TARGET`: upstream listeners, comma-separated in the environment.
pub const PROXY_UPSTREAM: &str = "FERRY_PROXY_UPSTREAM";
/// `--opaque-ports`: target ports whose connections skip protocol detection.
pub const PROXY_OPAQUE_PORTS: &str = "FERRY_PROXY_OPAQUE_PORTS";
/// `--detect-timeout`: how long to wait for a client's first bytes before forwarding as TCP.
pub const PROXY_DETECT_TIMEOUT: &str = "FERRY_PROXY_DETECT_TIMEOUT";
/// `--connect-timeout`: how long to wait for a TCP connection to an upstream.
pub const PROXY_CONNECT_TIMEOUT: &str = "FERRY_PROXY_CONNECT_TIMEOUT";
/// `--idle-timeout`: how long a pooled upstream connection may sit unused.
pub const PROXY_IDLE_TIMEOUT: &str = "FERRY_PROXY_IDLE_TIMEOUT";
/// `--header-read-timeout`: how long a client may take to send a request's headers.
pub const PROXY_HEADER_READ_TIMEOUT: &str = "FERRY_PROXY_HEADER_READ_TIMEOUT";
/// `--shutdown-grace-period`: how long in-flight work may continue after `SIGTERM`.
pub const PROXY_SHUTDOWN_GRACE_PERIOD: &str = "FERRY_PROXY_SHUTDOWN_GRACE_PERIOD";
/// `--log`: the tracing filter (e.g. `info,ferry_proxy=debug`).
pub const PROXY_LOG: &str = "FERRY_PROXY_LOG";
/// `--log-format`: `plain` or `json`.
pub const PROXY_LOG_FORMAT: &str = "FERRY_PROXY_LOG_FORMAT";
