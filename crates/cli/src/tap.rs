//! `ferry tap`: live requests of a resource, one line per event in Linkerd's `viz tap`
//! format (`req`, `rsp`, `end`), or one JSON object per line. Reads the control plane's
//! `GET /api/v1/tap` Server-Sent Events; [`TapStream`] is shared with `ferry top`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use bytes::{Buf, BytesMut};
use clap::{Args, ValueEnum};
use ferry_api::resource::Resource;
use ferry_api::tap::{
    grpc_code_name, h2_reason_name, TapDirection, TapEvent, TapEventKind, TapQuery,
    DEFAULT_MAX_RPS, SSE_EVENT_ERROR, TAP_PATH,
};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::cluster::ApiArgs;
use crate::control::{query_string, ControlClient};

/// What to tap: the flags `tap` and `top` share.
#[derive(Args, Debug, Clone)]
pub struct TapTarget {
    /// The resource: `deploy/web`, `po/web-0`, `svc/emoji`, `ns/emojivoto`.
    pub resource: String,
    /// The resource's name (instead of `KIND/NAME`).
    pub name: Option<String>,
    /// The namespace of the resource.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Only requests to this resource (`deploy/emoji`).
    #[arg(long)]
    pub to: Option<String>,
    /// The namespace of --to (default: --namespace).
    #[arg(long)]
    pub to_namespace: Option<String>,
    /// Only requests whose path starts with this.
    #[arg(long)]
    pub path: Option<String>,
    /// Only requests with this HTTP method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only requests with this authority.
    #[arg(long)]
    pub authority: Option<String>,
    /// Most requests a second to show (0: all).
    #[arg(long, default_value_t = DEFAULT_MAX_RPS)]
    pub max_rps: f64,
    /// Stop after this many requests.
    #[arg(long)]
    pub limit: Option<u32>,
    /// The control plane's public API: local, or on the kubeconfig's cluster.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `ferry tap RESOURCE`
#[derive(Args, Debug)]
pub struct TapArgs {
    #[command(flatten)]
    target: TapTarget,
    /// Output format: Linkerd's lines, the lines with every label, or JSON per line.
    #[arg(short, long, value_enum, default_value_t = Output::Lines)]
    output: Output,
    /// Ask for header values unredacted (`-o json` shows headers). Values of headers other
    /// than content-type, user-agent and the like read `[redacted]` unless the control plane
    /// allows this (`ferry-control --tap-allow-unredacted-headers`).
    #[arg(long)]
    show_headers: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// `req id=… proxy=in  src=… dst=… tls=… :method=… :authority=… :path=…`.
    Lines,
    /// The lines plus sorted `src_<label>=` and `dst_<label>=` pairs.
    Wide,
    /// One JSON `TapEvent` per line.
    Json,
}

impl TapTarget {
    /// The query for [`TAP_PATH`], checking the resources first so a typo fails locally.
    pub fn query(&self) -> anyhow::Result<TapQuery> {
        let resource = match &self.name {
            Some(name) if !self.resource.contains('/') => format!("{}/{name}", self.resource),
            Some(name) => anyhow::bail!(
                "give the resource as KIND/NAME or KIND NAME, not both ({} {name})",
                self.resource
            ),
            None => self.resource.clone(),
        };
        Resource::parse(&resource)?;
        if let Some(to) = &self.to {
            Resource::parse(to)?;
        }
        if !self.max_rps.is_finite() || self.max_rps < 0.0 {
            anyhow::bail!("invalid --max-rps {}: expected a number ≥ 0", self.max_rps);
        }
        Ok(TapQuery {
            resource,
            namespace: Some(self.namespace.clone()),
            to: self.to.clone(),
            to_namespace: self.to_namespace.clone(),
            path: self.path.clone(),
            method: self.method.clone(),
            authority: self.authority.clone(),
            max_rps: Some(self.max_rps),
            limit: self.limit,
            show_headers: None,
        })
    }
}

/// Runs `ferry tap`, printing events to stdout until the stream ends or Ctrl-C.
pub fn run(args: &TapArgs) -> anyhow::Result<()> {
    let mut query = args.target.query()?;
    query.show_headers = args.show_headers.then_some(true);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let api = args.target.api.connect().await?;
        let client = &api.client;
        let mut stream = TapStream::open(client, &query).await?;
        let mut problems = Problems::default();
        let mut stdout = std::io::stdout();
        loop {
            let msg = tokio::select! {
                _ = tokio::signal::ctrl_c() => return problems.finish(false),
                msg = stream.next() => msg?,
            };
            match msg {
                None => break,
                Some(TapMessage::Error(e)) => problems.error(e),
                Some(TapMessage::Event(e)) => {
                    problems.event();
                    let line = match args.output {
                        Output::Json => serde_json::to_string(&e)?,
                        Output::Lines => render(&e, false),
                        Output::Wide => render(&e, true),
                    };
                    // A closed pipe (`ferry tap … | head`) ends the tap quietly.
                    if writeln!(stdout, "{line}")
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
        problems.finish(true)
    })
}

/// Proxies that could not be tapped. Until the first event they are held back: if none
/// could be tapped, the command fails with them as its one error line; once events flow,
/// each is a warning on stderr.
#[derive(Default)]
pub struct Problems {
    held: Vec<String>,
    flowing: bool,
}

impl Problems {
    /// A proxy could not be tapped.
    pub fn error(&mut self, e: String) {
        if self.flowing {
            eprintln!("warning: {e}");
        } else {
            self.held.push(e);
        }
    }

    /// An event arrived: the tap works, so earlier problems are warnings.
    pub fn event(&mut self) {
        if !self.flowing {
            self.flowing = true;
            for e in self.held.drain(..) {
                eprintln!("warning: {e}");
            }
        }
    }

    /// The command ends; `ended` says whether the stream itself ended (every proxy's tap
    /// stopped). An error when it ended without any proxy having been tapped.
    pub fn finish(mut self, ended: bool) -> anyhow::Result<()> {
        if ended && !self.held.is_empty() {
            anyhow::bail!("{}", self.held.join("; "));
        }
        self.event();
        Ok(())
    }
}

/// One event as Linkerd's `viz tap` prints it, plus `proxy-error=<reason>` on the `rsp` and
/// `end` lines of a response a proxy made itself.
pub fn render(e: &TapEvent, wide: bool) -> String {
    let proxy = match e.proxy_direction {
        TapDirection::Inbound => "in ",
        TapDirection::Outbound => "out",
    };
    let flow = format!(
        "proxy={proxy} src={} dst={} tls={}",
        e.source.addr, e.destination.addr, e.tls
    );
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut line = match e.kind {
        TapEventKind::Req => format!(
            "req id={} {flow} :method={} :authority={} :path={}",
            e.id,
            opt(&e.method),
            opt(&e.authority),
            opt(&e.path)
        ),
        TapEventKind::Rsp => format!(
            "rsp id={} {flow} :status={} latency={}µs",
            e.id,
            e.status.unwrap_or_default(),
            e.latency_micros.unwrap_or_default()
        ),
        TapEventKind::End => {
            let mut end = format!("end id={} {flow}", e.id);
            if let Some(code) = e.grpc_status {
                let _ = write!(end, " grpc-status={}", grpc_code_name(code));
            } else if let Some(code) = e.reset_error {
                let _ = write!(end, " reset-error={}", h2_reason_name(code));
            }
            let _ = write!(
                end,
                " duration={}µs response-length={}B",
                e.duration_micros.unwrap_or_default(),
                e.response_bytes.unwrap_or_default()
            );
            end
        }
    };
    // Ferry's addition past Linkerd's fields: which proxy-made response this was.
    if let Some(reason) = &e.proxy_error {
        let _ = write!(line, " proxy-error={reason}");
    }
    if wide {
        let labels = |prefix: &str, l: &BTreeMap<String, String>| {
            l.iter()
                .map(|(k, v)| format!(" {prefix}_{k}={v}"))
                .collect::<String>()
        };
        line.push_str(&labels("src", &e.source.labels));
        line.push_str(&labels("dst", &e.destination.labels));
    }
    line
}

/// One message of the tap stream.
#[derive(Debug)]
pub enum TapMessage {
    /// A request event.
    Event(Box<TapEvent>),
    /// A proxy could not be tapped (the others go on).
    Error(String),
}

/// The control plane's tap stream, read as Server-Sent Events.
pub struct TapStream {
    body: Incoming,
    buf: BytesMut,
}

impl TapStream {
    /// Starts tapping `query`; the control plane's refusals (unknown resource, nothing to
    /// tap) come back as errors here.
    pub async fn open(client: &ControlClient, query: &TapQuery) -> anyhow::Result<Self> {
        let path = format!("{TAP_PATH}?{}", encode_query(query));
        let body = client.stream(&path).await?;
        Ok(Self {
            body,
            buf: BytesMut::new(),
        })
    }

    /// The next message; `None` when the stream ended.
    pub async fn next(&mut self) -> anyhow::Result<Option<TapMessage>> {
        loop {
            while let Some(block) = self.block() {
                if let Some(msg) = parse_block(&block)? {
                    return Ok(Some(msg));
                }
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => anyhow::bail!("the tap stream broke: {e}"),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Takes one blank-line-terminated block from the buffer.
    fn block(&mut self) -> Option<String> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.advance(end + 2);
        Some(block)
    }
}

/// Parses one SSE block; comments and keep-alives are `None`.
fn parse_block(block: &str) -> anyhow::Result<Option<TapMessage>> {
    let mut event = None;
    let mut data = Vec::new();
    for line in block.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim_start().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    let data = data.join("\n");
    if event.as_deref() == Some(SSE_EVENT_ERROR) {
        let e: ferry_api::control_api::ApiError = serde_json::from_str(&data)?;
        return Ok(Some(TapMessage::Error(e.error)));
    }
    let e: TapEvent = serde_json::from_str(&data)
        .map_err(|e| anyhow::anyhow!("unexpected tap event from the control plane: {e}"))?;
    Ok(Some(TapMessage::Event(Box::new(e))))
}

fn encode_query(q: &TapQuery) -> String {
    let mut pairs = vec![("resource", q.resource.clone())];
    let mut opt = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            pairs.push((k, v));
        }
    };
    opt("namespace", q.namespace.clone());
    opt("to", q.to.clone());
    opt("toNamespace", q.to_namespace.clone());
    opt("path", q.path.clone());
    opt("method", q.method.clone());
    opt("authority", q.authority.clone());
    opt("maxRps", q.max_rps.map(|r| r.to_string()));
    opt("limit", q.limit.map(|l| l.to_string()));
    opt("showHeaders", q.show_headers.map(|s| s.to_string()));
    query_string(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::tap::TapPeer;

    fn event(kind: TapEventKind) -> TapEvent {
        TapEvent {
            kind,
            id: "3:12".into(),
            tapped_pod: "voting-0".into(),
            tapped_namespace: "emojivoto".into(),
            proxy_direction: TapDirection::Inbound,
            source: TapPeer {
                addr: "10.0.0.1:5000".into(),
                labels: BTreeMap::from([("pod".into(), "web-0".into())]),
            },
            destination: TapPeer {
                addr: "10.0.0.2:8080".into(),
                labels: BTreeMap::from([("deployment".into(), "voting".into())]),
            },
            tls: "true".into(),
            client_id: None,
            server_id: None,
            method: Some("POST".into()),
            scheme: Some("http".into()),
            authority: Some("voting.emojivoto:8080".into()),
            path: Some("/emojivoto.v1.VotingService/VoteBacon".into()),
            status: Some(500),
            latency_micros: Some(1234),
            duration_micros: Some(56),
            response_bytes: Some(7),
            grpc_status: None,
            reset_error: None,
            proxy_error: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn renders_linkerds_lines() {
        assert_eq!(
            render(&event(TapEventKind::Req), false),
            "req id=3:12 proxy=in  src=10.0.0.1:5000 dst=10.0.0.2:8080 tls=true :method=POST :authority=voting.emojivoto:8080 :path=/emojivoto.v1.VotingService/VoteBacon"
        );
        assert_eq!(
            render(&event(TapEventKind::Rsp), false),
            "rsp id=3:12 proxy=in  src=10.0.0.1:5000 dst=10.0.0.2:8080 tls=true :status=500 latency=1234µs"
        );
        let mut end = event(TapEventKind::End);
        end.proxy_direction = TapDirection::Outbound;
        assert_eq!(
            render(&end, false),
            "end id=3:12 proxy=out src=10.0.0.1:5000 dst=10.0.0.2:8080 tls=true duration=56µs response-length=7B"
        );
        end.grpc_status = Some(0);
        assert!(render(&end, false).contains(" grpc-status=OK duration=56µs"));
        end.grpc_status = None;
        end.reset_error = Some(8);
        assert!(render(&end, false).contains(" reset-error=CANCEL duration="));
        assert!(render(&end, true).ends_with(" src_pod=web-0 dst_deployment=voting"));
    }

    #[test]
    fn a_proxy_made_response_says_why_at_the_end_of_its_lines() {
        let mut rsp = event(TapEventKind::Rsp);
        rsp.status = Some(403);
        rsp.proxy_error = Some("unauthorized".into());
        assert_eq!(
            render(&rsp, false),
            "rsp id=3:12 proxy=in  src=10.0.0.1:5000 dst=10.0.0.2:8080 tls=true :status=403 latency=1234µs proxy-error=unauthorized"
        );
        let mut end = event(TapEventKind::End);
        end.grpc_status = Some(7);
        end.proxy_error = Some("unauthorized".into());
        assert_eq!(
            render(&end, false),
            "end id=3:12 proxy=in  src=10.0.0.1:5000 dst=10.0.0.2:8080 tls=true grpc-status=PermissionDenied duration=56µs response-length=7B proxy-error=unauthorized"
        );
        // Labels stay last in the wide form.
        assert!(render(&end, true).ends_with(
            " response-length=7B proxy-error=unauthorized src_pod=web-0 dst_deployment=voting"
        ));
        let json = serde_json::to_value(&end).unwrap();
        assert_eq!(json["proxyError"], "unauthorized");
        // The application's own 403 has no such field.
        rsp.proxy_error = None;
        assert!(!render(&rsp, false).contains("proxy-error"));
        assert!(serde_json::to_value(&rsp)
            .unwrap()
            .get("proxyError")
            .is_none());
    }

    #[test]
    fn parses_sse_blocks() {
        assert!(parse_block(": tapping emojivoto/web-0").unwrap().is_none());
        let e = serde_json::to_string(&event(TapEventKind::Req)).unwrap();
        let Some(TapMessage::Event(parsed)) = parse_block(&format!("data: {e}")).unwrap() else {
            panic!("an event")
        };
        assert_eq!(parsed.id, "3:12");
        let err = parse_block("event: tap-error\ndata: {\"error\":\"boom\"}").unwrap();
        assert!(matches!(err, Some(TapMessage::Error(e)) if e == "boom"));
        let q = TapQuery {
            resource: "deploy/web".into(),
            path: Some("/a b".into()),
            max_rps: Some(2.5),
            ..TapQuery::default()
        };
        assert_eq!(
            encode_query(&q),
            "resource=deploy%2Fweb&path=%2Fa+b&maxRps=2.5"
        );
    }
}
