//! `ferry diagnostics endpoints`: what the control plane's destination service answers for
//! an authority, exactly as a proxy would be told — to tell a discovery problem from a
//! proxy problem.

use std::fmt::Write as _;

use clap::{Args, Subcommand, ValueEnum};
use ferry_api::control_api::{Endpoints, ENDPOINTS_PATH};

use crate::cluster::ApiArgs;
use crate::control::query_string;

/// `ferry diagnostics …`
#[derive(Args, Debug)]
pub struct DiagnosticsArgs {
    /// The control plane's public API: local, or on the kubeconfig's cluster.
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    command: DiagnosticsCommand,
}

#[derive(Subcommand, Debug)]
enum DiagnosticsCommand {
    /// Show the endpoints the control plane gives a proxy for each authority.
    Endpoints(EndpointsArgs),
}

/// `ferry diagnostics endpoints AUTHORITY…`
#[derive(Args, Debug)]
struct EndpointsArgs {
    /// Authorities as a proxy asks for them: `echo.default:8080`, `web-svc.emojivoto.svc.cluster.local:80`.
    #[arg(required = true)]
    authorities: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Runs `ferry diagnostics …`, printing to stdout.
pub fn run(args: &DiagnosticsArgs) -> anyhow::Result<()> {
    let DiagnosticsCommand::Endpoints(endpoints) = &args.command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answers = runtime.block_on(async {
        let api = args.api.connect().await?;
        let client = &api.client;
        let mut answers = Vec::new();
        for authority in &endpoints.authorities {
            let query = format!(
                "{ENDPOINTS_PATH}?{}",
                query_string([("authority", authority)])
            );
            answers.push(client.get::<Endpoints>(&query).await?);
        }
        anyhow::Ok(answers)
    })?;
    match endpoints.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answers)?),
        Output::Table => print!("{}", table(&answers)),
    }
    if let Some(unknown) = answers.iter().find(|a| !a.exists) {
        anyhow::bail!("the control plane knows no service {}", unknown.authority);
    }
    Ok(())
}

/// The table Linkerd's `diagnostics endpoints` prints, with the identity the peer must prove.
pub fn table(answers: &[Endpoints]) -> String {
    let mut rows =
        vec![["NAMESPACE", "IP", "PORT", "POD", "SERVICE", "IDENTITY"].map(String::from)];
    for answer in answers {
        let service = match (
            answer.metric_labels.get("service"),
            answer.metric_labels.get("namespace"),
        ) {
            (Some(s), Some(ns)) => format!("{s}.{ns}"),
            _ => answer.authority.clone(),
        };
        for e in &answer.endpoints {
            rows.push([
                answer
                    .metric_labels
                    .get("namespace")
                    .cloned()
                    .unwrap_or_default(),
                e.addr.ip().to_string(),
                e.addr.port().to_string(),
                e.metric_labels.get("pod").cloned().unwrap_or_default(),
                service.clone(),
                e.tls_identity.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    if rows.len() == 1 {
        let names: Vec<&str> = answers.iter().map(|a| a.authority.as_str()).collect();
        let _ = writeln!(out, "No endpoints found for {}.", names.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::control_api::Endpoint;

    #[test]
    fn prints_one_row_per_endpoint() {
        let answer = Endpoints {
            authority: "echo.default:8080".into(),
            exists: true,
            fully_qualified_name: Some("echo.default.svc.cluster.local".into()),
            metric_labels: [
                ("namespace".into(), "default".into()),
                ("service".into(), "echo".into()),
            ]
            .into(),
            endpoints: vec![Endpoint {
                addr: "127.0.0.1:17101".parse().unwrap(),
                weight: 10_000,
                metric_labels: [("pod".into(), "echo-a".into())].into(),
                tls_identity: Some(
                    "echo.default.serviceaccount.identity.ferry.cluster.local".into(),
                ),
            }],
        };
        let text = table(&[answer]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("NAMESPACE   IP          PORT    POD      SERVICE"),
            "{text}"
        );
        assert!(lines[1].starts_with("default     127.0.0.1   17101   echo-a   echo.default   echo.default.serviceaccount"), "{text}");
        assert_eq!(
            query_string([("authority", "a b&c:80")]),
            "authority=a+b%26c%3A80"
        );
    }
}
