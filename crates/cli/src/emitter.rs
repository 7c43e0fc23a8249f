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
        // Indented as under a key: a block scalar's lines cannot start at column 0.
        other => {
            out.push_str(&scalar(other, 2));
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
        let key = key_scalar(key, indent);
        // An implicit key is at most 1024 characters (YAML 1.2 §7.4); longer, it is explicit.
        if key.chars().count() > 1000 {
            out.push_str("? ");
            out.push_str(&key);
            out.push('\n');
            pad(indent, out);
        } else {
            out.push_str(&key);
        }
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

/// A mapping key: on one line, never a block scalar.
fn key_scalar(key: &Value, indent: usize) -> String {
    match key {
        Value::String(s) if !is_plain_safe(s) => double_quoted(s),
        other => scalar(other, indent),
    }
}

fn string(s: &str, indent: usize) -> String {
    if is_plain_safe(s) {
        return s.to_string();
    }
    if let Some(block) = literal_block(s, indent) {
        return block;
    }
    double_quoted(s)
}

/// Whether a YAML 1.1 reader (libyaml, kubectl's go-yaml) takes `c` as a line break: NEL,
/// LINE SEPARATOR and PARAGRAPH SEPARATOR end a line there as LF and CR do.
fn is_yaml_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Whether `c` may stand for itself in a YAML scalar (the spec's `c-printable`), neither a
/// line break nor a byte-order mark.
fn is_yaml_printable(c: char) -> bool {
    matches!(c, '\t' | ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && c != '\u{feff}'
}

/// A double-quoted scalar: every character that is not printable, or that YAML 1.1 reads
/// as a line break, escaped (`\uXXXX`, valid in both YAML versions), so nothing folds.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if is_yaml_printable(c) && !is_yaml_break(c) => out.push(c),
            // Everything else is below U+10000 (every plane above is printable).
            c => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
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
    // `---` and `...` at the start of a line are document markers.
    let marker = s.starts_with("---") || s.starts_with("...");
    if !body_ok || !start_ok || marker || s.ends_with(':') || s.contains("://") {
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
    // Only LF may break its lines: a CR, NEL, U+2028 or U+2029 would end a line early for
    // a YAML 1.1 reader, and a block scalar cannot escape anything.
    if s.chars()
        .any(|c| c != '\n' && (!is_yaml_printable(c) || is_yaml_break(c) || c == '\t'))
    {
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
            // Found by the `yaml_emitter` fuzz target: plain, these end or start a document.
            "---",
            "...",
            "---x",
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

    #[test]
    fn line_breaks_of_yaml_1_1_never_end_a_scalar_early() {
        for s in [
            "a\u{2028}b",
            "a\u{2029}b",
            "a\u{85}b",
            "a\rb",
            "line1\nx\u{2028}key: injected\n",
            "two\nlines\u{2029}",
            "nel\n\u{85}\n",
            "bom\u{feff}",
            "del\u{7f}c1\u{9f}",
            "\u{fffe}\u{ffff}",
        ] {
            let value = Value::Mapping(
                [(Value::String("k".into()), Value::String(s.into()))]
                    .into_iter()
                    .collect(),
            );
            let mut out = String::new();
            document(&value, &mut out);
            for c in ['\u{85}', '\u{2028}', '\u{2029}', '\r', '\u{feff}'] {
                assert!(!out.contains(c), "{s:?} emitted {c:?} raw: {out:?}");
            }
            assert!(
                out.starts_with("k: \""),
                "{s:?} must be double-quoted: {out:?}"
            );
            let back: Value = serde_yaml_ng::from_str(&out).unwrap();
            assert_eq!(back, value, "{s:?} did not read back: {out:?}");
        }
    }

    #[test]
    fn multi_line_documents_and_keys_read_back() {
        // Found by the `yaml_emitter` and `inject` fuzz targets: a multi-line string as a
        // whole document was a block scalar at column 0, and one as a key a block scalar
        // before the colon; neither parsed.
        let long = "k".repeat(2000);
        for value in [
            Value::String("a\nb".into()),
            Value::String("line\n".into()),
            Value::Mapping(
                [
                    (Value::String("a\nb".into()), Value::Null),
                    (Value::String(long.clone()), Value::String("x\ny".into())),
                ]
                .into_iter()
                .collect(),
            ),
            Value::Sequence(vec![Value::Mapping(
                [(Value::String(long.clone()), Value::Bool(true))]
                    .into_iter()
                    .collect(),
            )]),
        ] {
            let mut out = String::new();
            document(&value, &mut out);
            let back: Value =
                serde_yaml_ng::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            assert_eq!(back, value, "{out}");
        }
    }
}
