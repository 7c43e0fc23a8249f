//! `ferry dashboard`: checks that the control plane answers, prints the dashboard's URL
//! (optionally of one resource's page) and opens it in a browser when one is available.
//!
//! The dashboard itself is served by `ferry-control` on its public API port; this command
//! only finds it. Locally there is nothing to forward; on Kubernetes, run
//! `kubectl -n ferry port-forward svc/ferry-control 8084` first.

use std::process::{Command, Stdio};

use clap::Args;
use ferry_api::control_api::{Health, HEALTH_PATH};
use ferry_api::resource::Resource;

use crate::cluster::ApiArgs;

/// Flags of `ferry dashboard`.
#[derive(Args, Debug, Clone)]
pub struct DashboardArgs {
    /// Open this resource's page instead of the overview: `deploy/voting`, `ns/emojivoto`.
    pub resource: Option<String>,
    /// The resource's namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The control plane's public API, which serves the dashboard: local, or on the
    /// kubeconfig's cluster (then kept forwarded until Ctrl-C).
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only print the URL; do not start a browser.
    #[arg(long)]
    pub no_open: bool,
}

/// The dashboard URL for `args` served at `base`: the overview, or the page of the named
/// resource.
pub fn url(args: &DashboardArgs, base: &str) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let Some(resource) = &args.resource else {
        return Ok(format!("{base}/#/"));
    };
    let r = Resource::parse(resource)?;
    let Some(name) = r.name else {
        anyhow::bail!("name one resource, e.g. deploy/web (got {resource:?})");
    };
    Ok(match r.kind.as_str() {
        "namespace" => format!("{base}/#/ns/{name}"),
        kind => format!("{base}/#/workload/{}/{kind}/{name}", args.namespace),
    })
}

/// Runs `ferry dashboard`.
pub fn run(args: &DashboardArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let api = args.api.connect().await?;
        let url = url(args, &api.base)?;
        let health: Health = api.client.get(HEALTH_PATH).await?;
        println!("Ferry dashboard (control plane {}): {url}", health.version);
        if !args.no_open {
            match open(&url) {
                Ok(()) => println!("opening it in your browser"),
                Err(why) => println!("open it in a browser ({why})"),
            }
        }
        if let Some(forward) = &api.forward {
            // The URL lives as long as the port-forward: keep it until Ctrl-C.
            println!(
                "forwarding {} to {}; press Ctrl-C to stop",
                forward.local_addr(),
                forward.target()
            );
            tokio::signal::ctrl_c().await?;
        }
        anyhow::Ok(())
    })
}

/// Starts `xdg-open URL` (or `open` on macOS) without waiting for the browser.
fn open(url: &str) -> Result<(), String> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if cfg!(target_os = "linux")
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        return Err("no graphical session here".to_string());
    }
    Command::new(opener)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot run {opener}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(resource: Option<&str>) -> DashboardArgs {
        DashboardArgs {
            resource: resource.map(str::to_string),
            namespace: "emojivoto".to_string(),
            api: ApiArgs::local("http://127.0.0.1:8084/"),
            no_open: true,
        }
    }

    #[test]
    fn urls_name_the_page() {
        assert_eq!(
            url(&args(None), "http://127.0.0.1:8084/").unwrap(),
            "http://127.0.0.1:8084/#/"
        );
        assert_eq!(
            url(&args(Some("deploy/voting")), "http://127.0.0.1:8084/").unwrap(),
            "http://127.0.0.1:8084/#/workload/emojivoto/deployment/voting"
        );
        assert_eq!(
            url(&args(Some("ns/emojivoto")), "http://127.0.0.1:8084/").unwrap(),
            "http://127.0.0.1:8084/#/ns/emojivoto"
        );
        assert!(url(&args(Some("deploy")), "http://127.0.0.1:8084/").is_err());
    }
}
