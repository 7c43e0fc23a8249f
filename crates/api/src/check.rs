//! The local checks of `ferry check --local`, as judgements over API answers, so that the
//! CLI and the dashboard's check page (`GET /api/v1/check`) run the same checks and say the
//! same thing. Fetching is left to each caller; this module only judges.

use serde::{Deserialize, Serialize};

use crate::overview::ProxyInfo;

/// `GET`: the local checks, run by the control plane on itself; answers [`CheckReport`].
pub const CHECK_PATH: &str = "/api/v1/check";

/// Name of the check that the public API answers with a healthy status.
pub const API_ANSWERS: &str = "control-plane: public API answers";
/// Name of the check that the control plane runs the caller's version.
pub const RUNS_THIS_VERSION: &str = "control-plane: runs this version";
/// Name of the check that every proxy the control plane knows answers `/ready`.
pub const PROXIES_READY: &str = "data-plane: proxies are ready";
/// Name of the check that every proxy runs the control plane's version.
pub const PROXIES_VERSION: &str = "data-plane: proxies run this version";

/// Name of the check that every policy document matches something (on a cluster too; not
/// on the dashboard's page).
pub const POLICIES_MATCH: &str =
    "policy: every Server, AuthorizationPolicy and authentication matches something";

/// The local checks the dashboard's page runs too, in the order they run; the first is fatal (nothing else can be read).
pub const LOCAL_CHECKS: [&str; 4] = [
    API_ANSWERS,
    RUNS_THIS_VERSION,
    PROXIES_READY,
    PROXIES_VERSION,
];

/// What a check found: `Ok(seen)`, or `Err((problem, hint))`.
pub type Judgement = Result<String, (String, String)>;

/// The body of [`CHECK_PATH`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The checks that ran, in order.
    pub checks: Vec<CheckLine>,
    /// How many were planned: more than ran when a fatal one failed.
    pub planned: usize,
}

/// One check's result as the API sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckLine {
    /// `category: what holds`.
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was seen when it holds; what is wrong when it does not.
    pub text: String,
    /// What to do about it, when it does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl CheckLine {
    /// A line from a check's name and its judgement.
    pub fn new(name: &str, judgement: Judgement) -> Self {
        match judgement {
            Ok(seen) => Self {
                name: name.to_string(),
                ok: true,
                text: seen,
                hint: None,
            },
            Err((problem, hint)) => Self {
                name: name.to_string(),
                ok: false,
                text: problem,
                hint: Some(hint),
            },
        }
    }
}

/// Judges a `Health` body's `status` and `version` fields.
pub fn judge_health(status: Option<&str>, version: Option<&str>, body: &str) -> Judgement {
    match status {
        Some("ok") => Ok(format!("ok, version {}", version.unwrap_or("?"))),
        _ => Err((
            format!("health says {body}"),
            "read the control plane's logs".to_string(),
        )),
    }
}

/// Judges the control plane's version against `ours`, the version of `who` (`this CLI`).
pub fn judge_version(theirs: Option<&str>, ours: &str, who: &str) -> Judgement {
    match theirs {
        Some(v) if v == ours => Ok(format!("{v}, as {who}")),
        other => Err((
            format!("control plane at {}, {who} at {ours}", other.unwrap_or("?")),
            "run the CLI and control plane of the same release".to_string(),
        )),
    }
}

/// Judges whether every meshed proxy with an admin address answered `/ready`.
pub fn judge_proxies_ready(proxies: &[ProxyInfo]) -> Judgement {
    let watched: Vec<&ProxyInfo> = proxies
        .iter()
        .filter(|p| p.meshed && p.admin_addr.is_some())
        .collect();
    let down: Vec<String> = watched
        .iter()
        .filter(|p| !p.ready)
        .map(|p| {
            let why = p.error.as_deref().unwrap_or("not ready");
            format!("{}/{} ({why})", p.namespace, p.pod)
        })
        .collect();
    if down.is_empty() {
        Ok(format!("{} of {} ready", watched.len(), watched.len()))
    } else {
        Err((
            format!(
                "{} of {} not ready: {}",
                down.len(),
                watched.len(),
                down.join(", ")
            ),
            "check that each instance's proxy runs and that adminAddr in the workloads file is its --admin-listen".to_string(),
        ))
    }
}

/// Judges whether every proxy that sent its `/state` runs `ours` (the control plane's version).
pub fn judge_proxies_version(proxies: &[ProxyInfo], ours: &str) -> Judgement {
    let versions: Vec<(&ProxyInfo, &str)> = proxies
        .iter()
        .filter_map(|p| Some((p, p.state.as_ref()?.get("version")?.as_str()?)))
        .collect();
    let outdated: Vec<String> = versions
        .iter()
        .filter(|(_, v)| *v != ours)
        .map(|(p, v)| format!("{}/{} ({v})", p.namespace, p.pod))
        .collect();
    if outdated.is_empty() {
        Ok(format!("{} proxies, all at {ours}", versions.len()))
    } else {
        Err((
            format!(
                "{} of {} proxies run another version: {}",
                outdated.len(),
                versions.len(),
                outdated.join(", ")
            ),
            "restart them with the ferry-proxy of this release".to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(pod: &str, ready: bool, version: &str) -> ProxyInfo {
        ProxyInfo {
            namespace: "ns".into(),
            pod: pod.into(),
            workload_kind: None,
            workload: None,
            meshed: true,
            identity: None,
            admin_addr: Some("127.0.0.1:1".parse().unwrap()),
            tap_addr: None,
            ready,
            error: (!ready).then(|| "connection refused".into()),
            state: ready.then(|| serde_json::json!({ "version": version })),
        }
    }

    #[test]
    fn proxies_are_judged_by_readiness_and_version() {
        let ps = [proxy("a", true, "1.0"), proxy("b", false, "1.0")];
        let (problem, _) = judge_proxies_ready(&ps).unwrap_err();
        assert_eq!(problem, "1 of 2 not ready: ns/b (connection refused)");
        assert_eq!(
            judge_proxies_version(&ps, "1.0").unwrap(),
            "1 proxies, all at 1.0"
        );
        let (problem, _) = judge_proxies_version(&ps, "2.0").unwrap_err();
        assert_eq!(problem, "1 of 1 proxies run another version: ns/a (1.0)");
    }

    #[test]
    fn versions_and_health() {
        assert_eq!(
            judge_version(Some("1"), "1", "this CLI").unwrap(),
            "1, as this CLI"
        );
        assert!(judge_version(None, "1", "this CLI").is_err());
        assert_eq!(
            judge_health(Some("ok"), Some("1"), "").unwrap(),
            "ok, version 1"
        );
    }
}
