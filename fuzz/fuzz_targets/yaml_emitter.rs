//! The YAML emitter on arbitrary documents (any Unicode in keys and values, including the
//! line breaks YAML 1.1 knows: NEL, U+2028, U+2029): what it writes reads back equal.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_yaml_ng::{Mapping, Value};

#[derive(Arbitrary, Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Str(String),
    Int(i64),
    Bool(bool),
}

fn value(node: Node, depth: usize) -> Value {
    match node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::Number(i.into()),
        Node::Float(f) if f.is_nan() => Value::Null,
        Node::Float(f) => Value::Number(f.into()),
        Node::Str(s) => Value::String(s),
        _ if depth > 16 => Value::Null,
        Node::Seq(items) => {
            Value::Sequence(items.into_iter().map(|n| value(n, depth + 1)).collect())
        }
        Node::Map(entries) => {
            let mut m = Mapping::new();
            for (k, v) in entries {
                let k = match k {
                    Key::Str(s) => Value::String(s),
                    Key::Int(i) => Value::Number(i.into()),
                    Key::Bool(b) => Value::Bool(b),
                };
                m.insert(k, value(v, depth + 1));
            }
            Value::Mapping(m)
        }
    }
}

fuzz_target!(|docs: Vec<Node>| {
    let docs: Vec<Value> = docs.into_iter().map(|n| value(n, 0)).collect();
    common::assert_round_trip(&docs);
});
