//! `ferry install`: the objects it prints, least-privilege RBAC, HA, and certificates that
//! `openssl` accepts as a chain (trust anchor → issuer, webhook CA → serving certificate).

mod fuzz;
mod images;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn ferry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ferry")
}

fn install(args: &[&str]) -> Vec<Value> {
    let mut full = vec!["install"];
    full.extend_from_slice(args);
    let out = ferry(&full);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&out.stdout).unwrap())
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn secret_data(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("install-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed by .ci/setup");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn prints_every_control_plane_object_in_apply_order() {
    let docs = install(&[]);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "Secret",
            "Service",
            "Deployment",
            "Service",
            "MutatingWebhookConfiguration",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
        ]
    );
    for doc in &docs {
        let ns = doc["metadata"].get("namespace");
        let cluster_scoped = [
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
        ];
        assert_eq!(
            ns.is_none(),
            cluster_scoped.contains(&doc["kind"].as_str().unwrap()),
            "{doc:?}"
        );
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "ferry"
        );
    }
    let deploy = find(&docs, "Deployment", "ferry-control");
    assert_eq!(deploy["spec"]["replicas"], 1);
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!("ferrymesh/ferry-control:{}", env!("CARGO_PKG_VERSION"))
    );
    let ports: Vec<i64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ports,
        [
            i64::from(ferry_api::ports::CONTROL_GRPC),
            i64::from(ferry_api::ports::CONTROL_API),
            8443,
            i64::from(ferry_api::ports::CONTROL_PROBE),
            i64::from(ferry_api::ports::CONTROL_OTLP),
        ]
    );
    // The public API binds loopback (reached through a port-forward); the kubelet probes a
    // listener that answers `/ready` and `/live` only.
    let env: BTreeMap<&str, &str> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(env["FERRY_CONTROL_API_LISTEN"], "127.0.0.1:8084");
    assert_eq!(env["FERRY_CONTROL_PROBE_LISTEN"], "0.0.0.0:9990");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "probe", "{probe}");
    }
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["annotations"]["ferry.io/inject"],
        "disabled"
    );
    assert!(!docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    let svc = find(&docs, "Service", "ferry-control");
    assert_eq!(
        svc["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn rbac_is_least_privilege() {
    let docs = install(&[]);
    let role = find(&docs, "ClusterRole", "ferry-control-ferry");
    let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rule in role["rules"].as_sequence().unwrap() {
        for group in rule["apiGroups"].as_sequence().unwrap() {
            for resource in rule["resources"].as_sequence().unwrap() {
                let verbs = rule["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string());
                grants
                    .entry(format!(
                        "{}/{}",
                        group.as_str().unwrap(),
                        resource.as_str().unwrap()
                    ))
                    .or_default()
                    .extend(verbs);
            }
        }
    }
    let read = ["get", "list", "watch"];
    for resource in [
        "/pods",
        "/namespaces",
        "discovery.k8s.io/endpointslices",
        "apps/replicasets",
        // Rollouts' Deployment backends (their selectors).
        "apps/deployments",
        "batch/jobs",
        "gateway.networking.k8s.io/httproutes",
        "gateway.networking.k8s.io/grpcroutes",
        "policy.ferry.io/httpfaults",
        "ferry.io/rollouts",
        // The authorization resources (docs/authorization.md).
        "policy.ferry.io/servers",
        "policy.ferry.io/authorizationpolicies",
        "policy.ferry.io/meshtlsauthentications",
        "policy.ferry.io/networkauthentications",
        "policy.ferry.io/jwtauthentications",
        "policy.ferry.io/httplocalratelimitpolicies",
        // Linkerd's, where its CRDs are installed.
        "policy.linkerd.io/servers",
        "policy.linkerd.io/authorizationpolicies",
        "policy.linkerd.io/meshtlsauthentications",
        "policy.linkerd.io/networkauthentications",
        "policy.linkerd.io/httplocalratelimitpolicies",
    ] {
        assert_eq!(
            grants.remove(resource).unwrap_or_default(),
            read,
            "{resource}"
        );
    }
    assert_eq!(
        grants.remove("authentication.k8s.io/tokenreviews").unwrap(),
        ["create"]
    );
    // Route status (Accepted, ResolvedRefs) and rollouts' state are what it writes.
    for status in [
        "gateway.networking.k8s.io/httproutes/status",
        "gateway.networking.k8s.io/grpcroutes/status",
        "ferry.io/rollouts/status",
    ] {
        assert_eq!(
            grants.remove(status).unwrap_or_default(),
            ["patch"],
            "{status}"
        );
    }
    // Services are watched, and the Services fronting rollouts' Deployment backends
    // applied (server-side apply: create, patch).
    assert_eq!(
        grants.remove("/services").unwrap(),
        ["get", "list", "watch", "create", "patch"]
    );
    // The rollout controller's leader election.
    assert_eq!(
        grants.remove("coordination.k8s.io/leases").unwrap(),
        ["get", "create", "update"]
    );
    // ... and its Events about rollouts.
    assert_eq!(
        grants.remove("events.k8s.io/events").unwrap(),
        ["create", "patch"]
    );
    // The exposed public API asks RBAC about its callers.
    assert_eq!(
        grants
            .remove("authorization.k8s.io/subjectaccessreviews")
            .unwrap(),
        ["create"]
    );
    assert!(grants.is_empty(), "unexpected grants: {grants:?}");
    let yaml = serde_yaml_ng::to_string(role).unwrap();
    assert!(!yaml.contains('*') && !yaml.contains("secrets"), "{yaml}");

    // What users of an exposed API are bound to: reads, and taps, of api.ferry.io.
    let viewer = find(&docs, "ClusterRole", "ferry-api-viewer-ferry");
    assert_eq!(viewer["rules"][0]["apiGroups"][0], "api.ferry.io");
    assert_eq!(viewer["rules"][0]["resources"][0], "api");
    assert_eq!(viewer["rules"][0]["verbs"][0], "get");
    let tap = find(&docs, "ClusterRole", "ferry-tap-ferry");
    assert_eq!(tap["rules"][0]["resources"][0], "tap");
    assert_eq!(tap["rules"][0]["verbs"][0], "watch");
    let operator = find(&docs, "ClusterRole", "ferry-rollout-operator-ferry");
    assert_eq!(operator["rules"][0]["resources"][0], "rollouts");
    assert_eq!(operator["rules"][0]["verbs"][0], "update");

    let binding = find(&docs, "ClusterRoleBinding", "ferry-control-ferry");
    assert_eq!(binding["roleRef"]["name"], "ferry-control-ferry");
    assert_eq!(binding["subjects"][0]["name"], "ferry-control");
    assert_eq!(binding["subjects"][0]["namespace"], "ferry");
}

#[test]
fn ha_replicates_with_disruption_budget_and_anti_affinity() {
    let docs = install(&["--ha"]);
    let deploy = find(&docs, "Deployment", "ferry-control");
    assert_eq!(deploy["spec"]["replicas"], 3);
    let anti = &deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert_eq!(
        anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let pdb = find(&docs, "PodDisruptionBudget", "ferry-control");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["selector"], deploy["spec"]["selector"]);
    assert_eq!(
        find(&docs, "ConfigMap", "ferry-config")["data"]["ha"],
        "true"
    );
}

#[test]
fn generated_certificates_form_valid_p256_chains() {
    let docs = install(&["--namespace", "mesh"]);
    let dir = tmp("chains");
    let anchors = find(&docs, "ConfigMap", "ferry-identity-trust-roots")["data"]["ca-bundle.crt"]
        .as_str()
        .unwrap();
    let issuer = find(&docs, "Secret", "ferry-identity-issuer");
    std::fs::write(dir.join("anchors.pem"), anchors).unwrap();
    std::fs::write(dir.join("issuer.pem"), secret_data(issuer, "tls.crt")).unwrap();
    std::fs::write(dir.join("issuer.key"), secret_data(issuer, "tls.key")).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();

    openssl(&["verify", "-CAfile", &p("anchors.pem"), &p("issuer.pem")]);
    let text = openssl(&["x509", "-in", &p("issuer.pem"), "-noout", "-text"]);
    assert!(text.contains("prime256v1"), "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("identity.mesh.cluster.local"), "{text}");
    let cert_key = openssl(&["x509", "-in", &p("issuer.pem"), "-noout", "-pubkey"]);
    let key_pub = openssl(&["pkey", "-in", &p("issuer.key"), "-pubout"]);
    assert_eq!(
        cert_key, key_pub,
        "the issuer key must match its certificate"
    );
    // Valid for more than the 24 h a workload certificate lives.
    openssl(&[
        "x509",
        "-in",
        &p("issuer.pem"),
        "-noout",
        "-checkend",
        "86400",
    ]);

    let webhook = find(
        &docs,
        "MutatingWebhookConfiguration",
        "ferry-proxy-injector-mesh",
    );
    let ca_b64 = webhook["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap();
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_b64)
        .unwrap();
    std::fs::write(dir.join("webhook-ca.pem"), ca).unwrap();
    let serving = find(&docs, "Secret", "ferry-proxy-injector-tls");
    std::fs::write(dir.join("webhook.pem"), secret_data(serving, "tls.crt")).unwrap();
    openssl(&[
        "verify",
        "-CAfile",
        &p("webhook-ca.pem"),
        "-verify_hostname",
        "ferry-proxy-injector.mesh.svc",
        "-purpose",
        "sslserver",
        &p("webhook.pem"),
    ]);
    assert_eq!(
        webhook["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "mesh"
    );
    assert_eq!(webhook["webhooks"][0]["failurePolicy"], "Ignore");
    // Enabled namespaces, or pods labelled enabled elsewhere (but never the control
    // plane's own namespace): two webhooks, as a selector cannot say "or".
    let ns_hook = &webhook["webhooks"][0];
    assert_eq!(
        ns_hook["namespaceSelector"]["matchLabels"]["ferry.io/inject"],
        "enabled"
    );
    let pod_hook = &webhook["webhooks"][1];
    assert_eq!(pod_hook["name"], "pods.proxy-injector.ferry.io");
    assert_eq!(
        pod_hook["objectSelector"]["matchLabels"]["ferry.io/inject"],
        "enabled"
    );
    let excluded = &pod_hook["namespaceSelector"]["matchExpressions"][1];
    assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
    assert!(excluded["values"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v == "mesh"));
    assert_eq!(pod_hook["failurePolicy"], "Ignore");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn supplied_identity_files_are_used_verbatim() {
    let dir = tmp("supplied");
    let material =
        ferry::identity::generate("ferry", "example.org", time::OffsetDateTime::now_utc()).unwrap();
    std::fs::write(dir.join("ca.pem"), &material.trust_anchors_pem).unwrap();
    std::fs::write(dir.join("issuer.pem"), &material.issuer_cert_pem).unwrap();
    std::fs::write(dir.join("issuer.key"), &material.issuer_key_pem).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let docs = install(&[
        "--identity-trust-anchors-file",
        &p("ca.pem"),
        "--identity-issuer-certificate-file",
        &p("issuer.pem"),
        "--identity-issuer-key-file",
        &p("issuer.key"),
    ]);
    assert_eq!(
        find(&docs, "ConfigMap", "ferry-identity-trust-roots")["data"]["ca-bundle.crt"],
        material.trust_anchors_pem.as_str()
    );
    let issuer = find(&docs, "Secret", "ferry-identity-issuer");
    assert_eq!(secret_data(issuer, "tls.crt"), material.issuer_cert_pem);
    assert_eq!(secret_data(issuer, "tls.key"), material.issuer_key_pem);

    // All three or none.
    let out = ferry(&["install", "--identity-trust-anchors-file", &p("ca.pem")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--identity-issuer-certificate-file"));
    // A key that is not a key is refused, naming the file.
    let out = ferry(&[
        "install",
        "--identity-trust-anchors-file",
        &p("ca.pem"),
        "--identity-issuer-certificate-file",
        &p("issuer.pem"),
        "--identity-issuer-key-file",
        &p("ca.pem"),
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ca.pem") && err.contains("not a usable private key"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn crds_flag_prints_ferrys_crds() {
    let out = ferry(&["install", "--crds"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kind: CustomResourceDefinition"), "{text}");
    assert!(text.contains("name: httpfaults.policy.ferry.io"), "{text}");
    for name in [
        "servers",
        "authorizationpolicies",
        "meshtlsauthentications",
        "networkauthentications",
        "jwtauthentications",
        "httplocalratelimitpolicies",
    ] {
        assert!(
            text.contains(&format!("name: {name}.policy.ferry.io")),
            "{text}"
        );
    }
    assert!(text.contains("name: rollouts.ferry.io"), "{text}");
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 8);
}

#[test]
fn rendering_is_deterministic_for_a_given_config() {
    let args = ferry::install::InstallArgs {
        crds: false,
        namespace: "ferry".into(),
        registry: "r".into(),
        control_image: Some("c".into()),
        proxy_image: None,
        version: "v".into(),
        trust_domain: "cluster.local".into(),
        ha: true,
        proxy_trace_sampling: "0".into(),
        identity_trust_anchors_file: None,
        identity_issuer_certificate_file: None,
        identity_issuer_key_file: None,
    };
    let cfg = ferry::install::InstallConfig::from_args(&args).unwrap();
    assert_eq!(
        ferry::install::render(&cfg).unwrap(),
        ferry::install::render(&cfg).unwrap()
    );
}
