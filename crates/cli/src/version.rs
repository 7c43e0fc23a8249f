//! `ferry version`: this CLI's version and git revision and, when the control plane's public
//! API answers, the control plane's and every version its proxies run, as `linkerd version`
//! prints them. The proxies' versions come from their `/state` documents, which the control
//! plane passes through in `GET /api/v1/proxies`.

use std::collections::BTreeMap;

use clap::Args;
use ferry_api::control_api::{Health, HEALTH_PATH};
use ferry_api::overview::{Proxies, ProxyInfo, PROXIES_PATH};
use ferry_api::version;

use crate::cluster::ApiArgs;
use crate::stat::block_on;

/// Flags of `ferry version`.
#[derive(Args, Debug, Clone)]
pub struct VersionArgs {
    /// Print only this CLI's version; do not contact the control plane.
    #[arg(long)]
    pub client: bool,
    /// The control plane's public API: local, or on the kubeconfig's cluster.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `0.1.0 (git 0123456789ab)`, or the bare version when the revision is not known.
pub fn describe(version: &str, git_sha: Option<&str>) -> String {
    match git_sha {
        Some(sha) if !sha.is_empty() => format!("{version} (git {sha})"),
        _ => version.to_string(),
    }
}

/// Each version the proxies report (from `/state`), with how many proxies run it; proxies
/// whose state the control plane could not read are counted under `unknown`.
pub fn proxy_versions(proxies: &[ProxyInfo]) -> BTreeMap<String, usize> {
    let mut versions = BTreeMap::new();
    for proxy in proxies.iter().filter(|p| p.meshed) {
        let field = |name: &str| {
            proxy
                .state
                .as_ref()
                .and_then(|s| s.get(name))
                .and_then(|v| v.as_str())
        };
        let seen = match field("version") {
            Some(v) => describe(v, field("git_sha")),
            None => "unknown".to_string(),
        };
        *versions.entry(seen).or_insert(0) += 1;
    }
    versions
}

/// The lines `ferry version` prints after the client's, from what the API answered.
pub fn server_lines(
    health: Result<Health, String>,
    proxies: Result<Vec<ProxyInfo>, String>,
) -> Vec<String> {
    let mut lines = vec![match health {
        Ok(h) => format!(
            "Server version: {}",
            describe(&h.version, h.git_sha.as_deref())
        ),
        Err(e) => format!("Server version: unavailable ({e})"),
    }];
    match proxies {
        Ok(proxies) => {
            let versions = proxy_versions(&proxies);
            if versions.is_empty() {
                lines.push("Proxy versions: no meshed proxies".to_string());
            }
            for (v, n) in versions {
                let noun = if n == 1 { "proxy" } else { "proxies" };
                lines.push(format!("Proxy version: {v} ({n} {noun})"));
            }
        }
        Err(e) => lines.push(format!("Proxy versions: unavailable ({e})")),
    }
    lines
}

/// Runs `ferry version`, printing to stdout.
pub fn run(args: &VersionArgs) -> anyhow::Result<()> {
    println!(
        "Client version: {}",
        describe(version::VERSION, Some(version::GIT_SHA))
    );
    if args.client {
        return Ok(());
    }
    let (health, proxies) = block_on(async {
        let api = match args.api.connect().await {
            Ok(api) => api,
            Err(e) => {
                return (
                    Err(format!("{e:#}")),
                    Err("the control plane did not answer".to_string()),
                )
            }
        };
        match api.client.get::<Health>(HEALTH_PATH).await {
            Ok(health) => {
                let proxies = api.client.get::<Proxies>(PROXIES_PATH).await;
                (
                    Ok(health),
                    proxies.map(|p| p.proxies).map_err(|e| e.to_string()),
                )
            }
            Err(e) => (
                Err(e.to_string()),
                Err("the control plane did not answer".to_string()),
            ),
        }
    })?;
    for line in server_lines(health, proxies) {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxy(pod: &str, state: Option<serde_json::Value>) -> ProxyInfo {
        ProxyInfo {
            namespace: "ns".into(),
            pod: pod.into(),
            workload_kind: None,
            workload: None,
            meshed: true,
            identity: None,
            admin_addr: None,
            tap_addr: None,
            ready: state.is_some(),
            error: None,
            state,
        }
    }

    #[test]
    fn lists_the_server_and_each_proxy_version_with_counts() {
        let health = Health {
            status: "ok".into(),
            version: "0.1.0".into(),
            git_sha: Some("0123456789ab".into()),
        };
        let proxies = vec![
            proxy(
                "a",
                Some(json!({"version": "0.1.0", "git_sha": "0123456789ab"})),
            ),
            proxy(
                "b",
                Some(json!({"version": "0.1.0", "git_sha": "0123456789ab"})),
            ),
            proxy("c", Some(json!({"version": "0.0.9"}))),
            proxy("d", None),
        ];
        assert_eq!(
            server_lines(Ok(health), Ok(proxies)),
            [
                "Server version: 0.1.0 (git 0123456789ab)",
                "Proxy version: 0.0.9 (1 proxy)",
                "Proxy version: 0.1.0 (git 0123456789ab) (2 proxies)",
                "Proxy version: unknown (1 proxy)",
            ]
        );
    }

    #[test]
    fn an_unreachable_control_plane_is_said_so() {
        let lines = server_lines(Err("refused".into()), Err("no answer".into()));
        assert_eq!(
            lines,
            [
                "Server version: unavailable (refused)",
                "Proxy versions: unavailable (no answer)",
            ]
        );
        assert_eq!(
            server_lines(
                Ok(Health {
                    status: "ok".into(),
                    version: "0.1.0".into(),
                    git_sha: None
                }),
                Ok(vec![])
            ),
            ["Server version: 0.1.0", "Proxy versions: no meshed proxies"]
        );
    }
}
