//! The public API's JSON against its description in `docs/openapi.yaml`: the metrics API
//! (`ferry_api::stat`, what `ferry stat`/`edges` read) and the tap stream
//! (`ferry_api::tap::TapEvent`, what `ferry tap`/`top` and the dashboard read). Every field
//! the types write is documented with the right type, and nothing undocumented slips in.

use std::collections::BTreeMap;

use ferry_api::stat::{
    Edge, EdgesAnswer, HistoryPoint, Latency, Meshed, PrometheusTargetGroup, StatAnswer,
    StatHistory, StatRow,
};
use ferry_api::tap::{TapDirection, TapEvent, TapEventKind, TapPeer};
use serde_json::{json, Value};

/// A validator for `#/components/schemas/{name}` of the repository's OpenAPI file, with
/// every object that lists its properties closed (`additionalProperties: false`).
fn validator(name: &str) -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
    let doc: Value = serde_yaml_ng::from_str(&text).expect("openapi.yaml is YAML");
    let mut schemas = doc["components"]["schemas"].clone();
    close(&mut schemas);
    let root = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": { "schemas": schemas },
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("compiling {name}: {e}"))
}

fn close(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close);
        }
        Value::Array(items) => items.iter_mut().for_each(close),
        _ => {}
    }
}

fn assert_valid(name: &str, value: &Value) {
    let v = validator(name);
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

fn row(traffic: bool) -> StatRow {
    let some = |v: f64| traffic.then_some(v);
    StatRow {
        namespace: "emojivoto".into(),
        name: "emoji".into(),
        kind: "deployment".into(),
        meshed: Meshed { ready: 1, total: 2 },
        success: some(0.5),
        rps: some(2.0),
        requests: some(120.0),
        latency_ms: Latency {
            p50: some(3.0),
            p95: some(9.5),
            p99: some(10.0),
        },
        tcp_connections: some(2.0),
        read_bytes_per_sec: some(10.0),
        write_bytes_per_sec: some(20.0),
    }
}

#[test]
fn stat_answers_match_the_documented_schema() {
    let answer = StatAnswer {
        rows: vec![row(true), row(false)],
        window: "1m".into(),
        window_seconds: 60,
        backend: "embedded".into(),
        timestamp_ms: 1_795_000_000_000,
    };
    let value = serde_json::to_value(&answer).unwrap();
    assert!(
        value["rows"][1]["success"].is_null(),
        "no traffic is null: {value}"
    );
    assert_valid("StatAnswer", &value);

    let history = StatHistory {
        kind: "deployment".into(),
        namespace: "emojivoto".into(),
        name: "emoji".into(),
        window_seconds: 60,
        step_seconds: 10,
        backend: "prometheus".into(),
        points: vec![HistoryPoint {
            timestamp_ms: 1_795_000_000_000,
            success: None,
            rps: Some(1.0),
            latency_ms: Latency::default(),
        }],
    };
    assert_valid("StatHistory", &serde_json::to_value(&history).unwrap());

    let edges = EdgesAnswer {
        edges: vec![Edge {
            kind: "deployment".into(),
            src: "web".into(),
            src_namespace: "emojivoto".into(),
            dst: "emoji".into(),
            dst_namespace: "emojivoto".into(),
            secured: false,
            client_id: None,
            server_id: Some("emoji.emojivoto.serviceaccount.identity.ferry.cluster.local".into()),
            no_tls_reason: Some("no_identity".into()),
            rps: 1.5,
        }],
        window_seconds: 60,
        backend: "embedded".into(),
    };
    assert_valid("EdgesAnswer", &serde_json::to_value(&edges).unwrap());

    let routes = ferry_api::stat::RoutesAnswer {
        rows: vec![ferry_api::stat::RouteRow {
            service: "emojivoto/voting-svc:8080".into(),
            route: "HTTPRoute/emojivoto/voting".into(),
            success: Some(1.0),
            rps: Some(3.0),
            latency_ms: Latency::default(),
            retries_per_sec: Some(1.0),
            actual_success: Some(0.75),
            actual_rps: Some(4.0),
        }],
        window: "1m".into(),
        backend: "embedded".into(),
    };
    assert_valid("RoutesAnswer", &serde_json::to_value(&routes).unwrap());

    let group = PrometheusTargetGroup {
        targets: vec!["127.0.0.1:4191".into()],
        labels: BTreeMap::from([("namespace".into(), "emojivoto".into())]),
    };
    assert_valid(
        "PrometheusTargetGroup",
        &serde_json::to_value(&group).unwrap(),
    );
}

#[test]
fn the_schema_refuses_what_the_types_never_write() {
    let v = validator("StatRow");
    let mut value = serde_json::to_value(row(true)).unwrap();
    value["undocumented"] = json!(1);
    assert!(!v.is_valid(&value), "unknown fields are refused");
    let mut value = serde_json::to_value(row(true)).unwrap();
    value["rps"] = json!("2.0rps");
    assert!(!v.is_valid(&value), "figures are numbers");
    let mut value = serde_json::to_value(row(true)).unwrap();
    value.as_object_mut().unwrap().remove("meshed");
    assert!(!v.is_valid(&value), "meshed is required");
}

fn peer(addr: &str, labels: &[(&str, &str)]) -> TapPeer {
    TapPeer {
        addr: addr.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// An event with every optional field set, so each one is checked.
fn full(kind: TapEventKind) -> TapEvent {
    TapEvent {
        kind,
        id: "0:3".into(),
        tapped_pod: "voting-0".into(),
        tapped_namespace: "emojivoto".into(),
        proxy_direction: TapDirection::Outbound,
        source: peer("127.0.0.1:50112", &[("deployment", "voting")]),
        destination: peer("127.0.0.1:17201", &[("pod", "emoji-0")]),
        tls: "true".into(),
        client_id: Some("voting.emojivoto.serviceaccount.identity.ferry.cluster.local".into()),
        server_id: Some("emoji.emojivoto.serviceaccount.identity.ferry.cluster.local".into()),
        method: Some("GET".into()),
        scheme: Some("http".into()),
        authority: Some("emoji-svc.emojivoto:8080".into()),
        path: Some("/api/list".into()),
        status: Some(500),
        latency_micros: Some(1234),
        duration_micros: Some(56),
        response_bytes: Some(8),
        grpc_status: Some(13),
        reset_error: Some(8),
        proxy_error: Some("unauthorized-jwt-expired".into()),
        headers: vec![("content-type".into(), "application/grpc".into())],
    }
}

#[test]
fn tap_events_match_the_openapi_schema() {
    let v = validator("TapEvent");
    for kind in [TapEventKind::Req, TapEventKind::Rsp, TapEventKind::End] {
        let mut minimal = full(kind);
        minimal.client_id = None;
        minimal.server_id = None;
        minimal.proxy_error = None;
        minimal.headers.clear();
        for event in [full(kind), minimal] {
            assert_valid("TapEvent", &serde_json::to_value(&event).unwrap());
        }
    }
    // The schema is closed: a field it does not document is refused.
    let mut extra = serde_json::to_value(full(TapEventKind::Req)).unwrap();
    extra["undocumented"] = json!(1);
    assert!(!v.is_valid(&extra));
    let mut bad = serde_json::to_value(full(TapEventKind::Req)).unwrap();
    bad["type"] = json!("request");
    assert!(!v.is_valid(&bad));
    // A proxy error is one token, so it prints as one word in a tap line.
    let mut spaced = serde_json::to_value(full(TapEventKind::Rsp)).unwrap();
    spaced["proxyError"] = json!("denied by policy");
    assert!(!v.is_valid(&spaced));
}

fn trace_summary(root_workload: Option<&str>) -> ferry_api::trace::TraceSummary {
    ferry_api::trace::TraceSummary {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        root_name: "POST /api/vote".into(),
        root_service: "web".into(),
        root_workload: root_workload.map(Into::into),
        start_unix_micros: 1_765_000_000_000_000,
        duration_micros: 60_000,
        span_count: 2,
        error_count: 1,
        status: "error".into(),
        workloads: vec!["emojivoto/voting".into(), "emojivoto/web".into()],
    }
}

#[test]
fn traces_match_the_openapi_schema() {
    use ferry_api::trace::{Span, Trace, TraceList, TraceStats};
    let list = TraceList {
        traces: vec![trace_summary(Some("emojivoto/web")), trace_summary(None)],
        kept: 2,
        stats: TraceStats {
            receiving: true,
            spans_received: 10,
            spans_forward_dropped: 3,
            ..TraceStats::default()
        },
    };
    assert_valid("TraceList", &serde_json::to_value(&list).unwrap());
    let span = |parent: Option<&str>, message: Option<&str>| Span {
        span_id: "a000000000000001".into(),
        parent_span_id: parent.map(Into::into),
        depth: usize::from(parent.is_some()),
        name: "POST /api/vote".into(),
        kind: "server".into(),
        service: "web".into(),
        workload: parent.map(|_| "emojivoto/web".into()),
        start_unix_micros: 1_765_000_000_000_000,
        offset_micros: 0,
        duration_micros: 60_000,
        status: if message.is_some() { "error" } else { "unset" }.into(),
        status_message: message.map(Into::into),
        attributes: BTreeMap::from([("http.request.method".into(), "POST".into())]),
    };
    let trace = Trace {
        summary: trace_summary(Some("emojivoto/web")),
        spans: vec![
            span(None, None),
            span(Some("a000000000000001"), Some("503")),
        ],
    };
    assert_valid("Trace", &serde_json::to_value(&trace).unwrap());
    // And the schema is closed: a field the types never write is refused.
    let mut extra = serde_json::to_value(&trace).unwrap();
    extra["spans"][0]["durationMs"] = json!(60);
    assert!(!validator("Trace").is_valid(&extra));
}

#[test]
fn authz_answers_match_the_openapi_schema() {
    use ferry_api::authz::{AuthzAnswer, AuthzRow, PolicyRef};
    let r = |kind: &str, name: &str| PolicyRef {
        kind: kind.into(),
        name: name.into(),
    };
    let answer = AuthzAnswer {
        resource: "deployment/voting".into(),
        namespace: "emojivoto".into(),
        window: "1m".into(),
        rows: vec![
            AuthzRow {
                server: r("Server", "voting-grpc"),
                route: r("HTTPRoute", "vote"),
                authorization: r("AuthorizationPolicy", "web-to-voting"),
                allowed: 180,
                denied: 0,
            },
            AuthzRow {
                server: r("Server", "voting-tcp"),
                route: PolicyRef::default(),
                authorization: PolicyRef::default(),
                allowed: 0,
                denied: 3,
            },
        ],
    };
    assert_valid("AuthzAnswer", &serde_json::to_value(&answer).unwrap());
    let mut extra = serde_json::to_value(&answer).unwrap();
    extra["rows"][0]["rps"] = json!(1.0);
    assert!(
        !validator("AuthzAnswer").is_valid(&extra),
        "an undocumented field"
    );
}

#[test]
fn rollouts_match_the_openapi_schema() {
    use ferry_api::rollout::*;
    let spec: RolloutSpec = serde_json::from_value(json!({
        "service": {"name": "web", "port": 8080},
        "stable": {"name": "web-v1"},
        "canary": {"kind": "Deployment", "name": "web-v2", "port": 9090},
        "steps": [
            {"weight": 10, "bake": "30s"},
            {"match": {"headers": [{"name": "x-user-email", "type": "Suffix", "value": "@example.com"}],
                       "cookies": [{"name": "beta", "value": "1"}]}},
            {"pause": {}},
        ],
        "analysis": {"interval": "10s", "minRequests": 20, "failureLimit": 2,
                     "successRate": {"min": 99, "maxDrop": 1}, "latencyP99": {"maxMs": 500, "maxRatio": 1.5}},
        "webhook": {"url": "http://hooks.example:8080/rollouts"},
    }))
    .unwrap();
    let figures = |success: Option<f64>| Figures {
        requests: 120.0,
        success,
        p99_ms: success.map(|_| 12.0),
    };
    let view = RolloutView {
        namespace: "emojivoto".into(),
        name: "web".into(),
        spec: spec.clone(),
        status: RolloutStatus {
            revision: "a63cf550694b".into(),
            phase: Phase::Paused,
            step: 1,
            started_ms: 1,
            step_started_ms: 2,
            paused_ms: Some(3),
            analyzed_ms: Some(4),
            step_passed: true,
            failures: 1,
            reason: "paused by a user at step 1".into(),
            transition_ms: 3,
            analyses: vec![AnalysisRecord {
                at_ms: 4,
                step: 0,
                window_seconds: 10.0,
                canary: figures(Some(99.5)),
                stable: figures(None),
                verdict: Verdict::Passed,
                reason: String::new(),
            }],
            history: vec![RunRecord {
                revision: "0123456789ab".into(),
                canary: "web-v1".into(),
                outcome: "RolledBack".into(),
                reason: "analysis failed".into(),
                step: 0,
                started_ms: 0,
                ended_ms: 1,
            }],
        },
        traffic: Traffic {
            canary_weight: 100,
            matches: spec.steps[1].matches.clone(),
        },
    };
    assert_valid(
        "RolloutList",
        &serde_json::to_value(RolloutList {
            rollouts: vec![view.clone()],
        })
        .unwrap(),
    );
    let mut extra = serde_json::to_value(&view).unwrap();
    extra["status"]["bakeLeftMs"] = json!(1);
    assert!(!validator("RolloutView").is_valid(&extra));
}
