//! The resources the fake API server serves, their paths and bookmark shapes, and label
//! selectors.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// A resource the fake server serves.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    /// `Pod`, `EndpointSlice`, ...
    pub kind: &'static str,
    /// `v1`, `discovery.k8s.io/v1`, ...
    pub api_version: &'static str,
    /// The path prefix: `/api/v1` or `/apis/<group>/<version>`.
    pub prefix: &'static str,
    /// The resource's plural in paths.
    pub plural: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

const fn kind(
    kind: &'static str,
    api_version: &'static str,
    prefix: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        kind,
        api_version,
        prefix,
        plural,
        namespaced,
    }
}

/// Every resource served.
pub static KINDS: &[Kind] = &[
    kind("Namespace", "v1", "/api/v1", "namespaces", false),
    kind("Node", "v1", "/api/v1", "nodes", false),
    kind("Pod", "v1", "/api/v1", "pods", true),
    kind("Service", "v1", "/api/v1", "services", true),
    kind("ServiceAccount", "v1", "/api/v1", "serviceaccounts", true),
    kind("Endpoints", "v1", "/api/v1", "endpoints", true),
    kind(
        "EndpointSlice",
        "discovery.k8s.io/v1",
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        true,
    ),
    kind(
        "ReplicaSet",
        "apps/v1",
        "/apis/apps/v1",
        "replicasets",
        true,
    ),
    kind(
        "Deployment",
        "apps/v1",
        "/apis/apps/v1",
        "deployments",
        true,
    ),
    kind(
        "StatefulSet",
        "apps/v1",
        "/apis/apps/v1",
        "statefulsets",
        true,
    ),
    kind("DaemonSet", "apps/v1", "/apis/apps/v1", "daemonsets", true),
    kind("Job", "batch/v1", "/apis/batch/v1", "jobs", true),
    kind("CronJob", "batch/v1", "/apis/batch/v1", "cronjobs", true),
    // Gateway API routes (the v1.6.1 CRDs' storage version) and Ferry's HTTPFault.
    kind(
        "HTTPRoute",
        "gateway.networking.k8s.io/v1",
        "/apis/gateway.networking.k8s.io/v1",
        "httproutes",
        true,
    ),
    kind(
        "GRPCRoute",
        "gateway.networking.k8s.io/v1",
        "/apis/gateway.networking.k8s.io/v1",
        "grpcroutes",
        true,
    ),
    kind(
        "HTTPFault",
        "policy.ferry.io/v1alpha1",
        "/apis/policy.ferry.io/v1alpha1",
        "httpfaults",
        true,
    ),
    // Ferry's authorization resources (docs/authorization.md).
    policy("Server", "servers"),
    policy("AuthorizationPolicy", "authorizationpolicies"),
    policy("MeshTLSAuthentication", "meshtlsauthentications"),
    policy("NetworkAuthentication", "networkauthentications"),
    policy("JWTAuthentication", "jwtauthentications"),
    policy("HTTPLocalRateLimitPolicy", "httplocalratelimitpolicies"),
    // Linkerd's (policy.linkerd.io), in the versions Ferry reads; not installed until
    // `World::install_crds`. After Ferry's kinds: a bare kind name means Ferry's.
    linkerd("Server", Version::V1beta3, "servers"),
    linkerd(
        "AuthorizationPolicy",
        Version::V1alpha1,
        "authorizationpolicies",
    ),
    linkerd(
        "MeshTLSAuthentication",
        Version::V1alpha1,
        "meshtlsauthentications",
    ),
    linkerd(
        "NetworkAuthentication",
        Version::V1alpha1,
        "networkauthentications",
    ),
    linkerd(
        "HTTPLocalRateLimitPolicy",
        Version::V1alpha1,
        "httplocalratelimitpolicies",
    ),
    // Leader election (created and renewed by the rollout controller).
    kind(
        "Lease",
        "coordination.k8s.io/v1",
        "/apis/coordination.k8s.io/v1",
        "leases",
        true,
    ),
    // Events (created by the rollout controller for each transition).
    kind(
        "Event",
        "events.k8s.io/v1",
        "/apis/events.k8s.io/v1",
        "events",
        true,
    ),
    // Ferry's Rollout (docs/rollouts.md).
    kind(
        "Rollout",
        "ferry.io/v1alpha1",
        "/apis/ferry.io/v1alpha1",
        "rollouts",
        true,
    ),
];

const fn policy(name: &'static str, plural: &'static str) -> Kind {
    kind(
        name,
        "policy.ferry.io/v1alpha1",
        "/apis/policy.ferry.io/v1alpha1",
        plural,
        true,
    )
}

/// Linkerd's policy group.
pub const LINKERD_POLICY_GROUP: &str = "policy.linkerd.io";

const fn linkerd(name: &'static str, version: Version, plural: &'static str) -> Kind {
    let (api_version, prefix) = match version {
        Version::V1beta3 => (
            "policy.linkerd.io/v1beta3",
            "/apis/policy.linkerd.io/v1beta3",
        ),
        Version::V1alpha1 => (
            "policy.linkerd.io/v1alpha1",
            "/apis/policy.linkerd.io/v1alpha1",
        ),
    };
    kind(name, api_version, prefix, plural, true)
}

/// The versions of Linkerd's kinds served.
enum Version {
    V1alpha1,
    V1beta3,
}

impl Kind {
    /// Whether clients create objects of this kind (`POST` to a namespace's collection).
    pub fn creatable(&self) -> bool {
        matches!(self.kind, "Lease" | "Event")
    }

    /// Why the API server would refuse to create `object` (a `422 Invalid`'s causes); none
    /// for kinds it does not validate here. For events.k8s.io/v1 Events, what
    /// `ValidateEventCreate` checks of a new Event.
    pub fn invalid(&self, namespace: &str, object: &Value) -> Vec<String> {
        if self.kind != "Event" {
            return Vec::new();
        }
        let mut errors = Vec::new();
        let text = |field: &str| object[field].as_str().unwrap_or_default();
        for field in [
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            match text(field).len() {
                0 => errors.push(format!("{field}: Required value")),
                n if n > 128 => {
                    errors.push(format!("{field}: Too long: may not be more than 128 bytes"))
                }
                _ => {}
            }
        }
        if object["eventTime"].is_null() {
            errors.push("eventTime: Required value".into());
        }
        if !matches!(text("type"), "Normal" | "Warning") {
            errors.push(format!("type: Unsupported value: {:?}", text("type")));
        }
        if text("note").len() > 1024 {
            errors.push("note: Too long: may not be more than 1024 bytes".into());
        }
        let regarding = &object["regarding"];
        if regarding["namespace"].as_str() != Some(namespace) {
            errors
                .push("regarding.namespace: Invalid value: does not match event.namespace".into());
        }
        errors
    }

    /// The kind named `name`: `Pod`, or `Server.policy.linkerd.io` (kubectl's `kind.group`)
    /// where groups share a kind's name; a bare name is the first listed (Ferry's).
    pub fn named(name: &str) -> Option<&'static Kind> {
        match name.split_once('.') {
            Some((kind, group)) => KINDS.iter().find(|k| k.kind == kind && k.group() == group),
            None => KINDS.iter().find(|k| k.kind == name),
        }
    }

    /// The kind of an object of `kind` and, when it says, `api_version` (any version of
    /// the group).
    pub fn of(kind: &str, api_version: Option<&str>) -> Option<&'static Kind> {
        match api_version.and_then(|v| v.split_once('/')) {
            Some((group, _)) => Self::named(&format!("{kind}.{group}")),
            None => Self::named(kind),
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &'static str {
        self.api_version
            .split_once('/')
            .map_or("", |(group, _)| group)
    }

    /// `(apiVersion, kind)`: tells apart two groups' kinds of the same name.
    pub fn id(&self) -> (&'static str, &'static str) {
        (self.api_version, self.kind)
    }

    /// Parses an object's status path (`…/namespaces/<ns>/<plural>/<name>/status`): the
    /// kind, namespace and name.
    pub fn route_status(path: &str) -> Option<(&'static Kind, String, String)> {
        let rest = path.trim_end_matches('/').strip_suffix("/status")?;
        let (collection, name) = rest.rsplit_once('/')?;
        let (kind, namespace) = Self::route(collection)?;
        Some((kind, namespace?, name.to_string()))
    }

    /// Parses one object's path (`…/namespaces/<ns>/<plural>/<name>`): the kind, namespace
    /// and name.
    pub fn route_object(path: &str) -> Option<(&'static Kind, String, String)> {
        let (collection, name) = path.trim_end_matches('/').rsplit_once('/')?;
        let (kind, namespace) = Self::route(collection)?;
        Some((kind, namespace?, name.to_string()))
    }

    /// Parses a collection path: the kind and, for `/namespaces/<ns>/<plural>`, the
    /// namespace. Cluster-wide paths give `None`.
    pub fn route(path: &str) -> Option<(&'static Kind, Option<String>)> {
        let path = path.trim_end_matches('/');
        KINDS.iter().find_map(|k| {
            let rest = path.strip_prefix(k.prefix)?.strip_prefix('/')?;
            if rest == k.plural {
                return Some((k, None));
            }
            let (ns, plural) = rest.strip_prefix("namespaces/")?.split_once('/')?;
            (k.namespaced && plural == k.plural).then(|| (k, Some(ns.to_string())))
        })
    }

    /// A `BOOKMARK` event at `rv`, shaped as the API server sends it (a Pod's carries
    /// `"containers":null`); `initial_end` marks the end of `sendInitialEvents`.
    pub fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut object =
            json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": metadata});
        if self.kind == "Pod" {
            object["spec"] = json!({"containers": null});
            object["status"] = json!({});
        }
        json!({"type": "BOOKMARK", "object": object})
    }
}

/// The labels of an object.
pub fn labels(object: &Value) -> BTreeMap<String, String> {
    let labels = object["metadata"]["labels"].as_object();
    labels
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Whether equality-based `selector` (`a=b,c!=d,e`) selects `labels`.
pub fn selects(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels.get(k.trim()).map(String::as_str) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            let v = v.trim_start_matches('=');
            labels.get(k.trim()).map(String::as_str) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            !labels.contains_key(k.trim())
        } else {
            labels.contains_key(term.trim())
        }
    })
}
