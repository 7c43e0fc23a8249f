//! Default ports, matching Linkerd's so that habits, probes and firewall rules carry over.

/// Proxy outbound listener: the application's outgoing traffic.
pub const PROXY_OUTBOUND: u16 = 4140;
/// Proxy inbound listener: traffic for the application, from peers or unmeshed clients.
pub const PROXY_INBOUND: u16 = 4143;
/// Proxy admin server: metrics, probes, state.
pub const PROXY_ADMIN: u16 = 4191;
/// Proxy tap server.
pub const PROXY_TAP: u16 = 4190;
/// Control plane gRPC: destination, identity, tap.
pub const CONTROL_GRPC: u16 = 8086;
/// Control plane public HTTP/JSON API and dashboard.
pub const CONTROL_API: u16 = 8084;
/// Control plane probe listener (`/ready`, `/live`), for the kubelet: the public API binds
/// loopback, which probes cannot reach.
pub const CONTROL_PROBE: u16 = 9990;
/// The application port an injected proxy forwards inbound traffic to by default.
pub const APP_DEFAULT: u16 = 8080;
/// Control plane proxy-injector webhook (HTTPS); its Service exposes it on 443.
pub const CONTROL_WEBHOOK: u16 = 8443;
/// Control plane OTLP/gRPC trace receiver: the OpenTelemetry collector's standard port, where
/// Linkerd's proxies send spans to a collector too.
pub const CONTROL_OTLP: u16 = 4317;
