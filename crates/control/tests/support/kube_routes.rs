//! Routes on Kubernetes against the fake API server: the recorded HTTPRoute and GRPCRoute
//! watched into a route set, served as a policy, and their status written back.

use ferry_control::discovery::kubernetes::{client, KubeSource, DEFAULT_COALESCE};
use ferry_control::discovery::Discovery;
use ferry_control::model::ObjectRef;
use ferry_control::routes::kubernetes::{spawn, CONTROLLER_NAME};
use ferry_control::routes::outbound;
use ferry_control::routes::policy::{compile, Target};
use ferry_testkit::kube_api::FakeKubeApi;
use ferry_testkit::wait_until;
use linkerd2_proxy_api::outbound::{traffic_spec, TrafficSpec};
use serde_json::{json, Value};

use super::kube_discovery::{discovery, NS, SHOWS};

/// `(type, status, reason)` of each condition Ferry wrote on the route's first parent.
fn conditions(api: &FakeKubeApi, kind: &str, name: &str) -> Option<Vec<(String, String, String)>> {
    let object = api.get(kind, NS, name)?;
    let parents = object["status"]["parents"].as_array()?.clone();
    let ours = parents
        .iter()
        .find(|p| p["controllerName"] == CONTROLLER_NAME)?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Some(
        ours["conditions"]
            .as_array()?
            .iter()
            .map(|c| (text(&c["type"]), text(&c["status"]), text(&c["reason"])))
            .collect(),
    )
}

fn expect(pairs: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    pairs
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

async fn until_conditions(api: &FakeKubeApi, kind: &str, name: &str, want: &[(&str, &str, &str)]) {
    let want = expect(want);
    let found = wait_until(SHOWS, "route status", || async {
        (conditions(api, kind, name).as_ref() == Some(&want)).then_some(())
    })
    .await;
    if found.is_err() {
        panic!(
            "{kind} {name}: expected {want:?}, status is {:#}",
            api.get(kind, NS, name).unwrap_or_default()["status"]
        );
    }
}

#[tokio::test]
async fn recorded_routes_are_served_and_their_status_written_back() {
    let api = FakeKubeApi::emojivoto().await;
    api.apply_recorded_routes();
    let discovery = discovery(&api).await;
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let client = client(&source).await.unwrap();
    let routes = spawn(client, discovery.watch(), DEFAULT_COALESCE);
    let mut rx = routes.watch();
    tokio::time::timeout(
        SHOWS,
        rx.wait_for(|set| set.http.len() == 1 && set.grpc.len() == 1),
    )
    .await
    .expect("both recorded routes are read")
    .unwrap();

    // Served: the GRPCRoute wins the port; voting-v2 does not exist in this cluster.
    let target = Target {
        service: ObjectRef::new(NS, "voting-svc"),
        port: 8080,
        caller_namespace: None,
    };
    let state = discovery.watch().borrow().clone();
    // Proxies may ask by ClusterIP: the Service's address names the same target.
    let by_ip = outbound::target(
        &state,
        &TrafficSpec {
            source_workload: "emojivoto:web-0".into(),
            target: Some(traffic_spec::Target::Addr(
                "10.96.24.60:8080"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )),
        },
    )
    .expect("voting-svc's ClusterIP");
    assert_eq!(by_ip.service, target.service);
    assert_eq!(by_ip.caller_namespace.as_deref(), Some(NS));
    let policy = compile(&state, &rx.borrow(), &target).expect("voting-svc:8080 is known");
    assert_eq!(policy.protocol, "grpc");
    assert_eq!(policy.routes[0].name, "voting-grpc");
    let backend = &policy.routes[0].rules[0].backends[0];
    assert_eq!(backend.name, "voting-v2");
    assert!(backend
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("BackendNotFound"));

    // Status: accepted by its parent, references unresolved, as a merge patch of the
    // status subresource.
    let unresolved = [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "False", "BackendNotFound"),
    ];
    until_conditions(&api, "HTTPRoute", "voting-split", &unresolved).await;
    until_conditions(&api, "GRPCRoute", "voting-grpc", &unresolved).await;
    let object = api.get("HTTPRoute", NS, "voting-split").unwrap();
    let parent = &object["status"]["parents"][0];
    assert_eq!(parent["parentRef"]["name"], "voting-svc");
    assert_eq!(parent["parentRef"]["port"], 8080);
    assert_eq!(parent["conditions"][0]["observedGeneration"], 1);
    let accepted_at = parent["conditions"][0]["lastTransitionTime"].clone();
    assert!(accepted_at.is_string(), "{parent}");
    let patches = "PATCH /apis/gateway.networking.k8s.io/v1/namespaces/emojivoto/httproutes/voting-split/status";
    assert!(api.requests(patches) >= 1);

    // The backend appears: ResolvedRefs turns true, Accepted keeps its transition time.
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "voting-v2", "namespace": NS},
        "spec": {"selector": {"app": "voting-v2"}, "ports": [{"name": "grpc", "port": 8080, "targetPort": 8080}]},
    }));
    let resolved = [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ];
    until_conditions(&api, "HTTPRoute", "voting-split", &resolved).await;
    until_conditions(&api, "GRPCRoute", "voting-grpc", &resolved).await;
    let object = api.get("HTTPRoute", NS, "voting-split").unwrap();
    assert_eq!(
        object["status"]["parents"][0]["conditions"][0]["lastTransitionTime"],
        accepted_at
    );

    // A route Ferry cannot serve (a CORS filter) is not accepted and not served. Each pass
    // handles routes by name, so the pass that writes with-cors' status has handled
    // voting-split first: its status needed no new write.
    let settled = api.requests(patches);
    let mut cors = api.get("HTTPRoute", NS, "voting-split").unwrap();
    cors["kind"] = json!("HTTPRoute");
    cors["metadata"]["name"] = json!("with-cors");
    cors["metadata"]["generation"] = json!(1);
    cors["status"] = json!({});
    cors["spec"]["rules"][0]["filters"] =
        json!([{"type": "CORS", "cors": {"allowOrigins": ["*"]}}]);
    api.apply(cors);
    until_conditions(
        &api,
        "HTTPRoute",
        "with-cors",
        &[
            ("Accepted", "False", "UnsupportedValue"),
            ("ResolvedRefs", "False", "UnsupportedValue"),
        ],
    )
    .await;
    assert!(rx
        .borrow()
        .http
        .iter()
        .all(|r| r.metadata.name.as_deref() != Some("with-cors")));
    assert_eq!(
        api.requests(patches),
        settled,
        "status is written only when it changes"
    );

    // Linkerd's annotations on Services are read too (only those are kept), from
    // discovery's watch of Services: Services are listed once, not by routes again.
    assert_eq!(
        api.requests("GET /api/v1/services"),
        1,
        "one list of Services: discovery's"
    );
    let mut voting = api.get("Service", NS, "voting-svc").unwrap();
    voting["kind"] = json!("Service");
    voting["metadata"]["annotations"] = json!({
        "balancer.linkerd.io/failure-accrual": "consecutive",
        "retry.linkerd.io/limit": "3",
        "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Service\"}",
    });
    api.apply(voting);
    let svc = ObjectRef::new(NS, "voting-svc");
    let set = tokio::time::timeout(SHOWS, rx.wait_for(|set| set.services.contains_key(&svc)))
        .await
        .expect("the Service's annotations are read")
        .unwrap()
        .clone();
    assert_eq!(set.services[&svc].len(), 2, "{:?}", set.services[&svc]);

    // Deleted routes leave the set.
    assert!(api.delete("HTTPRoute", NS, "voting-split"));
    tokio::time::timeout(SHOWS, rx.wait_for(|set| set.http.is_empty()))
        .await
        .expect("the deletion is seen")
        .unwrap();
}

/// A policy object as a real API server returns it: what `kubectl apply` sent, plus the
/// server's metadata (uid, generation, creation time, the last-applied annotation).
fn stored(kind: &str, name: &str, spec: Value) -> Value {
    stored_as("policy.ferry.io/v1alpha1", kind, name, spec)
}

/// [`stored`], of another group or version (Linkerd's).
fn stored_as(api_version: &str, kind: &str, name: &str, spec: Value) -> Value {
    let sent = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    });
    let mut object = sent.clone();
    object["metadata"] = json!({
        "name": name,
        "namespace": NS,
        "uid": format!("5d0c6a1e-0000-4000-8000-{:012x}", name.len()),
        "generation": 1,
        "creationTimestamp": "2026-11-21T15:50:00Z",
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": format!("{sent}\n"),
        },
    });
    object
}

#[tokio::test]
async fn policy_resources_are_watched_and_resolved_for_pods() {
    use ferry_control::authz::jwks::Keys;
    use ferry_control::authz::resolve::{compile, PortTarget};
    use ferry_control::authz::InboundConfig;

    let api = FakeKubeApi::emojivoto().await;
    api.apply(stored(
        "Server",
        "voting-grpc",
        json!({"podSelector": {"matchLabels": {"app": "voting-svc"}}, "port": "grpc", "proxyProtocol": "gRPC"}),
    ));
    api.apply(stored(
        "AuthorizationPolicy",
        "web-to-voting",
        json!({
            "targetRef": {"group": "policy.ferry.io", "kind": "Server", "name": "voting-grpc"},
            "requiredAuthenticationRefs": [{"group": "policy.ferry.io", "kind": "MeshTLSAuthentication", "name": "web"}],
        }),
    ));
    api.apply(stored(
        "MeshTLSAuthentication",
        "web",
        json!({"identityRefs": [{"kind": "ServiceAccount", "name": "web"}]}),
    ));
    // Invalid: left out, and the others still read.
    api.apply(stored(
        "Server",
        "broken",
        json!({"podSelector": {}, "port": 0}),
    ));
    let discovery = discovery(&api).await;
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let client = client(&source).await.unwrap();
    let routes = spawn(client, discovery.watch(), DEFAULT_COALESCE);
    let mut rx = routes.watch();
    let set = tokio::time::timeout(
        SHOWS,
        rx.wait_for(|s| {
            s.authz.servers.len() == 1
                && s.authz.mesh_tls.len() == 1
                && s.authz.authorization_policies.len() == 1
        }),
    )
    .await
    .expect("the policy objects are read")
    .unwrap()
    .clone();
    let voting = PortTarget {
        pod: ObjectRef::new(NS, "voting-7c54cbc44c-j2l4p"),
        port: 8080,
    };
    let state = discovery.watch().borrow().clone();
    let cfg = InboundConfig::default();
    let p = compile(&state, &set, &cfg, &Keys::new(), &voting).expect("a known pod");
    assert_eq!(
        p.server.name, "voting-grpc",
        "selected by label and the pod's named port"
    );
    assert_eq!(p.authorizations[0].meta.name, "web-to-voting");
    let translated = ferry_control::authz::inbound::translate(&p);
    assert!(
        format!("{translated:?}")
            .contains("web.emojivoto.serviceaccount.identity.ferry.cluster.local"),
        "{translated:?}"
    );

    // The namespace's annotation (Linkerd's) sets the default of ports no Server selects.
    let mut ns = api.get("Namespace", "", NS).expect("the namespace");
    ns["kind"] = json!("Namespace");
    ns["metadata"]["annotations"] = json!({"config.linkerd.io/default-inbound-policy": "deny"});
    api.apply(ns);
    let mut states = discovery.watch();
    tokio::time::timeout(
        SHOWS,
        states.wait_for(|s| s.namespace_defaults.contains_key(NS)),
    )
    .await
    .expect("the annotation is read")
    .unwrap();
    let web = PortTarget {
        pod: ObjectRef::new(NS, "web-6fcf748b99-4pd44"),
        port: 8080,
    };
    let state = discovery.watch().borrow().clone();
    let p = compile(&state, &set, &cfg, &Keys::new(), &web).expect("a known pod");
    assert_eq!(
        (p.server.kind.as_str(), p.server.name.as_str()),
        ("default", "deny")
    );
    assert!(p.authorizations.is_empty());

    // A deleted policy leaves the set.
    assert!(api.delete("AuthorizationPolicy", NS, "web-to-voting"));
    tokio::time::timeout(
        SHOWS,
        rx.wait_for(|s| s.authz.authorization_policies.is_empty()),
    )
    .await
    .expect("the deletion is seen")
    .unwrap();
}

#[tokio::test]
async fn linkerd_policy_objects_are_watched_beside_ferrys_once_their_crds_exist() {
    use ferry_control::authz::jwks::Keys;
    use ferry_control::authz::resolve::{compile, PortTarget};
    use ferry_control::authz::InboundConfig;

    const LINKERD: &str = "policy.linkerd.io";
    let api = FakeKubeApi::emojivoto().await;
    api.apply(stored(
        "Server",
        "voting-grpc",
        json!({"podSelector": {"matchLabels": {"app": "voting-svc"}}, "port": "grpc", "proxyProtocol": "gRPC"}),
    ));
    api.apply(stored(
        "AuthorizationPolicy",
        "web-to-voting",
        json!({
            "targetRef": {"group": "policy.ferry.io", "kind": "Server", "name": "voting-grpc"},
            "requiredAuthenticationRefs": [{"group": "policy.ferry.io", "kind": "MeshTLSAuthentication", "name": "clients"}],
        }),
    ));
    api.apply(stored(
        "MeshTLSAuthentication",
        "clients",
        json!({"identityRefs": [{"kind": "ServiceAccount", "name": "web"}]}),
    ));
    let discovery = discovery(&api).await;
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let client = client(&source).await.unwrap();
    let routes = spawn(client, discovery.watch(), DEFAULT_COALESCE);
    let mut rx = routes.watch();

    // Linkerd's CRDs are not installed: Ferry's objects are read all the same.
    tokio::time::timeout(
        SHOWS,
        rx.wait_for(|s| {
            s.authz.servers.len() == 1
                && s.authz.mesh_tls.len() == 1
                && s.authz.authorization_policies.len() == 1
        }),
    )
    .await
    .expect("Ferry's policy objects are read without Linkerd's CRDs")
    .unwrap();
    let linkerd_servers = "GET /apis/policy.linkerd.io/v1beta3/servers";
    assert!(
        api.requests(linkerd_servers) >= 1,
        "Linkerd's Servers are asked for"
    );

    // Linkerd's CRDs appear, with a Server and an AuthorizationPolicy for web, and a
    // MeshTLSAuthentication named as Ferry's: both are kept, each reference resolving in
    // the group it names.
    api.install_crds(LINKERD);
    api.apply(stored_as(
        "policy.linkerd.io/v1beta3",
        "Server",
        "web-http",
        json!({"podSelector": {"matchLabels": {"app": "web-svc"}}, "port": "http", "proxyProtocol": "HTTP/1", "accessPolicy": "deny"}),
    ));
    api.apply(stored_as(
        "policy.linkerd.io/v1alpha1",
        "AuthorizationPolicy",
        "bot-to-web",
        json!({
            "targetRef": {"group": LINKERD, "kind": "Server", "name": "web-http"},
            "requiredAuthenticationRefs": [{"group": LINKERD, "kind": "MeshTLSAuthentication", "name": "clients"}],
        }),
    ));
    api.apply(stored_as(
        "policy.linkerd.io/v1alpha1",
        "MeshTLSAuthentication",
        "clients",
        json!({"identityRefs": [{"kind": "ServiceAccount", "name": "vote-bot"}]}),
    ));
    let set = tokio::time::timeout(
        SHOWS,
        rx.wait_for(|s| {
            s.authz.servers.len() == 2
                && s.authz.mesh_tls.len() == 2
                && s.authz.authorization_policies.len() == 2
        }),
    )
    .await
    .expect("Linkerd's policy objects are read once their CRDs exist")
    .unwrap()
    .clone();
    let state = discovery.watch().borrow().clone();
    let cfg = InboundConfig::default();
    let web = PortTarget {
        pod: ObjectRef::new(NS, "web-6fcf748b99-4pd44"),
        port: 8080,
    };
    let p = compile(&state, &set, &cfg, &Keys::new(), &web).expect("a known pod");
    assert_eq!(
        (p.server.group.as_str(), p.server.name.as_str()),
        (LINKERD, "web-http"),
        "Linkerd's Server selects web's named port"
    );
    assert_eq!(p.authorizations.len(), 1, "{:?}", p.authorizations);
    assert_eq!(p.authorizations[0].meta.name, "bot-to-web");
    let served = format!("{:?}", ferry_control::authz::inbound::translate(&p));
    assert!(
        served.contains("vote-bot.emojivoto.serviceaccount.identity.ferry.cluster.local"),
        "Linkerd's MeshTLSAuthentication: {served}"
    );
    assert!(!served.contains("web.emojivoto.serviceaccount"), "{served}");
    let voting = PortTarget {
        pod: ObjectRef::new(NS, "voting-7c54cbc44c-j2l4p"),
        port: 8080,
    };
    let p = compile(&state, &set, &cfg, &Keys::new(), &voting).expect("a known pod");
    assert_eq!(p.server.name, "voting-grpc");
    let served = format!("{:?}", ferry_control::authz::inbound::translate(&p));
    assert!(
        served.contains("web.emojivoto.serviceaccount.identity.ferry.cluster.local")
            && !served.contains("vote-bot.emojivoto.serviceaccount"),
        "Ferry's MeshTLSAuthentication of the same name: {served}"
    );

    // Without Linkerd's object, the reference falls back to Ferry's of the same name (the
    // groups are read alike).
    assert!(api.delete("MeshTLSAuthentication.policy.linkerd.io", NS, "clients"));
    let set = tokio::time::timeout(SHOWS, rx.wait_for(|s| s.authz.mesh_tls.len() == 1))
        .await
        .expect("the deletion is seen")
        .unwrap()
        .clone();
    assert_eq!(set.authz.mesh_tls[0].group(), "policy.ferry.io");
    let p = compile(&state, &set, &cfg, &Keys::new(), &web).expect("a known pod");
    let served = format!("{:?}", ferry_control::authz::inbound::translate(&p));
    assert!(
        served.contains("web.emojivoto.serviceaccount.identity.ferry.cluster.local"),
        "{served}"
    );
}
