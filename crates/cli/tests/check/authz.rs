//! `ferry authz`, `ferry diagnostics policy po/NAME:PORT` and `ferry check --local`'s policy
//! check against a real local `ferry-control` serving a workloads file and policy documents
//! (docs/authorization.md).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const WORKLOADS: &str = "\
workloads:
  - name: voting
    namespace: emojivoto
    serviceAccount: voting
    labels: { app: voting }
    instances:
      - { name: voting-0, addr: \"127.0.0.2:8080\" }
";

const POLICY: &str = "\
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: { name: voting-http, namespace: emojivoto }
spec: { podSelector: { matchLabels: { app: voting } }, port: 8080, proxyProtocol: HTTP/1 }
---
apiVersion: policy.ferry.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: web-to-voting, namespace: emojivoto }
spec:
  targetRef: { group: policy.ferry.io, kind: Server, name: voting-http }
  requiredAuthenticationRefs: [{ kind: ServiceAccount, name: web }]
";

fn ferry(api: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .args(["--api-addr", api])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "ferry {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn authz_and_the_inbound_policy_of_a_pod_port_from_a_local_control_plane() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    std::fs::write(&file, WORKLOADS).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let control = rt
        .block_on(ferry_testkit::process::ControlProc::spawn(
            Path::new(&file),
            &["--routes", policy.to_str().unwrap()],
        ))
        .unwrap();
    let api = format!("http://{}", control.api);

    let table = ferry(&api, &["authz", "deploy/voting", "-n", "emojivoto"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "ROUTE",
                "SERVER",
                "AUTHORIZATION_POLICY",
                "ALLOWED",
                "DENIED"
            ],
            vec![
                "default:default",
                "server:voting-http",
                "authorizationpolicy:web-to-voting",
                "0",
                "0"
            ],
            vec![
                "default:default",
                "default:all-unauthenticated",
                "default:all-unauthenticated",
                "0",
                "0"
            ],
        ],
        "{table}"
    );
    let json: Value = serde_json::from_str(&ferry(
        &api,
        &["authz", "deploy/voting", "-n", "emojivoto", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(json[0]["authorization"]["name"], "web-to-voting");

    let text = ferry(
        &api,
        &[
            "diagnostics",
            "policy",
            "po/voting-0:8080",
            "-n",
            "emojivoto",
        ],
    );
    assert!(
        text.starts_with("server    Server emojivoto/voting-http (HTTP/1)\n"),
        "{text}"
    );
    assert!(
        text.contains("mesh TLS web.emojivoto.serviceaccount.identity.ferry.cluster.local"),
        "{text}"
    );

    // Every document matches something: the policy check passes without a warning.
    let check = ferry(&api, &["check", "--local"]);
    assert!(
        check.contains("✓ policy: every Server, AuthorizationPolicy and authentication matches something: 1 Server(s), 1 AuthorizationPolicy(ies), each matching something"),
        "{check}"
    );
    assert!(!check.contains('‼'), "{check}");
    drop(control);
}

/// A Server selecting no pod and an authentication no policy requires, beside the
/// documents above.
const UNMATCHED: &str = "\
---
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: { name: ghost-http, namespace: emojivoto }
spec: { podSelector: { matchLabels: { app: ghost } }, port: 8080 }
---
apiVersion: policy.ferry.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: ops, namespace: emojivoto }
spec: { identities: [\"*.ops.serviceaccount.identity.ferry.cluster.local\"] }
";

#[test]
fn check_local_warns_about_policy_documents_that_match_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    std::fs::write(&file, WORKLOADS).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, format!("{POLICY}{UNMATCHED}")).unwrap();
    let control = rt
        .block_on(ferry_testkit::process::ControlProc::spawn(
            Path::new(&file),
            &["--routes", policy.to_str().unwrap()],
        ))
        .unwrap();
    let api = format!("http://{}", control.api);

    // Warnings, not failures: the exit status is 0 (`ferry` asserts it).
    let out = ferry(&api, &["check", "--local"]);
    let name = "policy: every Server, AuthorizationPolicy and authentication matches something";
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with('‼')).collect();
    assert_eq!(
        warnings,
        [
            format!("‼ {name}: Server emojivoto/ghost-http selects no pods"),
            format!("‼ {name}: MeshTLSAuthentication emojivoto/ops is required by no AuthorizationPolicy"),
        ],
        "{out}"
    );
    assert!(
        out.contains("    hint: see `ferry authz deploy/NAME` and docs/authorization.md"),
        "{out}"
    );
    assert!(
        out.contains("all 5 checks passed, 1 with warnings"),
        "{out}"
    );
    drop(control);
}
