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
