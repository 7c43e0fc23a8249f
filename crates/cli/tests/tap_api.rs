//! The tap stream's JSON (`ferry_api::tap::TapEvent`, what the control plane sends and
//! `ferry tap`/`ferry top` and the dashboard read) against `docs/openapi.yaml`: every field
//! written is documented with its type, and nothing undocumented slips in.

use std::collections::BTreeMap;

use ferry_api::tap::{TapDirection, TapEvent, TapEventKind, TapPeer};
use serde_json::{json, Value};

/// `#/components/schemas/{name}` with every object that lists its properties closed.
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
        minimal.headers.clear();
        for event in [full(kind), minimal] {
            let value = serde_json::to_value(&event).unwrap();
            let errors: Vec<String> = v
                .iter_errors(&value)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{errors:#?}\n{value:#}");
        }
    }
    // The schema is closed: a field it does not document is refused.
    let mut extra = serde_json::to_value(full(TapEventKind::Req)).unwrap();
    extra["undocumented"] = json!(1);
    assert!(!v.is_valid(&extra));
    let mut bad = serde_json::to_value(full(TapEventKind::Req)).unwrap();
    bad["type"] = json!("request");
    assert!(!v.is_valid(&bad));
}
