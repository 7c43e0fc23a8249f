//! `ferry-inject`: what Ferry adds to a pod, and when it leaves a pod alone — the one code
//! path behind both `ferry inject` (workload YAML) and the control plane's proxy-injector
//! webhook (AdmissionReview pods). No IO, no async.
//!
//! # Layout
//! - [`sidecar`]: the init container, proxy container and volumes, typed, from a
//!   [`ProxyConfig`].
//! - [`pod`]: the skip rules and the edits to one pod or pod template.
//! - [`tree`]: those edits over `serde_json` values, and (feature `yaml`) over
//!   `serde_yaml_ng` values, so the CLI keeps its documents' order and style.
//!
//! Reading and writing YAML streams, finding pod templates in workloads and reporting stay
//! in the CLI; AdmissionReview, JSON patches and HTTPS stay in the control plane.

pub mod pod;
pub mod sidecar;
pub mod tree;

pub use pod::{PodError, SkipReason};
pub use sidecar::{ProxyConfig, DEFAULT_PROXY_IMAGE, VERSION};
pub use tree::Tree;

/// The `ferry.io/created-by` value `ferry inject` writes.
pub fn created_by_cli() -> String {
    format!("ferry/cli {VERSION}")
}

/// The `ferry.io/created-by` value the injector webhook writes (as Linkerd's
/// `linkerd/proxy-injector`, so an injected pod says which path meshed it).
pub fn created_by_injector() -> String {
    format!("ferry/proxy-injector {VERSION}")
}
