//! The container images `scripts/build-images.sh` writes (docs/images.md): their names are
//! the ones the manifests reference, their configs are what the Containerfiles declare, and
//! each runs from its own root filesystem, chrooted, as its declared user.
//!
//! The archive tests read `images/*.oci.tar` in the target directory (or `$FERRY_IMAGES_DIR`). Without root
//! they skip, saying so; without archives they skip too, unless `FERRY_REQUIRE_IMAGES` is
//! set (CI builds the images first and sets it, so there they must run).

mod run;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_api::{images, k8s, ports, version};
use serde_json::Value as Json;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The image directory name under `images/` of each image name.
fn dir_of(name: &str) -> &'static str {
    match name {
        images::PROXY => "proxy",
        images::CONTROL => "control",
        images::DEMO => "demo",
        other => panic!("unknown image {other}"),
    }
}

/// What the final stage of a Containerfile declares.
#[derive(Debug, Default)]
struct Declared {
    user: String,
    entrypoint: String,
    exposed: BTreeSet<String>,
    env: Vec<String>,
    labels: Vec<(String, String)>,
}

fn containerfile(name: &str) -> Declared {
    let text = read(&workspace().join(format!("images/{}/Containerfile", dir_of(name))));
    let mut d = Declared::default();
    for line in text.lines() {
        if line.starts_with("FROM ") {
            d = Declared::default();
        } else if let Some(user) = line.strip_prefix("USER ") {
            d.user = user.to_string();
        } else if let Some(entry) = line.strip_prefix("ENTRYPOINT ") {
            let v: Vec<String> = serde_json::from_str(entry).expect("ENTRYPOINT in exec form");
            d.entrypoint = v.join(" ");
        } else if let Some(ports) = line.strip_prefix("EXPOSE ") {
            d.exposed.extend(ports.split_whitespace().map(String::from));
        } else if let Some(env) = line.strip_prefix("ENV ") {
            d.env.push(env.to_string());
        } else if let Some(label) = line.strip_prefix("LABEL ") {
            let (k, v) = label.split_once('=').expect("LABEL key=value");
            d.labels
                .push((k.to_string(), v.trim_matches('"').to_string()));
        }
    }
    d
}

#[test]
fn containerfiles_declare_the_users_ports_and_labels_the_manifests_expect() {
    let proxy = containerfile(images::PROXY);
    assert_eq!(proxy.user, format!("{0}:{0}", k8s::PROXY_UID));
    assert_eq!(proxy.entrypoint, "/usr/local/bin/ferry-proxy");
    for port in [ports::PROXY_INBOUND, ports::PROXY_ADMIN, ports::PROXY_TAP] {
        assert!(proxy.exposed.contains(&format!("{port}/tcp")), "{proxy:?}");
    }
    let control = containerfile(images::CONTROL);
    assert_eq!(control.user, format!("{0}:{0}", k8s::CONTROL_UID));
    assert_eq!(control.entrypoint, "/usr/local/bin/ferry-control");
    for port in [
        ports::CONTROL_API,
        ports::CONTROL_GRPC,
        ports::CONTROL_WEBHOOK,
        ports::CONTROL_PROBE,
    ] {
        assert!(
            control.exposed.contains(&format!("{port}/tcp")),
            "{control:?}"
        );
    }
    let demo = containerfile(images::DEMO);
    assert_eq!(demo.entrypoint, "/usr/local/bin/ferry-emojivoto");
    assert!(!demo.user.starts_with("0"), "{demo:?}");
    for (name, d) in [
        (images::PROXY, proxy),
        (images::CONTROL, control),
        (images::DEMO, demo),
    ] {
        let label = |k: &str| {
            d.labels
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{name}: no label {k}"))
        };
        assert_eq!(label("org.opencontainers.image.source"), images::SOURCE);
        assert_eq!(label("org.opencontainers.image.version"), "${VERSION}");
        assert_eq!(
            label("org.opencontainers.image.revision"),
            "${FERRY_GIT_SHA}"
        );
        assert_eq!(label("org.opencontainers.image.title"), name);
        assert!(d.env.iter().any(|e| e.starts_with("PATH=")), "{name}");
        let text = read(&workspace().join(format!("images/{}/Containerfile", dir_of(name))));
        assert!(
            text.contains(&format!("\nARG VERSION={}\n", version::VERSION)),
            "{name}: the Containerfile's VERSION default is not this release's"
        );
    }
}

#[test]
fn the_build_script_names_images_as_ferry_api_does() {
    let script = read(&workspace().join("scripts/build-images.sh"));
    assert!(
        script.contains(&format!(
            "registry=${{{}:-{}}}",
            images::REGISTRY_ENV,
            images::DEFAULT_REGISTRY
        )),
        "the script's default registry is not ferry_api's"
    );
    for name in images::ALL {
        assert!(
            script.contains(&format!("{}) name={name} ;;", dir_of(name))),
            "the script does not build {name}"
        );
    }
    let args = format!("images=({})", images::ALL.map(dir_of).join(" "));
    assert!(
        script.contains(&args),
        "the script builds other images than {args}"
    );
}

#[test]
fn ci_runs_the_readme_s_test_command_which_builds_the_images() {
    let ci = read(&workspace().join(".ci/run"));
    let command = ci
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap();
    let readme = read(&workspace().join("README.md"));
    assert!(
        readme.lines().any(|l| l == command),
        ".ci/run's test command {command:?} is not a line of README.md"
    );
    for step in [
        ".ci/setup",
        "scripts/build-images.sh",
        "FERRY_REQUIRE_IMAGES=1",
        "FERRY_REQUIRE_ATTACK_TOOLS=1",
    ] {
        assert!(command.contains(step), "{command:?} lacks {step}");
    }
}

/// Every `image:` in a YAML stream.
fn image_refs(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .map(|i| i.trim_matches(['"', '\'']).to_string())
        .collect()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: emojivoto}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: app:1}]
";

/// The images `ferry install` and `ferry inject` reference with these flags and environment.
fn manifest_images(flags: &[&str], envs: &[(&str, &str)]) -> BTreeSet<String> {
    let run = |args: Vec<&str>, stdin: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(&args)
            .env_remove(images::REGISTRY_ENV)
            .envs(envs.iter().copied());
        if let Some(text) = stdin {
            let file = dir.path().join("deploy.yaml");
            std::fs::write(&file, text).unwrap();
            cmd.arg(file);
        }
        let out = cmd.output().expect("running ferry");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let mut refs = image_refs(&run([&["install"], flags].concat(), None));
    let injected = run([&["inject"], flags].concat(), Some(DEPLOYMENT));
    refs.extend(image_refs(&injected).into_iter().filter(|i| i != "app:1"));
    refs
}

#[test]
fn registry_and_tag_flags_and_environment_name_every_image() {
    let expected = |registry: &str, tag: &str| -> BTreeSet<String> {
        [images::CONTROL, images::PROXY]
            .map(|n| format!("{}:{tag}", images::repository(registry, n)))
            .into()
    };
    assert_eq!(
        manifest_images(&[], &[]),
        expected(images::DEFAULT_REGISTRY, version::VERSION)
    );
    assert_eq!(
        manifest_images(&["--registry", "localhost:5001/me", "--tag", "9.9.9"], &[]),
        expected("localhost:5001/me", "9.9.9")
    );
    assert_eq!(
        manifest_images(&[], &[(images::REGISTRY_ENV, "ghcr.io/me/")]),
        expected("ghcr.io/me", version::VERSION)
    );
}

/// The demo app's manifest for a cluster (README "On a cluster"), one JSON value per object.
fn demo_manifest() -> Vec<Json> {
    let text = read(&workspace().join("images/demo/emojivoto.yaml"));
    yaml_objects(&text)
}

fn yaml_objects(text: &str) -> Vec<Json> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Json::deserialize(doc).expect("a YAML object"))
        .filter(|v| !v.is_null())
        .collect()
}

/// A Deployment of the demo manifest: its name, pod labels and only container.
struct DemoWorkload {
    name: String,
    labels: Json,
    container: Json,
}

impl DemoWorkload {
    fn args(&self) -> Vec<String> {
        self.container["args"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no args", self.name))
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    /// The value of `--flag=VALUE` in the args.
    fn flag(&self, flag: &str) -> Option<String> {
        let prefix = format!("--{flag}=");
        self.args()
            .iter()
            .find_map(|a| a.strip_prefix(&prefix).map(String::from))
    }

    fn container_port(&self) -> Option<u64> {
        self.container["ports"][0]["containerPort"].as_u64()
    }
}

/// The Deployments of the demo manifest, in the order the manifest lists them.
fn demo_workloads(objects: &[Json]) -> Vec<DemoWorkload> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            let spec = &d["spec"]["template"]["spec"];
            let [container] = spec["containers"].as_array().unwrap().as_slice() else {
                panic!("{name}: one container expected");
            };
            // Versions of one app (voting v2, v3) share its service account.
            let app = &d["spec"]["template"]["metadata"]["labels"]["app"];
            assert_eq!(&spec["serviceAccountName"], app, "{name}");
            DemoWorkload {
                labels: d["spec"]["template"]["metadata"]["labels"].clone(),
                container: container.clone(),
                name,
            }
        })
        .collect()
}

#[test]
fn demo_manifest_runs_every_workload_from_the_built_image_wired_through_its_services() {
    let objects = demo_manifest();
    let workloads = demo_workloads(&objects);
    let names: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "emoji",
            "voting",
            "voting-v2",
            "voting-v3",
            "web",
            "vote-bot"
        ]
    );
    let image = format!("{}:{}", images::DEFAULT_DEMO_IMAGE, version::VERSION);
    let declared = containerfile(images::DEMO).user;
    let (uid, gid) = declared.split_once(':').unwrap();
    for w in &workloads {
        let c = &w.container;
        assert_eq!(c["image"], image.as_str(), "{}", w.name);
        // The app is the first argument to the image's own entrypoint.
        assert!(c["command"].is_null(), "{}", w.name);
        assert_eq!(w.args()[0], w.labels["app"].as_str().unwrap());
        // Versions run as `ferry demo` runs them: `--app-version N`, label `version: vN`.
        if let Some(version) = w.flag("app-version") {
            assert_eq!(w.labels["version"], format!("v{version}"), "{}", w.name);
        }
        let security = &c["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{}", w.name);
        assert_eq!(security["runAsUser"].to_string(), uid, "{}", w.name);
        assert_eq!(security["runAsGroup"].to_string(), gid, "{}", w.name);
        // Servers listen on every address of the pod (the proxy forwards to the pod IP),
        // on their container port.
        if let Some(listen) = w.flag("listen") {
            assert_eq!(
                listen,
                format!("0.0.0.0:{}", w.container_port().unwrap()),
                "{}",
                w.name
            );
        }
        // Each peer is called by a Service of the manifest that selects that peer's pods,
        // on the port the peer listens on.
        for arg in w.args() {
            let Some((peer, addr)) = arg.strip_prefix("--").and_then(|a| a.split_once("-addr="))
            else {
                continue;
            };
            let (host, port) = addr.rsplit_once(':').unwrap();
            let (service, namespace) = host.split_once('.').unwrap();
            let svc = objects
                .iter()
                .find(|o| {
                    o["kind"] == "Service"
                        && o["metadata"]["name"] == service
                        && o["metadata"]["namespace"] == namespace
                })
                .unwrap_or_else(|| panic!("{}: no Service {host}", w.name));
            let svc_port = svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["port"].as_u64() == port.parse().ok())
                .unwrap_or_else(|| panic!("{}: {host} has no port {port}", w.name));
            let target = workloads
                .iter()
                .find(|t| {
                    svc["spec"]["selector"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| &t.labels[k] == v)
                })
                .unwrap_or_else(|| panic!("{host} selects no workload"));
            assert_eq!(target.name, peer, "{}: --{peer}-addr={addr}", w.name);
            assert_eq!(
                svc_port["targetPort"].as_u64(),
                target.container_port(),
                "{host}"
            );
        }
    }

    // `ferry inject` meshes every workload of it, with the proxy image the script builds.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["inject"])
        .arg(workspace().join("images/demo/emojivoto.yaml"))
        .env_remove(images::REGISTRY_ENV)
        .output()
        .expect("running ferry inject");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected = yaml_objects(&String::from_utf8(out.stdout).unwrap());
    let proxy = format!("{}:{}", images::DEFAULT_PROXY_IMAGE, version::VERSION);
    let meshed: Vec<&str> = injected
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .filter(|d| {
            // The proxy is a native sidecar: an init container that keeps running.
            let spec = &d["spec"]["template"]["spec"];
            ["initContainers", "containers"]
                .iter()
                .flat_map(|k| spec[k].as_array().into_iter().flatten())
                .any(|c| c["name"] == k8s::CONTAINER_PROXY && c["image"] == proxy.as_str())
        })
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(meshed, names, "deployments injected with {proxy}");
}

/// The Service of the demo manifest named `name`.
fn demo_service<'a>(objects: &'a [Json], name: &str) -> &'a Json {
    objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Service {name}"))
}

/// The Deployments a Service selects, by name.
fn selected<'a>(workloads: &'a [DemoWorkload], service: &Json) -> Vec<&'a str> {
    let selector = service["spec"]["selector"].as_object().unwrap();
    workloads
        .iter()
        .filter(|w| selector.iter().all(|(k, v)| &w.labels[k] == v))
        .map(|w| w.name.as_str())
        .collect()
}

/// voting v2 and v3 run dark: voting-svc (what web calls) selects v1 only, each version has
/// a Service of its own on the same port, and the rollout beside the manifest releases v2
/// over that port with the manifest's Deployments as backends.
#[test]
fn demo_manifest_runs_voting_v2_and_v3_dark_for_its_rollout() {
    let objects = demo_manifest();
    let workloads = demo_workloads(&objects);
    for (service, version) in [
        ("voting-svc", "voting"),
        ("voting-v2-svc", "voting-v2"),
        ("voting-v3-svc", "voting-v3"),
    ] {
        let svc = demo_service(&objects, service);
        assert_eq!(selected(&workloads, svc), [version], "{service}");
        let w = workloads.iter().find(|w| w.name == version).unwrap();
        assert_eq!(svc["spec"]["ports"][0]["port"], 8081, "{service}");
        assert_eq!(
            svc["spec"]["ports"][0]["targetPort"].as_u64(),
            w.container_port(),
            "{service}"
        );
        assert_eq!(w.container["ports"][0]["name"], "grpc", "{version}");
    }
    let rollout = read(&workspace().join("images/demo/voting-rollout.yaml"));
    let rollout = &yaml_objects(&rollout)[0];
    assert_eq!(rollout["kind"], "Rollout");
    let spec = &rollout["spec"];
    assert_eq!(spec["service"]["name"], "voting-svc");
    assert_eq!(spec["service"]["port"], 8081);
    for (backend, name) in [("stable", "voting"), ("canary", "voting-v2")] {
        assert_eq!(spec[backend]["kind"], "Deployment");
        assert_eq!(spec[backend]["name"], name);
    }
}

/// Where the archives are (`$FERRY_IMAGES_DIR`, else `images/` in the target directory these
/// tests were built in, where the script writes them), or why the archive tests skip (`None`).
fn archives() -> Option<PathBuf> {
    // CARGO_BIN_EXE_ferry is <target dir>/<profile>/ferry.
    let target_dir = Path::new(env!("CARGO_BIN_EXE_ferry"))
        .parent()
        .and_then(Path::parent)
        .expect("the ferry binary is in <target dir>/<profile>/");
    let dir = std::env::var_os("FERRY_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir.join("images"));
    let missing: Vec<String> = images::ALL
        .iter()
        .map(|n| dir.join(format!("{n}.oci.tar")))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("FERRY_REQUIRE_IMAGES").is_none(),
        "FERRY_REQUIRE_IMAGES is set but {} missing: run scripts/build-images.sh",
        missing.join(", ")
    );
    eprintln!(
        "SKIPPED: {} missing; run scripts/build-images.sh (CI does, with FERRY_REQUIRE_IMAGES=1)",
        missing.join(", ")
    );
    None
}

/// An image unpacked from its archive: its name, config and root filesystem.
struct Unpacked {
    _dir: tempfile::TempDir,
    name: String,
    config: Json,
    compressed: u64,
    rootfs: PathBuf,
}

fn tar(args: &[&str]) {
    let out = Command::new("tar")
        .args(args)
        .output()
        .expect("running tar");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unpacks `archive` the way a runtime does: index → manifest → config and layers in order.
fn unpack(archive: &Path) -> Unpacked {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    tar(&[
        "-xf",
        archive.to_str().unwrap(),
        "-C",
        layout.to_str().unwrap(),
    ]);
    let json = |p: PathBuf| -> Json { serde_json::from_str(&read(&p)).unwrap() };
    let blob = |digest: &Json| {
        let d = digest.as_str().unwrap();
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = json(layout.join("index.json"));
    let [desc] = index["manifests"].as_array().unwrap().as_slice() else {
        panic!("{}: one manifest expected", archive.display());
    };
    let name = desc["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        desc["annotations"]["io.containerd.image.name"].as_str(),
        Some(name.as_str())
    );
    let manifest = json(blob(&desc["digest"]));
    let config = json(blob(&manifest["config"]["digest"]));
    let mut compressed = 0;
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let path = blob(&layer["digest"]);
        compressed += std::fs::metadata(&path).unwrap().len();
        tar(&[
            "-xzf",
            path.to_str().unwrap(),
            "-C",
            rootfs.to_str().unwrap(),
        ]);
    }
    Unpacked {
        _dir: dir,
        name,
        config,
        compressed,
        rootfs,
    }
}

/// skopeo (containers/image, what podman loads with) reads the archive and finds the
/// same config; skipped, saying so, where skopeo is not installed (`.ci/setup` installs it).
fn skopeo_reads(archive: &Path, config: &Json) {
    let out = match Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED the skopeo check: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["config"], config["config"], "{}", archive.display());
}

#[test]
fn archives_carry_the_names_the_manifests_use_and_their_containerfiles_config() {
    let Some(dir) = archives() else { return };
    let manifests = manifest_images(&[], &[]);
    for name in images::ALL {
        let archive = dir.join(format!("{name}.oci.tar"));
        let image = unpack(&archive);
        skopeo_reads(&archive, &image.config);
        let reference = format!(
            "{}:{}",
            images::repository(images::DEFAULT_REGISTRY, name),
            version::VERSION
        );
        assert_eq!(image.name, images::normalize(&reference));
        let referenced = if name == images::DEMO {
            image_refs(&read(&workspace().join("images/demo/emojivoto.yaml")))
        } else {
            manifests.clone()
        };
        assert!(
            referenced.contains(&reference),
            "{reference} not in {referenced:?}"
        );
        let declared = containerfile(name);
        let c = &image.config["config"];
        assert_eq!(c["User"], declared.user, "{name}");
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!([declared.entrypoint]),
            "{name}"
        );
        let exposed: BTreeSet<String> = c["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(exposed, declared.exposed, "{name}");
        assert_eq!(c["Env"], serde_json::json!(declared.env), "{name}");
        for (key, value) in &declared.labels {
            let built = c["Labels"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {key}"));
            match value.as_str() {
                "${VERSION}" => assert_eq!(built, version::VERSION),
                "${FERRY_GIT_SHA}" => assert!(
                    built == "unknown"
                        || (built.len() == 12 && built.chars().all(|c| c.is_ascii_hexdigit())),
                    "{name}: revision {built:?}"
                ),
                v => assert_eq!(built, v, "{name}: {key}"),
            }
        }
        if name == images::PROXY {
            assert!(
                image.compressed <= 15_000_000,
                "the proxy image is {} bytes compressed, over the 15 MB goal",
                image.compressed
            );
        }
        if name == images::PROXY || name == images::CONTROL {
            // The kubelet refuses runAsNonRoot without a numeric user in the image.
            let uid: u32 = declared.user.split(':').next().unwrap().parse().unwrap();
            assert_ne!(uid, 0, "{name}");
        }
    }
}
