//! The OpenAPI v3 schema validation `openapi.rs` applies to `ferry install`, shared with
//! `chart.rs` so `helm template`'s output passes exactly the same check.
//!
//! The schemas are the ones a real kube-apiserver (v1.36) serves, recorded in
//! `../shared/k8s/openapi/v3`, with one tightening: every object schema that lists its
//! `properties` gets `additionalProperties: false`, as `kubectl apply`'s strict field
//! validation does on the server.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context};
use jsonschema::Validator;
use serde_json::{json, Value};

pub fn shared_k8s() -> PathBuf {
    // CI clones the repository with `shared/` beside it.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/k8s")
}

/// One compiled validator per `apiVersion`/`kind`, compiled on first use.
pub struct Schemas {
    docs: Mutex<HashMap<String, Value>>,
    validators: Mutex<HashMap<(String, String), &'static Validator>>,
}

pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| Schemas {
        docs: Mutex::new(HashMap::new()),
        validators: Mutex::new(HashMap::new()),
    })
}

/// `v1` → `api__v1.json`, `apps/v1` → `apis__apps__v1.json`.
pub fn schema_file(api_version: &str) -> String {
    match api_version.split_once('/') {
        Some((group, version)) => format!("apis__{group}__{version}.json"),
        None => format!("api__{api_version}.json"),
    }
}

/// Adds `additionalProperties: false` wherever an object schema lists its properties and
/// does not say otherwise, recursively.
pub fn tighten(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let open = map.contains_key("additionalProperties")
                || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.contains_key("properties") && !open {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, child) in map.iter_mut() {
                if key == "properties" {
                    // Property names are not schemas; their values are.
                    if let Value::Object(props) = child {
                        props.values_mut().for_each(tighten);
                    }
                } else {
                    tighten(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tighten),
        _ => {}
    }
}

impl Schemas {
    fn validator(&self, api_version: &str, kind: &str) -> anyhow::Result<&'static Validator> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(v) = self.validators.lock().unwrap().get(&key) {
            return Ok(v);
        }
        let file = schema_file(api_version);
        let mut docs = self.docs.lock().unwrap();
        if !docs.contains_key(&file) {
            let path = shared_k8s().join("openapi/v3").join(&file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("no schema document {}", path.display()))?;
            docs.insert(file.clone(), serde_json::from_str(&text)?);
        }
        let doc = &docs[&file];
        let all = doc["components"]["schemas"]
            .as_object()
            .context("no components.schemas")?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let name = all
            .iter()
            .find(|(_, s)| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|gvks| {
                        gvks.iter().any(|g| {
                            g["group"] == group && g["version"] == version && g["kind"] == kind
                        })
                    })
            })
            .map(|(name, _)| name.clone())
            .ok_or_else(|| anyhow!("no schema for {api_version} {kind}"))?;
        let mut components = Value::Object(all.clone());
        tighten(&mut components);
        let root = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": { "schemas": components },
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| anyhow!("compiling the schema of {kind}: {e}"))?;
        let leaked: &'static Validator = Box::leak(Box::new(validator));
        self.validators.lock().unwrap().insert(key, leaked);
        Ok(leaked)
    }
}

/// Drops object fields whose value is `null`: the apiserver decodes a null field of a
/// built-in type as unset (kubectl prints `creationTimestamp: null`, and the recorded pods
/// carry `lastProbeTime: null`), and the published schemas do not mark those `nullable`.
pub fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Validates one object (a `List` item by item); the error lists every violation.
pub fn validate(object: &Value) -> anyhow::Result<()> {
    let kind = object["kind"].as_str().context("object without kind")?;
    let api_version = object["apiVersion"]
        .as_str()
        .context("object without apiVersion")?;
    if kind == "List" {
        for item in object["items"].as_array().context("List without items")? {
            validate(item)?;
        }
        return Ok(());
    }
    let validator = schemas().validator(api_version, kind)?;
    let object = &without_nulls(object);
    let errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        let name = object["metadata"]["name"].as_str().unwrap_or("?");
        bail!("{kind} {name} is invalid:\n  {}", errors.join("\n  "))
    }
}

pub fn parse_stream(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("ferry wrote valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn validate_all(what: &str, docs: &[Value]) {
    assert!(!docs.is_empty(), "{what}: no documents to validate");
    let failures: Vec<String> = docs
        .iter()
        .filter_map(|d| validate(d).err())
        .map(|e| format!("{e:#}"))
        .collect();
    assert!(failures.is_empty(), "{what}:\n{}", failures.join("\n"));
}
