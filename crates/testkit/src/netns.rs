//! Network namespaces for process-level tests that run as root (CI does): namespaces deleted
//! on drop, commands run inside one as a given user (`ip netns exec … setpriv …`), copies of
//! binaries that such users may run, and the tiny HTTP/1 app those tests re-run their own
//! binary as. Used by the proxy's `netns` and `init_netns` tests and the mTLS cluster test.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `args[0]` with the rest as arguments, failing the test (with its stderr) unless it
/// succeeds; returns its stdout.
pub fn must(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first of `tools` that is not on `PATH`, as a reason to print when skipping.
pub fn missing_tool(tools: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .find(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .map(|tool| format!("`{tool}` is not installed (.ci/setup installs it)"))
}

/// A network namespace (`ip netns add`, loopback up) that exists for the life of the value.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `<prefix>-<pid>-<n>`, unique within this machine's running tests.
    pub fn new(prefix: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::named(&format!("{prefix}-{}-{n}", std::process::id()))
    }

    /// Creates the namespace `name`.
    pub fn named(name: &str) -> Self {
        must(&["ip", "netns", "add", name]);
        // From here on, a failure deletes the namespace.
        let ns = Self {
            name: name.to_string(),
        };
        must(&["ip", "-n", name, "link", "set", "lo", "up"]);
        ns
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace also deletes the veth ends in it, and so their peers.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .status();
    }
}

/// The arguments of `ip` that run `program` in namespace `ns`, as `uid` (user and group,
/// no supplementary groups) when given, else as root.
pub fn exec_args(ns: &str, uid: Option<&str>, program: &str) -> Vec<String> {
    let mut args: Vec<String> = ["netns", "exec", ns].map(String::from).to_vec();
    if let Some(uid) = uid {
        args.extend(
            ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"].map(String::from),
        );
    }
    args.push(program.to_string());
    args
}

/// `program` in namespace `ns` as `uid` (see [`exec_args`]), ready for more arguments.
/// `ip netns exec` and `setpriv` exec the program, so the child's pid is the program's.
pub fn command(ns: &str, uid: Option<&str>, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(exec_args(ns, uid, program));
    cmd
}

/// Copies a binary into `dir` where any user may run it (the build directory may sit
/// where the test's other users cannot enter); returns the copy's path.
pub fn runnable_copy(dir: &Path, from: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(from.file_name().expect("a binary's file name"));
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to.to_str().expect("a UTF-8 path").to_string()
}

/// An app for these tests, never returning: answers every HTTP/1 request on `addr` with
/// `body` and closes the connection. Tests run it as their own binary in an ignored
/// "server mode" test, inside a namespace and as another user.
pub fn serve_http(addr: &str, body: &str) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(reply.as_bytes());
    }
}
