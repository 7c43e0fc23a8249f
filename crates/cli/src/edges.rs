//! `ferry edges`: which resources talk to which, and whether the traffic is secured by
//! mTLS, from the control plane's metrics API — Linkerd's `viz edges` columns.

use clap::Args;
use ferry_api::resource::Resource;
use ferry_api::stat::{Edge, EdgesAnswer, DEFAULT_WINDOW, EDGES_PATH};

use crate::cluster::ApiArgs;
use crate::control::query_string;
use crate::stat::{align, block_on, Output};

/// `ferry edges KIND`
#[derive(Args, Debug)]
pub struct EdgesArgs {
    /// The resource kind edges are drawn between: `deploy`, `po`, `ns`, `sts`, ...
    pub kind: String,
    /// Only edges with an end in this namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The window traffic is looked for in (15s to 15m).
    #[arg(short = 't', long = "time-window", default_value = DEFAULT_WINDOW)]
    pub window: String,
    /// Output format (`wide` adds CLIENT_ID and SERVER_ID).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The control plane's public API: local, or on the kubeconfig's cluster.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `ferry edges`, printing to stdout.
pub fn run(args: &EdgesArgs) -> anyhow::Result<()> {
    let resource = Resource::parse(&args.kind)?;
    if resource.name.is_some() {
        anyhow::bail!(
            "edges takes a kind, not a resource: try `ferry edges {}`",
            resource.kind
        );
    }
    let mut pairs = vec![("kind", resource.kind)];
    if args.all_namespaces {
        pairs.push(("allNamespaces", "true".into()));
    } else {
        pairs.push(("namespace", args.namespace.clone()));
    }
    pairs.push(("window", args.window.clone()));
    let path = format!("{EDGES_PATH}?{}", query_string(&pairs));
    let answer: EdgesAnswer = block_on(async {
        let api = args.api.connect().await?;
        anyhow::Ok(api.client.get(&path).await?)
    })??;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer.edges)?),
        output if answer.edges.is_empty() => {
            let _ = output;
            eprintln!("No edges found.");
        }
        output => print!("{}", table(&answer.edges, output == Output::Wide)),
    }
    Ok(())
}

/// `SRC DST SRC_NS DST_NS SECURED [CLIENT_ID SERVER_ID]`, all left-aligned.
pub fn table(edges: &[Edge], wide: bool) -> String {
    let mut header = vec!["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"];
    if wide {
        header.extend(["CLIENT_ID", "SERVER_ID"]);
    }
    let mut lines = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for e in edges {
        let mut cells = vec![
            e.src.clone(),
            e.dst.clone(),
            e.src_namespace.clone(),
            e.dst_namespace.clone(),
            if e.secured { "√".into() } else { "-".into() },
        ];
        if wide {
            cells.push(e.client_id.clone().unwrap_or_else(|| "-".into()));
            cells.push(e.server_id.clone().unwrap_or_else(|| "-".into()));
        }
        lines.push(cells);
    }
    align(&lines, header.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_secured_and_identities() {
        let edges = [
            Edge {
                kind: "deployment".into(),
                src: "web".into(),
                src_namespace: "emojivoto".into(),
                dst: "emoji".into(),
                dst_namespace: "emojivoto".into(),
                secured: true,
                client_id: Some("web.emojivoto.serviceaccount.identity.ferry.cluster.local".into()),
                server_id: Some(
                    "emoji.emojivoto.serviceaccount.identity.ferry.cluster.local".into(),
                ),
                no_tls_reason: None,
                rps: 2.0,
            },
            Edge {
                kind: "deployment".into(),
                src: "vote-bot".into(),
                src_namespace: "emojivoto".into(),
                dst: "web".into(),
                dst_namespace: "emojivoto".into(),
                secured: false,
                client_id: None,
                server_id: None,
                no_tls_reason: Some("not_provided_by_service_discovery".into()),
                rps: 1.0,
            },
        ];
        assert_eq!(
            table(&edges, false),
            "SRC        DST     SRC_NS      DST_NS      SECURED\n\
             web        emoji   emojivoto   emojivoto   √\n\
             vote-bot   web     emojivoto   emojivoto   -\n"
        );
        let wide = table(&edges, true);
        let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header[4..], ["SECURED", "CLIENT_ID", "SERVER_ID"], "{wide}");
        assert!(
            wide.contains("√         web.emojivoto.serviceaccount"),
            "{wide}"
        );
    }
}
