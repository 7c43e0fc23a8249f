//! Shared by the YAML targets: which documents the emitter must write back exactly.

use serde_yaml_ng::Value;

/// Whether `v` is in the emitter's domain: Kubernetes-style documents, whose mapping keys are
/// scalars and which carry no YAML tags. (NaN is left out: it is never equal to itself.)
#[allow(dead_code)] // used by `inject`, not by `yaml_emitter`
pub fn in_domain(v: &Value) -> bool {
    match v {
        Value::Number(n) => !n.as_f64().is_some_and(f64::is_nan),
        Value::Sequence(s) => s.iter().all(in_domain),
        Value::Mapping(m) => m.iter().all(|(k, v)| {
            matches!(
                k,
                Value::String(_) | Value::Bool(_) | Value::Null | Value::Number(_)
            ) && in_domain(k)
                && in_domain(v)
        }),
        Value::Tagged(_) => false,
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

/// Writes `docs` with the emitter and reads them back: they must be the same documents.
pub fn assert_round_trip(docs: &[Value]) {
    let text = ferry::yaml::write_stream(docs);
    let back = ferry::yaml::parse_stream("emitted", &text)
        .unwrap_or_else(|e| panic!("the emitter wrote YAML that does not parse: {e}\n{text}"));
    let kept: Vec<&Value> = docs.iter().filter(|d| !d.is_null()).collect();
    assert_eq!(kept.len(), back.len(), "{text}");
    for (a, b) in kept.iter().zip(&back) {
        assert_eq!(*a, b, "the emitter changed a document:\n{text}");
    }
}
