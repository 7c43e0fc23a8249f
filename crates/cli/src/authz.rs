//! `ferry authz`: the servers, routes and authorization policies of a workload's inbound
//! side, with the requests each allowed and denied in the window (docs/authorization.md),
//! from the control plane's `GET /api/v1/authz`. Columns as Linkerd's `viz authz`:
//! `ROUTE SERVER AUTHORIZATION_POLICY`, then `ALLOWED DENIED`.

use clap::Args;
use ferry_api::authz::{AuthzAnswer, AuthzRow, PolicyRef, AUTHZ_PATH};
use ferry_api::resource::Resource;
use ferry_api::stat::DEFAULT_WINDOW;

use crate::cluster::ApiArgs;
use crate::control::query_string;
use crate::stat::{align, block_on, Output};

/// `ferry authz KIND/NAME`
#[derive(Args, Debug)]
pub struct AuthzArgs {
    /// The workload or pod: `deploy/voting`, `po/voting-0`.
    pub resource: String,
    /// The namespace of the resource.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The window counts are taken over (15s to 15m).
    #[arg(short = 't', long = "time-window", default_value = DEFAULT_WINDOW)]
    pub window: String,
    /// Output format (`json`: the API's rows).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The control plane's public API: local, or on the kubeconfig's cluster.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `ferry authz`, printing to stdout.
pub fn run(args: &AuthzArgs) -> anyhow::Result<()> {
    let path = query_path(args)?;
    let answer: AuthzAnswer = block_on(async {
        let api = args.api.connect().await?;
        anyhow::Ok(api.client.get(&path).await?)
    })??;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer.rows)?),
        _ if answer.rows.is_empty() => eprintln!("No servers or authorizations found."),
        _ => print!("{}", table(&answer.rows)),
    }
    Ok(())
}

/// The API path and query for the arguments.
pub fn query_path(args: &AuthzArgs) -> anyhow::Result<String> {
    let resource = Resource::parse(&args.resource)?;
    if resource.name.is_none() {
        anyhow::bail!(
            "name one resource, like deploy/voting; got {:?}",
            args.resource
        );
    }
    let pairs = [
        ("resource", args.resource.clone()),
        ("namespace", args.namespace.clone()),
        ("window", args.window.clone()),
    ];
    Ok(format!("{AUTHZ_PATH}?{}", query_string(&pairs)))
}

/// `kind:name` as Linkerd prints it, lowercase; `-` for none.
fn cell(r: &PolicyRef) -> String {
    match (r.kind.as_str(), r.name.as_str()) {
        ("", "") => "-".to_string(),
        (kind, name) => format!("{}:{name}", kind.to_ascii_lowercase()),
    }
}

/// `ROUTE SERVER AUTHORIZATION_POLICY ALLOWED DENIED`.
pub fn table(rows: &[AuthzRow]) -> String {
    let mut lines = vec![[
        "ROUTE",
        "SERVER",
        "AUTHORIZATION_POLICY",
        "ALLOWED",
        "DENIED",
    ]
    .map(String::from)
    .to_vec()];
    for row in rows {
        lines.push(vec![
            cell(&row.route),
            cell(&row.server),
            cell(&row.authorization),
            row.allowed.to_string(),
            row.denied.to_string(),
        ]);
    }
    align(&lines, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_linkerds_columns_with_the_counts() {
        let r = |kind: &str, name: &str| PolicyRef {
            kind: kind.into(),
            name: name.into(),
        };
        let rows = [
            AuthzRow {
                server: r("Server", "voting-grpc"),
                route: r("HTTPRoute", "vote"),
                authorization: r("AuthorizationPolicy", "web-to-voting"),
                allowed: 180,
                denied: 0,
            },
            AuthzRow {
                server: r("Server", "voting-grpc"),
                route: r("default", "default"),
                authorization: PolicyRef::default(),
                allowed: 0,
                denied: 60,
            },
        ];
        assert_eq!(
            table(&rows),
            "\
ROUTE             SERVER               AUTHORIZATION_POLICY                ALLOWED   DENIED
httproute:vote    server:voting-grpc   authorizationpolicy:web-to-voting       180        0
default:default   server:voting-grpc   -                                         0       60
"
        );
    }

    #[test]
    fn the_query_names_one_resource() {
        let args = AuthzArgs {
            resource: "deploy/voting".into(),
            namespace: "emojivoto".into(),
            window: "1m".into(),
            output: Output::Table,
            api: ApiArgs::default(),
        };
        assert_eq!(
            query_path(&args).unwrap(),
            "/api/v1/authz?resource=deploy%2Fvoting&namespace=emojivoto&window=1m"
        );
        let all = AuthzArgs {
            resource: "deploy".into(),
            ..args
        };
        assert!(query_path(&all).is_err());
    }
}
