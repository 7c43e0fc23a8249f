//! `ferry trace`: the traces the control plane keeps (`docs/tracing.md`). Without an id it
//! lists recent traces, slow or failed ones with `--min-duration` and `--errors`; with an
//! id it prints the trace as a text waterfall, one line per span.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use ferry_api::trace::{Trace, TraceList, TraceSummary, STATUS_ERROR, TRACES_PATH};

use crate::cluster::ApiArgs;
use crate::control::query_string;
use crate::stat::{align, block_on, columns};

/// `ferry trace [ID]`
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// A trace id (32 hex digits) to print as a waterfall; without it, traces are listed.
    pub id: Option<String>,
    /// Only traces through this workload: `web` or `emojivoto/web`.
    #[arg(short, long)]
    pub workload: Option<String>,
    /// Only traces at least this long, e.g. `250ms`.
    #[arg(long)]
    pub min_duration: Option<String>,
    /// Only traces with a failed span.
    #[arg(long)]
    pub errors: bool,
    /// At most this many traces, newest first (1 to 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = TraceOutput::Table)]
    pub output: TraceOutput,
    /// The control plane's public API: local, or on the kubeconfig's cluster.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// How `ferry trace` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceOutput {
    /// A table of traces, or a waterfall of one trace's spans.
    Table,
    /// The API's JSON.
    Json,
}

/// Columns of the waterfall's timeline.
const BAR_WIDTH: usize = 40;

/// Runs `ferry trace`, printing to stdout.
pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    match &args.id {
        Some(id) => show(args, id),
        None => list(args),
    }
}

/// The list's path and query for `args`.
pub fn list_path(args: &TraceArgs) -> String {
    let mut pairs = vec![("limit", args.limit.to_string())];
    if let Some(workload) = &args.workload {
        pairs.push(("workload", workload.clone()));
    }
    if let Some(min) = &args.min_duration {
        pairs.push(("minDuration", min.clone()));
    }
    if args.errors {
        pairs.push(("status", STATUS_ERROR.to_string()));
    }
    format!("{TRACES_PATH}?{}", query_string(&pairs))
}

fn list(args: &TraceArgs) -> anyhow::Result<()> {
    let path = list_path(args);
    let answer: TraceList = block_on(async {
        let api = args.api.connect().await?;
        anyhow::Ok(api.client.get(&path).await?)
    })??;
    if args.output == TraceOutput::Json {
        println!("{}", serde_json::to_string_pretty(&answer.traces)?);
        return Ok(());
    }
    if answer.traces.is_empty() {
        if !answer.stats.receiving {
            eprintln!("No traces: the control plane's trace receiver is off (ferry-control --trace-listen).");
        } else if answer.kept == 0 {
            eprintln!("No traces received yet: proxies export spans to the control plane's trace receiver (docs/tracing.md).");
        } else {
            eprintln!("No traces match ({} kept).", answer.kept);
        }
        return Ok(());
    }
    print!("{}", table(&answer.traces, now_micros()));
    Ok(())
}

fn show(args: &TraceArgs, id: &str) -> anyhow::Result<()> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("trace id {id:?} must be 32 hex digits, as `ferry trace` lists them");
    }
    let path = format!("{TRACES_PATH}/{id}");
    let trace: Trace = block_on(async {
        let api = args.api.connect().await?;
        anyhow::Ok(api.client.get(&path).await?)
    })??;
    match args.output {
        TraceOutput::Json => println!("{}", serde_json::to_string_pretty(&trace)?),
        TraceOutput::Table => print!("{}", waterfall(&trace)),
    }
    Ok(())
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A duration in microseconds as `850µs`, `12.3ms` or `1.25s`.
pub fn duration(micros: u64) -> String {
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", micros as f64 / 1_000.0)
    } else {
        format!("{:.2}s", micros as f64 / 1_000_000.0)
    }
}

/// How long ago, kubectl style: `12s`, `5m`, `3h`.
fn age(start: u64, now: u64) -> String {
    let secs = now.saturating_sub(start) / 1_000_000;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// `TRACE_ID ROOT NAME SPANS DURATION STATUS AGE`.
pub fn table(traces: &[TraceSummary], now: u64) -> String {
    let header = [
        "TRACE_ID", "ROOT", "NAME", "SPANS", "DURATION", "STATUS", "AGE",
    ];
    let mut lines = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for t in traces {
        let status = if t.error_count > 0 {
            format!("error ({})", t.error_count)
        } else {
            t.status.clone()
        };
        lines.push(vec![
            t.trace_id.clone(),
            t.root_workload
                .clone()
                .unwrap_or_else(|| t.root_service.clone()),
            t.root_name.clone(),
            t.span_count.to_string(),
            duration(t.duration_micros),
            status,
            age(t.start_unix_micros, now),
        ]);
    }
    align(&lines, 3)
}

/// The trace as a waterfall: a header line, then per span its name (indented by depth),
/// service, offset, duration, a bar placed on the trace's timeline, and its status.
pub fn waterfall(trace: &Trace) -> String {
    let s = &trace.summary;
    let mut out = format!(
        "Trace {} · {} · {} spans · {}\n",
        s.trace_id,
        duration(s.duration_micros),
        s.span_count,
        s.status
    );
    let total = s.duration_micros.max(1);
    let header = [
        "SPAN", "SERVICE", "KIND", "OFFSET", "DURATION", "TIMELINE", "STATUS",
    ];
    let mut lines = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for span in &trace.spans {
        let name = format!("{}{}", "  ".repeat(span.depth.min(20)), span.name);
        let status = match &span.status_message {
            Some(message) => format!("{}: {message}", span.status),
            None => span.status.clone(),
        };
        lines.push(vec![
            name,
            span.service.clone(),
            span.kind.clone(),
            duration(span.offset_micros),
            duration(span.duration_micros),
            bar(span.offset_micros, span.duration_micros, total),
            status,
        ]);
    }
    // Name, service and kind left; the figures right; the bar and status left again.
    out.push_str(&columns(
        &lines,
        &[false, false, false, true, true, false, false],
    ));
    out
}

/// `|   ████      |`: where the span lies on the trace's timeline, at least one cell.
pub fn bar(offset: u64, length: u64, total: u64) -> String {
    let cells = BAR_WIDTH as u64;
    let start = (offset.min(total) * cells / total) as usize;
    let start = start.min(BAR_WIDTH - 1);
    let end = ((offset.saturating_add(length)).min(total) * cells).div_ceil(total) as usize;
    let end = end.clamp(start + 1, BAR_WIDTH);
    format!(
        "|{}{}{}|",
        " ".repeat(start),
        "█".repeat(end - start),
        " ".repeat(BAR_WIDTH - end)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ferry_api::trace::Span;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        trace: TraceArgs,
    }

    fn parse(args: &[&str]) -> TraceArgs {
        Cli::parse_from(std::iter::once("trace").chain(args.iter().copied())).trace
    }

    #[test]
    fn list_flags_become_the_api_query() {
        let args = parse(&[
            "--workload",
            "emojivoto/web",
            "--min-duration",
            "250ms",
            "--errors",
        ]);
        assert_eq!(
            list_path(&args),
            "/api/v1/traces?limit=20&workload=emojivoto%2Fweb&minDuration=250ms&status=error"
        );
        assert_eq!(
            list_path(&parse(&["--limit", "5"])),
            "/api/v1/traces?limit=5"
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(850), "850µs");
        assert_eq!(duration(12_345), "12.3ms");
        assert_eq!(duration(1_250_000), "1.25s");
    }

    #[test]
    fn bars_sit_where_the_span_is_on_the_timeline() {
        let full = bar(0, 100, 100);
        assert_eq!(full, format!("|{}|", "█".repeat(BAR_WIDTH)));
        let second_half = bar(50, 50, 100);
        assert_eq!(
            second_half,
            format!("|{}{}|", " ".repeat(20), "█".repeat(20))
        );
        // A span too short to see still gets a cell, and one past the end stays inside.
        let tiny = bar(99, 0, 100);
        assert_eq!(tiny, format!("|{}█|", " ".repeat(BAR_WIDTH - 1)));
        assert_eq!(bar(200, 10, 100).chars().count(), BAR_WIDTH + 2);
    }

    fn span(name: &str, depth: usize, service: &str, offset: u64, dur: u64, error: bool) -> Span {
        Span {
            span_id: format!("{depth:016x}"),
            parent_span_id: None,
            depth,
            name: name.into(),
            kind: if depth % 2 == 1 { "client" } else { "server" }.into(),
            service: service.into(),
            workload: Some(format!("emojivoto/{service}")),
            start_unix_micros: 1_765_000_000_000_000 + offset,
            offset_micros: offset,
            duration_micros: dur,
            status: if error { "error" } else { "unset" }.into(),
            status_message: error.then(|| "503".to_string()),
            attributes: Default::default(),
        }
    }

    fn summary() -> TraceSummary {
        TraceSummary {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            root_name: "POST /api/vote".into(),
            root_service: "web".into(),
            root_workload: Some("emojivoto/web".into()),
            start_unix_micros: 1_765_000_000_000_000,
            duration_micros: 40_000,
            span_count: 3,
            error_count: 1,
            status: "error".into(),
            workloads: vec!["emojivoto/voting".into(), "emojivoto/web".into()],
        }
    }

    #[test]
    fn a_waterfall_indents_children_and_places_their_bars() {
        let trace = Trace {
            summary: summary(),
            spans: vec![
                span("POST /api/vote", 0, "web", 0, 40_000, false),
                span("POST voting-svc", 1, "web", 10_000, 20_000, true),
                span("POST /Vote", 2, "voting", 12_000, 16_000, true),
            ],
        };
        let text = waterfall(&trace);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Trace 4bf92f3577b34da6a3ce929d0e0e4736 · 40.0ms · 3 spans · error"
        );
        assert!(lines[1].starts_with("SPAN "), "{text}");
        assert!(lines[2].starts_with("POST /api/vote "), "{text}");
        assert!(lines[3].starts_with("  POST voting-svc "), "{text}");
        assert!(lines[4].starts_with("    POST /Vote "), "{text}");
        // The client span covers the middle half of the timeline.
        let middle = format!("|{}{}{}|", " ".repeat(10), "█".repeat(20), " ".repeat(10));
        assert!(lines[3].contains(&middle), "{text}");
        assert!(
            lines[3].contains("10.0ms") && lines[3].contains("20.0ms"),
            "{text}"
        );
        assert!(lines[4].ends_with("|   error: 503"), "{text}");
        // Headers sit over their columns: TIMELINE over the bars' left edge.
        let bar_at = lines[2].chars().position(|c| c == '|');
        assert_eq!(lines[1].find("TIMELINE"), bar_at, "{text}");
    }

    #[test]
    fn the_list_shows_root_duration_status_and_age() {
        let now = summary().start_unix_micros + 75_000_000;
        let text = table(&[summary()], now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for want in [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "emojivoto/web",
            "POST /api/vote",
            "40.0ms",
            "error (1)",
            "75s",
        ] {
            assert!(lines[1].contains(want), "{want} in {text}");
        }
    }
}
