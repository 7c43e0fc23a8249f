//! `ferry-bench-control`: the control plane at cluster scale, fed by the testkit's fake API
//! server with objects shaped like the recorded ones (`shared/k8s/scenario`: the same
//! fields, managedFields and annotations included, only names, IPs and owners vary).
//!
//! It starts a real `ferry-control --discovery kubernetes` against a synthetic cluster,
//! opens `Get` streams as proxies would, and measures:
//! - **RSS once synced** (every store listed, every stream open);
//! - **EndpointSlice change → every subscribed stream**: one endpoint added to one service,
//!   timed until each stream for that service has it, repeated `--changes` times;
//! - **RSS after `--churn-secs` of pod churn**: pods replaced (new name and IP, some IPs
//!   reused) and their EndpointSlices rewritten at `--churn-rate` pods per second.
//!
//! ```text
//! ferry-bench-control [--pods 10000] [--services 2000] [--endpoints-per-service 10]
//!                     [--streams 5000] [--changes 200] [--churn-secs 600] [--churn-rate 20]
//! ```
//!
//! Prints one JSON object (the figures and each goal's verdict) on stdout; progress on stderr.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferry_testkit::kube_api::{fixture, FakeKubeApi};
use ferry_testkit::kube_world::World;
use ferry_testkit::process::Proc;
use linkerd2_proxy_api::destination::{
    destination_client::DestinationClient, update::Update, GetDestination,
};
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

/// Streams per HTTP/2 connection, as a proxy's would share one.
const STREAMS_PER_CONNECTION: usize = 100;
/// Services per namespace.
const SERVICES_PER_NS: usize = 100;
/// How long one change may take to reach every stream before it counts as missed.
const CHANGE_DEADLINE: Duration = Duration::from_secs(5);
/// How long the control plane rests after sync before its resting RSS is read.
const SETTLE: Duration = Duration::from_secs(15);

struct Args {
    pods: usize,
    services: usize,
    endpoints_per_service: usize,
    streams: usize,
    changes: usize,
    churn_secs: u64,
    churn_rate: u32,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        pods: 10_000,
        services: 2_000,
        endpoints_per_service: 10,
        streams: 5_000,
        changes: 200,
        churn_secs: 600,
        churn_rate: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .with_context(|| format!("{flag} {value:?} is not a number"))?;
        match flag.as_str() {
            "--pods" => args.pods = n as usize,
            "--services" => args.services = n as usize,
            "--endpoints-per-service" => args.endpoints_per_service = n as usize,
            "--streams" => args.streams = n as usize,
            "--changes" => args.changes = n as usize,
            "--churn-secs" => args.churn_secs = n,
            "--churn-rate" => args.churn_rate = n.max(1) as u32,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if args.services == 0 || args.pods < args.endpoints_per_service {
        bail!("--services must be > 0 and --pods at least --endpoints-per-service");
    }
    Ok(args)
}

/// The synthetic cluster: each deployment's pods back two services.
struct Cluster {
    templates: Templates,
    namespaces: usize,
    /// Per deployment: its namespace, name and current pods (name, IP).
    deployments: Vec<Deployment>,
    /// Per service: namespace, name, the deployment behind it.
    services: Vec<(String, String, usize)>,
    next_ip: u32,
    next_pod: u64,
}

struct Deployment {
    ns: String,
    name: String,
    pods: Vec<(String, Ipv4Addr)>,
}

struct Templates {
    pod: Value,
    service: Value,
    slice: Value,
    replicaset: Value,
}

impl Templates {
    fn load() -> Self {
        let first = |list: &str| fixture(&format!("scenario/{list}.list.json"))["items"][0].clone();
        Self {
            pod: first("pods"),
            service: first("services"),
            slice: first("endpointslices"),
            replicaset: first("replicasets"),
        }
    }
}

impl Cluster {
    fn new(args: &Args) -> Self {
        let deployments_n = (args.services / 2).max(1);
        let pods_per_deployment = (args.pods / deployments_n).max(args.endpoints_per_service);
        let namespaces = args.services.div_ceil(SERVICES_PER_NS);
        let mut cluster = Self {
            templates: Templates::load(),
            namespaces,
            deployments: Vec::new(),
            services: Vec::new(),
            next_ip: u32::from(Ipv4Addr::new(10, 0, 0, 1)),
            next_pod: 0,
        };
        for d in 0..deployments_n {
            let ns = format!("ns-{:02}", d * 2 / SERVICES_PER_NS);
            let name = format!("dep-{d:04}");
            let pods = (0..pods_per_deployment)
                .map(|_| (cluster.pod_name(&name), cluster.ip()))
                .collect();
            cluster.deployments.push(Deployment { ns, name, pods });
        }
        for s in 0..args.services {
            let d = s / 2 % deployments_n;
            let ns = cluster.deployments[d].ns.clone();
            cluster.services.push((ns, format!("svc-{s:04}"), d));
        }
        cluster
    }

    fn pod_name(&mut self, deployment: &str) -> String {
        self.next_pod += 1;
        format!("{deployment}-5d8f9c-{:05x}", self.next_pod)
    }

    fn ip(&mut self) -> Ipv4Addr {
        self.next_ip += 1;
        Ipv4Addr::from(self.next_ip)
    }

    fn world(&self, endpoints_per_service: usize) -> World {
        let mut world = World::new(1);
        for n in 0..self.namespaces {
            let ns = format!("ns-{n:02}");
            world.load(
                "Namespace",
                json!({"metadata": {"name": ns, "resourceVersion": "1"}}),
            );
        }
        for d in &self.deployments {
            world.load(
                "ServiceAccount",
                json!({"metadata": {"name": d.name, "namespace": d.ns, "resourceVersion": "1"}}),
            );
            world.load("ReplicaSet", self.replicaset(d));
            for (pod, ip) in &d.pods {
                world.load("Pod", self.pod(d, pod, *ip));
            }
        }
        for (i, (ns, name, d)) in self.services.iter().enumerate() {
            world.load("Service", self.service(i, ns, name, &self.deployments[*d]));
            world.load(
                "EndpointSlice",
                self.slice(ns, name, &self.deployments[*d], endpoints_per_service, None),
            );
        }
        world
    }

    fn replicaset(&self, d: &Deployment) -> Value {
        let mut rs = self.templates.replicaset.clone();
        let meta = &mut rs["metadata"];
        meta["name"] = json!(format!("{}-5d8f9c", d.name));
        meta["namespace"] = json!(d.ns);
        meta["uid"] = json!(format!("rs-{}-{}", d.ns, d.name));
        meta["ownerReferences"][0]["name"] = json!(d.name);
        rs
    }

    fn pod(&self, d: &Deployment, name: &str, ip: Ipv4Addr) -> Value {
        let mut pod = self.templates.pod.clone();
        let meta = &mut pod["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(d.ns);
        meta["uid"] = json!(format!("pod-{}-{name}", d.ns));
        meta["labels"]["app"] = json!(d.name);
        meta["ownerReferences"][0]["name"] = json!(format!("{}-5d8f9c", d.name));
        meta["ownerReferences"][0]["uid"] = json!(format!("rs-{}-{}", d.ns, d.name));
        pod["spec"]["serviceAccountName"] = json!(d.name);
        pod["spec"]["serviceAccount"] = json!(d.name);
        // Meshed: the proxy as a native sidecar, as `ferry inject` writes it.
        pod["spec"]["initContainers"] =
            json!([{"name": "ferry-proxy", "image": "ferry-proxy", "restartPolicy": "Always"}]);
        pod["status"]["podIP"] = json!(ip.to_string());
        pod["status"]["podIPs"] = json!([{"ip": ip.to_string()}]);
        pod
    }

    fn service(&self, i: usize, ns: &str, name: &str, d: &Deployment) -> Value {
        let mut svc = self.templates.service.clone();
        let meta = &mut svc["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(format!("svc-{ns}-{name}"));
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 20, 0, 0)) + i as u32 + 1);
        svc["spec"]["clusterIP"] = json!(ip.to_string());
        svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
        svc["spec"]["selector"] = json!({"app": d.name});
        svc
    }

    /// The service's slice: the deployment's first `n` pods, plus `extra` when given.
    fn slice(
        &self,
        ns: &str,
        name: &str,
        d: &Deployment,
        n: usize,
        extra: Option<Ipv4Addr>,
    ) -> Value {
        let mut slice = self.templates.slice.clone();
        let meta = &mut slice["metadata"];
        meta["name"] = json!(format!("{name}-abcde"));
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(format!("slice-{ns}-{name}"));
        meta["labels"]["kubernetes.io/service-name"] = json!(name);
        meta["ownerReferences"][0]["name"] = json!(name);
        let template = slice["endpoints"][0].clone();
        let mut endpoints: Vec<Value> = d
            .pods
            .iter()
            .take(n)
            .map(|(pod, ip)| {
                let mut ep = template.clone();
                ep["addresses"] = json!([ip.to_string()]);
                ep["targetRef"]["name"] = json!(pod);
                ep["targetRef"]["namespace"] = json!(ns);
                ep["targetRef"]["uid"] = json!(format!("pod-{ns}-{pod}"));
                ep
            })
            .collect();
        if let Some(ip) = extra {
            let mut ep = template.clone();
            ep["addresses"] = json!([ip.to_string()]);
            ep.as_object_mut().map(|o| o.remove("targetRef"));
            endpoints.push(ep);
        }
        slice["endpoints"] = json!(endpoints);
        slice
    }
}

fn with_kind(mut object: Value, kind: &str) -> Value {
    object["kind"] = json!(kind);
    object
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Arrival times of marker endpoints, by address.
type Arrivals = Arc<Mutex<HashMap<IpAddr, Vec<Instant>>>>;

async fn open_streams(
    grpc: std::net::SocketAddr,
    cluster: &Cluster,
    n: usize,
    arrivals: Arrivals,
) -> anyhow::Result<Vec<usize>> {
    let mut per_service = vec![0usize; cluster.services.len()];
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n.max(1));
    let mut client = None;
    for i in 0..n {
        if i % STREAMS_PER_CONNECTION == 0 {
            let channel: Channel = Endpoint::from_shared(format!("http://{grpc}"))?
                .connect()
                .await
                .context("connecting to ferry-control")?;
            client = Some(DestinationClient::new(channel));
        }
        let s = i % cluster.services.len();
        per_service[s] += 1;
        let (ns, name, _) = &cluster.services[s];
        let path = format!("{name}.{ns}.svc.cluster.local:8080");
        let mut client = client.clone().expect("a client");
        let arrivals = arrivals.clone();
        let ready = ready_tx.clone();
        tokio::spawn(async move {
            let req = GetDestination {
                path,
                ..Default::default()
            };
            let Ok(response) = client.get(req).await else {
                return;
            };
            let mut stream = response.into_inner();
            let mut first = true;
            while let Ok(Some(update)) = stream.message().await {
                let now = Instant::now();
                if first {
                    first = false;
                    let _ = ready.send(()).await;
                }
                if let Some(Update::Add(set)) = update.update {
                    let mut arrivals = arrivals.lock().unwrap();
                    for addr in set.addrs {
                        let ip = addr.addr.and_then(|a| a.ip).and_then(|ip| ip.ip);
                        if let Some(linkerd2_proxy_api::net::ip_address::Ip::Ipv4(v4)) = ip {
                            let ip = IpAddr::V4(Ipv4Addr::from(v4));
                            if let Some(times) = arrivals.get_mut(&ip) {
                                times.push(now);
                            }
                        }
                    }
                }
            }
        });
    }
    drop(ready_tx);
    let deadline = Instant::now() + Duration::from_secs(120);
    for opened in 0..n {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(())) => {}
            _ => bail!("only {opened} of {n} streams got their first answer within 120 s"),
        }
    }
    Ok(per_service)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut cluster = Cluster::new(&args);
    let pods: usize = cluster.deployments.iter().map(|d| d.pods.len()).sum();
    eprintln!(
        "cluster: {pods} pods in {} deployments, {} services, {} endpoints",
        cluster.deployments.len(),
        cluster.services.len(),
        cluster.services.len() * args.endpoints_per_service
    );
    let api = FakeKubeApi::serve(cluster.world(args.endpoints_per_service)).await;
    let kubeconfig = api
        .kubeconfig()
        .to_str()
        .context("kubeconfig path")?
        .to_string();
    let started = Instant::now();
    // The control plane of the same build (`target/<profile>/`), beside this binary.
    let exe = std::env::current_exe()?;
    let control_bin = exe.with_file_name("ferry-control");
    let control = Proc::spawn(
        &control_bin,
        &[
            "--discovery",
            "kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--grpc-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--trace-listen",
            "127.0.0.1:0",
            "--scrape-interval",
            "5m",
            "--log-format",
            "json",
            "--log",
            "warn,ferry_control=info",
        ],
        &[],
    )?;
    let addrs = control.bound_addrs(2, Duration::from_secs(30)).await?;
    let grpc = addrs["grpc"];

    // Synced when the last service's stream holds all of its endpoints.
    let arrivals: Arrivals = Arc::default();
    let per_service = open_streams(grpc, &cluster, args.streams, arrivals.clone()).await?;
    let synced = started.elapsed();
    let rss_synced = rss_kb(control.pid())?;
    eprintln!(
        "synced and {} streams open in {synced:?}; RSS {} MB",
        args.streams,
        rss_synced / 1024
    );
    // And once the allocator has returned what sync freed (jemalloc's decay is 10 s): the
    // size the process keeps at rest, reported beside the figure at sync (the goal's).
    tokio::time::sleep(SETTLE).await;
    let rss_settled = rss_kb(control.pid())?;
    eprintln!("RSS {} MB after {SETTLE:?} at rest", rss_settled / 1024);

    // Change → every stream of that service.
    let mut latencies = Vec::new();
    let mut to_all = Vec::new();
    let mut missed = 0;
    for k in 0..args.changes {
        let s = (k * 7919) % cluster.services.len();
        if per_service[s] == 0 {
            continue;
        }
        let marker = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 0)) + k as u32);
        arrivals
            .lock()
            .unwrap()
            .insert(IpAddr::V4(marker), Vec::new());
        let (ns, name, d) = cluster.services[s].clone();
        let slice = cluster.slice(
            &ns,
            &name,
            &cluster.deployments[d],
            args.endpoints_per_service,
            Some(marker),
        );
        let t0 = Instant::now();
        api.apply(with_kind(slice, "EndpointSlice"));
        let deadline = t0 + CHANGE_DEADLINE;
        loop {
            let seen = arrivals.lock().unwrap()[&IpAddr::V4(marker)].clone();
            if seen.len() >= per_service[s] {
                latencies.extend(seen.iter().map(|t| (*t - t0).as_secs_f64() * 1e3));
                to_all.push(
                    seen.iter()
                        .map(|t| (*t - t0).as_secs_f64() * 1e3)
                        .fold(0.0, f64::max),
                );
                break;
            }
            if Instant::now() > deadline {
                missed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let restore = cluster.slice(
            &ns,
            &name,
            &cluster.deployments[d],
            args.endpoints_per_service,
            None,
        );
        api.apply(with_kind(restore, "EndpointSlice"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort_by(f64::total_cmp);
    to_all.sort_by(f64::total_cmp);
    let rss_before_churn = rss_kb(control.pid())?;
    eprintln!(
        "changes: p50 {:.1} ms, p99 {:.1} ms to each stream; p99 {:.1} ms to all of a service's; {missed} missed; RSS {} MB",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&to_all, 0.99),
        rss_before_churn / 1024
    );

    // Churn: replace pods, rewrite the slices of the services behind them.
    let churn_start = Instant::now();
    let interval = Duration::from_secs(1) / args.churn_rate;
    let mut tick = tokio::time::interval(interval);
    let mut replaced = 0u64;
    let mut freed: Vec<Ipv4Addr> = Vec::new();
    let mut samples = vec![(0u64, rss_before_churn)];
    let mut rng = fastrand::Rng::with_seed(7);
    while churn_start.elapsed() < Duration::from_secs(args.churn_secs) {
        tick.tick().await;
        let d = rng.usize(..cluster.deployments.len());
        let p = rng.usize(..cluster.deployments[d].pods.len());
        // Every other replacement reuses an IP a deleted pod had.
        let ip = if replaced % 2 == 1 && !freed.is_empty() {
            freed.remove(0)
        } else {
            cluster.ip()
        };
        let name = cluster.pod_name(&cluster.deployments[d].name.clone());
        let (old, old_ip) =
            std::mem::replace(&mut cluster.deployments[d].pods[p], (name.clone(), ip));
        freed.push(old_ip);
        let dep = &cluster.deployments[d];
        api.delete("Pod", &dep.ns, &old);
        api.apply(with_kind(cluster.pod(dep, &name, ip), "Pod"));
        for (ns, svc, _) in cluster.services.iter().filter(|(_, _, sd)| *sd == d) {
            let slice = cluster.slice(ns, svc, dep, args.endpoints_per_service, None);
            api.apply(with_kind(slice, "EndpointSlice"));
        }
        replaced += 1;
        let secs = churn_start.elapsed().as_secs();
        if secs >= samples.last().map_or(0, |s| s.0) + 10 {
            samples.push((secs, rss_kb(control.pid())?));
            eprintln!(
                "churn {secs} s: {replaced} pods replaced, RSS {} MB",
                samples.last().unwrap().1 / 1024
            );
        }
    }
    let rss_after = rss_kb(control.pid())?;
    let growth = (rss_after as f64 / rss_before_churn as f64 - 1.0) * 100.0;
    let p99 = percentile(&latencies, 0.99);
    let report = json!({
        "pods": pods,
        "services": cluster.services.len(),
        "endpoints": cluster.services.len() * args.endpoints_per_service,
        "streams": args.streams,
        "sync_and_open_secs": synced.as_secs_f64(),
        "rss_synced_mb": rss_synced as f64 / 1024.0,
        "rss_settled_mb": rss_settled as f64 / 1024.0,
        "change_ms": {
            "p50": percentile(&latencies, 0.5),
            "p99": p99,
            "max": latencies.last().copied().unwrap_or(f64::NAN),
            "p99_to_all_streams_of_service": percentile(&to_all, 0.99),
            "changes": to_all.len(),
            "missed": missed,
        },
        "churn": {
            "secs": args.churn_secs,
            "pods_replaced": replaced,
            "rss_before_mb": rss_before_churn as f64 / 1024.0,
            "rss_after_mb": rss_after as f64 / 1024.0,
            "growth_pct": growth,
            "rss_samples_mb": samples.iter().map(|(s, kb)| json!([s, *kb as f64 / 1024.0])).collect::<Vec<_>>(),
        },
        "goals": {
            "rss_synced_le_150mb": rss_synced as f64 / 1024.0 <= 150.0,
            "churn_growth_le_10pct": growth <= 10.0,
            "change_p99_le_200ms": missed == 0 && p99 <= 200.0,
        },
    });
    println!("{report}");
    drop(control);
    Ok(())
}
