//! `ferry stat`: golden metrics per resource (success rate, RPS, latency percentiles,
//! TCP connections), from the control plane's metrics API, printed as Linkerd's
//! `viz stat` prints them.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use ferry_api::resource::Resource;
use ferry_api::stat::{StatAnswer, StatRow, DEFAULT_WINDOW, STAT_PATH};

use crate::cluster::ApiArgs;
use crate::control::query_string;

/// `ferry stat KIND[/NAME] [NAME]`
#[derive(Args, Debug)]
pub struct StatArgs {
    /// The resource kind, optionally with a name: `deploy`, `deploy/web`, `po`, `ns`, `svc/emoji`.
    pub resource: String,
    /// The resource's name (instead of `KIND/NAME`).
    pub name: Option<String>,
    /// The namespace of the resources.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only traffic sent by this resource (`deploy/web`).
    #[arg(long)]
    pub from: Option<String>,
    /// The namespace of --from (default: --namespace).
    #[arg(long)]
    pub from_namespace: Option<String>,
    /// Only traffic sent to this resource (`deploy/emoji`).
    #[arg(long)]
    pub to: Option<String>,
    /// The namespace of --to (default: --namespace).
    #[arg(long)]
    pub to_namespace: Option<String>,
    /// The window rates and percentiles are computed over (15s to 15m).
    #[arg(short = 't', long = "time-window", default_value = DEFAULT_WINDOW)]
    pub window: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The control plane's public API: local, or on the kubeconfig's cluster.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// How `stat` and `edges` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Linkerd's columns.
    Table,
    /// The table plus byte rates (stat) or identities (edges).
    Wide,
    /// The API's rows as JSON.
    Json,
}

/// Runs `ferry stat`, printing to stdout.
pub fn run(args: &StatArgs) -> anyhow::Result<()> {
    let path = query_path(args)?;
    let answer: StatAnswer = block_on(async {
        let api = args.api.connect().await?;
        anyhow::Ok(api.client.get(&path).await?)
    })??;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer.rows)?),
        output => {
            if answer.rows.is_empty() {
                eprintln!("No traffic found.");
            } else {
                print!(
                    "{}",
                    table(&answer.rows, args.all_namespaces, output == Output::Wide)
                );
            }
        }
    }
    Ok(())
}

/// Runs `future` on a current-thread runtime.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

/// The API path and query for the arguments, checking the resources first so a typo is
/// reported without a round trip.
pub fn query_path(args: &StatArgs) -> anyhow::Result<String> {
    let resource = Resource::parse(&args.resource)?;
    let name = match (&resource.name, &args.name) {
        (Some(_), Some(extra)) => {
            anyhow::bail!(
                "give the name once: {} or {} {extra}",
                args.resource,
                resource.kind
            )
        }
        (Some(name), None) | (None, Some(name)) => Some(name.clone()),
        (None, None) => None,
    };
    for other in [&args.from, &args.to].into_iter().flatten() {
        let parsed = Resource::parse(other)?;
        if parsed.name.is_none() {
            anyhow::bail!("--from and --to need a named resource, like deploy/web; got {other:?}");
        }
    }
    if args.from.is_some() && args.to.is_some() {
        anyhow::bail!("--from and --to cannot be combined");
    }
    let mut pairs = vec![("kind", resource.kind.clone())];
    pairs.extend(name.map(|n| ("name", n)));
    if args.all_namespaces {
        pairs.push(("allNamespaces", "true".into()));
    } else {
        pairs.push(("namespace", args.namespace.clone()));
    }
    pairs.extend(args.from.clone().map(|v| ("from", v)));
    pairs.extend(args.from_namespace.clone().map(|v| ("fromNamespace", v)));
    pairs.extend(args.to.clone().map(|v| ("to", v)));
    pairs.extend(args.to_namespace.clone().map(|v| ("toNamespace", v)));
    pairs.push(("window", args.window.clone()));
    Ok(format!("{STAT_PATH}?{}", query_string(&pairs)))
}

/// Linkerd's stat table: `[NAMESPACE] NAME MESHED SUCCESS RPS LATENCY_P50 LATENCY_P95
/// LATENCY_P99 TCP_CONN [READ_BYTES/SEC WRITE_BYTES/SEC]`.
pub fn table(rows: &[StatRow], namespaces: bool, wide: bool) -> String {
    let mut header: Vec<&str> = Vec::new();
    if namespaces {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ]);
    if wide {
        header.extend(["READ_BYTES/SEC", "WRITE_BYTES/SEC"]);
    }
    let mut lines = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for row in rows {
        let mut cells = Vec::new();
        if namespaces {
            cells.push(row.namespace.clone());
        }
        cells.extend([
            row.name.clone(),
            format!("{}/{}", row.meshed.ready, row.meshed.total),
            or_dash(row.success, |s| format!("{:.2}%", s * 100.0)),
            or_dash(row.rps, |r| format!("{r:.1}rps")),
            or_dash(row.latency_ms.p50, ms),
            or_dash(row.latency_ms.p95, ms),
            or_dash(row.latency_ms.p99, ms),
            or_dash(row.tcp_connections, |c| format!("{}", c.round() as u64)),
        ]);
        if wide {
            cells.push(or_dash(row.read_bytes_per_sec, |b| format!("{b:.1}B/s")));
            cells.push(or_dash(row.write_bytes_per_sec, |b| format!("{b:.1}B/s")));
        }
        lines.push(cells);
    }
    // Names (and namespaces) left-aligned, figures right-aligned, as Linkerd prints them.
    let left = usize::from(namespaces) + 1;
    align(&lines, left)
}

fn ms(v: f64) -> String {
    format!("{}ms", v.round() as u64)
}

fn or_dash(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite())
        .map(f)
        .unwrap_or_else(|| "-".into())
}

/// Columns separated by three spaces; the first `left` left-aligned, the rest
/// right-aligned.
pub fn align(lines: &[Vec<String>], left: usize) -> String {
    let count = lines.first().map_or(0, Vec::len);
    let right: Vec<bool> = (0..count).map(|i| i >= left).collect();
    columns(lines, &right)
}

/// Columns separated by three spaces, right-aligned where `right` says so.
pub fn columns(lines: &[Vec<String>], right: &[bool]) -> String {
    let widths: Vec<usize> = (0..right.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths.iter().zip(right))
            .map(|(c, (w, r))| {
                if *r {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("   ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ferry_api::stat::{Latency, Meshed};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        stat: StatArgs,
    }

    fn args(argv: &[&str]) -> StatArgs {
        Cli::try_parse_from(std::iter::once("stat").chain(argv.iter().copied()))
            .unwrap()
            .stat
    }

    fn row(name: &str, success: Option<f64>, rps: Option<f64>, p: [Option<f64>; 3]) -> StatRow {
        StatRow {
            namespace: "emojivoto".into(),
            name: name.into(),
            kind: "deployment".into(),
            meshed: Meshed { ready: 1, total: 2 },
            success,
            rps,
            requests: rps.map(|r| r * 60.0),
            latency_ms: Latency {
                p50: p[0],
                p95: p[1],
                p99: p[2],
            },
            tcp_connections: rps.map(|_| 123.0),
            read_bytes_per_sec: rps.map(|_| 1024.0),
            write_bytes_per_sec: rps.map(|_| 2.5),
        }
    }

    #[test]
    fn prints_linkerds_golden_table() {
        let rows = [row(
            "emoji",
            Some(1.0),
            Some(2.0),
            [Some(123.0), Some(123.0), Some(123.0)],
        )];
        assert_eq!(
            table(&rows, false, false),
            "NAME    MESHED   SUCCESS      RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN\n\
             emoji      1/2   100.00%   2.0rps         123ms         123ms         123ms        123\n"
        );
    }

    #[test]
    fn no_traffic_is_a_dash_and_wide_adds_bytes() {
        let rows = [
            row(
                "voting",
                Some(0.4567),
                Some(12.34),
                [Some(3.4), Some(48.0), Some(97.6)],
            ),
            row("web", None, None, [None, None, None]),
        ];
        let text = table(&rows, true, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NAMESPACE   NAME     MESHED"),
            "{text}"
        );
        assert!(
            lines[0].ends_with("TCP_CONN   READ_BYTES/SEC   WRITE_BYTES/SEC"),
            "{text}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "emojivoto",
                "voting",
                "1/2",
                "45.67%",
                "12.3rps",
                "3ms",
                "48ms",
                "98ms",
                "123",
                "1024.0B/s",
                "2.5B/s"
            ]
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "emojivoto",
                "web",
                "1/2",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-"
            ]
        );
    }

    #[test]
    fn builds_the_query_and_refuses_bad_resources_locally() {
        let path = query_path(&args(&["deploy/web", "-n", "emojivoto", "-t", "30s"])).unwrap();
        assert_eq!(
            path,
            "/api/v1/stat?kind=deployment&name=web&namespace=emojivoto&window=30s"
        );
        let path = query_path(&args(&["deploy", "-A", "--to", "deploy/emoji"])).unwrap();
        assert_eq!(
            path,
            "/api/v1/stat?kind=deployment&allNamespaces=true&to=deploy%2Femoji&window=1m"
        );
        let path = query_path(&args(&["po", "web-0"])).unwrap();
        assert!(
            path.starts_with("/api/v1/stat?kind=pod&name=web-0&"),
            "{path}"
        );
        let err = query_path(&args(&["bogus"])).unwrap_err().to_string();
        assert!(err.contains("unknown resource kind \"bogus\""), "{err}");
        let err = query_path(&args(&["deploy/web", "web"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("give the name once"), "{err}");
        let err = query_path(&args(&["deploy", "--from", "deploy"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("need a named resource"), "{err}");
        let err = query_path(&args(&["deploy", "--from", "deploy/a", "--to", "deploy/b"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be combined"), "{err}");
    }
}
