//! The few edits injection makes to an untyped object, over the two trees it edits:
//! `serde_json` (the webhook's AdmissionReview objects) and, with the `yaml` feature,
//! `serde_yaml_ng` (`ferry inject`'s documents, whose key order and style are kept).
//!
//! Editing untyped trees, not typed `Pod`s, keeps every field Ferry does not know about, and
//! lets `ferry inject` write back exactly what it read apart from its own additions.

use serde::Serialize;

/// A JSON-like tree that injection reads and edits in place.
pub trait Tree: Sized {
    /// Why a typed object could not become a node.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Serializes a typed object (a container, a volume) into a node.
    fn from_typed<T: Serialize>(typed: &T) -> Result<Self, Self::Error>;
    /// A string node.
    fn string(s: &str) -> Self;
    /// `self[key]` when `self` is a mapping holding `key`.
    fn get(&self, key: &str) -> Option<&Self>;
    /// `self[key]`, mutably.
    fn get_mut(&mut self, key: &str) -> Option<&mut Self>;
    /// The node as a string.
    fn as_str(&self) -> Option<&str>;
    /// Whether the node is a boolean true, also written the YAML 1.1 ways kubectl accepts
    /// (`yes`, `on`, `y`).
    fn is_true(&self) -> bool;
    /// Whether the node is a mapping.
    fn is_mapping(&self) -> bool;
    /// The node's items when it is a sequence.
    fn as_sequence(&self) -> Option<&[Self]>;
    /// The node's items when it is a sequence, mutably.
    fn as_sequence_mut(&mut self) -> Option<&mut Vec<Self>>;
    /// Sets `self[key]` (keeping the key's place when present); ignored on a non-mapping.
    fn insert(&mut self, key: &str, value: Self);
    /// Removes `self[key]`; returns whether it was there.
    fn remove(&mut self, key: &str) -> bool;
    /// An empty mapping node.
    fn empty_mapping() -> Self;
    /// An empty sequence node.
    fn empty_sequence() -> Self;
    /// Whether the node is null.
    fn is_null(&self) -> bool;
    /// Whether the node is an empty mapping or an empty sequence.
    fn is_empty_collection(&self) -> bool;

    /// `self[key]` as a mapping, created empty (at the end) when absent; `None` when the
    /// key holds something else, which a valid object never does.
    fn child_mapping(&mut self, key: &str) -> Option<&mut Self> {
        if self.get(key).is_none() {
            self.insert(key, Self::empty_mapping());
        }
        self.get_mut(key).filter(|m| m.is_mapping())
    }

    /// `self[key]` as a sequence, created empty at the end when absent, null or empty: the
    /// place removal leaves it in (it prunes what it emptied), so injecting again puts it
    /// back in the same place.
    fn child_sequence(&mut self, key: &str) -> Option<&mut Vec<Self>> {
        let vacant = |v: &Self| v.is_null() || (v.is_empty_collection() && !v.is_mapping());
        if self.get(key).is_none_or(vacant) {
            self.remove(key);
            self.insert(key, Self::empty_sequence());
        }
        self.get_mut(key)?.as_sequence_mut()
    }

    /// Removes `self[key]` when it is an empty mapping or sequence.
    fn prune_empty(&mut self, key: &str) {
        if self.get(key).is_some_and(Self::is_empty_collection) {
            self.remove(key);
        }
    }

    /// The `name` field of a named item (a container, a volume).
    fn item_name(&self) -> Option<&str> {
        self.get("name").and_then(Self::as_str)
    }
}

fn yaml11_true(s: &str) -> bool {
    ["y", "yes", "on", "true"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(s))
}

impl Tree for serde_json::Value {
    type Error = serde_json::Error;

    fn from_typed<T: Serialize>(typed: &T) -> Result<Self, Self::Error> {
        serde_json::to_value(typed)
    }
    fn string(s: &str) -> Self {
        Self::String(s.to_string())
    }
    fn get(&self, key: &str) -> Option<&Self> {
        self.as_object()?.get(key)
    }
    fn get_mut(&mut self, key: &str) -> Option<&mut Self> {
        self.as_object_mut()?.get_mut(key)
    }
    fn as_str(&self) -> Option<&str> {
        serde_json::Value::as_str(self)
    }
    fn is_true(&self) -> bool {
        match self {
            Self::Bool(b) => *b,
            Self::String(s) => yaml11_true(s),
            _ => false,
        }
    }
    fn is_mapping(&self) -> bool {
        self.is_object()
    }
    fn as_sequence(&self) -> Option<&[Self]> {
        self.as_array().map(Vec::as_slice)
    }
    fn as_sequence_mut(&mut self) -> Option<&mut Vec<Self>> {
        self.as_array_mut()
    }
    fn insert(&mut self, key: &str, value: Self) {
        if let Some(map) = self.as_object_mut() {
            map.insert(key.to_string(), value);
        }
    }
    fn remove(&mut self, key: &str) -> bool {
        self.as_object_mut()
            .is_some_and(|map| map.remove(key).is_some())
    }
    fn empty_mapping() -> Self {
        Self::Object(serde_json::Map::new())
    }
    fn empty_sequence() -> Self {
        Self::Array(Vec::new())
    }
    fn is_null(&self) -> bool {
        serde_json::Value::is_null(self)
    }
    fn is_empty_collection(&self) -> bool {
        match self {
            Self::Object(m) => m.is_empty(),
            Self::Array(a) => a.is_empty(),
            _ => false,
        }
    }
}

#[cfg(feature = "yaml")]
impl Tree for serde_yaml_ng::Value {
    type Error = serde_yaml_ng::Error;

    fn from_typed<T: Serialize>(typed: &T) -> Result<Self, Self::Error> {
        serde_yaml_ng::to_value(typed)
    }
    fn string(s: &str) -> Self {
        Self::String(s.to_string())
    }
    fn get(&self, key: &str) -> Option<&Self> {
        self.as_mapping()?.get(key)
    }
    fn get_mut(&mut self, key: &str) -> Option<&mut Self> {
        self.as_mapping_mut()?.get_mut(key)
    }
    fn as_str(&self) -> Option<&str> {
        serde_yaml_ng::Value::as_str(self)
    }
    fn is_true(&self) -> bool {
        match self {
            Self::Bool(b) => *b,
            Self::String(s) => yaml11_true(s),
            _ => false,
        }
    }
    fn is_mapping(&self) -> bool {
        serde_yaml_ng::Value::is_mapping(self)
    }
    fn as_sequence(&self) -> Option<&[Self]> {
        serde_yaml_ng::Value::as_sequence(self).map(Vec::as_slice)
    }
    fn as_sequence_mut(&mut self) -> Option<&mut Vec<Self>> {
        serde_yaml_ng::Value::as_sequence_mut(self)
    }
    fn insert(&mut self, key: &str, value: Self) {
        if let Some(map) = self.as_mapping_mut() {
            map.insert(key.into(), value);
        }
    }
    fn remove(&mut self, key: &str) -> bool {
        self.as_mapping_mut()
            .is_some_and(|map| map.shift_remove(key).is_some())
    }
    fn empty_mapping() -> Self {
        Self::Mapping(serde_yaml_ng::Mapping::new())
    }
    fn empty_sequence() -> Self {
        Self::Sequence(Vec::new())
    }
    fn is_null(&self) -> bool {
        serde_yaml_ng::Value::is_null(self)
    }
    fn is_empty_collection(&self) -> bool {
        match self {
            Self::Mapping(m) => m.is_empty(),
            Self::Sequence(s) => s.is_empty(),
            _ => false,
        }
    }
}
