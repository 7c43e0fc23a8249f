//! Validates everything `ferry install` prints and `ferry inject` writes against the OpenAPI
//! v3 schemas a real kube-apiserver (v1.36) serves, recorded in `../shared/k8s/openapi/v3`.
//!
//! The schemas are used as served, with one tightening: every object schema that lists its
//! `properties` gets `additionalProperties: false`, as `kubectl apply`'s strict field
//! validation does on the server. The negative tests prove the validator rejects bad objects.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

#[path = "support/schema.rs"]
mod schema;
use schema::{parse_stream, shared_k8s, validate, validate_all};

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("running ferry");
    assert!(
        out.status.success(),
        "ferry failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn install_output_validates() {
    let docs = parse_stream(&run_ok(ferry().arg("install")));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&kind), "install prints no {kind}: {kinds:?}");
    }
    validate_all("ferry install", &docs);
}

#[test]
fn install_crds_output_validates() {
    let docs = parse_stream(&run_ok(ferry().args(["install", "--crds"])));
    assert_eq!(
        docs.len(),
        8,
        "HTTPFault, the six authorization resources and Rollout"
    );
    assert!(docs.iter().all(|d| d["kind"] == "CustomResourceDefinition"));
    assert_eq!(docs[7]["metadata"]["name"], "rollouts.ferry.io");
    validate_all("ferry install --crds", &docs);
}

#[test]
fn install_ha_output_validates() {
    let docs = parse_stream(&run_ok(ferry().args(["install", "--ha"])));
    assert!(docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    validate_all("ferry install --ha", &docs);
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn inject_fixtures_are_valid_before_and_after() {
    let files = fixtures();
    assert!(
        files.len() >= 5,
        "expected the inject fixtures, found {files:?}"
    );
    for file in files {
        let name = file.display().to_string();
        if name.contains("malformed") {
            continue;
        }
        let input = std::fs::read_to_string(&file).unwrap();
        validate_all(&format!("fixture {name}"), &parse_stream(&input));
        let injected = run_ok(ferry().arg("inject").arg(&file));
        validate_all(&format!("inject {name}"), &parse_stream(&injected));
        let native_off = run_ok(ferry().args(["inject", "--no-native-sidecar"]).arg(&file));
        validate_all(
            &format!("inject --no-native-sidecar {name}"),
            &parse_stream(&native_off),
        );
    }
}

#[test]
fn inject_of_recorded_api_objects_validates() {
    // Objects as the apiserver returns them: typed lists whose items carry no kind,
    // status, managedFields and defaulted fields.
    for file in [
        "scenario/deployments.list.json",
        "scenario/replicasets.list.json",
        "scenario/pods.list.json",
    ] {
        let path = shared_k8s().join(file);
        let injected = run_ok(ferry().arg("inject").arg(&path));
        let docs = parse_stream(&injected);
        let items = docs[0]["items"].as_array().expect("a list");
        assert!(!items.is_empty());
        let item_kind = docs[0]["kind"]
            .as_str()
            .unwrap()
            .trim_end_matches("List")
            .to_string();
        for item in items {
            let mut item = item.clone();
            item["kind"] = Value::String(item_kind.clone());
            item["apiVersion"] = docs[0]["apiVersion"].clone();
            validate(&item).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        }
    }
}

fn deployment_with_container(container: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad"},
        "spec": {
            "selector": {"matchLabels": {"app": "bad"}},
            "template": {
                "metadata": {"labels": {"app": "bad"}},
                "spec": {"containers": [container]}
            }
        }
    })
}

#[test]
fn validator_accepts_a_plain_deployment() {
    let ok = deployment_with_container(json!({
        "name": "app", "image": "nginx",
        "ports": [{"containerPort": 80, "name": "http"}],
        "resources": {"limits": {"cpu": 1, "memory": "64Mi"}},
        "readinessProbe": {"httpGet": {"port": "http", "path": "/"}},
        "livenessProbe": {"httpGet": {"port": 80, "path": "/"}}
    }));
    validate(&ok).unwrap();
}

#[test]
fn validator_rejects_wrong_types() {
    let err = validate(&deployment_with_container(
        json!({"name": "app", "image": "nginx", "ports": "x"}),
    ))
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("/spec/template/spec/containers/0/ports"),
        "{err:#}"
    );
}

#[test]
fn validator_rejects_missing_required_fields() {
    let err = validate(&deployment_with_container(json!({"image": "nginx"}))).unwrap_err();
    assert!(
        format!("{err:#}").contains("\"name\" is a required property"),
        "{err:#}"
    );
}

#[test]
fn validator_rejects_unknown_fields() {
    let mut d = deployment_with_container(json!({"name": "app", "image": "nginx"}));
    d["spec"]["replica"] = json!(3);
    let err = validate(&d).unwrap_err();
    assert!(format!("{err:#}").contains("replica"), "{err:#}");
}

#[test]
fn validator_rejects_bad_enums_and_int_or_string() {
    let bad_protocol = deployment_with_container(json!({
        "name": "app", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "HTTP"}]
    }));
    assert!(validate(&bad_protocol).is_err());
    let bad_probe_port = deployment_with_container(json!({
        "name": "app", "image": "nginx", "livenessProbe": {"httpGet": {"port": {"n": 1}}}
    }));
    assert!(validate(&bad_probe_port).is_err());
}

#[test]
fn validator_treats_null_fields_as_unset_but_not_null_list_items() {
    let mut d = deployment_with_container(json!({"name": "app", "image": "nginx"}));
    d["spec"]["template"]["metadata"]["creationTimestamp"] = Value::Null;
    validate(&d).unwrap();
    d["spec"]["template"]["spec"]["containers"] = json!([null]);
    assert!(validate(&d).is_err());
}

#[test]
fn validator_knows_no_schema_for_unknown_kinds() {
    let err = validate(&json!({"apiVersion": "apps/v1", "kind": "Nonsense"})).unwrap_err();
    assert!(err.to_string().contains("no schema"), "{err}");
}
