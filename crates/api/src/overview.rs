//! The control plane's view of itself and of the proxies it knows, for the dashboard and
//! `ferry check`: `GET /api/v1/overview` and `GET /api/v1/proxies`.
//!
//! Golden metrics are not here: they come from the stat API. This is what discovery and
//! the proxies' admin servers say.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `GET`: the control plane's health in detail and the mesh's shape; answers [`Overview`].
pub const OVERVIEW_PATH: &str = "/api/v1/overview";
/// `GET [?namespace=NS]`: every instance with a proxy admin address, each with its
/// `/state`; answers [`Proxies`].
pub const PROXIES_PATH: &str = "/api/v1/proxies";
/// `GET`: the dashboard's single page; its assets live under [`DASHBOARD_ASSETS_PATH`].
pub const DASHBOARD_PATH: &str = "/";
/// Prefix of the dashboard's embedded assets (`app.js`, `style.css`).
pub const DASHBOARD_ASSETS_PATH: &str = "/dashboard/";

/// The body of [`OVERVIEW_PATH`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// `ok` when every component is up.
    pub status: String,
    /// The control plane's version.
    pub version: String,
    /// Seconds since the control plane started.
    pub uptime_seconds: u64,
    /// Each part of the control plane and whether it runs.
    pub components: Vec<Component>,
    /// Instances whose proxy has an admin address the control plane can read.
    pub proxies_known: usize,
    /// Of those, how many answered `/ready` at the last look.
    pub proxies_ready: usize,
    /// Every namespace discovery knows, with its workloads counted.
    pub namespaces: Vec<NamespaceSummary>,
    /// Every workload discovery knows.
    pub workloads: Vec<WorkloadSummary>,
}

/// One part of the control plane in [`Overview::components`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    /// `discovery`, `destination`, `identity`, `public-api`, `dashboard`, ...
    pub name: String,
    /// `up`, `off` (not configured) or `down`.
    pub status: String,
    /// What it is doing, e.g. the discovery backend or the issuer's expiry.
    pub detail: String,
}

/// One namespace in [`Overview::namespaces`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSummary {
    /// The namespace.
    pub name: String,
    /// Workloads in it.
    pub workloads: usize,
    /// Workloads in it whose every instance runs a proxy (and that have at least one).
    pub meshed: usize,
}

/// One workload in [`Overview::workloads`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSummary {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Lowercase kind: `deployment`, `statefulset`, ...
    pub kind: String,
    /// Instances (pods).
    pub instances: usize,
    /// Instances that run a proxy.
    pub meshed_instances: usize,
}

/// The body of [`PROXIES_PATH`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proxies {
    /// One entry per instance, sorted by namespace and pod.
    pub proxies: Vec<ProxyInfo>,
}

/// One instance's proxy as the control plane sees it, and what its admin server said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyInfo {
    /// The instance's namespace.
    pub namespace: String,
    /// The instance (pod) name.
    pub pod: String,
    /// The owning workload's kind, when it has an owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
    /// The owning workload's name, when it has an owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Whether a proxy fronts the instance.
    pub meshed: bool,
    /// The identity the control plane expects it to present (DNS-like name), when meshed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The proxy's admin server, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<SocketAddr>,
    /// The proxy's tap server, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_addr: Option<SocketAddr>,
    /// Whether `/ready` answered 200.
    pub ready: bool,
    /// Why the admin server could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The proxy's `/state` document as it sent it (see docs/proxy.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
}
