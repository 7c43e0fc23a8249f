//! The `Rollout` CRD (`ferry.io/v1alpha1`, docs/rollouts.md): its schema states the shape
//! and ranges `ferry-control` checks in local files; the rest (one of weight, match and
//! pause per step; durations; regular expressions) is checked by the controller, which
//! reports it in the rollout's status.

use serde_json::{json, Value};

/// The CRD, as JSON.
pub fn crd() -> Value {
    let backend = |what: &str| {
        json!({
            "type": "object", "required": ["name"],
            "description": what,
            "x-kubernetes-validations": [{
                "rule": "!has(self.kind) || self.kind != 'Deployment' || size(self.name) <= 57",
                "message": "a Deployment backend's name has at most 57 characters (its Service is <name>-ferry)",
            }],
            "properties": {
                "kind": {"type": "string", "enum": ["Service", "Deployment"],
                         "description": "Service (default), or Deployment: the controller fronts it with a Service <name>-ferry."},
                "name": {"type": "string", "maxLength": 63},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
        })
    };
    let duration = |what: &str| json!({"type": "string", "maxLength": 32, "description": what});
    let percent =
        |what: &str| json!({"type": "number", "minimum": 0, "maximum": 100, "description": what});
    let step = json!({
        "type": "object",
        "description": "Exactly one of weight, match, pause and confirm.",
        "x-kubernetes-validations": [{
            "rule": "[has(self.weight), has(self.match), has(self.pause), has(self.confirm)].filter(x, x).size() == 1",
            "message": "a step has exactly one of weight, match, pause and confirm",
        }],
        "properties": {
            "weight": {"type": "integer", "minimum": 0, "maximum": 100,
                       "description": "Percent of requests to the canary."},
            "match": {
                "type": "object",
                "description": "Only the requests these rules select go to the canary.",
                "properties": {
                    "headers": {"type": "array", "maxItems": 16, "items": {
                        "type": "object", "required": ["name", "value"],
                        "properties": {
                            "name": {"type": "string", "maxLength": 256},
                            "type": {"type": "string", "default": "Exact",
                                     "enum": ["Exact", "Prefix", "Suffix", "RegularExpression"]},
                            "value": {"type": "string", "maxLength": 4096},
                        },
                    }},
                    "cookies": {"type": "array", "maxItems": 1, "items": {
                        "type": "object", "required": ["name", "value"],
                        "properties": {
                            "name": {"type": "string", "maxLength": 256},
                            "value": {"type": "string", "maxLength": 4096},
                        },
                    }},
                },
            },
            "pause": {"type": "object", "description": "A manual gate: waits until promoted."},
            "confirm": {
                "type": "object", "required": ["url"],
                "description": "A gate a webhook opens: waits until a POST of the rollout to url answers 200.",
                "properties": {"url": {"type": "string", "pattern": "^http://"}},
            },
            "bake": duration("How long the step runs (time to smoke), e.g. 30s."),
        },
    });
    let schema = json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["service", "stable", "canary", "steps"],
                "properties": {
                    "service": {
                        "type": "object", "required": ["name", "port"],
                        "description": "The Service whose traffic moves.",
                        "properties": {
                            "name": {"type": "string", "maxLength": 63},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                    },
                    "stable": backend("The version running now (a Service or a Deployment)."),
                    "canary": backend("The new version (a Service or a Deployment)."),
                    "steps": {"type": "array", "minItems": 1, "maxItems": 64, "items": step},
                    "analysis": {
                        "type": "object",
                        "properties": {
                            "interval": duration("How often, and the window each analysis covers (default 1m)."),
                            "minRequests": {"type": "integer", "minimum": 1},
                            "failureLimit": {"type": "integer", "minimum": 1},
                            "successRate": {"type": "object", "properties": {
                                "min": percent("The canary's success rate floor."),
                                "maxDrop": percent("Most points below stable's."),
                            }},
                            "latencyP99": {"type": "object", "properties": {
                                "maxMs": {"type": "number", "minimum": 0},
                                "maxRatio": {"type": "number", "minimum": 0},
                            }},
                        },
                    },
                    "webhook": {
                        "type": "object", "required": ["url"],
                        "properties": {"url": {"type": "string", "pattern": "^http://"}},
                    },
                },
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "rollouts.ferry.io",
            "labels": {"app.kubernetes.io/part-of": "ferry"},
        },
        "spec": {
            "group": ferry_api::rollout::GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": "Rollout",
                "listKind": "RolloutList",
                "plural": "rollouts",
                "singular": "rollout",
                "shortNames": ["ro"],
            },
            "versions": [{
                "name": ferry_api::rollout::VERSION,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Step", "type": "integer", "jsonPath": ".status.step"},
                    {"name": "Canary", "type": "string", "jsonPath": ".spec.canary.name"},
                ],
            }],
        },
    })
}
