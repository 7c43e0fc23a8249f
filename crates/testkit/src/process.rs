//! Real processes for end-to-end tests: spawned with piped logs, their bound addresses read
//! from `listener bound` log lines, and killed when dropped.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The path of a workspace binary built beside the running test (`target/<profile>/NAME`).
///
/// `cargo nextest run --workspace` builds every binary of a package that has integration
/// tests; a test run for one package only may need `cargo build --bins` first.
pub fn bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` (or test with --workspace)",
        path.display()
    );
    path
}

/// A running process and everything it has logged so far.
pub struct Proc {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// The tasks reading stdout and stderr into `logs`, done at end of file.
    readers: Vec<tokio::task::JoinHandle<()>>,
    name: String,
}

impl Proc {
    /// Starts `bin` with `args` (and `envs`), logging as JSON so addresses can be read.
    pub fn spawn(
        bin: impl AsRef<Path>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let bin = bin.as_ref();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawning {}: {e}", bin.display()))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for stream in [
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().unwrap().push(line);
                }
            }));
        }
        Ok(Self {
            child,
            logs,
            readers,
            name: bin
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a logged line contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let r = crate::wait_until(timeout, needle, || async {
            self.logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
        .await;
        r.map_err(|e| anyhow::anyhow!("{e}; {} logged:\n{}", self.name, self.logs().join("\n")))
    }

    /// Waits for `count` `listener bound` lines and returns their addresses by listener name.
    pub async fn bound_addrs(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<HashMap<String, SocketAddr>> {
        let found = crate::wait_until(timeout, "listeners to bind", || async {
            let map: HashMap<String, SocketAddr> = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["message"] == "listener bound")
                .filter_map(|v| {
                    Some((
                        v["listener"].as_str()?.to_string(),
                        v["addr"].as_str()?.parse().ok()?,
                    ))
                })
                .collect();
            (map.len() >= count).then_some(map)
        })
        .await;
        found.map_err(|e| anyhow::anyhow!("{e}; {} logged:\n{}", self.name, self.logs().join("\n")))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends `SIGTERM` and waits (bounded) for the exit status.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        self.exited(timeout).await
    }

    /// Waits (bounded) for the process to exit on its own.
    pub async fn terminate_wait(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        self.exited(timeout).await
    }

    /// The exit status, once every line the process wrote has been read into its logs (a
    /// test reading them right after the exit sees its last words), all within `timeout`.
    async fn exited(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let status = tokio::time::timeout_at(deadline, self.child.wait()).await??;
        for reader in self.readers.drain(..) {
            // A child of the process may hold the pipes open: the logs are then as far as
            // they got by the deadline.
            let _ = tokio::time::timeout_at(deadline, reader).await;
        }
        Ok(status)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A `ferry-proxy` process with every listener on an ephemeral loopback port, its bound
/// addresses read from its logs.
pub struct ProxyProc {
    /// The process.
    pub proc: Proc,
    /// Bound addresses by listener name (`inbound`, `outbound`, `admin`, `tap`, `upstream <target>`).
    pub addrs: HashMap<String, SocketAddr>,
}

impl ProxyProc {
    /// Starts `bin` (a `ferry-proxy`) with `extra` flags after the ephemeral listeners.
    pub async fn spawn(bin: impl AsRef<Path>, extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec![
            "--inbound-listen",
            "127.0.0.1:0",
            "--outbound-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tap-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log",
            "info,ferry_proxy=debug",
        ];
        args.extend_from_slice(extra);
        let upstreams = extra.iter().filter(|a| **a == "--upstream").count();
        let proc = Proc::spawn(bin, &args, &[])?;
        let addrs = proc
            .bound_addrs(4 + upstreams, Duration::from_secs(15))
            .await?;
        Ok(Self { proc, addrs })
    }

    /// The inbound listener.
    pub fn inbound(&self) -> SocketAddr {
        self.addrs["inbound"]
    }

    /// The admin server.
    pub fn admin(&self) -> SocketAddr {
        self.addrs["admin"]
    }

    /// The tap server (`tap.Tap/Observe`).
    pub fn tap(&self) -> SocketAddr {
        self.addrs["tap"]
    }

    /// The upstream listener for `target`, as given to `--upstream`.
    pub fn upstream(&self, target: &str) -> SocketAddr {
        self.addrs[&format!("upstream {target}")]
    }
}

/// A running `ferry-control` and the addresses it bound.
pub struct ControlProc {
    /// The process.
    pub proc: Proc,
    /// The gRPC server (destination, identity).
    pub grpc: SocketAddr,
    /// The public API and dashboard.
    pub api: SocketAddr,
    /// The OTLP trace receiver, unless `extra` turned it off (`--trace-listen off`).
    pub trace: Option<SocketAddr>,
}

impl ControlProc {
    /// Starts `ferry-control` over the workloads file `file`, with `extra` flags. Its
    /// listeners are on ephemeral loopback ports, except the gRPC one when `extra` sets
    /// `--grpc-listen` (to restart on the same address) and the trace receiver when it sets
    /// `--trace-listen`.
    pub async fn spawn(file: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let file = file.to_str().expect("a UTF-8 workloads path");
        let mut args = vec![
            "--workloads-file",
            file,
            "--api-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ];
        if !extra.contains(&"--grpc-listen") {
            args.extend(["--grpc-listen", "127.0.0.1:0"]);
        }
        // Never the default 0.0.0.0:4317, which tests running side by side would share.
        let trace_off = extra.contains(&"--trace-listen=off")
            || extra.windows(2).any(|w| w == ["--trace-listen", "off"]);
        if !extra.iter().any(|a| a.starts_with("--trace-listen")) {
            args.extend(["--trace-listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        let proc = Proc::spawn(bin("ferry-control"), &args, &[])?;
        let count = if trace_off { 2 } else { 3 };
        let addrs = proc.bound_addrs(count, Duration::from_secs(15)).await?;
        Ok(Self {
            grpc: addrs["grpc"],
            api: addrs["api"],
            trace: addrs.get("trace").copied(),
            proc,
        })
    }
}

/// Whether a tool the fuzz and abuse tests drive is there: `probe` runs it and must
/// succeed. Without it the calling test skips, saying so on stderr, unless
/// `FERRY_REQUIRE_ATTACK_TOOLS` is set (as in CI), which fails it: a green CI run then
/// means the attacks ran.
pub fn attack_tool(probe: &mut std::process::Command, what: &str) -> bool {
    let ok = probe
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("FERRY_REQUIRE_ATTACK_TOOLS").is_none(),
            "FERRY_REQUIRE_ATTACK_TOOLS is set but {what} is missing: run .ci/setup"
        );
        eprintln!("SKIPPED: {what} is missing; run .ci/setup (CI does, with FERRY_REQUIRE_ATTACK_TOOLS=1)");
    }
    ok
}
