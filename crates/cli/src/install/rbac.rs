//! The control plane's identity in the cluster and what it may do: a ServiceAccount and a
//! read-mostly ClusterRole. It reads what discovery watches and the routes it serves, may
//! create TokenReviews and SubjectAccessReviews, may write route and rollout status, hold the
//! rollouts Lease, create Events about rollouts and the Services fronting rollouts'
//! Deployment backends; it cannot read Secrets or change anything else in the cluster.
//! Two more ClusterRoles, bound to no one, are for users of an exposed public API
//! (docs/kubernetes.md): `ferry-api-viewer-<ns>`, `ferry-tap-<ns>` and
//! `ferry-rollout-operator-<ns>`.

use ferry_api::k8s as names;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{InstallConfig, Objects, RenderError};

const READ: &[&str] = &["get", "list", "watch"];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// The cluster-wide permissions of the control plane, one rule per reason.
pub fn rules() -> Vec<PolicyRule> {
    vec![
        // Discovery (`ferry-control --discovery kubernetes`, reflector stores: list +
        // watch): services and their pods; namespaces for per-namespace stats and the
        // injector's namespace-level `ferry.io/inject`.
        rule("", &["services", "pods", "namespaces"], READ),
        rule("discovery.k8s.io", &["endpointslices"], READ),
        // Pod owners: a pod's ReplicaSet names its Deployment and a Job its CronJob
        // (StatefulSets and DaemonSets own pods directly, so they are never read).
        rule("apps", &["replicasets"], READ),
        rule("batch", &["jobs"], READ),
        // Routes (docs/routes.md): Gateway API routes attached to Services and Ferry's
        // HTTPFault, watched; the routes' status (Accepted, ResolvedRefs) written back.
        rule(
            "gateway.networking.k8s.io",
            &["httproutes", "grpcroutes"],
            READ,
        ),
        rule(
            "gateway.networking.k8s.io",
            &["httproutes/status", "grpcroutes/status"],
            &["patch"],
        ),
        // ... and the authorization resources (docs/authorization.md), watched.
        rule(
            "policy.ferry.io",
            &[
                "httpfaults",
                "servers",
                "authorizationpolicies",
                "meshtlsauthentications",
                "networkauthentications",
                "jwtauthentications",
                "httplocalratelimitpolicies",
            ],
            READ,
        ),
        // ... and Linkerd's, read as Ferry's where its CRDs are installed (users migrating
        // from Linkerd; it has no JWTAuthentication).
        rule(
            "policy.linkerd.io",
            &[
                "servers",
                "authorizationpolicies",
                "meshtlsauthentications",
                "networkauthentications",
                "httplocalratelimitpolicies",
            ],
            READ,
        ),
        // Rollouts (docs/rollouts.md): watched; each one's state kept in its status.
        rule("ferry.io", &["rollouts"], READ),
        rule("ferry.io", &["rollouts/status"], &["patch"]),
        // A rollout's Deployment backend is read (its selector) and fronted by a Service
        // the Lease holder applies (server-side apply: create, patch), owned by the
        // Rollout so it goes with it.
        rule("apps", &["deployments"], READ),
        rule("", &["services"], &["create", "patch"]),
        // One replica runs rollouts: the one holding the `ferry-rollouts` Lease.
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"],
        ),
        // ... and tells each rollout's transitions as Events regarding it (`kubectl
        // describe ro`): created, and patched when a series repeats.
        rule("events.k8s.io", &["events"], &["create", "patch"]),
        // Identity: proxies prove who they are with their service-account token; the
        // public API, when exposed, checks its callers' tokens the same way.
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        // The public API, when exposed, asks RBAC whether a caller may use a route.
        rule(
            "authorization.k8s.io",
            &["subjectaccessreviews"],
            &["create"],
        ),
    ]
}

/// The roles users are bound to for the public API when it is exposed (`--api-listen` on a
/// non-loopback address): the name suffix (after `ferry-`) and the rule. The resources are
/// not served by the Kubernetes API; the control plane asks SubjectAccessReview about them.
pub fn api_roles() -> Vec<(&'static str, PolicyRule)> {
    vec![
        ("api-viewer", rule(API_GROUP, &["api"], &["get"])),
        ("tap", rule(API_GROUP, &["tap"], &["watch"])),
        // A rollout's actions (promote, pause, resume, abort, start): docs/rollouts.md.
        (
            "rollout-operator",
            rule(API_GROUP, &["rollouts"], &["update"]),
        ),
    ]
}

/// Renders the ClusterRoles for users of an exposed public API (bound to no one).
pub fn render_api_roles(cfg: &InstallConfig, out: &mut Objects) -> Result<(), RenderError> {
    for (suffix, rule) in api_roles() {
        out.push(&ClusterRole {
            metadata: ObjectMeta {
                name: Some(format!("ferry-{suffix}-{}", cfg.namespace)),
                labels: Some(cfg.labels()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![rule]),
            ..ClusterRole::default()
        })?;
    }
    Ok(())
}

/// The API group of the public API's RBAC resources (the control plane's
/// `api::auth::API_GROUP`).
pub const API_GROUP: &str = "api.ferry.io";

/// Renders the ServiceAccount, ClusterRole and ClusterRoleBinding.
pub fn render(cfg: &InstallConfig, out: &mut Objects) -> Result<(), RenderError> {
    // Cluster-scoped names carry the namespace so two installs cannot collide.
    let cluster_name = format!("{}-{}", names::CONTROL_NAME, cfg.namespace);
    let cluster_meta = ObjectMeta {
        name: Some(cluster_name.clone()),
        labels: Some(cfg.labels()),
        ..ObjectMeta::default()
    };
    out.push(&ServiceAccount {
        metadata: cfg.meta(names::CONTROL_NAME),
        ..ServiceAccount::default()
    })?;
    out.push(&ClusterRole {
        metadata: cluster_meta.clone(),
        rules: Some(rules()),
        ..ClusterRole::default()
    })?;
    out.push(&ClusterRoleBinding {
        metadata: cluster_meta,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: cluster_name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: names::CONTROL_NAME.to_string(),
            namespace: Some(cfg.namespace.clone()),
            api_group: None,
        }]),
    })
}
