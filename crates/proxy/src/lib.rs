//! Ferry's sidecar proxy.
