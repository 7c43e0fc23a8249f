//! Which proxies to scrape and the labels their samples get: from discovery, never from
//! the proxies themselves (a proxy does not label its own workload; the control plane
//! knows it). The embedded scraper and Prometheus' HTTP service discovery
//! ([`ferry_api::stat::PROMETHEUS_TARGETS_PATH`]) read the same list.

use std::net::SocketAddr;

use ferry_api::destination::{workload_label, LABEL_NAMESPACE, LABEL_POD, LABEL_SERVICE_ACCOUNT};
use ferry_api::stat::PrometheusTargetGroup;

use super::Labels;
use crate::model::ClusterState;

/// One proxy to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its admin server (`/metrics`).
    pub admin_addr: SocketAddr,
    /// `namespace`, `pod`, the workload kind's label (`deployment=web`), `serviceaccount`.
    pub labels: Labels,
}

/// Every instance with an admin address, sorted by namespace and pod; made one at a time,
/// so a scrape round over 10,000 proxies holds only the labels of those in flight.
pub fn targets(state: &ClusterState) -> impl Iterator<Item = Target> + '_ {
    state.instances.iter().filter_map(|(at, instance)| {
        let admin_addr = instance.admin_addr?;
        let mut labels = Labels::new();
        labels.insert(LABEL_NAMESPACE.into(), at.namespace.clone());
        labels.insert(LABEL_POD.into(), at.name.clone());
        labels.insert(
            LABEL_SERVICE_ACCOUNT.into(),
            instance.service_account.clone(),
        );
        if let Some(owner) = &instance.owner {
            labels.insert(workload_label(&owner.kind).into(), owner.name.clone());
        }
        Some(Target { admin_addr, labels })
    })
}

/// The same targets in Prometheus' `http_sd_configs` format, one group per proxy.
pub fn prometheus_groups(state: &ClusterState) -> Vec<PrometheusTargetGroup> {
    targets(state)
        .map(|t| PrometheusTargetGroup {
            targets: vec![t.admin_addr.to_string()],
            labels: t.labels,
        })
        .collect()
}
