//! The demo's second act, as files a user copies into the control plane's config directory
//! (the local-mode `kubectl apply`): release voting v2 in steps, see v3 roll back on its
//! own, and lock voting to web. `ferry demo` writes them to `<state>/examples/` and starts
//! the control plane with `--routes` and `--rollouts` on `<state>/config/`, which it empties
//! at each start so every demo begins at the start of the story.

/// The directory the control plane reads routes, policies and rollouts from.
pub const CONFIG_DIR: &str = "config";
/// The directory of the example documents.
pub const EXAMPLES_DIR: &str = "examples";
/// The file a rollout example is copied to: both versions' rollouts are one `Rollout`,
/// `voting`, whose edit starts a new run.
pub const ROLLOUT_FILE: &str = "voting-rollout.yaml";
/// The policy example's file name, in both directories.
pub const POLICY_FILE: &str = "voting-policy.yaml";
/// v2's rollout example.
pub const V2_FILE: &str = "voting-v2-rollout.yaml";
/// v3's rollout example.
pub const V3_FILE: &str = "voting-v3-rollout.yaml";

/// The rollout of `canary` over `stable` on voting-svc: 20 %, then 50 %, each baked 20 s,
/// judged every 10 s on success rate (at least 95 %, at most 2 points below stable) and
/// p99 (at most 250 ms).
fn rollout(what: &str, stable: &str, canary: &str) -> String {
    format!(
        "\
# {what}
# Copy it to the demo's config directory, as `ferry demo` prints; `ferry rollout status voting
# -n emojivoto --watch` follows it. Fields: docs/rollouts.md.
apiVersion: ferry.io/v1alpha1
kind: Rollout
metadata: {{name: voting, namespace: emojivoto}}
spec:
  service: {{name: voting-svc, port: 8080}}   # what web calls; its traffic moves
  stable: {{name: {stable}}}
  canary: {{name: {canary}}}
  steps:
  - weight: 20
    bake: 20s
  - weight: 50
    bake: 20s
  analysis:
    interval: 10s
    minRequests: 10
    successRate: {{min: 95, maxDrop: 2}}
    latencyP99: {{maxMs: 250}}
"
    )
}

/// The example documents: file name and contents.
pub fn examples() -> Vec<(&'static str, String)> {
    vec![
        (
            V2_FILE,
            rollout(
                "Release voting v2, which fixes the bug (it looks emojis up over gRPC), in steps.",
                "voting-svc",
                "voting-v2-svc",
            ),
        ),
        (
            V3_FILE,
            rollout(
                "Then v3, slower and losing one vote in four: its rollout rolls back on its own.",
                "voting-v2-svc",
                "voting-v3-svc",
            ),
        ),
        (POLICY_FILE, POLICY.to_string()),
    ]
}

/// Only web may call voting's gRPC port, on every version; the bot's direct reads of the
/// results are refused.
const POLICY: &str = "\
# Lock voting to web: only web's identity may call voting's gRPC port (every version);
# anyone else, like the bot reading the results straight from voting, is refused
# (gRPC PERMISSION_DENIED, made by voting's proxy). Fields: docs/authorization.md.
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: {name: voting-grpc, namespace: emojivoto}
spec:
  podSelector: {matchLabels: {app: voting}}
  port: grpc
  proxyProtocol: gRPC
  accessPolicy: deny
---
apiVersion: policy.ferry.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-to-voting, namespace: emojivoto}
spec:
  targetRef: {group: policy.ferry.io, kind: Server, name: voting-grpc}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: web}
";
