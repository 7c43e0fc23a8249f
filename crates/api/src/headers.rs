//! HTTP header names the mesh reads or writes.

/// Set on every response the proxy makes itself; the value is a [`crate::ProxyErrorReason`].
/// Linkerd's name, so existing tooling that looks for it keeps working.
pub const L5D_PROXY_ERROR: &str = "l5d-proxy-error";
/// Ferry's own twin of [`L5D_PROXY_ERROR`], with the same value.
pub const FERRY_PROXY_ERROR: &str = "ferry-proxy-error";
