//! Multi-document YAML streams: reading them from files, directories or stdin, and writing
//! them back. Documents stay untyped ([`Value`]) so unknown fields survive a round trip.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// Where a stream of documents comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// One file.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Stdin => f.write_str("stdin"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Errors reading or parsing a YAML stream.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// A file or directory could not be read.
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A document is not valid YAML.
    #[error("{source_name}: document {number}: {message}")]
    Parse {
        source_name: String,
        /// 1-based position of the document in its source.
        number: usize,
        message: String,
    },
}

/// Expands a command-line input (`-`, a file or a directory) into sources, in a stable order.
///
/// Directories are walked recursively and only `.yaml`, `.yml` and `.json` files are taken.
pub fn sources(arg: &str) -> Result<Vec<Source>, YamlError> {
    if arg == "-" {
        return Ok(vec![Source::Stdin]);
    }
    let path = Path::new(arg);
    let meta = fs::metadata(path).map_err(|source| YamlError::Read {
        path: arg.to_string(),
        source,
    })?;
    if !meta.is_dir() {
        return Ok(vec![Source::File(path.to_path_buf())]);
    }
    let mut files = Vec::new();
    walk(path, &mut files)?;
    files.sort();
    Ok(files.into_iter().map(Source::File).collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), YamlError> {
    let read_err = |source| YamlError::Read {
        path: dir.display().to_string(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads a source's text.
pub fn read_source(source: &Source) -> Result<String, YamlError> {
    match source {
        Source::Stdin => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| YamlError::Read {
                    path: "stdin".to_string(),
                    source,
                })?;
            Ok(text)
        }
        Source::File(path) => fs::read_to_string(path).map_err(|source| YamlError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Parses every document of a stream; empty documents are dropped.
///
/// Fails on the first malformed document, naming its 1-based number, so callers can
/// refuse to write anything.
pub fn parse_stream(source_name: &str, text: &str) -> Result<Vec<Value>, YamlError> {
    let mut docs = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| YamlError::Parse {
            source_name: source_name.to_string(),
            number: index + 1,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Writes documents as one stream separated by `---`, quoted for YAML 1.1 readers
/// such as kubectl (see [`crate::emitter`]).
pub fn write_stream(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        crate::emitter::document(doc, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documents_and_drops_empty_ones() {
        let docs = parse_stream("t", "---\na: 1\n---\n---\nb: [x]\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["b"][0], Value::String("x".into()));
    }

    #[test]
    fn names_the_malformed_document() {
        let err = parse_stream("in.yaml", "a: 1\n---\nb: 2\n---\nc: [unclosed\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("in.yaml: document 3:"), "{msg}");
    }

    #[test]
    fn round_trips_unknown_fields_and_quoting() {
        let text = "kind: Thing\nx-custom: {deep: [1, '2', 'yes', null]}\n";
        let docs = parse_stream("t", text).unwrap();
        let again = parse_stream("t", &write_stream(&docs)).unwrap();
        assert_eq!(docs, again);
    }
}
