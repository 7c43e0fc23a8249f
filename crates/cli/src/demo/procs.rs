//! The processes `ferry demo` starts, and the state directory's lock. Every child gets its
//! own process group (so a terminal's Ctrl-C reaches only `ferry demo`, which then stops
//! them in order), its output in `logs/<name>.log`, and its pid in `children.pids`, so a
//! later `ferry demo` can clean up after one that was killed with SIGKILL. Dropping
//! [`Children`] kills whatever still runs.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// The binaries whose leftovers a new demo may stop (and no others).
pub const BINARIES: &[&str] = &["ferry-control", "ferry-proxy", "ferry-emojivoto"];

/// Makes a child's command afresh, to start it again.
pub type MakeCommand = Box<dyn Fn() -> Command>;

/// One running child.
struct Running {
    name: String,
    child: Child,
    /// Held open so the child sees end-of-file on stdin if `ferry demo` dies.
    _stdin: Option<ChildStdin>,
    /// How to start it again, and whether its stdin is held.
    make: Option<(MakeCommand, bool)>,
    /// When it was (last) started.
    started: Instant,
}

/// Every process the demo started, in start order.
pub struct Children {
    state_dir: PathBuf,
    running: Vec<Running>,
}

impl Children {
    /// No children yet; logs and pids go under `state_dir`.
    pub fn new(state_dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(state_dir.join("logs"))?;
        fs::write(state_dir.join("children.pids"), "")?;
        Ok(Self {
            state_dir: state_dir.to_path_buf(),
            running: Vec::new(),
        })
    }

    /// The log file of the child called `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{name}.log"))
    }

    /// Starts `cmd` as `name` in its own process group, output to its log file. With
    /// `hold_stdin`, its stdin is a pipe `ferry demo` keeps open until it exits.
    pub fn spawn(&mut self, name: &str, cmd: Command, hold_stdin: bool) -> io::Result<u32> {
        let running = self.start(name, cmd, hold_stdin, false)?;
        let pid = running.child.id();
        self.running.push(running);
        Ok(pid)
    }

    /// [`Children::spawn`] from `make`, which [`Children::restart`] calls again.
    pub fn spawn_restartable(
        &mut self,
        name: &str,
        make: MakeCommand,
        hold_stdin: bool,
    ) -> io::Result<u32> {
        let mut running = self.start(name, make(), hold_stdin, false)?;
        running.make = Some((make, hold_stdin));
        let pid = running.child.id();
        self.running.push(running);
        Ok(pid)
    }

    /// Starts the exited child `name` again, in its place in the start order (its log is
    /// appended to). Returns its new pid; an error when it cannot be started again.
    pub fn restart(&mut self, name: &str) -> io::Result<u32> {
        let at = self
            .running
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| io::Error::other(format!("no child called {name}")))?;
        let Some((make, hold_stdin)) = self.running[at].make.take() else {
            return Err(io::Error::other(format!("{name} cannot be restarted")));
        };
        let mut running = match self.start(name, make(), hold_stdin, true) {
            Ok(running) => running,
            Err(e) => {
                self.running[at].make = Some((make, hold_stdin));
                return Err(e);
            }
        };
        running.make = Some((make, hold_stdin));
        let pid = running.child.id();
        // The exited child is reaped (it was waited for) and replaced.
        self.running[at] = running;
        // Only live children are recorded, so a later demo never kills a reused pid.
        let live: String = self
            .running
            .iter()
            .map(|r| format!("{} {}\n", r.child.id(), r.name))
            .collect();
        fs::write(self.state_dir.join("children.pids"), live)?;
        Ok(pid)
    }

    /// How long the child `name` has been running since it was last started.
    pub fn uptime(&self, name: &str) -> Option<Duration> {
        self.running
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.started.elapsed())
    }

    /// The children that have exited, with their status.
    pub fn all_exited(&mut self) -> Vec<(String, ExitStatus)> {
        self.running
            .iter_mut()
            .filter_map(|r| match r.child.try_wait() {
                Ok(Some(status)) => Some((r.name.clone(), status)),
                _ => None,
            })
            .collect()
    }

    fn start(
        &mut self,
        name: &str,
        mut cmd: Command,
        hold_stdin: bool,
        append: bool,
    ) -> io::Result<Running> {
        let log = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(self.log_path(name))?;
        cmd.stdout(log.try_clone()?)
            .stderr(log)
            .stdin(if hold_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .env("NO_COLOR", "1")
            .process_group(0);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let mut pids = fs::OpenOptions::new()
            .append(true)
            .open(self.state_dir.join("children.pids"))?;
        writeln!(pids, "{pid} {name}")?;
        Ok(Running {
            name: name.to_string(),
            _stdin: child.stdin.take(),
            child,
            make: None,
            started: Instant::now(),
        })
    }

    /// The first child that has exited, with its status.
    pub fn exited(&mut self) -> Option<(String, ExitStatus)> {
        self.running
            .iter_mut()
            .find_map(|r| match r.child.try_wait() {
                Ok(Some(status)) => Some((r.name.clone(), status)),
                _ => None,
            })
    }

    /// Whether the child called `name` has exited, and how.
    pub fn status_of(&mut self, name: &str) -> Option<ExitStatus> {
        let r = self.running.iter_mut().find(|r| r.name == name)?;
        r.child.try_wait().ok().flatten()
    }

    /// The pids of the children, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.running.iter().map(|r| r.child.id()).collect()
    }

    /// Stops every child, last started first: SIGTERM, then SIGKILL for any still running
    /// after `grace`. Returns the names of those that had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> Vec<String> {
        let alive: Vec<String> = self
            .running
            .iter_mut()
            .rev()
            .filter_map(|r| {
                matches!(r.child.try_wait(), Ok(None)).then(|| r.child.id().to_string())
            })
            .collect();
        if !alive.is_empty() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .args(&alive)
                .stderr(Stdio::null())
                .status();
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut killed = Vec::new();
        while let Some(mut r) = self.running.pop() {
            loop {
                match r.child.try_wait() {
                    Ok(None) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(None) => {
                        let _ = r.child.kill();
                        let _ = r.child.wait();
                        killed.push(r.name.clone());
                        break;
                    }
                    _ => break,
                }
            }
        }
        let _ = fs::write(self.state_dir.join("children.pids"), "");
        killed
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

/// The state directory is in use by a running demo.
#[derive(Debug, thiserror::Error)]
#[error("a ferry demo is already running (pid {pid}, state in {dir})")]
pub struct AlreadyRunning {
    /// Its pid.
    pub pid: u32,
    /// Its state directory.
    pub dir: PathBuf,
}

/// Holds `demo.pid` in the state directory while the demo runs; removed on drop.
pub struct Lock {
    path: PathBuf,
}

/// Whether `pid` is a live process whose program is one of `names`.
fn is_live(pid: u32, names: &[&str]) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // A zombie has an empty command line: it is gone for our purposes.
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let program = Path::new(std::str::from_utf8(argv0).unwrap_or_default())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    names.iter().any(|n| program == *n)
}

impl Lock {
    /// Takes the lock, or says which demo holds it. A stale lock (its demo is gone) is
    /// taken over, and the children that demo left behind (killed with SIGKILL, so it could
    /// not stop them) are killed; their names are returned.
    pub async fn acquire(
        dir: &Path,
        demo_program: &str,
    ) -> Result<(Self, Vec<String>), anyhow::Error> {
        fs::create_dir_all(dir)?;
        let path = dir.join("demo.pid");
        let mut cleaned = Vec::new();
        for _ in 0..3 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id())?;
                    return Ok((Self { path }, cleaned));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let pid: Option<u32> = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    if let Some(pid) = pid.filter(|p| is_live(*p, &[demo_program])) {
                        return Err(AlreadyRunning {
                            pid,
                            dir: dir.to_path_buf(),
                        }
                        .into());
                    }
                    cleaned.extend(kill_leftovers(dir).await);
                    let _ = fs::remove_file(&path);
                }
                Err(e) => return Err(anyhow::anyhow!("creating {}: {e}", path.display())),
            }
        }
        anyhow::bail!("could not take the lock {}", path.display())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Kills the processes a previous demo recorded in `children.pids` that still run one of
/// [`BINARIES`], and waits (bounded) until they are gone so their ports are free; returns
/// `name (pid)` for each.
async fn kill_leftovers(dir: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(dir.join("children.pids")) else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    let mut pids = Vec::new();
    for line in text.lines() {
        let Some((pid, name)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if is_live(pid, BINARIES) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            killed.push(format!("{name} ({pid})"));
            pids.push(pid);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| is_live(*p, BINARIES)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_lock_names_the_holder_and_a_stale_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::env::current_exe().unwrap();
        let me = me.file_name().unwrap().to_str().unwrap();
        let (lock, cleaned) = Lock::acquire(dir.path(), me).await.unwrap();
        assert!(cleaned.is_empty());
        let err = Lock::acquire(dir.path(), me)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "a ferry demo is already running (pid {}",
                std::process::id()
            )),
            "{err}"
        );
        drop(lock);
        fs::write(dir.path().join("demo.pid"), "999999999").unwrap();
        let (_lock, _) = Lock::acquire(dir.path(), me).await.unwrap();
    }
}
