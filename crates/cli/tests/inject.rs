//! `ferry inject` / `ferry uninject` on real-world manifests: golden outputs, idempotence,
//! round trips, every skip reason and every input error, through the binary.
//!
//! Regenerate the golden files with `FERRY_UPDATE_GOLDEN=1 cargo nextest run -p ferry`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;
use serde_yaml_ng::Value;

fn ferry(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ferry");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: &[u8]) -> (String, String) {
    let out = ferry(args, stdin);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "ferry {args:?} failed: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

fn fixture_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}

fn fixtures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["inject", "passthrough"] {
        for entry in std::fs::read_dir(fixture_dir(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml")
                && !path.to_string_lossy().contains("malformed")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 6, "fixtures missing: {files:?}");
    files
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Compares with `tests/golden/<name>`, or rewrites it when asked to.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("FERRY_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with FERRY_UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

#[test]
fn injected_fixtures_match_golden_files() {
    for file in fixtures() {
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let (out, err) = ok(&["inject", path_str(&file)], b"");
        golden(&format!("{stem}.injected.yaml"), &out);
        golden(&format!("{stem}.injected.stderr"), &err);
    }
}

#[test]
fn injecting_twice_equals_injecting_once() {
    for file in fixtures() {
        let (once, _) = ok(&["inject", path_str(&file)], b"");
        let (twice, _) = ok(&["inject", "-"], once.as_bytes());
        assert_eq!(once, twice, "{}", file.display());
    }
}

#[test]
fn uninject_restores_the_input() {
    for file in fixtures() {
        let input = std::fs::read_to_string(&file).unwrap();
        let (injected, _) = ok(&["inject", path_str(&file)], b"");
        assert_ne!(
            docs(&injected),
            docs(&input),
            "{} was not changed",
            file.display()
        );
        let (restored, _) = ok(&["uninject", "-"], injected.as_bytes());
        assert_eq!(docs(&restored), docs(&input), "{}", file.display());
    }
}

#[test]
fn uninject_of_plain_manifests_changes_nothing_and_says_so() {
    let file = fixture_dir("inject").join("batch.yaml");
    let (out, err) = ok(&["uninject", path_str(&file)], b"");
    assert_eq!(docs(&out), docs(&std::fs::read_to_string(&file).unwrap()));
    assert_eq!(
        err,
        "cronjob \"report\" skipped: no proxy to remove\njob \"backfill\" skipped: no proxy to remove\n"
    );
}

#[test]
fn every_skip_reason_is_reported_once_per_resource() {
    let file = fixture_dir("inject").join("skipped.yaml");
    let (out, err) = ok(&["inject", path_str(&file)], b"");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "daemonset \"node-exporter\" skipped: hostNetwork",
            "deployment \"legacy\" skipped: annotated ferry.io/inject: disabled",
            "replicaset \"batch-worker\" skipped: annotated ferry.io/inject: disabled",
            "replicaset \"frontend\" injected",
            "configmap \"frontend-config\" skipped: not a workload",
        ]
    );
    let input = docs(&std::fs::read_to_string(&file).unwrap());
    let output = docs(&out);
    // Skipped documents are byte-for-byte the same values; only the frontend changed.
    for (i, (a, b)) in input.iter().zip(&output).enumerate() {
        assert_eq!(a == b, i != 3, "document {i}");
    }
}

#[test]
fn workload_without_pod_template_is_skipped() {
    let (out, err) = ok(
        &["inject", "-"],
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: empty}\nspec: {replicas: 1}\n",
    );
    assert_eq!(err, "deployment \"empty\" skipped: no pod template\n");
    assert_eq!(out, "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: empty\nspec:\n  replicas: 1\n");
}

fn pod_spec<'a>(doc: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(doc, |v, k| &v[*k])
}

fn names(list: &Value) -> Vec<&str> {
    list.as_sequence()
        .map(|s| s.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn multi_container_pod_keeps_its_containers_ports_and_init_order() {
    let file = fixture_dir("inject").join("multi-container.yaml");
    let (out, err) = ok(&["inject", path_str(&file)], b"");
    assert_eq!(err, "pod \"shop\" injected\n");
    let input = &docs(&std::fs::read_to_string(&file).unwrap())[0];
    let pod = &docs(&out)[0];
    let spec = &pod["spec"];
    // The rules first, then the proxy (native sidecar), then the user's init containers,
    // which therefore run meshed.
    assert_eq!(
        names(&spec["initContainers"]),
        ["ferry-init", "ferry-proxy", "migrate", "warm-cache"]
    );
    assert_eq!(
        spec["containers"], input["spec"]["containers"],
        "app containers untouched"
    );
    assert_eq!(
        names(&spec["volumes"]),
        ["cache", "ferry-identity-token", "ferry-init-xtables-lock"]
    );
    assert_eq!(spec["securityContext"], input["spec"]["securityContext"]);
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["example.com/owner"], "team-a");
    assert_eq!(
        annotations["ferry.io/proxy-version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        pod["metadata"]["labels"]["ferry.io/control-plane-ns"],
        "ferry"
    );

    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 4191);
    assert_eq!(proxy["livenessProbe"]["httpGet"]["path"], "/live");
    let ports: Vec<i64> = proxy["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [4143, 4191, 4190]);
    let env: Vec<&str> = proxy["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in [
        ferry_api::env::PROXY_INBOUND_LISTEN,
        ferry_api::env::PROXY_OUTBOUND_LISTEN,
        ferry_api::env::PROXY_ADMIN_LISTEN,
        ferry_api::env::PROXY_DESTINATION_ADDR,
        ferry_api::env::PROXY_CONTROL_PLANE_IDENTITY,
        ferry_api::env::PROXY_TAP_AUTHORIZED_IDENTITY,
        ferry_api::env::PROXY_POD_NAMESPACE,
        ferry_api::env::PROXY_POD_NAME,
        ferry_api::env::PROXY_SERVICE_ACCOUNT,
        ferry_api::env::PROXY_IDENTITY_TOKEN_FILE,
    ] {
        assert!(env.contains(&name), "{name} missing from {env:?}");
    }
    // Without trust anchors the proxy has no identity: its plaintext tap stays on loopback.
    assert!(!env.contains(&ferry_api::env::PROXY_TAP_LISTEN), "{env:?}");
    let token = &spec["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], ferry_api::k8s::IDENTITY_TOKEN_AUDIENCE);

    let init = &spec["initContainers"][0];
    let args: Vec<&str> = init["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "init",
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--inbound-ports-to-ignore",
            "4190,4191",
            "--firewall-bin-path",
            "auto"
        ]
    );
    assert_eq!(
        init["securityContext"]["capabilities"]["add"][0],
        "NET_ADMIN"
    );
}

#[test]
fn without_native_sidecars_the_proxy_joins_the_containers() {
    let file = fixture_dir("inject").join("multi-container.yaml");
    let (out, _) = ok(&["inject", "--no-native-sidecar", path_str(&file)], b"");
    let spec = &docs(&out)[0]["spec"];
    assert_eq!(
        names(&spec["initContainers"]),
        ["ferry-init", "migrate", "warm-cache"]
    );
    assert_eq!(
        names(&spec["containers"]),
        ["app", "log-shipper", "ferry-proxy"]
    );
    assert!(spec["containers"][2].get("restartPolicy").is_none());
    assert!(spec["containers"][2].get("startupProbe").is_none());
    // uninject knows both placements.
    let (restored, _) = ok(&["uninject", "-"], out.as_bytes());
    assert_eq!(
        docs(&restored),
        docs(&std::fs::read_to_string(&file).unwrap())
    );
}

#[test]
fn skip_ports_and_subnets_come_from_flags_and_annotations() {
    let file = fixture_dir("inject").join("emojivoto.yaml");
    let (out, _) = ok(
        &[
            "inject",
            "--skip-inbound-ports",
            "9000",
            "--skip-subnets",
            "10.96.0.0/12,fd00::/8",
            "--firewall-bin-path",
            "iptables-legacy",
            path_str(&file),
        ],
        b"",
    );
    let web = docs(&out)
        .into_iter()
        .find(|d| d["metadata"]["name"] == "web")
        .unwrap();
    let args: Vec<String> = pod_spec(&web, &["spec", "template", "spec", "initContainers"])[0]
        ["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let joined = args.join(" ");
    assert!(
        joined.contains("--inbound-ports-to-ignore 4190,4191,9000"),
        "{joined}"
    );
    // The web template's annotation adds 5432.
    assert!(
        joined.contains("--outbound-ports-to-ignore 5432"),
        "{joined}"
    );
    assert!(
        joined.contains("--subnets-to-ignore 10.96.0.0/12,fd00::/8"),
        "{joined}"
    );
    assert!(
        joined.ends_with("--firewall-bin-path iptables-legacy"),
        "{joined}"
    );
}

#[test]
fn reads_stdin_directories_and_several_inputs_in_order() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("inject-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::copy(fixture_dir("inject").join("batch.yaml"), dir.join("a.yaml")).unwrap();
    std::fs::copy(
        fixture_dir("inject").join("list.yaml"),
        dir.join("nested/b.yml"),
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "not yaml: [").unwrap();
    let stdin = b"apiVersion: v1\nkind: Pod\nmetadata: {name: solo}\nspec:\n  containers: [{name: c, image: i}]\n";
    let (_, err) = ok(&["inject", path_str(&dir), "-"], stdin);
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "cronjob \"report\" injected",
            "job \"backfill\" injected",
            "deployment \"api\" injected",
            "statefulset \"db\" injected",
            "service \"api\" skipped: not a workload",
            "pod \"solo\" injected",
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn typed_lists_from_the_apiserver_are_injected() {
    // `kubectl get deploy -o json` against the recorded apiserver: items carry no kind.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/k8s/scenario/deployments.list.json");
    let (out, err) = ok(&["inject", path_str(&path)], b"");
    assert_eq!(err.lines().count(), 4, "{err}");
    assert!(
        err.lines()
            .all(|l| l.starts_with("deployment \"") && l.ends_with("\" injected")),
        "{err}"
    );
    let list = &docs(&out)[0];
    assert!(
        list["items"][0].get("kind").is_none(),
        "items must not gain a kind"
    );
    let (again, _) = ok(&["inject", "-"], out.as_bytes());
    assert_eq!(again, out);
}

#[test]
fn malformed_yaml_names_the_document_and_writes_nothing() {
    let good = fixture_dir("inject").join("batch.yaml");
    let bad = fixture_dir("malformed.yaml");
    let out = ferry(&["inject", path_str(&good), path_str(&bad)], b"");
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "partial output: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("malformed.yaml: document 3:"), "{err}");
    assert!(
        !err.contains("injected"),
        "no resource may be reported: {err}"
    );

    let out = ferry(
        &["uninject", "-"],
        b"a: 1\n---\nkind: Pod\nmetadata: {name: [\n",
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin: document 2:"));
}

#[test]
fn missing_inputs_are_errors() {
    let out = ferry(&["inject", "/nonexistent/ferry.yaml"], b"");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/ferry.yaml"));
    let out = ferry(&["inject"], b"");
    assert!(!out.status.success(), "an input is required");
}

#[test]
fn unknown_documents_and_fields_pass_through() {
    let file = fixture_dir("passthrough").join("unknown.yaml");
    let input = docs(&std::fs::read_to_string(&file).unwrap());
    let (out, err) = ok(&["inject", path_str(&file)], b"");
    assert_eq!(
        err,
        "rollout \"canary\" skipped: not a workload\ndeployment \"future\" injected\n"
    );
    let output = docs(&out);
    assert_eq!(output[0], input[0]);
    let future = &output[1];
    assert_eq!(
        future["spec"]["x-future-field"],
        input[1]["spec"]["x-future-field"]
    );
    assert_eq!(
        future["spec"]["template"]["spec"]["x-future-pod-field"],
        "on"
    );
    assert_eq!(
        future["metadata"]["annotations"]["note"], "yes",
        "quoted scalars stay strings"
    );
}

#[test]
fn control_plane_address_follows_namespace_and_cluster_domain() {
    let file = fixture_dir("inject").join("batch.yaml");
    let (out, _) = ok(
        &[
            "inject",
            "--control-namespace",
            "mesh",
            "--cluster-domain",
            "corp.local",
            path_str(&file),
        ],
        b"",
    );
    let job = &docs(&out)[1];
    let proxy = &pod_spec(job, &["spec", "template", "spec", "initContainers"])[1];
    let addr = proxy["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == ferry_api::env::PROXY_DESTINATION_ADDR)
        .unwrap();
    assert_eq!(addr["value"], "ferry-control.mesh.svc.corp.local:8086");
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["ferry.io/control-plane-ns"],
        "mesh"
    );
}

/// `ferry inject` and the control plane's injector webhook share one code path
/// (`ferry-inject`): for every pod a real API server sent the webhook, `ferry inject` on that
/// pod (YAML, through the binary) gives exactly what the shared code gives on the JSON the
/// webhook patches — only `ferry.io/created-by` names the tool.
#[test]
fn ferry_inject_makes_of_recorded_pods_what_the_webhook_code_makes() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/k8s/admission/replicaset-pods");
    let mut reviews: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("shared/k8s/admission exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".request.json"))
        .collect();
    reviews.sort();
    assert_eq!(reviews.len(), 7, "{reviews:?}");
    for path in reviews {
        let review: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let object = &review["request"]["object"];
        let (out, err) = ok(&["inject", "-"], &serde_json::to_vec(object).unwrap());
        assert!(err.starts_with("pod \""), "{err}");
        assert!(err.trim_end().ends_with("injected"), "{err}");
        let from_cli = serde_json::to_value(docs(&out).remove(0)).unwrap();
        let mut expected = object.clone();
        let skipped = ferry_inject::pod::inject(
            &mut expected,
            &ferry_inject::ProxyConfig::default(),
            &ferry_inject::created_by_cli(),
        )
        .unwrap();
        assert_eq!(skipped, None);
        assert_eq!(from_cli, expected, "{}", path.display());
        assert_ne!(&from_cli, object, "{} was not injected", path.display());
    }
}

#[test]
fn the_default_inbound_policy_flag_reaches_the_proxy_unless_the_pod_names_one() {
    let pod = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations: {}
spec:
  containers: [{name: app, image: web}]
";
    let policy_of = |out: &str| -> Option<String> {
        let doc = &docs(out)[0];
        let inits = doc["spec"]["initContainers"].as_sequence()?;
        let proxy = inits
            .iter()
            .find(|c| c["name"].as_str() == Some("ferry-proxy"))?;
        proxy["env"]
            .as_sequence()?
            .iter()
            .find(|e| e["name"].as_str() == Some(ferry_api::env::PROXY_DEFAULT_INBOUND_POLICY))
            .and_then(|e| e["value"].as_str().map(str::to_string))
    };
    let (out, _) = ok(&["inject", "-"], pod.as_bytes());
    assert_eq!(policy_of(&out), None);
    let (out, _) = ok(
        &["inject", "--default-inbound-policy=deny", "-"],
        pod.as_bytes(),
    );
    assert_eq!(policy_of(&out).as_deref(), Some("deny"));
    let annotated = pod.replace(
        "annotations: {}",
        "annotations: {config.ferry.io/default-inbound-policy: audit}",
    );
    let (out, _) = ok(
        &["inject", "--default-inbound-policy=deny", "-"],
        annotated.as_bytes(),
    );
    assert_eq!(policy_of(&out).as_deref(), Some("audit"));
    let refused = ferry(
        &["inject", "--default-inbound-policy=allow", "-"],
        pod.as_bytes(),
    );
    assert!(!refused.status.success());
}
