//! A fake node for the cluster test: a bridge in the test's own network namespace holding
//! the node address ([`NODE_IP`], where the control plane listens and from where it scrapes)
//! and one network namespace per pod, joined to the bridge by a veth pair and given the pod
//! IP the fake API server reports. Pods reach each other and the node over the bridge (no
//! forwarding on the host, no default route); ClusterIPs have an on-link route that only
//! the pod's iptables rules make useful. Everything — namespaces, veths, bridge — is deleted
//! on drop.
//!
//! The node's names and addresses are fixed, so one test at a time may hold them: a
//! [`Node`] holds a lock file while it exists, and first removes what a run that was
//! killed before its drop (a test timeout's SIGKILL) left behind.

use std::fs::{File, TryLockError};
use std::process::{Output, Stdio};
use std::time::Duration;

use ferry_testkit::netns::{command, must, Netns};
use ferry_testkit::wait_until;

/// The node's address on the pods' bridge, in the recorded cluster's pod range
/// (`10.244.0.0/24`, used only inside this bridge and the namespaces on it).
pub const NODE_IP: &str = "10.244.0.1";

/// The recorded cluster's service range (kind's default), where ClusterIPs live.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// The prefix of the pods' namespaces and veths and of the node's lock and pid files.
const PREFIX: &str = "ferry-e2e";
/// The bridge, in the test's own network namespace.
const BRIDGE: &str = "ferry-e2e-br";

/// The bridge and the pod namespaces on it.
pub struct Node {
    pods: Vec<Netns>,
    _lock: File,
}

impl Node {
    /// Creates the bridge with [`NODE_IP`], once no other test holds the node (waiting at
    /// most `limit`).
    pub async fn new(limit: Duration) -> Self {
        let path = std::env::temp_dir().join(format!("{PREFIX}-node.lock"));
        let lock = File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let held = wait_until(
            limit,
            "the node lock (another cluster test running?)",
            || {
                let held = match lock.try_lock() {
                    Ok(()) => Some(()),
                    Err(TryLockError::WouldBlock) => None,
                    Err(TryLockError::Error(e)) => panic!("locking {}: {e}", path.display()),
                };
                async move { held }
            },
        )
        .await;
        held.unwrap_or_else(|e| panic!("{e}: {}", path.display()));
        remove_leftovers(&pids_file());
        let node = Self {
            pods: Vec::new(),
            _lock: lock,
        };
        must(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
        let cidr = format!("{NODE_IP}/24");
        must(&["ip", "addr", "add", &cidr, "dev", BRIDGE]);
        must(&["ip", "link", "set", BRIDGE, "up"]);
        node
    }

    /// Notes `pid`, a process this test started outside the pods (the control plane), so
    /// that the next test kills it if this one is killed before it can.
    pub fn track(&self, pid: u32) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(pids_file())
            .expect("the node's pid file");
        writeln!(file, "{pid}").expect("writing the node's pid file");
    }

    /// A pod namespace with `ip` on the bridge; returns the namespace's name.
    pub fn add_pod(&mut self, ip: &str) -> String {
        let i = self.pods.len();
        self.pods.push(Netns::new(PREFIX));
        let ns = self.pods[i].name().to_string();
        let (host, pod) = (format!("{PREFIX}-h{i}"), format!("{PREFIX}-p{i}"));
        must(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &pod, "netns", &ns,
        ]);
        must(&["ip", "link", "set", &host, "master", BRIDGE]);
        must(&["ip", "link", "set", &host, "up"]);
        let cidr = format!("{ip}/24");
        must(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", &pod]);
        must(&["ip", "-n", &ns, "link", "set", &pod, "up"]);
        // ClusterIPs must be routable for the app's connect to reach the OUTPUT rules, but
        // nothing answers for them on the bridge: a connection the proxy sent on as is
        // fails here instead of leaving through the host.
        must(&["ip", "-n", &ns, "route", "add", SERVICE_CIDR, "dev", &pod]);
        ns
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A namespace's veth goes with it only once its last process is gone, which a
        // SIGKILL does not wait for: delete the pairs now, so the names are free at once.
        // The namespaces go when `pods` drops, and the lock after them.
        for i in 0..self.pods.len() {
            quiet(&["ip", "link", "del", &format!("{PREFIX}-h{i}")]);
        }
        quiet(&["ip", "link", "del", BRIDGE]);
        let _ = std::fs::remove_file(pids_file());
    }
}

/// Runs a clean-up command whose failure (nothing to remove) does not matter.
fn quiet(args: &[&str]) {
    let _ = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn pids_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{PREFIX}-node.pids"))
}

/// Removes what a killed run left: its pods' processes and the ones it [tracked](Node::track)
/// (killed by pid, if still a Ferry binary), namespaces, veths and bridge. Called with the
/// lock held, so none of it belongs to a running test.
fn remove_leftovers(pids: &std::path::Path) {
    for pid in std::fs::read_to_string(pids).unwrap_or_default().lines() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("/ferry-") {
            eprintln!("killing {pid}, left by a cluster test that was killed");
            quiet(&["kill", "-KILL", pid]);
        }
    }
    let _ = std::fs::remove_file(pids);
    for line in must(&["ip", "netns", "list"]).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if !ns.starts_with(&format!("{PREFIX}-")) {
            continue;
        }
        eprintln!("removing {ns}, left by a cluster test that was killed");
        let pids = std::process::Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in pids.split_whitespace() {
            quiet(&["kill", "-KILL", pid]);
        }
        quiet(&["ip", "netns", "del", ns]);
    }
    for i in 0..3 {
        quiet(&["ip", "link", "del", &format!("{PREFIX}-h{i}")]);
    }
    quiet(&["ip", "link", "del", BRIDGE]);
}

/// Runs `program args` in pod `ns` (as `uid`, else root) to completion without blocking
/// the runtime; killed if it takes longer than `limit`.
pub async fn run_in(
    ns: &str,
    uid: Option<&str>,
    program: &str,
    args: &[&str],
    limit: Duration,
) -> Output {
    let mut cmd = tokio::process::Command::from(command(ns, uid, program));
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning ip netns exec");
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} in {ns} did not finish in {limit:?}"))
        .expect("ip netns exec ran")
}

/// `curl` in pod `ns` as `uid` with `extra` arguments: the body of a 2xx answer, or `None`
/// when the request failed or the answer was an error.
pub async fn curl(ns: &str, uid: &str, extra: &[&str]) -> Option<String> {
    let mut args = vec!["-sSf", "--max-time", "5"];
    args.extend_from_slice(extra);
    let out = run_in(ns, Some(uid), "curl", &args, Duration::from_secs(10)).await;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
