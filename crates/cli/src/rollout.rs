//! `ferry rollout`: progressive delivery's state and actions (docs/rollouts.md), from the
//! control plane's `/api/v1/rollouts`.

use std::time::Duration;

use clap::{Args, Subcommand};
use ferry_api::rollout::{
    rollout_path, Action, AnalysisRecord, Figures, RolloutList, RolloutView, Step, ROLLOUTS_PATH,
};

use crate::cluster::ApiArgs;

/// How long `status --watch` waits for a rollout that is not there yet (just applied).
const APPEAR_WAIT: Duration = Duration::from_secs(10);
use crate::stat::{align, block_on, Output};

/// `ferry rollout <command>`
#[derive(Args, Debug)]
pub struct RolloutArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// The rollout subcommands.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Every rollout (no name), or one: its phase, steps and latest analysis.
    Status(StatusArgs),
    /// Start a rollout that has ended again from its first step.
    Start(Target),
    /// Go past the current step now (a pause gate, or the bake); promotes after the last.
    Promote(Target),
    /// Hold a rollout at its step (the bake clock stops).
    Pause(Target),
    /// Let a paused rollout go on.
    Resume(Target),
    /// Send all traffic back to stable and stop.
    Abort(Target),
    /// Past runs: how each ended and why.
    History(Target),
}

/// A rollout, and how to print it.
#[derive(Args, Debug)]
pub struct Target {
    /// The rollout: `NAME` or `rollout/NAME`.
    pub name: String,
    /// Its namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The control plane's public API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `ferry rollout status [NAME]`
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The rollout (`NAME` or `rollout/NAME`); none lists every rollout.
    pub name: Option<String>,
    /// Its namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Print again every second until the rollout ends (or Ctrl-C); waits up to 10 s for a
    /// rollout not there yet (just applied).
    #[arg(short, long)]
    pub watch: bool,
    /// The control plane's public API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `rollout/web`, `ro/web` or `web` → `web`.
pub fn rollout_name(text: &str) -> anyhow::Result<String> {
    let name = match text.split_once('/') {
        Some(("rollout" | "rollouts" | "ro", name)) => name,
        Some((kind, _)) => {
            anyhow::bail!("not a rollout: {text:?} is a {kind}; name one like rollout/web")
        }
        None => text,
    };
    if name.is_empty() {
        anyhow::bail!("name a rollout, like rollout/web");
    }
    Ok(name.to_string())
}

/// Runs `ferry rollout`, printing to stdout.
pub fn run(args: &RolloutArgs) -> anyhow::Result<()> {
    match &args.command {
        RolloutCommand::Status(s) => status(s),
        RolloutCommand::History(t) => {
            let view = block_on(get_one(&t.api, &t.namespace, &rollout_name(&t.name)?))??;
            match t.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&view.status.history)?),
                _ => print!("{}", history_table(&view)),
            }
            Ok(())
        }
        RolloutCommand::Start(t) => act(t, Action::Start),
        RolloutCommand::Promote(t) => act(t, Action::Promote),
        RolloutCommand::Pause(t) => act(t, Action::Pause),
        RolloutCommand::Resume(t) => act(t, Action::Resume),
        RolloutCommand::Abort(t) => act(t, Action::Abort),
    }
}

async fn get_one(api: &ApiArgs, namespace: &str, name: &str) -> anyhow::Result<RolloutView> {
    let api = api.connect().await?;
    Ok(api.client.get(&rollout_path(namespace, name)).await?)
}

fn act(t: &Target, action: Action) -> anyhow::Result<()> {
    let name = rollout_name(&t.name)?;
    let path = format!("{}/{}", rollout_path(&t.namespace, &name), action.as_str());
    let view: RolloutView = block_on(async {
        let api = t.api.connect().await?;
        anyhow::Ok(api.client.post(&path, &serde_json::json!({})).await?)
    })??;
    match t.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        _ => println!(
            "rollout {}/{}: {} at step {} ({})",
            view.namespace,
            view.name,
            view.status.phase.as_str(),
            view.status.step,
            view.status.reason
        ),
    }
    Ok(())
}

fn status(s: &StatusArgs) -> anyhow::Result<()> {
    let Some(name) = &s.name else {
        let list: RolloutList = block_on(async {
            let api = s.api.connect().await?;
            anyhow::Ok(api.client.get(ROLLOUTS_PATH).await?)
        })??;
        match s.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&list.rollouts)?),
            _ if list.rollouts.is_empty() => eprintln!("No rollouts found."),
            _ => print!("{}", list_table(&list.rollouts)),
        }
        return Ok(());
    };
    let name = rollout_name(name)?;
    block_on(async {
        let api = s.api.connect().await?;
        let path = rollout_path(&s.namespace, &name);
        let mut appear_by = s.watch.then(|| tokio::time::Instant::now() + APPEAR_WAIT);
        loop {
            let view: RolloutView = match api.client.get(&path).await {
                Ok(view) => view,
                // Just applied: the control plane reads it within a poll or two.
                Err(crate::control::ControlError::Status { status: 404, .. })
                    if appear_by.is_some_and(|by| tokio::time::Instant::now() < by) =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            appear_by = None;
            match s.output {
                Output::Json => println!("{}", serde_json::to_string(&view)?),
                _ => print!("{}", status_text(&view, now_ms())),
            }
            if !s.watch || view.status.phase.is_final() {
                return anyhow::Ok(());
            }
            if s.output != Output::Json {
                println!();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })?
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `NAMESPACE NAME PHASE STEP CANARY_WEIGHT CANARY STABLE REASON`
pub fn list_table(views: &[RolloutView]) -> String {
    let mut lines = vec![[
        "NAMESPACE",
        "NAME",
        "PHASE",
        "STEP",
        "CANARY",
        "STABLE",
        "TRAFFIC",
        "REASON",
    ]
    .map(String::from)
    .to_vec()];
    for v in views {
        lines.push(vec![
            v.namespace.clone(),
            v.name.clone(),
            v.status.phase.as_str().to_string(),
            format!(
                "{}/{}",
                v.status.step.min(v.spec.steps.len()),
                v.spec.steps.len()
            ),
            v.spec.canary.name.clone(),
            v.spec.stable.name.clone(),
            traffic_text(v),
            v.status.reason.clone(),
        ]);
    }
    align(&lines, 8)
}

fn traffic_text(v: &RolloutView) -> String {
    match &v.traffic.matches {
        Some(_) => "matching→canary".to_string(),
        None => format!("{}% canary", v.traffic.canary_weight),
    }
}

fn step_text(s: &Step) -> String {
    let bake = s
        .bake
        .as_deref()
        .map(|b| format!(", bake {b}"))
        .unwrap_or_default();
    if let Some(w) = s.weight {
        return format!("weight {w}%{bake}");
    }
    if let Some(m) = &s.matches {
        let mut rules: Vec<String> = m
            .headers
            .iter()
            .map(|h| format!("{} {} {:?}", h.name, h.match_type, h.value))
            .collect();
        rules.extend(
            m.cookies
                .iter()
                .map(|c| format!("cookie {}={}", c.name, c.value)),
        );
        return format!("match {}{bake}", rules.join(" and "));
    }
    if let Some(c) = &s.confirm {
        return format!("confirm (until {} answers 200)", c.url);
    }
    "pause (until promoted)".to_string()
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.2}%"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.0}ms"))
}

fn figures_row(who: &str, f: &Figures) -> Vec<String> {
    vec![
        who.to_string(),
        format!("{:.0}", f.requests),
        percent(f.success),
        ms(f.p99_ms),
    ]
}

/// One rollout: phase and reason, its steps (the current one marked), and the latest
/// analysis, canary against stable.
pub fn status_text(v: &RolloutView, now_ms: i64) -> String {
    let s = &v.status;
    let mut out = format!(
        "Rollout {}/{}: {} at step {}/{} ({}), canary {} vs stable {} on svc/{}:{}\n",
        v.namespace,
        v.name,
        s.phase.as_str(),
        s.step.min(v.spec.steps.len()),
        v.spec.steps.len(),
        traffic_text(v),
        v.spec.canary.name,
        v.spec.stable.name,
        v.spec.service.name,
        v.spec.service.port,
    );
    out.push_str(&format!("Reason: {}\n", s.reason));
    if s.failures > 0 {
        out.push_str(&format!("Failed analyses: {}\n", s.failures));
    }
    out.push_str("Steps:\n");
    for (i, step) in v.spec.steps.iter().enumerate() {
        let (mark, state) = if i < s.step {
            (" ", "done".to_string())
        } else if i == s.step && !s.phase.is_final() {
            let running = (s.paused_ms.unwrap_or(now_ms) - s.step_started_ms).max(0) / 1000;
            (
                ">",
                format!("{} for {running}s", s.phase.as_str().to_lowercase()),
            )
        } else {
            (" ", String::new())
        };
        out.push_str(&format!("  {mark} {i}  {:<48} {state}\n", step_text(step)));
    }
    if let Some(a) = s.analyses.last() {
        out.push_str(&analysis_text(a));
    }
    out
}

fn analysis_text(a: &AnalysisRecord) -> String {
    let mut out = format!(
        "Latest analysis (step {}, {:.0}s window): {:?}{}\n",
        a.step,
        a.window_seconds,
        a.verdict,
        if a.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", a.reason)
        }
    );
    let lines = vec![
        ["", "REQUESTS", "SUCCESS", "LATENCY_P99"]
            .map(String::from)
            .to_vec(),
        figures_row("canary", &a.canary),
        figures_row("stable", &a.stable),
    ];
    for line in align(&lines, 1).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// `STARTED ENDED OUTCOME STEP CANARY REASON`, oldest first.
pub fn history_table(v: &RolloutView) -> String {
    if v.status.history.is_empty() {
        return "No finished runs yet.\n".to_string();
    }
    let time = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| ms.to_string())
    };
    let mut lines = vec![["STARTED", "ENDED", "OUTCOME", "STEP", "CANARY", "REASON"]
        .map(String::from)
        .to_vec()];
    for r in &v.status.history {
        lines.push(vec![
            time(r.started_ms),
            time(r.ended_ms),
            r.outcome.clone(),
            r.step.to_string(),
            r.canary.clone(),
            r.reason.clone(),
        ]);
    }
    align(&lines, 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_taken_with_or_without_their_kind() {
        assert_eq!(rollout_name("rollout/web").unwrap(), "web");
        assert_eq!(rollout_name("ro/web").unwrap(), "web");
        assert_eq!(rollout_name("web").unwrap(), "web");
        assert_eq!(
            rollout_name("deploy/web").unwrap_err().to_string(),
            "not a rollout: \"deploy/web\" is a deploy; name one like rollout/web"
        );
    }
}
