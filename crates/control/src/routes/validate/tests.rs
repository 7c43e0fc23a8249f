//! Documents accepted and refused as the v1.6.1 CRDs would: one row per schema constraint
//! or CEL rule, each a small edit of a valid route.

use super::*;

const HTTP: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: web, port: 8080}]
"#;

const GRPC: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules:
  - matches: [{method: {service: pkg.Svc, method: Call}}]
    backendRefs: [{name: web, port: 8080}]
"#;

/// Validates `HTTP` with its first rule replaced by `rule` (YAML flow mapping), or the
/// whole spec when `rule` starts with `spec:`.
fn http(rule: &str) -> Result<(), Invalid> {
    let text = if rule.starts_with("spec:") {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\n{rule}\n"
        )
    } else {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: web, port: 8080}}]\n  rules:\n  - {rule}\n"
        )
    };
    let route: HttpRoute = serde_yaml_ng::from_str(&text).expect("parses");
    http_route(&route)
}

fn grpc(rule: &str) -> Result<(), Invalid> {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: r, namespace: ns}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: web, port: 8080}}]\n  rules:\n  - {rule}\n"
    );
    let route: GrpcRoute = serde_yaml_ng::from_str(&text).expect("parses");
    grpc_route(&route)
}

fn refused(result: Result<(), Invalid>, field: &str, message: &str) {
    let errors = result.expect_err("refused").0;
    assert!(
        errors
            .iter()
            .any(|e| e.field == field && e.message.contains(message)),
        "expected {field}: …{message}…, got {errors:#?}"
    );
}

#[test]
fn the_base_documents_are_valid() {
    let route: HttpRoute = serde_yaml_ng::from_str(HTTP).unwrap();
    http_route(&route).unwrap();
    let route: GrpcRoute = serde_yaml_ng::from_str(GRPC).unwrap();
    grpc_route(&route).unwrap();
}

#[test]
fn accepted_documents() {
    let rows = [
        // Defaults: no matches means the `/` prefix, no rules means one such rule.
        "{backendRefs: [{name: web, port: 8080}]}",
        "spec: {parentRefs: [{group: \"\", kind: Service, name: web}]}",
        "{matches: [{path: {type: Exact, value: \"/a/b%20c\"}}], backendRefs: [{name: w, port: 1}]}",
        "{matches: [{path: {type: RegularExpression, value: \"^/(a|b)//x\"}}]}",
        "{matches: [{method: GET, headers: [{name: x-a, value: b}, {name: x-b, type: RegularExpression, value: \"c.*\"}], queryParams: [{name: q, value: \"a b\"}]}]}",
        "{backendRefs: [{name: a, port: 1, weight: 0}, {name: b, port: 1, weight: 1000000}]}",
        "{timeouts: {request: 2h, backendRequest: 1h2m3s4ms}}",
        "{timeouts: {request: 0s, backendRequest: 10s}}",
        "{retry: {codes: [500, 503], attempts: 3, backoff: 100ms}}",
        "{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 1}}}]}",
        "{filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}], matches: [{path: {type: PathPrefix, value: /v1}}]}",
        "{filters: [{type: URLRewrite, urlRewrite: {hostname: example.com, path: {type: ReplaceFullPath, replaceFullPath: /x}}}]}",
        "{filters: [{type: ExtensionRef, extensionRef: {group: policy.ferry.io, kind: HTTPFault, name: f}}]}",
        "{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}], add: [{name: c, value: \"d e\"}], remove: [x]}}, {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [y]}}]}",
        "spec: {parentRefs: [{group: \"\", kind: Service, name: web, port: 80}, {group: \"\", kind: Service, name: web, port: 81}]}",
    ];
    for row in rows {
        http(row).unwrap_or_else(|e| panic!("{row}: {e}"));
    }
}

#[test]
fn schema_constraints() {
    refused(
        http("{backendRefs: [{name: w, port: 1, weight: -1}]}"),
        "spec.rules[0].backendRefs[0].weight",
        "should be greater than or equal to 0",
    );
    refused(
        http("{backendRefs: [{name: w, port: 1, weight: 1000001}]}"),
        "spec.rules[0].backendRefs[0].weight",
        "less than or equal to 1000000",
    );
    refused(
        http("{backendRefs: [{name: w, port: 0}]}"),
        "spec.rules[0].backendRefs[0].port",
        "greater than or equal to 1",
    );
    refused(
        http("{backendRefs: [{name: w, port: 65536}]}"),
        "spec.rules[0].backendRefs[0].port",
        "less than or equal to 65535",
    );
    refused(
        http("{backendRefs: [{name: \"\", port: 1}]}"),
        "spec.rules[0].backendRefs[0].name",
        "at least 1 chars long",
    );
    refused(
        http("{backendRefs: [{name: w, port: 1, namespace: Bad_NS}]}"),
        "spec.rules[0].backendRefs[0].namespace",
        "should match",
    );
    refused(
        http("{backendRefs: [{name: w, port: 1, kind: \"9x\"}]}"),
        "spec.rules[0].backendRefs[0].kind",
        "should match",
    );
    refused(
        http("{matches: [{headers: [{name: \"bad name\", value: x}]}]}"),
        "spec.rules[0].matches[0].headers[0].name",
        "should match",
    );
    refused(
        http("{matches: [{headers: [{name: a, value: \"two  spaces\"}]}]}"),
        "spec.rules[0].matches[0].headers[0].value",
        "should match",
    );
    refused(
        http("{matches: [{headers: [{name: a, value: x}, {name: a, value: y}]}]}"),
        "spec.rules[0].matches[0].headers[1]",
        "Duplicate value",
    );
    refused(
        http("{matches: [{queryParams: [{name: q, value: \"\"}]}]}"),
        "spec.rules[0].matches[0].queryParams[0].value",
        "at least 1 chars long",
    );
    refused(
        http(&format!(
            "{{matches: [{{path: {{type: RegularExpression, value: \"{}\"}}}}]}}",
            "a".repeat(1025)
        )),
        "spec.rules[0].matches[0].path.value",
        "Too long",
    );
    refused(
        http("{timeouts: {request: 10}}"),
        "spec.rules[0].timeouts.request",
        "should match",
    );
    refused(
        http("{timeouts: {request: 1h1m1s1ms1s}}"),
        "spec.rules[0].timeouts.request",
        "should match",
    );
    refused(
        http("{timeouts: {request: 123456s}}"),
        "spec.rules[0].timeouts.request",
        "should match",
    );
    refused(
        http("{retry: {codes: [399]}}"),
        "spec.rules[0].retry.codes[0]",
        "greater than or equal to 400",
    );
    refused(
        http("{retry: {codes: [500, 500]}}"),
        "spec.rules[0].retry.codes[1]",
        "Duplicate value",
    );
    refused(
        http("{retry: {attempts: 0}}"),
        "spec.rules[0].retry.attempts",
        "greater than or equal to 1",
    );
    refused(http("{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 101}}]}"), "spec.rules[0].filters[0].requestMirror.percent", "less than or equal to 100");
    refused(
        http("{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 300}}]}"),
        "spec.rules[0].filters[0].requestRedirect.statusCode",
        "Unsupported value",
    );
    refused(
        http("{filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]}"),
        "spec.rules[0].filters[0].requestRedirect.scheme",
        "Unsupported value",
    );
    refused(
        http("{filters: [{type: URLRewrite, urlRewrite: {path: {type: Other}}}]}"),
        "spec.rules[0].filters[0].urlRewrite.path.type",
        "Unsupported value",
    );
    refused(http("spec: {rules: []}"), "spec.rules", "at least 1 items");
    let many = vec!["{}"; 17].join(", ");
    refused(
        http(&format!("spec: {{rules: [{many}]}}")),
        "spec.rules",
        "Too many: 17",
    );
    let headers: Vec<String> = (0..17)
        .map(|i| format!("{{name: h{i}, value: v}}"))
        .collect();
    refused(
        http(&format!(
            "{{matches: [{{headers: [{}]}}]}}",
            headers.join(", ")
        )),
        "spec.rules[0].matches[0].headers",
        "Too many",
    );
    refused(
        http("spec: {hostnames: [\"Bad.Host\"]}"),
        "spec.hostnames[0]",
        "should match",
    );
    refused(
        http("spec: {parentRefs: [{name: web, port: 0}]}"),
        "spec.parentRefs[0].port",
        "greater than or equal to 1",
    );
}

#[test]
fn path_rules() {
    let path = |v: &str| {
        http(&format!(
            "{{matches: [{{path: {{type: Exact, value: \"{v}\"}}}}]}}"
        ))
    };
    let f = "spec.rules[0].matches[0].path";
    refused(
        path("api"),
        f,
        "value must be an absolute path and start with '/'",
    );
    refused(path("/a//b"), f, "must not contain '//'");
    refused(path("/a/./b"), f, "must not contain '/./'");
    refused(path("/a/../b"), f, "must not contain '/../'");
    refused(path("/a%2fb"), f, "must not contain '%2f'");
    refused(path("/a%2Fb"), f, "must not contain '%2F'");
    refused(path("/a#b"), f, "must not contain '#'");
    refused(path("/a/.."), f, "must not end with '/..'");
    refused(path("/a/."), f, "must not end with '/.'");
    refused(path("/a b"), f, "must only contain valid characters");
    refused(path("/a%zz"), f, "must only contain valid characters");
}

#[test]
fn filter_rules() {
    let r = "spec.rules[0]";
    refused(
        http("{filters: [{type: RequestHeaderModifier}]}"),
        &format!("{r}.filters[0]"),
        "filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type",
    );
    refused(
        http("{filters: [{type: ResponseHeaderModifier, requestHeaderModifier: {}}]}"),
        &format!("{r}.filters[0]"),
        "filter.requestHeaderModifier must be nil if the filter.type is not RequestHeaderModifier",
    );
    refused(http("{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}}, {type: RequestHeaderModifier, requestHeaderModifier: {}}]}"), &format!("{r}.filters"), "RequestHeaderModifier filter cannot be repeated");
    refused(http("{filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {}}, {type: ResponseHeaderModifier, responseHeaderModifier: {}}]}"), &format!("{r}.filters"), "ResponseHeaderModifier filter cannot be repeated");
    refused(http("{filters: [{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, urlRewrite: {}}]}"), &format!("{r}.filters"), "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both");
    refused(http("{filters: [{type: RequestRedirect, requestRedirect: {}}, {type: RequestRedirect, requestRedirect: {}}]}"), &format!("{r}.filters"), "RequestRedirect filter cannot be repeated");
    refused(
        http("{filters: [{type: URLRewrite, urlRewrite: {}}, {type: URLRewrite, urlRewrite: {}}]}"),
        &format!("{r}.filters"),
        "URLRewrite filter cannot be repeated",
    );
    refused(http("{filters: [{type: RequestRedirect, requestRedirect: {}}], backendRefs: [{name: w, port: 1}]}"), r, "RequestRedirect filter must not be used together with backendRefs");
    refused(http("{filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}], matches: [{path: {type: Exact, value: /a}}]}"), r, "When using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified");
    refused(http("{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}], matches: [{path: {value: /a}}, {path: {value: /b}}]}"), r, "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified");
    refused(http("{backendRefs: [{name: w, port: 1, filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}]}], matches: [{path: {type: Exact, value: /a}}]}"), r, "Within backendRefs, When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified");
    refused(http("{backendRefs: [{name: w, port: 1, filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}]}], matches: [{path: {type: Exact, value: /a}}]}"), r, "Within backendRefs, when using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified");
    let p = format!("{r}.filters[0].urlRewrite.path");
    refused(
        http("{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]}"),
        &p,
        "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
    );
    refused(http("{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replaceFullPath: /x}}}]}"), &p, "type must be 'ReplaceFullPath' when replaceFullPath is set");
    refused(
        http("{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch}}}]}"),
        &p,
        "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'",
    );
    refused(http("{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /a, replacePrefixMatch: /x}}}]}"), &p, "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set");
    let m = format!("{r}.filters[0].requestMirror");
    refused(http("{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1}, percent: 5, fraction: {numerator: 1}}}]}"), &m, "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter");
    refused(http("{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1}, fraction: {numerator: 3, denominator: 2}}}]}"), &format!("{m}.fraction"), "numerator must be less than or equal to denominator");
    refused(
        http("{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}}}]}"),
        &format!("{m}.backendRef"),
        "Must have port for Service reference",
    );
    refused(
        http("{backendRefs: [{name: w}]}"),
        &format!("{r}.backendRefs[0]"),
        "Must have port for Service reference",
    );
    // A backend of another kind needs no port.
    http("{backendRefs: [{group: example.com, kind: Thing, name: w}]}").unwrap();
}

#[test]
fn route_level_rules() {
    refused(
        http("spec: {rules: [{name: a}, {name: a}]}"),
        "spec.rules",
        "Rule name must be unique within the route",
    );
    http("spec: {rules: [{name: a}, {name: b}, {}]}").unwrap();
    let matches = vec!["{}"; 64].join(", ");
    let rule = format!("{{matches: [{matches}]}}");
    let rules = [rule.as_str(), rule.as_str(), "{matches: [{}]}"].join(", ");
    refused(
        http(&format!("spec: {{rules: [{rules}]}}")),
        "spec.rules",
        "the total number of matches across all rules in a route must be less than 128",
    );
    let rules = [rule.as_str(), rule.as_str()].join(", ");
    http(&format!("spec: {{rules: [{rules}]}}")).expect("exactly 128 is allowed");
    refused(
        http("{timeouts: {request: 1s, backendRequest: 2s}}"),
        "spec.rules[0].timeouts",
        "backendRequest timeout cannot be longer than request timeout",
    );
    // Two references to the same parent must both name a port, and different ones.
    refused(http("spec: {parentRefs: [{group: \"\", kind: Service, name: web}, {group: \"\", kind: Service, name: web, port: 80}]}"), "spec.parentRefs", "sectionName or port must be specified when parentRefs includes 2 or more references to the same parent");
    refused(http("spec: {parentRefs: [{group: \"\", kind: Service, name: web, port: 80}, {group: \"\", kind: Service, name: web, port: 80}]}"), "spec.parentRefs", "sectionName or port must be unique when parentRefs includes 2 or more references to the same parent");
    // Different namespaces are different parents.
    http("spec: {parentRefs: [{group: \"\", kind: Service, name: web}, {group: \"\", kind: Service, name: web, namespace: other}]}").unwrap();
}

#[test]
fn grpc_rules() {
    let f = "spec.rules[0].matches[0].method";
    grpc("{}").expect("a rule without matches");
    grpc("{matches: [{method: {service: .pkg.Svc}}]}").unwrap();
    grpc("{matches: [{method: {type: RegularExpression, service: \"pkg\\\\..*\"}}]}").unwrap();
    refused(
        grpc("{matches: [{method: {}}]}"),
        f,
        "One or both of 'service' or 'method' must be specified",
    );
    refused(
        grpc("{matches: [{method: {service: \"pkg/Svc\"}}]}"),
        f,
        "service must only contain valid characters",
    );
    refused(
        grpc("{matches: [{method: {method: \"1Call\"}}]}"),
        f,
        "method must only contain valid characters",
    );
    refused(
        grpc("{filters: [{type: URLRewrite, urlRewrite: {}}]}"),
        "spec.rules[0].filters[0].type",
        "Unsupported value",
    );
    refused(grpc("{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}}, {type: RequestHeaderModifier, requestHeaderModifier: {}}]}"), "spec.rules[0].filters", "RequestHeaderModifier filter cannot be repeated");
    refused(
        grpc("{backendRefs: [{name: w}]}"),
        "spec.rules[0].backendRefs[0]",
        "Must have port for Service reference",
    );
    // gRPC header values have no pattern.
    grpc("{matches: [{headers: [{name: a, value: \"two  spaces\"}]}]}").unwrap();
}

#[test]
fn http_faults() {
    let fault = |spec: &str| {
        let text = format!("apiVersion: policy.ferry.io/v1alpha1\nkind: HTTPFault\nmetadata: {{name: f}}\nspec: {spec}\n");
        let fault: HttpFault = serde_yaml_ng::from_str(&text).expect("parses");
        http_fault(&fault)
    };
    fault("{abort: {httpStatus: 503, percent: 10}}").unwrap();
    fault("{abort: {grpcStatus: 14}, delay: {fixedDelay: 2s, percent: 25}}").unwrap();
    refused(fault("{}"), "spec", "at least one of abort and delay");
    refused(
        fault("{abort: {percent: 5}}"),
        "spec.abort",
        "exactly one of httpStatus and grpcStatus",
    );
    refused(
        fault("{abort: {httpStatus: 600}}"),
        "spec.abort.httpStatus",
        "less than or equal to 599",
    );
    refused(
        fault("{abort: {grpcStatus: 0}}"),
        "spec.abort.grpcStatus",
        "greater than or equal to 1",
    );
    refused(
        fault("{delay: {fixedDelay: 2 seconds}}"),
        "spec.delay.fixedDelay",
        "should match",
    );
    refused(
        fault("{delay: {fixedDelay: 1s, percent: 101}}"),
        "spec.delay.percent",
        "less than or equal to 100",
    );
}

#[test]
fn durations_parse_as_gep_2257_says() {
    assert_eq!(
        parse_duration("1h2m3s4ms"),
        Some(Duration::from_millis(3_723_004))
    );
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    for bad in [
        "",
        "1",
        "s",
        "1.5s",
        "123456s",
        "1d",
        "1s1s1s1s1s",
        "-1s",
        "1 s",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

/// Every CEL rule of the CRDs' HTTPRoute and GRPCRoute schemas is either implemented here
/// (its message appears in this module) or belongs to a part Ferry refuses as unsupported.
#[test]
fn every_cel_rule_of_the_crds_is_accounted_for() {
    let dir = ferry_testkit::kube_api::fixtures_dir().join("gateway-api-v1.6.1/experimental");
    let source = include_str!("../validate.rs");
    let not_implemented = [
        // CORS and ExternalAuth filters, sessionPersistence: refused by policy::unsupported_*.
        "AllowHeaders cannot contain",
        "AllowMethods cannot contain",
        "AllowOrigins cannot contain",
        "must be specified when protocol is set to",
        "protocol must be 'GRPC' when grpc is set",
        "protocol must be 'HTTP' when http is set",
        "AbsoluteTimeout must be specified",
        "cookieConfig can only be set with type Cookie",
    ];
    let mut checked = 0;
    for file in ["httproutes.yaml", "grpcroutes.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let crd: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let mut messages = Vec::new();
        collect_messages(&crd, &mut messages);
        for message in messages {
            checked += 1;
            if not_implemented.iter().any(|n| message.contains(n)) {
                continue;
            }
            // Rules whose message this module builds from parts.
            let built = message.starts_with("filter.") && message.contains(" filter.type");
            assert!(
                built || source.contains(&message),
                "CEL rule not implemented: {message:?}"
            );
        }
    }
    assert!(checked > 100, "read the CRDs' rules ({checked})");
}

fn collect_messages(value: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    match value {
        serde_yaml_ng::Value::Mapping(map) => {
            for (key, child) in map {
                if key.as_str() == Some("x-kubernetes-validations") {
                    for rule in child.as_sequence().into_iter().flatten() {
                        if let Some(m) = rule.get("message").and_then(|m| m.as_str()) {
                            out.push(m.to_string());
                        }
                    }
                } else {
                    collect_messages(child, out);
                }
            }
        }
        serde_yaml_ng::Value::Sequence(items) => {
            for item in items {
                collect_messages(item, out);
            }
        }
        _ => {}
    }
}

/// Every `pattern` of the CRDs' schemas for the fields Ferry models is the one checked here,
/// character for character, and every string enum value is spelled here or in the types.
#[test]
fn every_pattern_and_enum_of_the_crds_is_the_one_checked() {
    let dir = ferry_testkit::kube_api::fixtures_dir().join("gateway-api-v1.6.1/experimental");
    let source = format!(
        "{}{}",
        include_str!("../validate.rs"),
        include_str!("../gateway.rs")
    );
    let mut patterns = 0;
    for file in ["httproutes.yaml", "grpcroutes.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let crd: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let v1 = crd["spec"]["versions"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1")
            .unwrap();
        let spec = &v1["schema"]["openAPIV3Schema"]["properties"]["spec"];
        walk(spec, &mut |node| {
            if let Some(p) = node.get("pattern").and_then(|p| p.as_str()) {
                patterns += 1;
                assert!(source.contains(p), "pattern not checked: {p}");
            }
            for value in node
                .get("enum")
                .and_then(|e| e.as_sequence())
                .into_iter()
                .flatten()
            {
                if let Some(v) = value.as_str() {
                    assert!(source.contains(v), "enum value not known: {v}");
                }
            }
        });
    }
    assert!(patterns > 20, "read the CRDs' patterns ({patterns})");
}

/// Visits every schema node, except the parts Ferry refuses as unsupported.
fn walk(node: &serde_yaml_ng::Value, visit: &mut impl FnMut(&serde_yaml_ng::Value)) {
    visit(node);
    if let Some(props) = node.get("properties").and_then(|p| p.as_mapping()) {
        for (key, child) in props {
            let skip = ["cors", "externalAuth", "sessionPersistence"];
            if key.as_str().is_some_and(|k| skip.contains(&k)) {
                continue;
            }
            walk(child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, visit);
    }
}
