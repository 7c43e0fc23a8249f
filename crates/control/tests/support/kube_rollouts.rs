//! Rollouts on Kubernetes against the fake API server: `Rollout` resources run by the
//! controller, their state written to their status, an invalid one refused in its status,
//! and a new controller resuming from the status it finds.

use std::time::Duration;

use ferry_api::rollout::{Action, Phase};
use ferry_control::discovery::kubernetes::{client, KubeSource, DEFAULT_COALESCE};
use ferry_control::metrics::store::Store;
use ferry_control::rollouts::lease::LeaseConfig;
use ferry_control::rollouts::{kubernetes, Clock, CommandError};
use ferry_control::routes::RouteSet;
use ferry_testkit::kube_api::FakeKubeApi;
use ferry_testkit::wait_until;
use serde_json::{json, Value};

use super::kube_discovery::{NS, SHOWS};

fn rollout(name: &str, weight: i64) -> Value {
    json!({
        "apiVersion": "ferry.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": {
            "service": {"name": "voting-svc", "port": 8080},
            "stable": {"name": "voting-svc"},
            "canary": {"name": "voting-v2"},
            "steps": [{"weight": weight, "bake": "1h"}],
        },
    })
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
    let lease = |identity: &str| LeaseConfig {
        namespace: "ferry".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
    };
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
}
