//! Route documents against what a real API server recorded (`shared/k8s/gateway-api-v1.6.1`).

use super::gateway::*;
use super::*;

fn recorded(name: &str) -> String {
    let path = ferry_testkit::kube_api::fixtures_dir()
        .join("gateway-api-v1.6.1/recorded")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn list_items(name: &str) -> Vec<serde_json::Value> {
    let list: serde_json::Value = serde_json::from_str(&recorded(name)).unwrap();
    list["items"].as_array().unwrap().clone()
}

#[test]
fn the_applied_documents_parse_with_the_defaults_the_api_server_filled_in() {
    let set = parse(&recorded("applied-routes.yaml")).expect("valid documents");
    assert_eq!(set.http.len(), 1);
    assert_eq!(set.grpc.len(), 1);
    // What the API server stored, defaults included, equals what we read from the file.
    let stored: Vec<HttpRoute> = list_items("httproutes.list.json")
        .into_iter()
        .map(|item| serde_json::from_value(item).expect("stored HTTPRoute parses"))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].spec, set.http[0].spec);
    validate::http_route(&stored[0]).expect("stored route is valid");
    let rules = &stored[0].spec.rules;
    assert_eq!(rules[0].backend_refs[0].weight, 1, "weight defaulted");
    assert_eq!(rules[1].backend_refs[0].weight, 90);
    assert_eq!(
        rules[1].filters[0].request_mirror.as_ref().unwrap().percent,
        Some(25)
    );
    assert_eq!(
        rules[1]
            .timeouts
            .as_ref()
            .unwrap()
            .backend_request
            .as_deref(),
        Some("2s")
    );
    let stored: Vec<GrpcRoute> = list_items("grpcroutes.list.json")
        .into_iter()
        .map(|item| serde_json::from_value(item).expect("stored GRPCRoute parses"))
        .collect();
    assert_eq!(stored[0].spec, set.grpc[0].spec);
    validate::grpc_route(&stored[0]).expect("stored route is valid");
    let method = stored[0].spec.rules[0].matches[0].method.as_ref().unwrap();
    assert_eq!(method.kind, StringMatchType::Exact, "type defaulted");
    assert_eq!(method.method.as_deref(), Some("VotePoop"));
}

#[test]
fn every_object_of_the_recorded_watch_parses_and_validates() {
    let text = recorded("httproutes.watch.ndjson");
    let mut seen = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        if event["type"] == "BOOKMARK" {
            continue;
        }
        let route: HttpRoute = serde_json::from_value(event["object"].clone()).unwrap();
        validate::http_route(&route).expect("recorded route is valid");
        seen += 1;
    }
    assert_eq!(seen, 3, "MODIFIED, MODIFIED, DELETED");
}

#[test]
fn the_document_the_api_server_refused_is_refused_for_the_same_causes() {
    let request: HttpRoute =
        serde_json::from_str(&recorded("httproute-invalid.request.json")).unwrap();
    let answer: serde_json::Value =
        serde_json::from_str(&recorded("httproute-invalid.422.json")).unwrap();
    let errors = validate::http_route(&request).expect_err("invalid").0;
    let mut ours: Vec<(String, String)> =
        errors.into_iter().map(|e| (e.field, e.message)).collect();
    let mut theirs: Vec<(String, String)> = answer["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

const SPLIT: &str = "\
# a comment before the first document
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: split
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: web
    port: 8080
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /api
    backendRefs:
    - name: web
      port: 8080
      weight: 90
    - name: web-canary
      port: 8080
      weight: 10
";

#[test]
fn local_documents_get_the_default_namespace() {
    let set = parse(SPLIT).expect("valid");
    assert_eq!(set.http[0].metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn a_bad_field_is_reported_with_its_line_and_field() {
    let text = SPLIT.replace("value: /api", "value: api");
    let errors = parse(&text).expect_err("invalid").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.rules[0].matches[0].path");
    assert_eq!(errors[0].line, 14, "the `path:` line");
    assert!(errors[0]
        .message
        .contains("value must be an absolute path and start with '/'"));

    let text = SPLIT.replace("weight: 10", "weight: 1000001");
    let errors = parse(&text).expect_err("invalid").0;
    assert_eq!(errors[0].field, "spec.rules[0].backendRefs[1].weight");
    assert_eq!(errors[0].line, 23);
}

#[test]
fn lines_count_from_the_start_of_the_stream_across_documents() {
    let text = format!(
        "{SPLIT}---\n{}",
        SPLIT
            .replace("name: split", "name: two")
            .replace("port: 8080\n  rules", "port: 0\n  rules")
    );
    let errors = parse(&text).expect_err("invalid").0;
    assert_eq!(errors[0].field, "spec.parentRefs[0].port");
    // The second document starts after SPLIT's 23 lines and the `---`.
    assert_eq!(errors[0].line, 24 + 11);
}

#[test]
fn unknown_fields_and_wrong_enum_values_name_their_line() {
    let text = SPLIT.replace("type: PathPrefix", "type: Prefix");
    let errors = parse(&text).expect_err("invalid").0;
    assert_eq!(errors[0].line, 15, "{errors:?}");
    assert!(
        errors[0].message.contains("unknown variant `Prefix`"),
        "{errors:?}"
    );

    let text = SPLIT.replace("      weight: 90", "      wieght: 90");
    let errors = parse(&text).expect_err("invalid").0;
    assert_eq!(errors[0].line, 20, "{errors:?}");
    assert!(
        errors[0].message.contains("unknown field `wieght`"),
        "{errors:?}"
    );
}

#[test]
fn other_kinds_are_refused_and_core_services_skipped() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    let errors = parse(text).expect_err("invalid").0;
    assert_eq!((errors[0].line, errors[0].field.as_str()), (2, "kind"));
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\n# only a comment\n";
    assert!(parse(text).expect("skipped").is_empty());
}

#[test]
fn what_ferry_does_not_implement_is_refused_in_local_mode() {
    let text = SPLIT.replace(
        "    backendRefs:\n    - name: web\n",
        "    filters:\n    - type: CORS\n      cors: {allowOrigins: [\"*\"]}\n    backendRefs:\n    - name: web\n",
    );
    let errors = parse(&text).expect_err("unsupported").0;
    assert_eq!(errors[0].field, "spec.rules[0].filters[0].type");
    let text = SPLIT.replace(
        "type: PathPrefix\n        value: /api",
        "type: RegularExpression\n        value: \"/api/(\"",
    );
    let errors = parse(&text).expect_err("bad regex").0;
    assert_eq!(errors[0].field, "spec.rules[0].matches[0].path.value");
}

#[test]
fn locate_follows_block_style_and_falls_back_to_the_enclosing_field_in_flow_style() {
    let doc = "a:\n  b:\n  - c: 1\n    d:\n      e: 2\n  - c: 3\n    d: {e: 4}\n";
    assert_eq!(locate(doc, "a.b[0].d.e"), 5);
    assert_eq!(locate(doc, "a.b[1].c"), 6);
    assert_eq!(locate(doc, "a.b[1].d.e"), 7);
    assert_eq!(locate(doc, "a.x"), 1);
    // A list at the same indentation as its key.
    let doc = "spec:\n  rules:\n  - name: a\n  - name: b\n    x: 1\n";
    assert_eq!(locate(doc, "spec.rules[1].x"), 5);
}

/// Bad input gets an error, never a panic: every one-byte edit and every truncation of a
/// valid stream parses or is refused with a line inside the text.
#[test]
fn mangled_documents_are_refused_without_panicking() {
    let text = format!("{SPLIT}---\n{}", recorded("applied-routes.yaml"));
    let lines = text.lines().count() + 1;
    let mut refused = 0;
    let mut check = |candidate: &str| {
        if let Err(errors) = parse(candidate) {
            refused += 1;
            for e in errors.0 {
                assert!(e.line >= 1 && e.line <= lines, "{e} in:\n{candidate}");
            }
        }
    };
    for cut in (0..text.len()).step_by(7) {
        check(&text[..cut]);
    }
    let bytes = text.as_bytes();
    for (i, replacement) in (0..bytes.len()).step_by(3).zip(
        [b'-', b':', b' ', b'{', b'"', b'\n', b'x', b'9']
            .iter()
            .cycle(),
    ) {
        let mut edited = bytes.to_vec();
        edited[i] = *replacement;
        if let Ok(candidate) = std::str::from_utf8(&edited) {
            check(candidate);
        }
    }
    assert!(
        refused > 100,
        "the edits broke something ({refused} refused)"
    );
}
