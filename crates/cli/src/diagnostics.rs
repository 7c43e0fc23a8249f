//! `ferry diagnostics endpoints`: what the control plane's destination service answers for
//! an authority, exactly as a proxy would be told — to tell a discovery problem from a
//! proxy problem. `ferry diagnostics policy`: the routes policy `OutboundPolicies` serves
//! for a Service port (docs/routes.md).

use std::fmt::Write as _;

use clap::{Args, Subcommand, ValueEnum};
use ferry_api::control_api::{Endpoints, ENDPOINTS_PATH, POLICY_PATH};
use serde_json::Value;

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
    /// Show the routes policy the control plane gives a proxy for a Service port.
    Policy(PolicyArgs),
}

/// `ferry diagnostics policy TARGET`
#[derive(Args, Debug)]
struct PolicyArgs {
    /// The Service port: `svc/web.emojivoto:8080`, `svc/web:8080` (in --namespace) or
    /// `web.emojivoto.svc.cluster.local:8080`; or a pod port, `po/voting-0:8080`, for the
    /// inbound policy (`InboundServerPolicies`, docs/authorization.md).
    target: String,
    /// The namespace of `svc/NAME:PORT` targets.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Ask as a caller in this namespace (selects its consumer routes).
    #[arg(long)]
    from_namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = PolicyOutput::Text)]
    output: PolicyOutput,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PolicyOutput {
    Text,
    Json,
}

/// The authority a proxy would ask about for `target`.
pub fn policy_authority(target: &str, namespace: &str) -> anyhow::Result<String> {
    let target = target.trim();
    let named = target
        .strip_prefix("svc/")
        .or_else(|| target.strip_prefix("service/"));
    let (host, port) = named.unwrap_or(target).rsplit_once(':').ok_or_else(|| {
        anyhow::anyhow!("target {target:?} needs a port: svc/web.emojivoto:8080 or web.emojivoto.svc.cluster.local:8080")
    })?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        anyhow::bail!("invalid target {target:?}: expected svc/NAME[.NAMESPACE]:PORT or HOST:PORT");
    }
    Ok(match named {
        Some(name) if !name.contains('.') => format!("{host}.{namespace}:{port}"),
        _ => format!("{host}:{port}"),
    })
}

/// For a pod target (`po/NAME:PORT`): the `workload` (`<ns>:<pod>`) and port the inbound
/// policy is asked for.
pub fn inbound_target(target: &str, namespace: &str) -> Option<anyhow::Result<(String, u16)>> {
    let named = ["po/", "pod/", "pods/"]
        .iter()
        .find_map(|p| target.trim().strip_prefix(p))?;
    let parsed = named
        .rsplit_once(':')
        .and_then(|(pod, port)| Some((pod, port.parse::<u16>().ok().filter(|p| *p != 0)?)))
        .filter(|(pod, _)| !pod.is_empty())
        .map(|(pod, port)| (format!("{namespace}:{pod}"), port))
        .ok_or_else(|| anyhow::anyhow!("invalid target {target:?}: expected po/NAME:PORT"));
    Some(parsed)
}

fn run_inbound(api: &ApiArgs, args: &PolicyArgs, workload: &str, port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let policy: Value = runtime.block_on(async {
        let api = api.connect().await?;
        let port = port.to_string();
        let pairs = [("workload", workload), ("port", port.as_str())];
        let query = format!(
            "{}?{}",
            ferry_api::authz::INBOUND_POLICY_PATH,
            query_string(pairs)
        );
        anyhow::Ok(api.client.get::<Value>(&query).await?)
    })?;
    match args.output {
        PolicyOutput::Json => println!("{}", serde_json::to_string_pretty(&policy)?),
        PolicyOutput::Text => print!("{}", inbound_text(&policy)),
    }
    Ok(())
}

fn meta_text(m: &Value) -> String {
    let kind = s(&m["kind"]);
    if kind == "default" {
        format!("default:{}", s(&m["name"]))
    } else {
        format!("{kind} {}/{}", s(&m["namespace"]), s(&m["name"]))
    }
}

fn authz_text(a: &Value) -> String {
    let nets: Vec<String> = a["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let except: Vec<String> = n["except"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            if except.is_empty() {
                s(&n["net"])
            } else {
                format!("{} except {}", s(&n["net"]), except.join(" "))
            }
        })
        .collect();
    let who = match &a["authentication"] {
        Value::Object(m) if m.contains_key("meshTls") => {
            let t = &m["meshTls"];
            let mut ids: Vec<String> = t["identities"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            ids.extend(
                t["suffixes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| match s(x) {
                        x if x.is_empty() => "any identity".to_string(),
                        x => format!("*.{x}"),
                    }),
            );
            format!("mesh TLS {}", ids.join(", "))
        }
        _ => "unauthenticated".to_string(),
    };
    let mut text = format!("{}: {who} from {}", meta_text(&a["meta"]), nets.join(", "));
    for j in a["jwt"].as_array().into_iter().flatten() {
        let _ = write!(text, "; JWT from {}", s(&j["issuer"]));
    }
    text
}

/// The inbound policy as readable text.
pub fn inbound_text(p: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "server    {} ({})",
        meta_text(&p["server"]),
        s(&p["protocol"])
    );
    for a in p["authorizations"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  authz   {}", authz_text(a));
    }
    for r in p["routes"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "route     {}", meta_text(&r["meta"]));
        for a in r["authorizations"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  authz   {}", authz_text(a));
        }
    }
    if let Some(l) = p.get("rateLimit").filter(|l| l.is_object()) {
        let _ = writeln!(
            out,
            "ratelimit {}: total {}, per identity {}",
            meta_text(&l["meta"]),
            if l["total"].is_null() {
                "-".to_string()
            } else {
                format!("{}/s", s(&l["total"]))
            },
            if l["identity"].is_null() {
                "-".to_string()
            } else {
                format!("{}/s", s(&l["identity"]))
            },
        );
    }
    out
}

fn run_policy(api: &ApiArgs, args: &PolicyArgs) -> anyhow::Result<()> {
    if let Some(inbound) = inbound_target(&args.target, &args.namespace) {
        let (workload, port) = inbound?;
        return run_inbound(api, args, &workload, port);
    }
    let authority = policy_authority(&args.target, &args.namespace)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let policy: Value = runtime.block_on(async {
        let api = api.connect().await?;
        let mut pairs = vec![("authority", authority.as_str())];
        if let Some(ns) = &args.from_namespace {
            pairs.push(("callerNamespace", ns.as_str()));
        }
        let query = format!("{POLICY_PATH}?{}", query_string(pairs));
        anyhow::Ok(api.client.get::<Value>(&query).await?)
    })?;
    match args.output {
        PolicyOutput::Json => println!("{}", serde_json::to_string_pretty(&policy)?),
        PolicyOutput::Text => print!("{}", policy_text(&policy)),
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn http_match_text(m: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(path) = m.get("path") {
        parts.push(format!("path {} {}", s(&path["type"]), s(&path["value"])));
    }
    if let Some(method) = m.get("method") {
        parts.push(format!("method {}", s(method)));
    }
    if let Some(method) = m.get("method").filter(|m| m.is_object()) {
        parts.pop();
        parts.push(format!(
            "gRPC {}/{}",
            method.get("service").map(s).unwrap_or_else(|| "*".into()),
            method.get("method").map(s).unwrap_or_else(|| "*".into())
        ));
    }
    for (what, list) in [("header", "headers"), ("query", "queryParams")] {
        for h in m[list].as_array().into_iter().flatten() {
            let op = if h["type"] == "RegularExpression" {
                "~"
            } else {
                "="
            };
            parts.push(format!("{what} {} {op} {}", s(&h["name"]), s(&h["value"])));
        }
    }
    if parts.is_empty() {
        "every request".to_string()
    } else {
        parts.join(", ")
    }
}

fn backend_text(b: &Value) -> String {
    let mut text = format!(
        "{}.{}:{} weight {}",
        s(&b["name"]),
        s(&b["namespace"]),
        s(&b["port"]),
        s(&b["weight"])
    );
    if let Some(error) = b.get("error") {
        let _ = write!(text, " (fails: {})", s(error));
    }
    text
}

/// The policy as readable text.
pub fn policy_text(p: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Service {}/{} port {} ({}), protocol {}",
        s(&p["namespace"]),
        s(&p["name"]),
        s(&p["port"]),
        s(&p["authority"]),
        s(&p["protocol"])
    );
    for route in p["routes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{} {}/{}",
            s(&route["kind"]),
            s(&route["namespace"]),
            s(&route["name"])
        );
        for (i, rule) in route["rules"].as_array().into_iter().flatten().enumerate() {
            let _ = writeln!(out, "  rule {i}");
            let matches: Vec<String> = rule["httpMatches"]
                .as_array()
                .or(rule["grpcMatches"].as_array())
                .into_iter()
                .flatten()
                .map(http_match_text)
                .collect();
            let matches = if matches.is_empty() {
                vec!["every call".to_string()]
            } else {
                matches
            };
            for m in matches {
                let _ = writeln!(out, "    match     {m}");
            }
            for f in rule["filters"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "    filter    {}", s(&f["type"]));
            }
            for f in rule["faults"].as_array().into_iter().flatten() {
                let status = f
                    .get("httpStatus")
                    .or(f.get("grpcStatus"))
                    .map(s)
                    .unwrap_or_default();
                let mut text = format!("abort {status} for {}%", s(&f["abortPercent"]));
                if let Some(d) = f.get("delay") {
                    let _ = write!(text, ", delay {} for {}%", s(d), s(&f["delayPercent"]));
                }
                let _ = writeln!(out, "    fault     {text} (HTTPFault {})", s(&f["source"]));
            }
            if let Some(m) = rule.get("mirror") {
                let _ = writeln!(
                    out,
                    "    mirror    {} of {} to {}",
                    s(&m["numerator"]),
                    s(&m["denominator"]),
                    backend_text(&m["backend"])
                );
            }
            for b in rule["backends"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "    backend   {}", backend_text(b));
            }
            if let Some(t) = rule.get("timeouts").and_then(Value::as_object) {
                let list: Vec<String> = ["request", "backendRequest", "idle"]
                    .into_iter()
                    .filter_map(|k| t.get(k).map(|v| format!("{k} {}", s(v))))
                    .collect();
                let _ = writeln!(out, "    timeouts  {}", list.join(", "));
            }
            if let Some(r) = rule.get("retry") {
                let mut on: Vec<String> = r["httpStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|range| {
                        let (a, b) = (s(&range[0]), s(&range[1]));
                        if a == b {
                            a
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect();
                on.extend(r["grpcStatuses"].as_array().into_iter().flatten().map(s));
                let mut text = format!("up to {} on {}", s(&r["maxRetries"]), on.join(","));
                if let Some(b) = r.get("backoff") {
                    let _ = write!(text, ", backoff {}", s(b));
                }
                let _ = writeln!(out, "    retry     {text}");
            }
        }
    }
    out
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
    let endpoints = match &args.command {
        DiagnosticsCommand::Endpoints(endpoints) => endpoints,
        DiagnosticsCommand::Policy(policy) => return run_policy(&args.api, policy),
    };
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
    fn pod_targets_ask_for_the_inbound_policy() {
        let t = |t: &str| inbound_target(t, "emojivoto").map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(
            t("po/voting-0:8080"),
            Some(Ok(("emojivoto:voting-0".into(), 8080)))
        );
        assert!(matches!(t("po/voting-0"), Some(Err(_))));
        assert_eq!(t("svc/web:8080"), None);
        let policy = serde_json::json!({
            "server": {"group": "policy.ferry.io", "kind": "Server", "namespace": "emojivoto", "name": "voting"},
            "protocol": "HTTP/2",
            "authorizations": [{
                "meta": {"group": "policy.ferry.io", "kind": "AuthorizationPolicy", "namespace": "emojivoto", "name": "web"},
                "networks": [{"net": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
                "authentication": {"meshTls": {"identities": ["web.emojivoto.serviceaccount.identity.ferry.cluster.local"], "suffixes": [""]}},
                "jwt": [{"issuer": "https://issuer"}],
            }],
            "routes": [{"meta": {"group": "", "kind": "default", "namespace": "", "name": "default"}, "rules": [], "authorizations": [{
                "meta": {"group": "", "kind": "default", "namespace": "", "name": "audit"},
                "networks": [{"net": "0.0.0.0/0", "except": []}],
                "authentication": "unauthenticated",
                "jwt": [],
            }]}],
            "rateLimit": {"meta": {"group": "policy.ferry.io", "kind": "HTTPLocalRateLimitPolicy", "namespace": "emojivoto", "name": "rl"}, "total": 100, "identity": null, "overrides": []},
        });
        assert_eq!(
            inbound_text(&policy),
            "\
server    Server emojivoto/voting (HTTP/2)
  authz   AuthorizationPolicy emojivoto/web: mesh TLS web.emojivoto.serviceaccount.identity.ferry.cluster.local, any identity from 10.0.0.0/8 except 10.1.0.0/16; JWT from https://issuer
route     default:default
  authz   default:audit: unauthenticated from 0.0.0.0/0
ratelimit HTTPLocalRateLimitPolicy emojivoto/rl: total 100/s, per identity -
"
        );
    }

    #[test]
    fn policy_targets_become_authorities() {
        let a = |t: &str| policy_authority(t, "emojivoto");
        assert_eq!(a("svc/web.ns:8080").unwrap(), "web.ns:8080");
        assert_eq!(a("svc/web:8080").unwrap(), "web.emojivoto:8080");
        assert_eq!(a("service/web:80").unwrap(), "web.emojivoto:80");
        assert_eq!(
            a("web.ns.svc.cluster.local:8080").unwrap(),
            "web.ns.svc.cluster.local:8080"
        );
        for bad in ["svc/web", "web:0", ":80", "svc/web:http", ""] {
            assert!(a(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policy_text_shows_every_part_of_a_rule() {
        let policy = serde_json::json!({
            "namespace": "default", "name": "web", "port": 8080,
            "authority": "web.default.svc.cluster.local:8080", "protocol": "http",
            "routes": [{
                "kind": "HTTPRoute", "namespace": "default", "name": "web-split",
                "rules": [{
                    "httpMatches": [{"path": {"type": "PathPrefix", "value": "/"},
                                     "headers": [{"type": "Exact", "name": "x-canary", "value": "yes"}]}],
                    "faults": [{"source": "default/flaky", "httpStatus": 503, "abortPercent": 25, "delayPercent": 0}],
                    "mirror": {"backend": {"namespace": "default", "name": "m", "port": 80, "weight": 1}, "numerator": 25, "denominator": 100},
                    "backends": [
                        {"namespace": "default", "name": "web", "port": 8080, "weight": 90},
                        {"namespace": "default", "name": "gone", "port": 8080, "weight": 10, "error": "service default/gone not found (BackendNotFound)"}
                    ],
                    "timeouts": {"request": "5s", "backendRequest": "2s"},
                    "retry": {"maxRetries": 3, "httpStatuses": [[500, 599], [429, 429]], "backoff": "50ms", "maxRequestBytes": 65536}
                }]
            }]
        });
        let text = policy_text(&policy);
        for expected in [
            "Service default/web port 8080 (web.default.svc.cluster.local:8080), protocol http",
            "HTTPRoute default/web-split",
            "match     path PathPrefix /, header x-canary = yes",
            "fault     abort 503 for 25% (HTTPFault default/flaky)",
            "mirror    25 of 100 to m.default:80 weight 1",
            "backend   web.default:8080 weight 90",
            "backend   gone.default:8080 weight 10 (fails: service default/gone not found (BackendNotFound))",
            "timeouts  request 5s, backendRequest 2s",
            "retry     up to 3 on 500-599,429, backoff 50ms",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

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
