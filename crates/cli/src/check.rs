//! `ferry check`: named checks against the Kubernetes API, one `✓`/`×` line each with a
//! hint on failure, and a non-zero exit when any fails.
//!
//! `--pre` checks a cluster before `ferry install` (API reachable, version, permissions, no
//! earlier install); without it, the installed control plane, its webhook and certificates,
//! and the meshed pods' proxy versions, and the authorization policy; `--local` a control
//! plane on this machine through its public API (`--api-addr`), the policy documents it
//! loaded included. It talks to the Kubernetes API with the user's kubeconfig
//! (`--kubeconfig`, `KUBECONFIG`, `--context`) or at `--api-server`, and to the installed
//! control plane's public API through a port-forward; the checks' logic is in [`checks`].

mod checks;
mod control_plane;
mod kube;
mod policy;

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use ferry_api::k8s as names;

pub use checks::{local, post_install, pre_install, Check};
pub use kube::{Answer, KubeApi, KubeError};

/// Flags of `ferry check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Check that the cluster is ready for `ferry install` instead of checking an install.
    #[arg(long, conflicts_with = "local")]
    pub pre: bool,
    /// Check a control plane running on this machine, through its public API (`--api-addr`):
    /// its health and version, its proxies, and the policy documents it loaded.
    #[arg(long)]
    pub local: bool,
    /// The control plane's public API, for `--local` (the address every other command uses).
    #[arg(long, env = ferry_api::env::CLI_API_ADDR, default_value = crate::control::DEFAULT_API_ADDR)]
    pub api_addr: String,
    /// The Kubernetes API's URL, instead of the kubeconfig's cluster (`kubectl proxy`'s
    /// `http://127.0.0.1:8001`, or `https://…` with --token).
    #[arg(long, env = ferry_api::env::CLI_KUBE_API)]
    pub api_server: Option<String>,
    /// Bearer token for --api-server.
    #[arg(long, env = ferry_api::env::CLI_KUBE_TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// The kubeconfig and context (when no --api-server is given).
    #[command(flatten)]
    pub kube: crate::cluster::KubeArgs,
    /// Namespace of the control plane.
    #[arg(long, default_value = names::CONTROL_NAMESPACE)]
    pub namespace: String,
    /// How long each API request may take.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    pub timeout: u64,
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It holds; the text says what was seen.
    Pass(String),
    /// It does not hold: what is wrong, and what to do about it.
    Fail { problem: String, hint: String },
    /// It holds, but something looks unintended: what (a line each, printed as a `‼` line
    /// each), and what to do about it. Not a failure (the exit status stays 0).
    Warn { problem: String, hint: String },
}

/// A check's name and what it found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// `category: description`.
    pub name: String,
    /// What it found.
    pub outcome: Outcome,
}

/// Runs checks in order; a failed check marked `fatal` skips the rest.
pub async fn run_checks(api: &KubeApi, checks: &[Check], namespace: &str) -> Vec<CheckResult> {
    let mut results = Vec::new();
    for check in checks {
        let outcome = (check.run)(api, namespace).await;
        let fatal = check.fatal && matches!(outcome, Outcome::Fail { .. });
        results.push(CheckResult {
            name: check.name.to_string(),
            outcome,
        });
        if fatal {
            break;
        }
    }
    results
}

/// The report as printed: a line per check, hints indented, and a summary.
pub fn render(results: &[CheckResult], planned: usize) -> String {
    let mut out = String::new();
    for r in results {
        match &r.outcome {
            Outcome::Pass(seen) => {
                let _ = writeln!(out, "✓ {}: {seen}", r.name);
            }
            Outcome::Fail { problem, hint } => {
                let _ = writeln!(out, "× {}: {problem}", r.name);
                let _ = writeln!(out, "    hint: {hint}");
            }
            Outcome::Warn { problem, hint } => {
                for line in problem.lines() {
                    let _ = writeln!(out, "‼ {}: {line}", r.name);
                }
                let _ = writeln!(out, "    hint: {hint}");
            }
        }
    }
    let warned = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Warn { .. }))
        .count();
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail { .. }))
        .count();
    let skipped = planned - results.len();
    if failed == 0 && warned > 0 {
        let _ = writeln!(
            out,
            "\nall {} checks passed, {warned} with warnings",
            results.len()
        );
    } else if failed == 0 {
        let _ = writeln!(out, "\nall {} checks passed", results.len());
    } else if skipped > 0 {
        let _ = writeln!(
            out,
            "\n{failed} check(s) failed; {skipped} skipped after a fatal failure"
        );
    } else {
        let _ = writeln!(out, "\n{failed} of {} check(s) failed", results.len());
    }
    out
}

/// Runs `ferry check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(args.timeout);
    let api = rt.block_on(async {
        let (client, base) = if args.local {
            let client = args.kube.client(Some((&args.api_addr, None))).await?;
            (client, args.api_addr.clone())
        } else if let Some(server) = &args.api_server {
            let client = args.kube.client(Some((server, args.token.clone()))).await?;
            (client, server.clone())
        } else {
            let config = args.kube.config().await?;
            let base = config.cluster_url.to_string();
            let client =
                ::kube::Client::try_from(config).map_err(crate::cluster::ClusterError::Client)?;
            (client, base)
        };
        anyhow::Ok(KubeApi::new(client, &base, timeout))
    })?;
    let checks = if args.local {
        local()
    } else if args.pre {
        pre_install()
    } else {
        post_install()
    };
    let results = rt.block_on(run_checks(&api, &checks, &args.namespace));
    print!("{}", render(&results, checks.len()));
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail { .. }))
        .count();
    if failed > 0 || results.len() < checks.len() {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}
