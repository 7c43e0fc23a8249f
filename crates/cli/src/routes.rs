//! `ferry routes`: per-route golden metrics of the routes a resource's proxies apply
//! (docs/routes.md), from the control plane's metrics API. Effective figures are what the
//! callers saw; `-o wide` adds the actual ones (every try, so retries show).

use clap::Args;
use ferry_api::resource::Resource;
use ferry_api::stat::{RouteRow, RoutesAnswer, DEFAULT_WINDOW, ROUTES_PATH};

use crate::cluster::ApiArgs;
use crate::control::query_string;
use crate::stat::{align, block_on, Output};

/// `ferry routes KIND/NAME [--to svc/NAME]`
#[derive(Args, Debug)]
pub struct RoutesArgs {
    /// The sender whose outbound routes to show: `deploy/web`, `po/web-0`, `ns/emojivoto`.
    pub resource: String,
    /// The namespace of the resource.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Only the routes of this Service (`svc/voting-svc`).
    #[arg(long)]
    pub to: Option<String>,
    /// The namespace of --to (default: --namespace).
    #[arg(long)]
    pub to_namespace: Option<String>,
    /// The window rates and percentiles are computed over (15s to 15m).
    #[arg(short = 't', long = "time-window", default_value = DEFAULT_WINDOW)]
    pub window: String,
    /// Output format (`wide` adds effective and actual success and RPS).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The control plane's public API: local, or on the kubeconfig's cluster.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `ferry routes`, printing to stdout.
pub fn run(args: &RoutesArgs) -> anyhow::Result<()> {
    let path = query_path(args)?;
    let answer: RoutesAnswer = block_on(async {
        let api = args.api.connect().await?;
        anyhow::Ok(api.client.get(&path).await?)
    })??;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer.rows)?),
        output if answer.rows.is_empty() => {
            let _ = output;
            eprintln!("No route traffic found.");
        }
        output => print!("{}", table(&answer.rows, output == Output::Wide)),
    }
    Ok(())
}

/// The API path and query for the arguments.
pub fn query_path(args: &RoutesArgs) -> anyhow::Result<String> {
    let resource = Resource::parse(&args.resource)?;
    let Some(name) = resource.name.clone() else {
        anyhow::bail!("name the sender, like deploy/web; got {:?}", args.resource);
    };
    let mut pairs = vec![
        ("kind", resource.kind.clone()),
        ("name", name),
        ("namespace", args.namespace.clone()),
    ];
    if let Some(to) = &args.to {
        let parsed = Resource::parse(to)?;
        if parsed.name.is_none() {
            anyhow::bail!("--to needs a named Service, like svc/voting-svc; got {to:?}");
        }
        pairs.push(("to", to.clone()));
    }
    pairs.extend(args.to_namespace.clone().map(|v| ("toNamespace", v)));
    pairs.push(("window", args.window.clone()));
    Ok(format!("{ROUTES_PATH}?{}", query_string(&pairs)))
}

/// `ROUTE SERVICE SUCCESS RPS LATENCY_P50 LATENCY_P95 LATENCY_P99 RETRIES`, and with
/// `wide` Linkerd's `EFFECTIVE_SUCCESS EFFECTIVE_RPS ACTUAL_SUCCESS ACTUAL_RPS`.
pub fn table(rows: &[RouteRow], wide: bool) -> String {
    let mut header = vec![
        "ROUTE",
        "SERVICE",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "RETRIES",
    ];
    if wide {
        header.extend([
            "EFFECTIVE_SUCCESS",
            "EFFECTIVE_RPS",
            "ACTUAL_SUCCESS",
            "ACTUAL_RPS",
        ]);
    }
    let pct = |v: Option<f64>| dash(v, |s| format!("{:.2}%", s * 100.0));
    let rps = |v: Option<f64>| dash(v, |r| format!("{r:.1}rps"));
    let ms = |v: Option<f64>| dash(v, |m| format!("{}ms", m.round() as u64));
    let mut lines = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for row in rows {
        let mut cells = vec![
            row.route.clone(),
            row.service.clone(),
            pct(row.success),
            rps(row.rps),
            ms(row.latency_ms.p50),
            ms(row.latency_ms.p95),
            ms(row.latency_ms.p99),
            rps(row.retries_per_sec),
        ];
        if wide {
            cells.extend([
                pct(row.success),
                rps(row.rps),
                pct(row.actual_success),
                rps(row.actual_rps),
            ]);
        }
        lines.push(cells);
    }
    align(&lines, 2)
}

fn dash(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite())
        .map(f)
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::stat::Latency;

    #[test]
    fn prints_effective_and_actual_figures() {
        let rows = [RouteRow {
            service: "emojivoto/voting-svc:8080".into(),
            route: "HTTPRoute/emojivoto/voting-retries".into(),
            success: Some(0.999),
            rps: Some(10.0),
            latency_ms: Latency {
                p50: Some(1.2),
                p95: Some(4.0),
                p99: Some(9.6),
            },
            retries_per_sec: Some(3.0),
            actual_success: Some(0.999 * 10.0 / 13.0),
            actual_rps: Some(13.0),
        }];
        let out = table(&rows, true);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ROUTE"), "{out}");
        assert!(lines[0].ends_with("ACTUAL_RPS"), "{out}");
        for cell in [
            "HTTPRoute/emojivoto/voting-retries",
            "99.90%",
            "10.0rps",
            "10ms",
            "3.0rps",
            "76.85%",
            "13.0rps",
        ] {
            assert!(lines[1].contains(cell), "{cell} in {out}");
        }
        assert!(!table(&rows, false).contains("ACTUAL"));
    }
}
