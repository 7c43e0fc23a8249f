//! `ferry demo`: the emoji-voting app in a complete local mesh, in one command — the control
//! plane (workloads file, identity CA, embedded metrics), each workload with its own
//! `ferry-proxy` (upstream listeners, so no root), and the vote bot. Runs until Ctrl-C or
//! SIGTERM, then stops everything it started.
//!
//! [`layout`] says where everything listens; [`procs`] starts, records and stops the
//! processes. The binaries are the ones next to `ferry` itself.

pub mod layout;
pub mod procs;
pub mod story;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use layout::{Layout, Workload, DEFAULT_PORT_BASE, NAMESPACE};
use procs::{Children, Lock};

/// How long each part may take to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long children get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The identity trust domain (the workloads file's default).
const TRUST_DOMAIN: &str = "cluster.local";

/// `ferry demo`
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// First of the 70 ports the demo uses: API and dashboard on base+4, control gRPC on
    /// base+6, web's proxy on base+10 (docs/demo.md lists them all).
    #[arg(long, default_value_t = DEFAULT_PORT_BASE)]
    pub port_base: u16,
    /// Where the workloads file, identity material, logs and the lock go
    /// [default: <temp dir>/ferry-demo-<port base>].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The bot's votes per second.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
}

/// The binaries the demo runs, found next to `ferry`.
#[derive(Clone)]
struct Binaries {
    control: PathBuf,
    proxy: PathBuf,
    app: PathBuf,
}

impl Binaries {
    fn find() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the ferry executable")?;
        let dir = exe
            .parent()
            .context("the ferry executable has no directory")?;
        let find = |name: &str| {
            let path = dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{name} is missing: `ferry demo` runs the binaries next to ferry, in {}; \
                 build them all with `cargo build --release` and run ./target/release/ferry demo",
                dir.display()
            );
            Ok(path)
        };
        Ok(Self {
            control: find("ferry-control")?,
            proxy: find("ferry-proxy")?,
            app: find("ferry-emojivoto")?,
        })
    }
}

/// Runs `ferry demo` until Ctrl-C or SIGTERM.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.01..=1000.0).contains(&args.rate),
        "--rate {} is not between 0.01 and 1000 votes per second",
        args.rate
    );
    let layout = Layout::new(args.port_base)?;
    let bins = Binaries::find()?;
    let state = args
        .state_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-demo-{}", args.port_base)));
    let program = std::env::current_exe()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ferry".into());
    let (_lock, cleaned) = Lock::acquire(&state, &program).await.map_err(|e| {
        match e.downcast::<procs::AlreadyRunning>() {
            Ok(running) => anyhow::anyhow!(
                "{running}; its dashboard and API are at http://{}. Stop it with Ctrl-C in its \
             terminal (or `kill {}`), or start another one with a different --port-base",
                layout.api,
                running.pid
            ),
            Err(e) => e,
        }
    })?;
    if !cleaned.is_empty() {
        println!(
            "Stopped processes a killed ferry demo left behind: {}",
            cleaned.join(", ")
        );
    }
    // A killed process loses its command line (our liveness test) before the kernel closes
    // its sockets: give the leftovers' ports a moment to come free.
    let grace = if cleaned.is_empty() {
        Duration::ZERO
    } else {
        Duration::from_secs(5)
    };
    check_ports(&layout, grace).await?;

    let mut stop = Box::pin(stop_signal()?);
    let mut children = Children::new(&state)?;
    println!(
        "ferry demo: the emoji-voting app in a local mesh (ports {}-{}, state in {})",
        layout.base,
        layout.base + layout::SPAN - 1,
        state.display()
    );
    let started = tokio::select! {
        started = start(&layout, &bins, &state, args.rate, &mut children) => Some(started),
        signal = &mut stop => {
            println!("{signal}: stopping before everything came up");
            None
        }
    };
    let result = match started {
        None => Ok(()),
        Some(Err(error)) => Err(error),
        Some(Ok(mtls)) => {
            print_ready(&layout, &state, mtls);
            watch(&mut children, &mut stop, &state, layout.api).await
        }
    };
    let count = children.pids().len();
    let killed = children.stop(STOP_GRACE).await;
    if killed.is_empty() {
        println!("Stopped {count} processes.");
    } else {
        println!(
            "Stopped {count} processes ({} did not stop within {STOP_GRACE:?} and were killed).",
            killed.join(", ")
        );
    }
    result
}

/// Refuses to start when a port is taken (still, after `grace`), naming the port and what
/// it was for.
async fn check_ports(layout: &Layout, grace: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + grace;
    for (addr, what) in layout.ports() {
        let mut bound = try_listen(addr);
        while bound.is_err() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            bound = try_listen(addr);
        }
        if let Err(e) = bound {
            let hint = if addr == layout.api {
                " (is another ferry-control or ferry demo running?)"
            } else {
                ""
            };
            anyhow::bail!(
                "port {} ({what}) is not free: {e}{hint}; stop what uses it or choose another --port-base",
                addr.port()
            );
        }
    }
    Ok(())
}

/// Opens (and drops) a listener on `addr` the way the demo's processes will: tokio's
/// listeners set `SO_REUSEADDR`, so connections of a stopped run lingering in TIME_WAIT do
/// not make a port look taken; another listener still does.
fn try_listen(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1)
}

/// Completes with the signal's name on SIGINT (Ctrl-C), SIGTERM or SIGHUP.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        }
    })
}

/// Waits for a signal, restarting children that exit on their own: each is reported in one
/// line, started again after a backoff that doubles with every exit that follows a short
/// run ([`RESTART_BACKOFF`] up to [`RESTART_BACKOFF_MAX`]), and the demo gives up (an
/// error, with the child's log) after [`MAX_QUICK_EXITS`] such exits in a row. While the
/// control plane is down the proxies keep routing on what it last told them; the demo
/// says when it is back.
async fn watch(
    children: &mut Children,
    stop: &mut (impl std::future::Future<Output = &'static str> + Unpin),
    state: &Path,
    api: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let health = format!("http://{api}/api/v1/health");
    let mut supervisor = Supervisor::default();
    loop {
        tokio::select! {
            signal = &mut *stop => {
                println!("{signal}: stopping");
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        for (name, status) in children.all_exited() {
            if supervisor.pending.contains_key(&name) {
                continue;
            }
            let ran = children.uptime(&name).unwrap_or_default();
            let quick = supervisor.quick.entry(name.clone()).or_default();
            *quick = if ran < STABLE_RUN { *quick + 1 } else { 1 };
            let log = state.join("logs").join(format!("{name}.log"));
            if *quick > MAX_QUICK_EXITS {
                anyhow::bail!(
                    "{} exited {MAX_QUICK_EXITS} times in a row within {STABLE_RUN:?} of starting \
                     ({status}); giving up. Its log, {}:\n{}",
                    display_name(&name),
                    log.display(),
                    log_tail(&log)
                );
            }
            let backoff = RESTART_BACKOFF
                .saturating_mul(1 << (*quick - 1).min(8))
                .min(RESTART_BACKOFF_MAX);
            let after = if name == CONTROL {
                "; the proxies keep routing on its last answers"
            } else {
                ""
            };
            println!(
                "{} exited ({status}){after}. Restarting it in {backoff:?} (log: {}).",
                display_name(&name),
                log.display()
            );
            supervisor.pending.insert(
                name,
                (tokio::time::Instant::now() + backoff, Instant::now()),
            );
        }
        let due: Vec<String> = supervisor
            .pending
            .iter()
            .filter(|(_, (at, _))| tokio::time::Instant::now() >= *at)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let (_, died) = supervisor.pending.remove(&name).expect("due");
            children
                .restart(&name)
                .with_context(|| format!("restarting {}", display_name(&name)))?;
            if name == CONTROL {
                supervisor.control_down_since = Some(died);
            }
        }
        if let Some(died) = supervisor.control_down_since {
            if children.status_of(CONTROL).is_none() && http_ok(&health).await {
                println!(
                    "ferry-control is back ({:.1}s after it exited); the proxies resubscribe to it.",
                    died.elapsed().as_secs_f64()
                );
                supervisor.control_down_since = None;
            }
        }
    }
}

/// The control plane's child name.
const CONTROL: &str = "control";
/// The first restart's delay.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);
/// The longest delay between restarts.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A child that ran this long before exiting is restarted as if for the first time.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// Exits after short runs, in a row, before the demo gives up on a child.
const MAX_QUICK_EXITS: u32 = 5;

/// What [`watch`] remembers between ticks.
#[derive(Default)]
struct Supervisor {
    /// Children waiting to be restarted: when, and when they exited.
    pending: std::collections::BTreeMap<String, (tokio::time::Instant, Instant)>,
    /// Exits after short runs, in a row, per child.
    quick: std::collections::BTreeMap<String, u32>,
    /// When the control plane exited, until it answers again.
    control_down_since: Option<Instant>,
}

/// How a child is named to the user.
fn display_name(name: &str) -> String {
    match name {
        CONTROL => "ferry-control".to_string(),
        n if n.ends_with("-proxy") => format!("{}'s ferry-proxy", n.trim_end_matches("-proxy")),
        n => format!("the {n} app"),
    }
}

/// Starts everything in dependency order, waiting for each part. Returns whether the
/// proxies run with mTLS.
async fn start(
    layout: &Layout,
    bins: &Binaries,
    state: &Path,
    rate: f64,
    children: &mut Children,
) -> anyhow::Result<bool> {
    let workloads_file = state.join("workloads.yaml");
    std::fs::write(&workloads_file, layout.workloads_file())
        .with_context(|| format!("writing {}", workloads_file.display()))?;
    let identity_dir = state.join("identity");
    let config_dir = write_story(state)?;

    let scrape_flag = help_mentions(&bins.control, "--scrape-interval");
    let trace_flag = help_mentions(&bins.control, "--trace-listen");
    let rollouts_flag = help_mentions(&bins.control, "--rollouts");
    let control = {
        let (bin, grpc, api, trace) = (bins.control.clone(), layout.grpc, layout.api, layout.trace);
        let (workloads_file, identity_dir) = (workloads_file.clone(), identity_dir.clone());
        move || {
            let mut control = Command::new(&bin);
            control
                .arg("--workloads-file")
                .arg(&workloads_file)
                .args(["--grpc-listen", &grpc.to_string()])
                .args(["--api-listen", &api.to_string()])
                .arg("--identity-dir")
                .arg(&identity_dir);
            if scrape_flag {
                control.args(["--scrape-interval", "1s"]);
            }
            if trace_flag {
                // The demo's own port, never the default 0.0.0.0:4317.
                control.args(["--trace-listen", &trace.to_string()]);
            }
            if rollouts_flag {
                // Routes, policies and rollouts: whatever the user copies in (story.rs).
                control
                    .arg("--routes")
                    .arg(&config_dir)
                    .arg("--rollouts")
                    .arg(&config_dir);
            }
            control
        }
    };
    let t = Instant::now();
    children.spawn_restartable(CONTROL, Box::new(control), false)?;
    let health = format!("http://{}/api/v1/health", layout.api);
    wait_up(children, state, CONTROL, "the control plane's API", || {
        http_ok(&health)
    })
    .await?;
    let identity = Identity::new(&identity_dir);
    wait_up(children, state, CONTROL, "identity tokens", || async {
        identity.anchors.is_file()
            && layout
                .workloads
                .iter()
                .all(|w| identity.token(w.app_name).is_file())
    })
    .await?;
    println!(
        "  control plane   API and dashboard http://{}, gRPC {}   ({:.1}s)",
        layout.api,
        layout.grpc,
        t.elapsed().as_secs_f64()
    );

    let mtls = help_mentions(&bins.proxy, "--identity-token-file");
    // Proxies trace every vote into the control plane's receiver, when both sides can.
    let tracing = trace_flag && help_mentions(&bins.proxy, "--trace-collector");
    for name in [
        "emoji",
        "voting",
        "voting-v2",
        "voting-v3",
        "web",
        "vote-bot",
    ] {
        let w = layout.workload(name);
        let t = Instant::now();
        let mut app_cmd: Option<procs::MakeCommand> = Some({
            let (bins, w) = (bins.clone(), w.clone());
            Box::new(move || app_command(&bins, &w, rate))
        });
        if w.serves {
            let app_cmd = app_cmd.take().expect("the app's command, once");
            children.spawn_restartable(name, app_cmd, true)?;
            let app = w.app;
            wait_up(children, state, name, "the app's port", || async move {
                tokio::net::TcpStream::connect(app).await.is_ok()
            })
            .await?;
        }
        let proxy_name = format!("{name}-proxy");
        let proxy = {
            let (bins, layout, w) = (bins.clone(), layout.clone(), w.clone());
            let identity = mtls.then(|| identity.clone());
            Box::new(move || proxy_command(&bins, &layout, &w, identity.as_ref(), tracing))
        };
        children.spawn_restartable(&proxy_name, proxy, false)?;
        let ready = format!("http://{}/ready", w.admin);
        wait_up(children, state, &proxy_name, "the proxy's /ready", || {
            http_ok(&ready)
        })
        .await?;
        if let Some(app_cmd) = app_cmd.take() {
            children.spawn_restartable(name, app_cmd, true)?;
        }
        let app = if w.serves {
            format!("app {}, ", w.app)
        } else {
            format!("{} votes/s, ", rate)
        };
        println!(
            "  {name:<15} {app}proxy inbound {} admin {}   ({:.1}s)",
            w.inbound,
            w.admin,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(mtls)
}

/// The app of `w`: `ferry-emojivoto <workload>`, calling each peer through its proxy's
/// upstream listener and naming it by its service (`emoji-svc.emojivoto:8080`), as a client
/// in a cluster would.
fn app_command(bins: &Binaries, w: &Workload, rate: f64) -> Command {
    let mut cmd = Command::new(&bins.app);
    cmd.arg(w.app_name);
    if let Some(version) = w.version {
        cmd.args(["--app-version", version]);
    }
    if w.serves {
        cmd.args(["--listen", &w.app.to_string()]);
    } else {
        cmd.args(["--rate", &rate.to_string()]);
    }
    for (addr, target) in &w.upstreams {
        // emoji-svc.emojivoto:8080 → --emoji-addr, --emoji-authority
        let peer = target.split('-').next().unwrap_or(target);
        cmd.arg(format!("--{peer}-addr"))
            .arg(addr.to_string())
            .arg(format!("--{peer}-authority"))
            .arg(target);
    }
    cmd.arg("--exit-on-stdin-eof");
    cmd
}

/// The proxy of `w`. With `identity` (the proxy supports mTLS), it proves `w`'s service
/// account with the token the control plane wrote for it, and trusts the demo's anchors.
/// With `tracing`, it traces every request that arrives without a context (the bot's
/// votes) and continues the others, exporting to the control plane's receiver.
fn proxy_command(
    bins: &Binaries,
    layout: &Layout,
    w: &Workload,
    identity: Option<&Identity>,
    tracing: bool,
) -> Command {
    let mut cmd = Command::new(&bins.proxy);
    cmd.args(["--inbound-listen", &w.inbound.to_string()])
        .args(["--inbound-forward", &w.app.to_string()])
        .args(["--outbound-listen", &w.outbound.to_string()])
        .args(["--admin-listen", &w.admin.to_string()])
        .args(["--tap-listen", &w.tap.to_string()])
        .args(["--destination-addr", &layout.grpc.to_string()])
        .args(["--pod-namespace", NAMESPACE, "--pod-name", &w.pod])
        .args(["--shutdown-grace-period", "2s"]);
    for (local, target) in &w.upstreams {
        cmd.args(["--upstream", &format!("{local}={target}")]);
    }
    if tracing {
        cmd.args(["--trace-collector", &layout.trace.to_string()])
            .args(["--trace-sampling", "1"])
            .args([
                "--trace-resource-attributes",
                &format!("service.name={},k8s.deployment.name={}", w.app_name, w.name),
            ]);
    }
    if let Some(identity) = identity {
        cmd.arg("--identity-token-file")
            .arg(identity.token(w.app_name))
            .arg("--identity-trust-anchors")
            .arg(&identity.anchors)
            .args([
                "--service-account",
                w.app_name,
                "--trust-domain",
                TRUST_DOMAIN,
            ]);
    }
    cmd
}

/// Writes the story's examples to `<state>/examples/` and empties `<state>/config/` (the
/// control plane's routes, policies and rollouts), so the demo starts at the story's
/// beginning. Returns the config directory.
fn write_story(state: &Path) -> anyhow::Result<PathBuf> {
    let examples = state.join(story::EXAMPLES_DIR);
    std::fs::create_dir_all(&examples)
        .with_context(|| format!("creating {}", examples.display()))?;
    for (name, text) in story::examples() {
        let path = examples.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let config = state.join(story::CONFIG_DIR);
    if config.exists() {
        std::fs::remove_dir_all(&config)
            .with_context(|| format!("emptying {}", config.display()))?;
    }
    std::fs::create_dir_all(&config).with_context(|| format!("creating {}", config.display()))?;
    Ok(config)
}

/// Where the control plane keeps the demo's identity material.
#[derive(Clone)]
struct Identity {
    /// `<identity-dir>/tokens/<namespace>/`.
    tokens: PathBuf,
    /// The trust anchors (PEM), `<identity-dir>/ca/ca-bundle.crt`.
    anchors: PathBuf,
}

impl Identity {
    fn new(dir: &Path) -> Self {
        Self {
            tokens: dir.join("tokens").join(NAMESPACE),
            anchors: dir.join("ca").join("ca-bundle.crt"),
        }
    }

    /// The token file of service account `sa`.
    fn token(&self, sa: &str) -> PathBuf {
        self.tokens.join(sa)
    }
}

/// Whether `bin --help` mentions `flag`: how the demo adapts to the binaries it was built with.
fn help_mentions(bin: &Path, flag: &str) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        .unwrap_or(false)
}

/// Polls `check` until it holds, failing when `child` exits or after [`STARTUP_TIMEOUT`].
async fn wait_up<F, Fut>(
    children: &mut Children,
    state: &Path,
    child: &str,
    what: &str,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let log = state.join("logs").join(format!("{child}.log"));
    loop {
        if let Some(status) = children.status_of(child) {
            anyhow::bail!(
                "{child} exited while starting ({status}); its log, {}:\n{}",
                log.display(),
                log_tail(&log)
            );
        }
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{child}: {what} not up within {STARTUP_TIMEOUT:?}; its log, {}:\n{}",
                log.display(),
                log_tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `GET url` answers 2xx within a second.
async fn http_ok(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    matches!(
        tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await,
        Ok(Ok(r)) if r.status().is_success()
    )
}

/// The last lines of a log, indented.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(10);
    lines[from..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_ready(layout: &Layout, state: &Path, mtls: bool) {
    let ferry = std::env::args().next().unwrap_or_else(|| "ferry".into());
    // With a kubeconfig present the CLI goes to that cluster unless told otherwise.
    let cluster = crate::cluster::KubeArgs::default().cluster_configured();
    let api = if layout.api.port() == ferry_api::ports::CONTROL_API && !cluster {
        String::new()
    } else {
        format!(" --api-addr http://{}", layout.api)
    };
    let web = layout.workload("web");
    let voting = layout.workload("voting");
    let tls = if mtls {
        "on: each proxy has a certificate for its service account, and proxies talk mTLS"
    } else {
        "off: this ferry-proxy has no --identity-token-file yet (the tokens are ready)"
    };
    println!(
        "\nReady.
  The app          http://{web_in}   (web, through its proxy)
  Dashboard, API   http://{api_addr}
  mTLS             {tls}
  Metrics          http://{voting_admin}/metrics   (voting's proxy; each proxy has its admin port)

Try, in another terminal:
  {ferry} stat deploy -n {NAMESPACE}{api}
  {ferry} stat deploy -n {NAMESPACE} --from deploy/web{api}
  {ferry} stat deploy -n {NAMESPACE} --from deploy/voting{api}
  {ferry} stat deploy -n {NAMESPACE} --to deploy/emoji{api}
  {ferry} tap deploy/voting -n {NAMESPACE}{api}
  {ferry} tap deploy/web -n {NAMESPACE} --to deploy/emoji{api}
  {ferry} edges deploy -n {NAMESPACE}{api}
  {ferry} diagnostics endpoints emoji-svc.{NAMESPACE}:8080{api}

Deploy is not release: voting v2 (the fix) and v3 (a regression) run dark, without traffic.
Release v2 in steps, judged on the mesh's metrics, and watch it promote:
  cp {examples}/{v2} {config}/{rollout}
  {ferry} rollout status voting -n {NAMESPACE} --watch{api}
Then v3, which rolls back on its own:
  cp {examples}/{v3} {config}/{rollout}
  {ferry} rollout history voting -n {NAMESPACE}{api}
Then lock voting to web; the bot's direct reads of voting (v2, after the rollouts) are refused:
  cp {examples}/{policy} {config}/
  {ferry} tap deploy/voting-v2 -n {NAMESPACE}{api}
  {ferry} authz deploy/voting-v2 -n {NAMESPACE}{api}

Logs are in {logs}. Ctrl-C stops everything.",
        web_in = web.inbound,
        api_addr = layout.api,
        voting_admin = voting.admin,
        logs = state.join("logs").display(),
        examples = state.join(story::EXAMPLES_DIR).display(),
        config = state.join(story::CONFIG_DIR).display(),
        rollout = story::ROLLOUT_FILE,
        v2 = story::V2_FILE,
        v3 = story::V3_FILE,
        policy = story::POLICY_FILE,
    );
}
