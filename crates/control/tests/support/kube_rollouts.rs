//! Rollouts on Kubernetes against the fake API server: `Rollout` resources run by the
//! controller, their state written to their status, an invalid one refused in its status,
//! a new controller resuming from the status it finds, and their transitions published as
//! Events by the Lease holder alone; Deployment backends fronted by Services it applies.

use std::time::Duration;

use ferry_api::rollout::{Action, Phase};
use ferry_control::discovery::kubernetes::{client, KubeSource, DEFAULT_COALESCE};
use ferry_control::metrics::store::Store;
use ferry_control::metrics::{Labels, Matrix, MetricsBackend, MetricsError, Query, Vector};
use ferry_control::rollouts::lease::LeaseConfig;
use ferry_control::rollouts::{kubernetes, Clock, CommandError};
use ferry_control::routes::RouteSet;
use ferry_testkit::kube_api::FakeKubeApi;
use ferry_testkit::wait_until;
use serde_json::{json, Value};

use super::kube_discovery::{NS, SHOWS};

fn rollout(name: &str, weight: i64) -> Value {
    rollout_with(
        name,
        json!({
            "service": {"name": "voting-svc", "port": 8080},
            "stable": {"name": "voting-svc"},
            "canary": {"name": "voting-v2"},
            "steps": [{"weight": weight, "bake": "1h"}],
        }),
    )
}

fn rollout_with(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ferry.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    })
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "ferry".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
    }
}

/// The Events regarding the rollout `name`, oldest first (as created: one replica
/// publishes in order).
fn events_of(api: &FakeKubeApi, name: &str) -> Vec<Value> {
    let mut events: Vec<Value> = api
        .list("Event", NS)
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name)
        .collect();
    events.sort_by_key(|e| {
        let rv = e["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        rv.parse::<u64>().unwrap_or_default()
    });
    events
}

/// Each Event's reason and reporting instance.
fn told(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let text = |field: &str| e[field].as_str().unwrap_or_default().to_string();
            (text("reason"), text("reportingInstance"))
        })
        .collect()
}

/// Waits until the Events regarding `name` are `want` (reason, instance), in order.
async fn events_until(api: &FakeKubeApi, name: &str, want: &[(&str, &str)]) -> Vec<Value> {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(r, i)| (r.to_string(), i.to_string()))
        .collect();
    let found = wait_until(SHOWS, "the rollout's events", || async {
        let events = events_of(api, name);
        (told(&events) == want).then_some(events)
    })
    .await;
    found.unwrap_or_else(|e| panic!("{e}: {:?}", told(&events_of(api, name))))
}

/// Metrics in which every canary (`*-v2`) answers half its requests with failures.
#[derive(Clone)]
struct FailingCanary;

impl MetricsBackend for FailingCanary {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn scrape_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn query(
        &self,
        query: &Query,
        _window: Duration,
        _at: std::time::SystemTime,
    ) -> Result<Vector, MetricsError> {
        let Query::Rate { matchers, .. } = query else {
            return Ok(Vector::new());
        };
        let class = |c: &str| Labels::from([("classification".to_string(), c.to_string())]);
        let canary = matchers.iter().any(|m| m.value.ends_with("-v2"));
        Ok(match canary {
            true => vec![(class("success"), 5.0), (class("failure"), 5.0)],
            false => vec![(class("success"), 10.0)],
        })
    }

    async fn query_range(
        &self,
        _query: &Query,
        _window: Duration,
        _start: std::time::SystemTime,
        _end: std::time::SystemTime,
        _step: Duration,
    ) -> Result<Matrix, MetricsError> {
        Ok(Matrix::new())
    }
}

/// The canary's weight in the generated route of `voting`.
fn canary_weight(set: &RouteSet) -> Option<i64> {
    let route = set
        .http
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("rollout.voting"))?;
    let backends = &route.spec.rules[0].backend_refs;
    let total: i64 = backends.iter().map(|b| b.weight).sum();
    Some(
        backends
            .iter()
            .filter(|b| b.name == "voting-v2")
            .map(|b| b.weight * 100 / total)
            .sum(),
    )
}

async fn status_of(api: &FakeKubeApi, name: &str, want: impl Fn(&Value) -> bool) -> Value {
    let found = wait_until(SHOWS, "the rollout's status", || async {
        let status = api.get("Rollout", NS, name)?["status"].clone();
        want(&status).then_some(status)
    })
    .await;
    found.unwrap_or_else(|e| {
        panic!(
            "{e}: {:#}",
            api.get("Rollout", NS, name).unwrap_or_default()["status"]
        )
    })
}

#[tokio::test]
async fn rollouts_run_from_resources_keep_their_state_in_status_and_resume_from_it() {
    let api = FakeKubeApi::emojivoto().await;
    api.apply(rollout("voting", 10));
    api.apply(rollout("broken", 120));
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let client = client(&source).await.unwrap();
    let metrics = Store::new(Duration::from_secs(1));
    let first = kubernetes::spawn(
        client.clone(),
        metrics.clone(),
        Clock::new(),
        DEFAULT_COALESCE,
        None,
    )
    .await;
    // Ready before anything is served: the route splits 90/10 at once.
    assert_eq!(canary_weight(&first.routes.borrow()), Some(10));
    let status = status_of(&api, "voting", |s| s["phase"] == "Progressing").await;
    assert_eq!(status["step"], 0);
    assert_eq!(status["conditions"][0]["type"], "Progressing");
    assert_eq!(status["conditions"][0]["status"], "True");
    // An invalid resource is not run, and its status says why.
    let refused = status_of(&api, "broken", |s| {
        s["conditions"][0]["reason"] == "Invalid"
    })
    .await;
    let message = refused["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.steps[0].weight: Invalid value: 120"),
        "{message}"
    );
    assert_eq!(first.rollouts.list().len(), 1);

    let aborted = first
        .rollouts
        .act(NS, "voting", Action::Abort)
        .await
        .unwrap();
    assert_eq!(aborted.status.phase, Phase::Aborted);
    assert_eq!(canary_weight(&first.routes.borrow()), Some(0));
    let status = status_of(&api, "voting", |s| s["phase"] == "Aborted").await;
    assert_eq!(status["conditions"][0]["status"], "False");
    assert!(status["pausedMs"].is_null());
    drop(first);

    // Another control plane finds the state in the status: aborted, all to stable.
    let second = kubernetes::spawn(client, metrics, Clock::new(), DEFAULT_COALESCE, None).await;
    let resumed = second.rollouts.list()[0].clone();
    assert_eq!(
        (resumed.status.phase, resumed.status.step),
        (Phase::Aborted, 0)
    );
    assert_eq!(canary_weight(&second.routes.borrow()), Some(0));
    assert_eq!(resumed.status.history.last().unwrap().outcome, "Aborted");
}

/// Two replicas: one holds the Lease and runs the rollout, the other serves what the
/// status says and refuses actions; when the holder goes away, the other takes over.
#[tokio::test]
async fn one_replica_holding_the_lease_runs_rollouts_and_the_other_follows() {
    let api = FakeKubeApi::emojivoto().await;
    api.apply(rollout("voting", 10));
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let client = client(&source).await.unwrap();
    let metrics = Store::new(Duration::from_secs(1));
    let a = kubernetes::spawn(
        client.clone(),
        metrics.clone(),
        Clock::new(),
        DEFAULT_COALESCE,
        Some(lease("a")),
    )
    .await;
    wait_until(SHOWS, "a to hold the Lease", || async {
        let l = api.get("Lease", "ferry", "ferry-rollouts")?;
        (l["spec"]["holderIdentity"] == "a").then_some(())
    })
    .await
    .unwrap();
    let b = kubernetes::spawn(
        client.clone(),
        metrics.clone(),
        Clock::new(),
        DEFAULT_COALESCE,
        Some(lease("b")),
    )
    .await;
    // Both serve the same split; only the holder acts.
    assert_eq!(canary_weight(&b.routes.borrow()), Some(10));
    let refused = b
        .rollouts
        .act(NS, "voting", Action::Pause)
        .await
        .unwrap_err();
    assert_eq!(refused, CommandError::NotLeader);
    let aborted = a.rollouts.act(NS, "voting", Action::Abort).await.unwrap();
    assert_eq!(aborted.status.phase, Phase::Aborted);
    // The follower serves what the holder wrote.
    let mut routes = b.routes.clone();
    tokio::time::timeout(SHOWS, routes.wait_for(|set| canary_weight(set) == Some(0)))
        .await
        .expect("the follower follows the status")
        .unwrap();
    // The holder goes away: after the Lease expires, the other takes over and acts.
    drop(a);
    let started = wait_until(Duration::from_secs(15), "b to take over", || {
        let b = &b;
        async move { b.rollouts.act(NS, "voting", Action::Start).await.ok() }
    })
    .await
    .unwrap();
    assert_eq!(
        (started.status.phase, started.status.step),
        (Phase::Progressing, 0)
    );
    let lease = api.get("Lease", "ferry", "ferry-rollouts").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    // Only the holder told the story: b, following, published nothing (its Events go out
    // in order, so anything it had queued would come before its own start).
    events_until(
        &api,
        "voting",
        &[
            ("RolloutStarted", "a"),
            ("Aborted", "a"),
            ("RolloutStarted", "b"),
        ],
    )
    .await;
}

/// The Lease holder publishes each transition as an events.k8s.io Event regarding the
/// Rollout (its uid, for `kubectl describe`): Normal ones for a run and a user's actions,
/// Warnings with the figures for a failed analysis and the rollback.
#[tokio::test]
async fn transitions_are_published_as_events_regarding_the_rollout() {
    let api = FakeKubeApi::emojivoto().await;
    api.apply(rollout_with(
        "voting",
        json!({
            "service": {"name": "voting-svc", "port": 8080},
            "stable": {"name": "voting-svc"},
            "canary": {"name": "voting-v2"},
            "steps": [{"weight": 10, "bake": "1h"}, {"weight": 50, "bake": "1h"}],
        }),
    ));
    api.apply(rollout_with(
        "emoji",
        json!({
            "service": {"name": "emoji-svc", "port": 8080},
            "stable": {"name": "emoji-svc"},
            "canary": {"name": "emoji-v2"},
            "steps": [{"weight": 10, "bake": "1h"}],
            "analysis": {"interval": "1s", "minRequests": 1, "failureLimit": 1, "successRate": {"min": 95}},
        }),
    ));
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let client = client(&source).await.unwrap();
    let running = kubernetes::spawn(
        client,
        FailingCanary,
        Clock::new(),
        DEFAULT_COALESCE,
        Some(lease("a")),
    )
    .await;
    events_until(&api, "voting", &[("RolloutStarted", "a")]).await;
    for action in [
        Action::Pause,
        Action::Resume,
        Action::Promote,
        Action::Abort,
    ] {
        running.rollouts.act(NS, "voting", action).await.unwrap();
    }
    let told = events_until(
        &api,
        "voting",
        &[
            ("RolloutStarted", "a"),
            ("Paused", "a"),
            ("Resumed", "a"),
            ("StepAdvanced", "a"),
            ("Aborted", "a"),
        ],
    )
    .await;
    let views = running.rollouts.list();
    let voting = views.iter().find(|v| v.name == "voting").unwrap();
    let revision = &voting.status.revision;
    let notes: Vec<&str> = told.iter().map(|e| e["note"].as_str().unwrap()).collect();
    assert_eq!(
        notes,
        [
            format!("revision {revision}: started; step 0").as_str(),
            "paused by a user at step 0",
            "resumed by a user at step 0",
            "step 0 promoted by a user; step 1",
            "aborted by a user at step 1",
        ]
    );
    for event in &told {
        assert_eq!(event["type"], "Normal", "{event}");
        assert_eq!(event["reportingController"], "ferry-control");
        assert_eq!(
            event["regarding"],
            json!({"apiVersion": "ferry.io/v1alpha1", "kind": "Rollout", "namespace": NS,
                "name": "voting", "uid": "uid-voting"})
        );
        assert_eq!(event["metadata"]["namespace"], NS);
        assert!(event["eventTime"].is_string(), "{event}");
    }
    let actions: Vec<&str> = told.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["Start", "Pause", "Resume", "Advance", "Abort"]);

    // The failing canary: its first analysis fails, which is the limit.
    let failed = events_until(
        &api,
        "emoji",
        &[
            ("RolloutStarted", "a"),
            ("AnalysisFailed", "a"),
            ("RolledBack", "a"),
        ],
    )
    .await;
    assert_eq!(failed[0]["type"], "Normal");
    for event in &failed[1..] {
        assert_eq!(event["type"], "Warning", "{event}");
        assert_eq!(event["regarding"]["uid"], "uid-emoji");
    }
    let note = failed[1]["note"].as_str().unwrap();
    assert!(
        note.starts_with("analysis failed at step 0 (1 of 1 failures allowed): canary success rate 50.00% is below 95%; canary 10 requests, 50.00% success"),
        "{note}"
    );
    assert!(
        note.contains("stable 10 requests, 100.00% success"),
        "{note}"
    );
    let status = status_of(&api, "emoji", |s| s["phase"] == "RolledBack").await;
    assert_eq!(failed[2]["note"], status["reason"]);
}

/// A Deployment of `voting` at `version`, selecting its pods with `selector`.
fn voting_deployment(version: &str, selector: Value) -> Value {
    let labels = json!({"app": "voting", "version": version});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": format!("voting-{version}"), "namespace": NS, "uid": format!("uid-voting-{version}")},
        "spec": {
            "selector": selector,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "voting-svc", "image": "voting", "ports": [{"name": "grpc", "containerPort": 8080}]}]},
            },
        },
    })
}

/// Waits until the Rollout `name`'s `status.backends` says something about `role`.
async fn backend_report(api: &FakeKubeApi, name: &str, role: &str) -> Value {
    let status = status_of(api, name, |s| {
        s["backends"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["role"] == role))
    })
    .await;
    let backends = status["backends"].as_array().unwrap();
    backends.iter().find(|b| b["role"] == role).unwrap().clone()
}

/// A Deployment backend is fronted by a Service the Lease holder applies (server-side,
/// owned by the Rollout, selecting the Deployment's pods on the rollout Service's target
/// port); a follower applies nothing; a missing Deployment, or one a Service cannot select,
/// is named in the Rollout's status.
#[tokio::test]
async fn deployment_backends_are_fronted_by_services_the_lease_holder_applies() {
    let api = FakeKubeApi::emojivoto().await;
    api.apply(voting_deployment(
        "v2",
        json!({"matchLabels": {"app": "voting", "version": "v2"}}),
    ));
    api.apply(voting_deployment(
        "v3",
        json!({"matchExpressions": [{"key": "version", "operator": "In", "values": ["v3"]}]}),
    ));
    let deployment = |name: &str| json!({"kind": "Deployment", "name": name});
    for (name, canary) in [
        ("voting", "voting-v2"),
        ("ghost", "voting-v9"),
        ("odd", "voting-v3"),
    ] {
        api.apply(rollout_with(
            name,
            json!({
                "service": {"name": "voting-svc", "port": 8080},
                "stable": {"name": "voting-svc"},
                "canary": deployment(canary),
                "steps": [{"weight": 10, "bake": "1h"}],
            }),
        ));
    }
    // Someone else holds the Lease.
    api.apply(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ferry-rollouts", "namespace": "ferry"},
        "spec": {"holderIdentity": "x", "leaseDurationSeconds": 3600,
                 "renewTime": "2099-01-01T00:00:00.000000Z", "leaseTransitions": 0},
    }));
    let source = KubeSource {
        kubeconfig: Some(api.kubeconfig().to_path_buf()),
        context: None,
    };
    let client = client(&source).await.unwrap();
    let b = kubernetes::spawn(
        client,
        Store::new(Duration::from_secs(1)),
        Clock::new(),
        DEFAULT_COALESCE,
        Some(lease("b")),
    )
    .await;
    // The route names the fronting Service from the start, follower or not.
    let route = b
        .routes
        .borrow()
        .http
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("rollout.voting"))
        .cloned()
        .unwrap();
    let names: Vec<&str> = route.spec.rules[0]
        .backend_refs
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(names, ["voting-svc", "voting-v2-ferry"]);
    // A follower: several Lease attempts go by, and it applies nothing.
    wait_until(SHOWS, "b to try the Lease", || async {
        (api.requests("GET /apis/coordination.k8s.io/v1/namespaces/ferry/leases/ferry-rollouts")
            >= 3)
            .then_some(())
    })
    .await
    .unwrap();
    assert!(api.get("Service", NS, "voting-v2-ferry").is_none());
    assert_eq!(
        api.requests("PATCH /api/v1/namespaces/emojivoto/services/voting-v2-ferry"),
        0
    );
    assert!(api.get("Rollout", NS, "ghost").unwrap()["status"]["backends"].is_null());

    // The holder goes away: b takes the Lease and applies the Service.
    api.delete("Lease", "ferry", "ferry-rollouts");
    let report = backend_report(&api, "voting", "canary").await;
    assert_eq!(
        report,
        json!({"role": "canary", "deployment": "voting-v2", "service": "voting-v2-ferry",
            "ok": true, "message": "service voting-v2-ferry fronts deployment voting-v2"})
    );
    let service = api.get("Service", NS, "voting-v2-ferry").unwrap();
    assert_eq!(
        service["spec"],
        json!({"selector": {"app": "voting", "version": "v2"},
            "ports": [{"name": "grpc", "port": 8080, "protocol": "TCP", "targetPort": 8080}]})
    );
    assert_eq!(
        service["metadata"]["ownerReferences"],
        json!([{"apiVersion": "ferry.io/v1alpha1", "kind": "Rollout", "name": "voting",
            "uid": "uid-voting", "controller": true}])
    );
    assert_eq!(
        service["metadata"]["managedFields"][0]["manager"],
        "ferry-control"
    );
    assert_eq!(
        service["metadata"]["labels"]["rollouts.ferry.io/rollout"],
        "voting"
    );
    // What cannot be fronted is named in the status; nothing is applied for it.
    let ghost = backend_report(&api, "ghost", "canary").await;
    assert_eq!(ghost["ok"], false);
    assert_eq!(ghost["message"], "deployment emojivoto/voting-v9 not found");
    let odd = backend_report(&api, "odd", "canary").await;
    assert_eq!(
        odd["message"],
        "deployment emojivoto/voting-v3 selects its pods with spec.selector.matchExpressions; a Service selects by labels only (use matchLabels)"
    );
    assert!(api.get("Service", NS, "voting-v9-ferry").is_none());
    assert!(api.get("Service", NS, "voting-v3-ferry").is_none());
    // The rollouts' own state is kept beside it.
    let status = status_of(&api, "voting", |s| s["phase"] == "Progressing").await;
    assert_eq!(status["backends"][0]["ok"], true);
}
