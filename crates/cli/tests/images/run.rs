//! Each image's entrypoint run from the image's own root filesystem, chrooted, as the user
//! its config declares (containers cannot run on these machines: the runtime is refused its
//! cgroups). Every server binds 127.0.0.1 and is killed on drop.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ferry_testkit::{client, process::Proc};

use super::{archives, unpack, Unpacked};
use ferry_api::{images, version};

/// How long a binary may take to start and answer.
const START: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("running id");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The unpacked image, with the device nodes a runtime would mount; `None` (said why) when
/// these tests cannot run here.
fn image(name: &str) -> Option<Unpacked> {
    if !is_root() {
        eprintln!("SKIPPED: chroot, mknod and user switches need root (CI runs as root)");
        return None;
    }
    let image = unpack(&archives()?.join(format!("{name}.oci.tar")));
    let dev = image.rootfs.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    for (node, minor) in [
        ("null", "3"),
        ("zero", "5"),
        ("random", "8"),
        ("urandom", "9"),
    ] {
        let path = dev.join(node);
        let ok = Command::new("mknod")
            .args(["-m", "666", path.to_str().unwrap(), "c", "1", minor])
            .status()
            .expect("running mknod");
        assert!(ok.success(), "mknod {}", path.display());
    }
    Some(image)
}

impl Unpacked {
    fn user(&self) -> String {
        self.config["config"]["User"]
            .as_str()
            .unwrap_or("0")
            .to_string()
    }

    fn entrypoint(&self) -> String {
        self.config["config"]["Entrypoint"][0]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn env(&self) -> Vec<(String, String)> {
        self.config["config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `chroot` arguments that run the entrypoint with `args` as `user`.
    fn chroot_args(&self, user: &str, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            format!("--userspec={user}"),
            self.rootfs.to_str().unwrap().to_string(),
            self.entrypoint(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// Runs the entrypoint to completion as `user`.
    fn run(&self, user: &str, args: &[&str]) -> Output {
        Command::new("chroot")
            .args(self.chroot_args(user, args))
            .env_clear()
            .envs(self.env())
            .output()
            .expect("running chroot")
    }

    /// Starts the entrypoint as the image's user (killed on drop).
    fn spawn(&self, args: &[&str]) -> Proc {
        let args = self.chroot_args(&self.user(), args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Proc::spawn("chroot", &args, &env).expect("spawning chroot")
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The real and effective UIDs of a running process.
fn uids(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_version(image: &Unpacked, binary: &str) {
    let out = image.run(&image.user(), &["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.starts_with(&format!("{binary} {} (git ", version::VERSION)),
        "{printed}"
    );
}

#[tokio::test]
async fn proxy_image_answers_ready_as_its_user_and_runs_the_init_step() {
    let Some(image) = image(images::PROXY) else {
        return;
    };
    assert_eq!(image.user(), "2102:2102");
    assert_version(&image, "ferry-proxy");

    let proxy = image.spawn(&[
        "--inbound-listen=127.0.0.1:0",
        "--outbound-listen=127.0.0.1:0",
        "--admin-listen=127.0.0.1:0",
        "--tap-listen=127.0.0.1:0",
        "--log-format=json",
    ]);
    let addrs = proxy.bound_addrs(4, START).await.expect("the proxy binds");
    assert_eq!(uids(proxy.pid()), "2102 2102");
    let admin = addrs["admin"];
    let ready = client::get(&format!("http://{admin}/ready")).await.unwrap();
    assert_eq!(ready.status, 200);
    let metrics = client::get(&format!("http://{admin}/metrics"))
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(&format!(
            "proxy_build_info{{version=\"{}\",git_sha=\"",
            version::VERSION
        )),
        "{metrics}"
    );

    // The init container runs the same image as root.
    let help = image.run("0:0", &["init", "--help"]);
    assert!(help.status.success(), "{}", text(&help));
    assert!(
        text(&help).contains("--firewall-bin-path"),
        "{}",
        text(&help)
    );

    // And installs its rules with either backend, here in a network namespace of its own.
    for backend in ["iptables-nft", "iptables-legacy"] {
        let root = image.rootfs.to_str().unwrap();
        let script = format!(
            "chroot {root} {} init --firewall-bin-path {backend} && chroot {root} /usr/sbin/{backend} -t nat -S",
            image.entrypoint()
        );
        let out = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", &script])
            .env_clear()
            .envs(image.env())
            .output()
            .expect("running unshare");
        assert!(out.status.success(), "{backend}: {}", text(&out));
        for rule in [
            "-A PREROUTING -j PROXY_INIT_REDIRECT",
            "-j REDIRECT --to-ports 4143",
            "--uid-owner 2102",
            "-j REDIRECT --to-ports 4140",
        ] {
            assert!(
                text(&out).contains(rule),
                "{backend}: no {rule:?} in {}",
                text(&out)
            );
        }
    }
}

#[tokio::test]
async fn control_image_answers_health_with_a_workloads_file() {
    let Some(image) = image(images::CONTROL) else {
        return;
    };
    assert_eq!(image.user(), "2103:2103");
    assert_version(&image, "ferry-control");
    let file = image.rootfs.join("tmp/workloads.yaml");
    std::fs::write(
        &file,
        "workloads:\n  - name: echo\n    kind: deployment\n    serviceAccount: echo\n    instances: [{name: echo-0, addr: 127.0.0.1:1}]\nservices:\n  - {name: echo, namespace: default, port: 8080, workloads: [echo]}\n",
    )
    .unwrap();
    let control = image.spawn(&[
        "--workloads-file=/tmp/workloads.yaml",
        "--api-listen=127.0.0.1:0",
        "--grpc-listen=127.0.0.1:0",
        "--trace-listen=127.0.0.1:0",
        "--log-format=json",
    ]);
    let addrs = control
        .bound_addrs(2, START)
        .await
        .expect("the control plane binds");
    assert_eq!(uids(control.pid()), "2103 2103");
    let health = client::get(&format!("http://{}/api/v1/health", addrs["api"]))
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    let health: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], version::VERSION);
    assert!(health["gitSha"].is_string(), "{health}");
}

#[tokio::test]
async fn demo_image_runs_its_workloads_as_its_user() {
    let Some(image) = image(images::DEMO) else {
        return;
    };
    assert_eq!(image.user(), "65532:65532");
    assert_version(&image, "ferry-emojivoto");
    let emoji = image.spawn(&["emoji", "--listen=127.0.0.1:0"]);
    emoji
        .wait_for_log("listener bound", START)
        .await
        .expect("the emoji workload binds");
    assert_eq!(uids(emoji.pid()), "65532 65532");
}

/// A network namespace of this test's own (`ip netns`), with loopback up; deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> Self {
        let name = format!("ferry-images-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("running ip");
            assert!(out.status.success(), "ip {args:?}: {}", text(&out));
        };
        ip(&["netns", "add", &name]);
        let ns = Self(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The demo manifest's four workloads, each started from the demo image exactly with the
/// manifest's arguments, as the manifest's user, in one network namespace of their own
/// (a pod's `0.0.0.0`), each service name resolving there through the image's
/// `/etc/hosts`: the bot's votes go web → voting → emoji, and about half fail on the old
/// endpoint, as in `ferry demo`.
#[tokio::test]
async fn demo_manifest_workloads_vote_through_each_other_from_the_image() {
    let Some(image) = image(images::DEMO) else {
        return;
    };
    let objects = super::demo_manifest();
    let workloads = super::demo_workloads(&objects);
    let mut hosts = String::from("127.0.0.1 localhost");
    for svc in objects.iter().filter(|o| o["kind"] == "Service") {
        let m = &svc["metadata"];
        hosts += &format!(
            " {}.{}",
            m["name"].as_str().unwrap(),
            m["namespace"].as_str().unwrap()
        );
    }
    std::fs::write(image.rootfs.join("etc/hosts"), hosts + "\n").unwrap();
    let ns = NetNs::new("demo");
    let env = image.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut running = Vec::new();
    for w in &workloads {
        let security = &w.container["securityContext"];
        let user = format!("{}:{}", security["runAsUser"], security["runAsGroup"]);
        let mut args = vec![
            "netns".to_string(),
            "exec".to_string(),
            ns.0.clone(),
            "chroot".to_string(),
        ];
        args.extend(image.chroot_args(&user, &[]));
        args.extend(w.args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn("ip", &args, &env).expect("spawning ip netns exec");
        // Servers log their bound listener; the bot says it is voting.
        let started = if w.container_port().is_some() {
            "listener bound"
        } else {
            "voting"
        };
        proc.wait_for_log(started, START)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", w.name));
        assert_eq!(uids(proc.pid()), "65532 65532", "{}", w.name);
        running.push(proc);
    }
    let bot = running.last().unwrap();
    // The bot reports its tally every 10 s.
    let tally = ferry_testkit::wait_until(
        Duration::from_secs(40),
        "votes that passed and failed",
        || async {
            let logs = bot.logs();
            let line = logs.iter().rev().find(|l| l.contains("votes so far"))?;
            let count = |key: &str| -> Option<u64> {
                let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            };
            let (ok, failed) = (count("ok")?, count("failed")?);
            (ok > 0 && failed > 0).then(|| line.clone())
        },
    )
    .await;
    let all: Vec<String> = running.iter().flat_map(|p| p.logs()).collect();
    tally.unwrap_or_else(|e| panic!("{e}; the workloads logged:\n{}", all.join("\n")));
}

/// Regular files under `dir` that start with the ELF magic.
fn elf_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            elf_files(&entry.path(), out);
        } else if kind.is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            if bytes.starts_with(b"\x7fELF") {
                out.push(entry.path());
            }
        }
    }
}

#[test]
fn images_hold_every_library_their_binaries_load_and_no_shell() {
    for name in images::ALL {
        let Some(image) = image(name) else { return };
        let mut elves = Vec::new();
        elf_files(&image.rootfs, &mut elves);
        assert!(elves.len() >= 3, "{name}: {elves:?}");
        for elf in &elves {
            let inside = Path::new("/").join(elf.strip_prefix(&image.rootfs).unwrap());
            if inside
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ld-linux")
            {
                continue;
            }
            // The image's own dynamic loader resolves, inside the image, what each loads.
            let out = Command::new("chroot")
                .arg(&image.rootfs)
                .args(["/lib64/ld-linux-x86-64.so.2", "--list"])
                .arg(&inside)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .expect("running chroot");
            assert!(
                out.status.success() && !text(&out).contains("not found"),
                "{name}: {}: {}",
                inside.display(),
                text(&out)
            );
        }
        for forbidden in ["sh", "bash", "dash", "busybox", "apt", "apt-get", "dpkg"] {
            for dir in ["usr/bin", "usr/sbin", "usr/local/bin"] {
                let path = image.rootfs.join(dir).join(forbidden);
                assert!(!path.exists(), "{name} has {}", path.display());
            }
        }
        if name == images::PROXY {
            for bin in [
                "iptables-nft",
                "iptables-legacy",
                "ip6tables-nft",
                "ip6tables-legacy",
            ] {
                assert!(image.rootfs.join("usr/sbin").join(bin).exists(), "{bin}");
            }
        }
    }
}
