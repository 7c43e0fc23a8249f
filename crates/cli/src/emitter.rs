//! Writes YAML that kubectl reads back exactly: block style like `kubectl get -o yaml`, and
//! any string a YAML 1.1 reader could take for something else (`yes`, `on`, `0777`,
//! `1:20`, `8080`, ...) quoted.
//!
//! kubectl decodes YAML with 1.1 rules, where plain `yes` is a boolean; serde_yaml_ng writes
//! by 1.2 rules and leaves it plain. Rather than trust a list of known hazards, a string
//! is written plain only when it is made of "boring" characters and cannot be a number.

use std::fmt::Write;

use serde_yaml_ng::Value;

/// Words some YAML version reads as a boolean or null when plain.
const RESERVED: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
];

/// Appends one document (without the `---` separator) to `out`.
pub fn document(value: &Value, out: &mut String) {
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(m, 0, false, out),
        Value::Sequence(s) if !s.is_empty() => sequence(s, 0, out),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
}

fn pad(indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes a mapping; with `first_inline` its first key continues a `- ` line.
fn mapping(map: &serde_yaml_ng::Mapping, indent: usize, first_inline: bool, out: &mut String) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !first_inline {
            pad(indent, out);
        }
        out.push_str(&scalar(key, indent));
        out.push(':');
        value_after_key(value, indent, out);
    }
}

fn value_after_key(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            mapping(m, indent + 2, false, out);
        }
        // Like kubectl: a list under a key starts at the key's own indentation.
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            sequence(s, indent, out);
        }
        Value::Tagged(tagged) => {
            let _ = write!(out, " {}", tagged.tag);
            value_after_key(&tagged.value, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, indent + 2));
            out.push('\n');
        }
    }
}

fn sequence(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        pad(indent, out);
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                out.push_str("- ");
                mapping(m, indent + 2, true, out);
            }
            Value::Sequence(s) if !s.is_empty() => {
                out.push_str("-\n");
                sequence(s, indent + 2, out);
            }
            other => {
                out.push_str("- ");
                out.push_str(&scalar(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// A scalar (or empty collection) on one line, or a literal block for multi-line text.
fn scalar(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Mapping(_) => "{}".to_string(),
        Value::Sequence(_) => "[]".to_string(),
        Value::Tagged(tagged) => format!("{} {}", tagged.tag, scalar(&tagged.value, indent)),
    }
}

fn string(s: &str, indent: usize) -> String {
    if is_plain_safe(s) {
        return s.to_string();
    }
    if let Some(block) = literal_block(s, indent) {
        return block;
    }
    // JSON string escapes are valid in YAML double-quoted scalars.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Whether `s` reads back as the same string under YAML 1.1 and 1.2 when written plain.
pub fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let body_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_./-:@=+".contains(c));
    let start_ok = first.is_ascii_alphanumeric() || "_./".contains(first) || s.starts_with("--");
    if !body_ok || !start_ok || s.ends_with(':') || s.contains("://") {
        return false;
    }
    if RESERVED.iter().any(|w| w.eq_ignore_ascii_case(s)) {
        return false;
    }
    // Anything made only of characters numbers are made of (ints, floats, hex, octal,
    // 1.1's `1_000` and sexagesimal `1:20`, `.inf`) is quoted; `100m`, `64Mi`, `v11` are not.
    let numberish = s.chars().any(|c| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || "._:+-xXoO".contains(c));
    let special_float = [".inf", "-.inf", "+.inf", ".nan"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(s));
    !numberish && !special_float
}

/// `|` / `|-` block for multi-line text that survives it unchanged, else `None`.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    if !s.contains('\n') || s.starts_with([' ', '\n']) || s.ends_with("\n\n") {
        return None;
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return None;
    }
    let (header, body) = match s.strip_suffix('\n') {
        Some(body) => ("|", body),
        None => ("|-", s),
    };
    let mut out = header.to_string();
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent));
            out.push_str(line);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn emit(text: &str) -> String {
        let value: Value = serde_yaml_ng::from_str(text).unwrap();
        let mut out = String::new();
        document(&value, &mut out);
        out
    }

    #[test]
    fn quotes_what_yaml_1_1_would_misread() {
        for s in [
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "true",
            "null",
            "~",
            "8080",
            "0777",
            "1:20",
            "1_000",
            "1e3",
            "0x1F",
            ".inf",
            "-1",
            "",
            " x",
            "a: b",
            "#x",
            "4190,4191",
            "*x",
            "&x",
            "!x",
            "a:",
        ] {
            assert!(!is_plain_safe(s), "{s:?} must be quoted");
        }
        for s in [
            "web",
            "100m",
            "64Mi",
            "v11",
            "ferry.io/inject",
            "10.96.0.0/12",
            "--proxy-uid",
            "IfNotPresent",
            "0.0.0.0/0",
            "add",
            "deadbeef",
        ] {
            assert!(is_plain_safe(s), "{s:?} should stay plain");
        }
    }

    #[test]
    fn writes_kubectl_style_blocks_that_read_back_the_same() {
        let text = "a:\n  b: [1, 'yes', {c: d, e: [x, [y]]}]\n  empty: {}\n  none: []\n  text: \"line1\\n  line2\\n\\nend\\n\"\n  nul: null\n";
        let out = emit(text);
        assert!(
            out.contains(
                "  b:\n  - 1\n  - \"yes\"\n  - c: d\n    e:\n    - x\n    -\n      - \"y\"\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("  text: |\n    line1\n      line2\n\n    end\n"),
            "{out}"
        );
        let back = Value::deserialize(serde_yaml_ng::Deserializer::from_str(&out)).unwrap();
        assert_eq!(back, serde_yaml_ng::from_str::<Value>(text).unwrap());
    }
}
