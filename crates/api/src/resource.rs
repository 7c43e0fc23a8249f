//! kubectl-style resource names (`deploy/web`, `ns/emojivoto`, `po`, `svc/emoji`), as the
//! CLI takes them and the public API receives them: one parser, so that `ferry tap`,
//! `ferry stat` and the dashboard accept exactly the same spellings.

use std::fmt;

/// The resource kinds Ferry knows, with their kubectl aliases. The canonical name (first)
/// is the lowercase Kubernetes kind, the same word discovery stores as a workload's kind.
pub const KINDS: &[(&str, &[&str])] = &[
    ("namespace", &["ns", "namespaces"]),
    ("deployment", &["deploy", "deployments"]),
    ("pod", &["po", "pods"]),
    ("service", &["svc", "services"]),
    ("replicaset", &["rs", "replicasets"]),
    ("statefulset", &["sts", "statefulsets"]),
    ("daemonset", &["ds", "daemonsets"]),
    ("job", &["jobs"]),
    ("cronjob", &["cj", "cronjobs"]),
    ("replicationcontroller", &["rc", "replicationcontrollers"]),
];

/// A parsed resource: a kind, and a name unless it means every resource of the kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// Canonical lowercase kind (`deployment`), one of [`KINDS`].
    pub kind: String,
    /// The object's name; `None` for all objects of the kind.
    pub name: Option<String>,
}

/// A resource string that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceError(pub String);

impl fmt::Display for ResourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResourceError {}

/// The canonical kind for `word` (`deploy` → `deployment`), case-insensitive.
pub fn canonical_kind(word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    KINDS
        .iter()
        .find(|(kind, aliases)| *kind == word || aliases.contains(&word.as_str()))
        .map(|(kind, _)| *kind)
}

impl Resource {
    /// Parses `kind`, `kind/name` or `kind name` forms' first part (`deploy/web`).
    pub fn parse(s: &str) -> Result<Self, ResourceError> {
        let s = s.trim();
        let (kind, name) = match s.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (s, None),
        };
        let Some(canonical) = canonical_kind(kind) else {
            let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            return Err(ResourceError(format!(
                "unknown resource kind {kind:?} in {s:?} (known: {})",
                known.join(", ")
            )));
        };
        let name = match name {
            Some(n) if n.is_empty() || n.contains('/') => {
                return Err(ResourceError(format!(
                    "invalid resource {s:?}: expected KIND/NAME, e.g. deploy/web"
                )))
            }
            Some(n) => Some(n.to_string()),
            None => None,
        };
        Ok(Self {
            kind: canonical.to_string(),
            name,
        })
    }

    /// Whether the kind is a workload (it owns instances), not a namespace, pod or service.
    pub fn is_workload(&self) -> bool {
        !matches!(self.kind.as_str(), "namespace" | "pod" | "service")
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{name}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_aliases_and_names() {
        let r = Resource::parse("deploy/web").unwrap();
        assert_eq!(
            (r.kind.as_str(), r.name.as_deref()),
            ("deployment", Some("web"))
        );
        assert_eq!(r.to_string(), "deployment/web");
        assert_eq!(Resource::parse("NS").unwrap().kind, "namespace");
        assert_eq!(Resource::parse("po/x").unwrap().kind, "pod");
        assert!(Resource::parse("deploy").unwrap().name.is_none());
        assert!(Resource::parse("bogus/x").unwrap_err().0.contains("bogus"));
        assert!(Resource::parse("deploy/").is_err());
        assert!(Resource::parse("deploy/a/b").is_err());
    }
}
