//! `ferry top`: a live table of the most frequent requests of a resource — by source,
//! destination, method and path — with counts, best/worst/last latency and success
//! rate, built from the same tap stream as `ferry tap`. On a terminal it redraws in
//! place every refresh; otherwise it prints one snapshot per refresh.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use clap::Args;
use ferry_api::tap::{TapEvent, TapEventKind};

use crate::tap::{Problems, TapMessage, TapStream, TapTarget};

/// `ferry top RESOURCE`
#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    target: TapTarget,
    /// How often the table is redrawn.
    #[arg(long, default_value = "1s", value_parser = humantime_duration)]
    refresh: Duration,
    /// Stop after this long (default: until Ctrl-C or the stream ends).
    #[arg(long, value_parser = humantime_duration)]
    duration: Option<Duration>,
    /// Most rows shown.
    #[arg(long, default_value_t = 20)]
    rows: usize,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 2s, 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: expected e.g. 500ms, 2s, 1m"
            ))
        }
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("invalid duration {s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// One row: requests sharing source, destination, method and path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// The client (pod name, else address).
    pub source: String,
    /// The server (pod name, else address).
    pub destination: String,
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Requests ended.
    pub count: u64,
    /// Successes among them.
    pub successes: u64,
    /// Fastest, in microseconds.
    pub best: u64,
    /// Slowest.
    pub worst: u64,
    /// Most recent.
    pub last: u64,
}

/// Follows requests from `req` to `end` and aggregates them into rows.
#[derive(Default)]
pub struct Table {
    open: HashMap<(String, String), Open>,
    rows: HashMap<(String, String, String, String), Row>,
}

struct Open {
    key: (String, String, String, String),
    status: Option<u16>,
}

/// Workload label keys, as discovery writes them, and kubectl's short kind.
const WORKLOADS: [(&str, &str); 6] = [
    ("deployment", "deploy"),
    ("statefulset", "sts"),
    ("daemonset", "ds"),
    ("replicaset", "rs"),
    ("k8s_job", "job"),
    ("cronjob", "cronjob"),
];

/// A peer's pod, else its workload (known from its mTLS identity), else its IP.
fn peer_name(p: &ferry_api::tap::TapPeer) -> String {
    if let Some(pod) = p.labels.get("pod") {
        return pod.clone();
    }
    for (key, short) in WORKLOADS {
        if let Some(name) = p.labels.get(key) {
            return format!("{short}/{name}");
        }
    }
    p.addr
        .rsplit_once(':')
        .map_or(p.addr.clone(), |(ip, _)| ip.to_string())
}

impl Table {
    /// Takes one event into account.
    pub fn add(&mut self, e: &TapEvent) {
        let id = (e.tapped_pod.clone(), e.id.clone());
        match e.kind {
            TapEventKind::Req => {
                let path = e.path.clone().unwrap_or_default();
                let path = path.split('?').next().unwrap_or_default().to_string();
                let key = (
                    peer_name(&e.source),
                    peer_name(&e.destination),
                    e.method.clone().unwrap_or_default(),
                    path,
                );
                self.open.insert(id, Open { key, status: None });
            }
            TapEventKind::Rsp => {
                if let Some(open) = self.open.get_mut(&id) {
                    open.status = e.status;
                }
            }
            TapEventKind::End => {
                let Some(open) = self.open.remove(&id) else {
                    return;
                };
                let latency = e.latency_micros.unwrap_or_default();
                let ok = open.status.is_some_and(|s| s < 500)
                    && e.reset_error.is_none()
                    && e.grpc_status.is_none_or(|c| c == 0);
                let row = self.rows.entry(open.key.clone()).or_insert_with(|| Row {
                    source: open.key.0.clone(),
                    destination: open.key.1.clone(),
                    method: open.key.2.clone(),
                    path: open.key.3.clone(),
                    best: u64::MAX,
                    ..Row::default()
                });
                row.count += 1;
                row.successes += u64::from(ok);
                row.best = row.best.min(latency);
                row.worst = row.worst.max(latency);
                row.last = latency;
            }
        }
    }

    /// The rows, most frequent first (then by path), at most `limit`.
    pub fn rows(&self, limit: usize) -> Vec<Row> {
        let mut rows: Vec<Row> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                (&a.source, &a.destination, &a.path).cmp(&(&b.source, &b.destination, &b.path))
            })
        });
        rows.truncate(limit);
        rows
    }

    /// The table as text, Linkerd's `viz top` columns.
    pub fn render(&self, limit: usize) -> String {
        let mut cells = vec![[
            "Source",
            "Destination",
            "Method",
            "Path",
            "Count",
            "Best",
            "Worst",
            "Last",
            "Success Rate",
        ]
        .map(String::from)];
        for r in self.rows(limit) {
            cells.push([
                r.source.clone(),
                r.destination.clone(),
                r.method.clone(),
                r.path.clone(),
                r.count.to_string(),
                micros(r.best),
                micros(r.worst),
                micros(r.last),
                format!("{:.2}%", 100.0 * r.successes as f64 / r.count as f64),
            ]);
        }
        let widths: Vec<usize> = (0..9)
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &cells {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        if cells.len() == 1 {
            out.push_str("(no requests yet)\n");
        }
        out
    }
}

/// A latency the way Go prints a duration: `532µs`, `1.234ms`, `2.5s`.
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        trim(format!("{:.3}", us as f64 / 1e3)) + "ms"
    } else {
        trim(format!("{:.3}", us as f64 / 1e6)) + "s"
    }
}

fn trim(s: String) -> String {
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Runs `ferry top`: redraws until Ctrl-C, `--duration`, or the end of the stream.
pub fn run(args: &TopArgs) -> anyhow::Result<()> {
    let query = args.target.query()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let terminal = std::io::stdout().is_terminal();
    runtime.block_on(async {
        let api = args.target.api.connect().await?;
        let mut stream = TapStream::open(&api.client, &query).await?;
        let mut table = Table::default();
        let mut problems = Problems::default();
        let mut tick = tokio::time::interval(args.refresh);
        tick.tick().await;
        let until = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until);
        let mut stdout = std::io::stdout();
        let mut ended = false;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = &mut until => break,
                _ = tick.tick() => {
                    if draw(&mut stdout, &table, args.rows, terminal).is_err() {
                        return Ok(());
                    }
                }
                msg = stream.next() => match msg? {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(TapMessage::Error(e)) => problems.error(e),
                    Some(TapMessage::Event(e)) => {
                        problems.event();
                        table.add(&e);
                    }
                },
            }
        }
        let _ = draw(&mut stdout, &table, args.rows, terminal);
        problems.finish(ended)
    })
}

fn draw(
    out: &mut std::io::Stdout,
    table: &Table,
    rows: usize,
    terminal: bool,
) -> std::io::Result<()> {
    let text = table.render(rows);
    if terminal {
        // Clear the screen and home the cursor, then redraw.
        write!(out, "\x1b[2J\x1b[H{text}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::tap::{TapDirection, TapPeer};

    fn ev(kind: TapEventKind, id: &str, path: &str) -> TapEvent {
        TapEvent {
            kind,
            id: id.into(),
            tapped_pod: "voting-0".into(),
            tapped_namespace: "emojivoto".into(),
            proxy_direction: TapDirection::Outbound,
            source: TapPeer {
                addr: "127.0.0.1:5000".into(),
                labels: [("pod".to_string(), "voting-0".to_string())].into(),
            },
            destination: TapPeer {
                addr: "127.0.0.1:8080".into(),
                labels: Default::default(),
            },
            tls: "true".into(),
            client_id: None,
            server_id: None,
            method: Some("GET".into()),
            scheme: None,
            authority: None,
            path: Some(path.into()),
            status: None,
            latency_micros: None,
            duration_micros: None,
            response_bytes: None,
            grpc_status: None,
            reset_error: None,
            proxy_error: None,
            headers: Vec::new(),
        }
    }

    fn request(t: &mut Table, id: &str, path: &str, status: u16, latency: u64) {
        t.add(&ev(TapEventKind::Req, id, path));
        let mut rsp = ev(TapEventKind::Rsp, id, path);
        rsp.status = Some(status);
        t.add(&rsp);
        let mut end = ev(TapEventKind::End, id, path);
        end.latency_micros = Some(latency);
        t.add(&end);
    }

    #[test]
    fn aggregates_by_source_destination_method_and_path() {
        let mut t = Table::default();
        request(&mut t, "0:0", "/api/vote?choice=bacon", 500, 1500);
        request(&mut t, "0:1", "/api/vote?choice=doughnut", 200, 800);
        request(&mut t, "0:2", "/api/list", 200, 2_500_000);
        let text = t.render(10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Source    Destination  Method  Path       Count  Best   Worst  Last   Success Rate"
        );
        assert_eq!(
            lines[1],
            "voting-0  127.0.0.1    GET     /api/vote  2      800µs  1.5ms  800µs  50.00%"
        );
        assert_eq!(
            lines[2],
            "voting-0  127.0.0.1    GET     /api/list  1      2.5s   2.5s   2.5s   100.00%"
        );
        assert!(Table::default().render(5).contains("(no requests yet)"));
        let mut caller = ev(TapEventKind::Req, "0:0", "/").source;
        caller.labels = [("deployment".to_string(), "web".to_string())].into();
        assert_eq!(peer_name(&caller), "deploy/web");
        caller.labels.clear();
        assert_eq!(peer_name(&caller), "127.0.0.1");
        assert!(humantime_duration("250ms").is_ok() && humantime_duration("x").is_err());
    }
}
