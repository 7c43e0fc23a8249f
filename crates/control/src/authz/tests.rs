//! Parsing, validation and resolution of the authorization documents.

use linkerd2_proxy_api::inbound as pb;
use linkerd2_proxy_api::meta::metadata::Kind as MetaKind;

use super::inbound::{port_target, translate, translate_ferry};
use super::jwks::Keys;
use super::resolve::{compile, Authentication, InboundPolicy, PortTarget, Protocol};
use super::*;
use crate::model::{ClusterState, ObjectRef};
use crate::routes::{parse, RouteSet};

const WORKLOADS: &str = r#"
workloads:
  - name: voting
    namespace: emojivoto
    serviceAccount: voting
    labels: { app: voting, tier: backend }
    ports: { grpc: 8080, admin: 9990 }
    instances:
      - { name: voting-0, addr: 127.0.0.1:17301 }
  - name: web
    namespace: emojivoto
    serviceAccount: web
    labels: { app: web }
    annotations: { config.linkerd.io/default-inbound-policy: cluster-authenticated }
    instances:
      - { name: web-0, addr: 127.0.0.1:17302 }
  - name: echo
    namespace: other
    instances:
      - { name: echo-0, addr: 127.0.0.1:17303 }
"#;

fn state() -> ClusterState {
    crate::workloads_file::parse(WORKLOADS).expect("valid workloads")
}

fn set(text: &str) -> RouteSet {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

fn policy_of(set: &RouteSet, pod: &str, port: u16, cfg: &InboundConfig) -> InboundPolicy {
    let (ns, pod) = pod.split_once('/').unwrap();
    let target = PortTarget {
        pod: ObjectRef::new(ns, pod),
        port,
    };
    compile(&state(), set, cfg, &Keys::new(), &target).expect("a known pod")
}

fn names(list: &[resolve::Authorization]) -> Vec<String> {
    list.iter()
        .map(|a| format!("{}:{}", a.meta.kind, a.meta.name))
        .collect()
}

const POLICIES: &str = r#"
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: { name: voting-grpc, namespace: emojivoto }
spec:
  podSelector: { matchLabels: { app: voting } }
  port: grpc
  proxyProtocol: HTTP/2
---
apiVersion: policy.ferry.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: web-to-voting, namespace: emojivoto }
spec:
  targetRef: { group: policy.ferry.io, kind: Server, name: voting-grpc }
  requiredAuthenticationRefs:
    - { group: policy.ferry.io, kind: MeshTLSAuthentication, name: web }
    - { group: policy.ferry.io, kind: NetworkAuthentication, name: cluster }
---
apiVersion: policy.ferry.io/v1alpha1
kind: MeshTLSAuthentication
metadata: { name: web, namespace: emojivoto }
spec:
  identityRefs:
    - { kind: ServiceAccount, name: web }
    - { kind: Namespace, name: ops }
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: { name: cluster, namespace: emojivoto }
spec:
  networks:
    - cidr: 10.0.0.0/8
      except: [10.1.0.0/16]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: vote-api, namespace: emojivoto }
spec:
  parentRefs:
    - { group: policy.ferry.io, kind: Server, name: voting-grpc }
  rules:
    - matches: [{ path: { type: PathPrefix, value: /api/vote } }]
---
apiVersion: policy.ferry.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: vote-with-token, namespace: emojivoto }
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: HTTPRoute, name: vote-api }
  requiredAuthenticationRefs:
    - { group: policy.ferry.io, kind: JWTAuthentication, name: issuer }
---
apiVersion: policy.ferry.io/v1alpha1
kind: JWTAuthentication
metadata: { name: issuer, namespace: emojivoto }
spec:
  issuer: https://issuer.example
  audiences: [voting]
  jwks: { keys: [] }
  requiredClaims: [{ name: scope, values: [vote] }]
---
apiVersion: policy.ferry.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: { name: voting-rl, namespace: emojivoto }
spec:
  targetRef: { group: policy.ferry.io, kind: Server, name: voting-grpc }
  total: { requestsPerSecond: 100 }
  identity: { requestsPerSecond: 20 }
  overrides:
    - requestsPerSecond: 50
      clientRefs: [{ kind: ServiceAccount, name: web }]
"#;

#[test]
fn every_kind_parses_beside_the_routes_with_namespaces_filled_in() {
    let s = set(POLICIES);
    assert_eq!(s.authz.servers.len(), 1);
    assert_eq!(s.authz.authorization_policies.len(), 2);
    assert_eq!(s.authz.mesh_tls.len(), 1);
    assert_eq!(s.authz.networks.len(), 1);
    assert_eq!(s.authz.jwt.len(), 1);
    assert_eq!(s.authz.rate_limits.len(), 1);
    assert_eq!(s.http.len(), 1);
    let no_ns = set(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: NetworkAuthentication\nmetadata: { name: n }\nspec:\n  networks: [{ cidr: 0.0.0.0/0 }]\n",
    );
    assert_eq!(no_ns.authz.networks[0].namespace(), "default");
}

/// The first error of `text`, as `line N: field: message`.
fn error(text: &str) -> String {
    let e = parse(text).expect_err("invalid");
    e.0[0].to_string()
}

#[test]
fn invalid_documents_are_refused_with_line_and_field() {
    let e = error(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: Server\nmetadata: { name: s }\nspec:\n  podSelector: {}\n  port: 70000\n",
    );
    assert!(
        e.starts_with("line 6: spec.port: Invalid value: 70000"),
        "{e}"
    );
    let e = error(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: Server\nmetadata: { name: s }\nspec:\n  podSelector: {}\n  port: 80\n  proxyProtocol: HTTP/3\n",
    );
    assert!(
        e.starts_with("line 7: spec.proxyProtocol: Unsupported value: \"HTTP/3\""),
        "{e}"
    );
    let e = error(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: Server\nmetadata: { name: s }\nspec:\n  podSelector: {}\n  port: 80\n  accesPolicy: deny\n",
    );
    assert!(e.contains("unknown field `accesPolicy`"), "{e}");
    assert!(e.starts_with("line 7"), "{e}");
    let e = error(
        "apiVersion: policy.ferry.io/v1\nkind: Server\nmetadata: { name: s }\nspec:\n  podSelector: {}\n  port: http\n",
    );
    assert!(
        e.starts_with("line 1: apiVersion: Unsupported value"),
        "{e}"
    );
    let e = error(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: NetworkAuthentication\nmetadata: { name: n }\nspec:\n  networks:\n    - cidr: 10.0.0.0/8\n    - cidr: 10.0.0.0/8\n      except:\n        - 11.0.0.0/16\n",
    );
    assert!(
        e.starts_with(
            "line 9: spec.networks[1].except[0]: Invalid value: \"11.0.0.0/16\": not inside"
        ),
        "{e}"
    );
    let e = error(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: { name: m }\nspec:\n  identities: [\"*\"]\n  identityRefs: [{ kind: Namespace, name: a }]\n",
    );
    assert!(
        e.starts_with("line 4: spec: Invalid value: exactly one of identities and identityRefs"),
        "{e}"
    );
    let e = error(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: a }\nspec:\n  targetRef: { group: policy.ferry.io, kind: Server, name: s }\n  requiredAuthenticationRefs:\n    - { group: policy.ferry.io, kind: MeshTLSAuthentication, name: m }\n    - { kind: Secret, name: x }\n",
    );
    assert!(
        e.starts_with(
            "line 8: spec.requiredAuthenticationRefs[1].kind: Unsupported value: \"Secret\""
        ),
        "{e}"
    );
    let e = error(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: JWTAuthentication\nmetadata: { name: j }\nspec:\n  issuer: https://i\n  jwksURI: ftp://keys\n",
    );
    assert!(e.starts_with("line 6: spec.jwksURI: Invalid value"), "{e}");
    let e = error(
        "apiVersion: policy.ferry.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: { name: r }\nspec:\n  targetRef: { group: policy.ferry.io, kind: Server, name: s }\n  total:\n    requestsPerSecond: 0\n",
    );
    assert!(
        e.starts_with("line 7: spec.total.requestsPerSecond: Invalid value: 0"),
        "{e}"
    );
    let e = error(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  annotations: { config.ferry.io/default-inbound-policy: allow }\n",
    );
    assert!(e.starts_with("line 5: metadata.annotations: Invalid value: \"allow\" is not a default inbound policy"), "{e}");
}

#[test]
fn without_a_server_the_default_policy_applies_pod_then_namespace_then_cluster() {
    let cfg = InboundConfig::default();
    let empty = RouteSet::default();
    let p = policy_of(&empty, "emojivoto/voting-0", 8080, &cfg);
    assert_eq!(p.server.kind, "default");
    assert_eq!(p.server.name, "all-unauthenticated");
    assert_eq!(p.protocol, Protocol::Detect);
    assert_eq!(names(&p.authorizations), ["default:all-unauthenticated"]);
    assert_eq!(
        names(&p.routes[0].authorizations),
        ["default:all-unauthenticated"]
    );
    // The workload's (Linkerd's) annotation.
    let p = policy_of(&empty, "emojivoto/web-0", 8080, &cfg);
    assert_eq!(p.server.name, "cluster-authenticated");
    assert_eq!(
        p.authorizations[0].networks.len(),
        cfg.cluster_networks.len()
    );
    assert!(matches!(
        p.authorizations[0].authentication,
        Authentication::MeshTls { .. }
    ));
    // The namespace's, from a Namespace document beside the policies.
    let ns = set("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: emojivoto\n  annotations: { config.ferry.io/default-inbound-policy: deny }\n");
    let p = policy_of(&ns, "emojivoto/voting-0", 8080, &cfg);
    assert_eq!(p.server.name, "deny");
    assert!(p.authorizations.is_empty());
    let p = policy_of(&ns, "emojivoto/web-0", 8080, &cfg);
    assert_eq!(p.server.name, "cluster-authenticated", "the pod's wins");
    // The cluster's.
    let audit = InboundConfig {
        default_policy: DefaultPolicy::Audit,
        ..InboundConfig::default()
    };
    let p = policy_of(&empty, "other/echo-0", 80, &audit);
    assert_eq!(names(&p.authorizations), ["default:audit"]);
}

#[test]
fn a_server_resolves_its_authorizations_routes_and_rate_limit() {
    let s = set(POLICIES);
    let cfg = InboundConfig::default();
    let p = policy_of(&s, "emojivoto/voting-0", 8080, &cfg);
    assert_eq!(p.server.kind, "Server");
    assert_eq!(p.server.name, "voting-grpc");
    assert_eq!(p.protocol, Protocol::Http2);
    assert_eq!(
        names(&p.authorizations),
        ["AuthorizationPolicy:web-to-voting"]
    );
    let a = &p.authorizations[0];
    assert_eq!(a.networks[0].net.to_string(), "10.0.0.0/8");
    assert_eq!(a.networks[0].except[0].to_string(), "10.1.0.0/16");
    assert_eq!(
        a.authentication,
        Authentication::MeshTls {
            identities: vec!["web.emojivoto.serviceaccount.identity.ferry.cluster.local".into()],
            suffixes: vec!["ops.serviceaccount.identity.ferry.cluster.local".into()],
        }
    );
    assert_eq!(p.routes.len(), 1);
    assert_eq!(p.routes[0].meta.name, "vote-api");
    assert_eq!(
        names(&p.routes[0].authorizations),
        [
            "AuthorizationPolicy:vote-with-token",
            "AuthorizationPolicy:web-to-voting"
        ],
        "route authorizations, then the server's"
    );
    assert_eq!(
        p.routes[0].authorizations[0].jwt[0].issuer,
        "https://issuer.example"
    );
    let rl = p.rate_limit.as_ref().unwrap();
    assert_eq!((rl.total, rl.identity), (Some(100), Some(20)));
    assert_eq!(
        rl.overrides[0].1[0],
        "web.emojivoto.serviceaccount.identity.ferry.cluster.local"
    );
    // The named port's number only; other ports get the default.
    let other = policy_of(&s, "emojivoto/voting-0", 9990, &cfg);
    assert_eq!(other.server.kind, "default");
    // Another namespace's pod is not selected.
    assert_eq!(
        policy_of(&s, "other/echo-0", 8080, &cfg).server.kind,
        "default"
    );
}

#[test]
fn an_authorization_with_a_missing_authentication_admits_no_one() {
    let text = POLICIES.replace(
        "kind: MeshTLSAuthentication, name: web }",
        "kind: MeshTLSAuthentication, name: gone }",
    );
    let p = policy_of(
        &set(&text),
        "emojivoto/voting-0",
        8080,
        &InboundConfig::default(),
    );
    assert!(
        p.authorizations.is_empty(),
        "{:?}",
        names(&p.authorizations)
    );
}

#[test]
fn the_most_specific_then_first_named_server_wins_and_audit_comes_last() {
    let servers = r#"
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: { name: a-broad, namespace: emojivoto }
spec: { podSelector: {}, port: 8080 }
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: { name: b-narrow, namespace: emojivoto }
spec:
  podSelector:
    matchLabels: { app: voting }
    matchExpressions: [{ key: tier, operator: In, values: [backend] }]
  port: 8080
  accessPolicy: audit
---
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: { name: c-narrow-too, namespace: emojivoto }
spec:
  podSelector:
    matchLabels: { app: voting, tier: backend }
  port: 8080
"#;
    let s = set(servers);
    let cfg = InboundConfig::default();
    let p = policy_of(&s, "emojivoto/voting-0", 8080, &cfg);
    assert_eq!(p.server.name, "b-narrow");
    assert_eq!(p.server.group, "policy.linkerd.io");
    assert_eq!(names(&p.authorizations), ["default:audit"]);
    assert_eq!(
        p.routes[0].meta.kind, "default",
        "a default route without routes"
    );
    assert_eq!(names(&p.routes[0].authorizations), ["default:audit"]);
    // web matches only the empty selector; its server denies by default.
    let p = policy_of(&s, "emojivoto/web-0", 8080, &cfg);
    assert_eq!(p.server.name, "a-broad");
    assert!(p.authorizations.is_empty());
}

#[test]
fn the_messages_carry_metadata_labels_and_the_jwt_extension() {
    let s = set(POLICIES);
    let p = policy_of(&s, "emojivoto/voting-0", 8080, &InboundConfig::default());
    let linkerd = translate(&p);
    assert_eq!(linkerd.labels["kind"], "Server");
    assert_eq!(linkerd.labels["name"], "voting-grpc");
    let Some(pb::proxy_protocol::Kind::Http2(h2)) =
        linkerd.protocol.as_ref().and_then(|p| p.kind.clone())
    else {
        panic!("HTTP/2 expected: {linkerd:?}");
    };
    assert_eq!(
        h2.local_rate_limit
            .as_ref()
            .unwrap()
            .total
            .unwrap()
            .requests_per_second,
        100
    );
    let route = &h2.routes[0];
    let Some(MetaKind::Resource(r)) = route.authorizations[0]
        .metadata
        .as_ref()
        .and_then(|m| m.kind.clone())
    else {
        panic!("resource metadata expected");
    };
    assert_eq!(
        (r.group.as_str(), r.kind.as_str(), r.name.as_str()),
        ("policy.ferry.io", "AuthorizationPolicy", "vote-with-token")
    );
    let ferry = translate_ferry(&p);
    assert_eq!(ferry.authz_extensions.len(), 1);
    let x = &ferry.authz_extensions[0];
    assert_eq!(
        (x.route, x.authz),
        (1, 0),
        "the first route's first authorization"
    );
    assert_eq!(x.jwt[0].name, "emojivoto/issuer");
    assert_eq!(x.jwt[0].jwks, r#"{"keys":[]}"#);
    assert_eq!(x.jwt[0].required_claims[0].values, ["vote"]);
    // Defaults name themselves as Default metadata.
    let d = translate(&policy_of(
        &RouteSet::default(),
        "other/echo-0",
        80,
        &InboundConfig::default(),
    ));
    assert_eq!(d.labels["kind"], "default");
    assert_eq!(
        d.authorizations[0].metadata.as_ref().unwrap().kind,
        Some(MetaKind::Default("all-unauthenticated".into()))
    );
}

#[test]
fn port_specs_name_pods_both_ways() {
    let spec = |w: &str, port| pb::PortSpec {
        workload: w.into(),
        port,
    };
    assert_eq!(
        port_target(&spec("emojivoto:voting-0", 8080)).unwrap().pod,
        ObjectRef::new("emojivoto", "voting-0")
    );
    assert_eq!(
        port_target(&spec(r#"{"ns":"emojivoto","pod":"voting-0"}"#, 8080))
            .unwrap()
            .pod,
        ObjectRef::new("emojivoto", "voting-0")
    );
    assert!(port_target(&spec("voting-0", 8080)).is_err());
    assert!(port_target(&spec("a:b", 70000)).is_err());
}

#[test]
fn default_policies_parse_by_name() {
    for name in DefaultPolicy::NAMES {
        assert_eq!(name.parse::<DefaultPolicy>().unwrap().as_str(), name);
    }
    assert!("allow".parse::<DefaultPolicy>().is_err());
}
