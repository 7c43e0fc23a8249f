//! What a client asks for: the `path` and `context_token` of a `GetDestination`, parsed
//! into a [`Lookup`] following Linkerd's conventions.
//!
//! Accepted paths (case-insensitive, a trailing dot allowed, port 80 when omitted):
//! `svc.ns.svc.<cluster-domain>:port`, `svc.ns.svc:port`, `svc.ns:port`, `svc:port`
//! (in the namespace of the caller's context token), `instance.svc.ns.svc[.<domain>]:port`
//! (one instance of a service) and `ip:port`.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// The port Linkerd assumes when an authority has none.
pub const DEFAULT_PORT: u16 = 80;

/// A parsed destination request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A service name and port.
    Service {
        /// The namespace the name resolves in.
        namespace: String,
        /// The service's name.
        name: String,
        /// The service port asked for.
        port: u16,
        /// One instance of the service, for `<instance>.<svc>.<ns>.svc...` names.
        instance: Option<String>,
    },
    /// A name of a shape no backend serves (another cluster domain, too many labels):
    /// it does not exist.
    Unknown,
    /// An address: an instance, or something outside the mesh.
    Addr(SocketAddr),
}

/// Why a path could not be parsed at all (answered with `InvalidArgument`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid authority {path:?}: {reason}")]
pub struct InvalidAuthority {
    /// The path as received.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The caller's context, injected into its proxy as JSON. Every field is optional and
/// unknown fields are ignored: an unreadable token only loses the caller's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextToken {
    /// The caller's namespace.
    #[serde(default)]
    pub ns: Option<String>,
    /// The caller's node.
    #[serde(default)]
    pub node_name: Option<String>,
    /// The caller's pod (instance) name.
    #[serde(default)]
    pub pod: Option<String>,
}

impl ContextToken {
    /// Parses a token: Linkerd's JSON form, or its older `ns:<namespace>` form.
    pub fn parse(token: &str) -> Self {
        let token = token.trim();
        if let Some(ns) = token.strip_prefix("ns:") {
            return Self {
                ns: Some(ns.to_string()),
                ..Self::default()
            };
        }
        serde_json::from_str(token).unwrap_or_default()
    }
}

impl Lookup {
    /// Parses a `GetDestination.path` for a cluster whose service names end in
    /// `cluster_domain`, resolving one-label names in the caller's namespace.
    pub fn parse(
        path: &str,
        cluster_domain: &str,
        caller: &ContextToken,
    ) -> Result<Self, InvalidAuthority> {
        let invalid = |reason| InvalidAuthority {
            path: path.to_string(),
            reason,
        };
        let (host, port) = split_host_port(path.trim()).map_err(invalid)?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(Self::Addr(SocketAddr::new(ip, port)));
        }
        if host.is_empty() || host.split('.').any(str::is_empty) {
            return Err(invalid("empty host or label"));
        }
        // Drop the `.svc[.<cluster-domain>]` suffix; what is left is `[instance.]svc.ns`.
        let fqdn_suffix = format!(".svc.{cluster_domain}");
        let local = host
            .strip_suffix(fqdn_suffix.as_str())
            .or_else(|| host.strip_suffix(".svc"));
        let qualified = local.is_some();
        let labels: Vec<&str> = local.unwrap_or(&host).split('.').collect();
        let (instance, name, namespace) = match labels.as_slice() {
            [name] if !qualified => match caller.ns.as_deref() {
                Some(ns) if !ns.is_empty() => (None, *name, ns),
                _ => return Ok(Self::Unknown),
            },
            [name, ns] => (None, *name, *ns),
            // A pod's own DNS name under a service, as StatefulSets use.
            [instance, name, ns] if qualified => (Some(*instance), *name, *ns),
            _ => return Ok(Self::Unknown),
        };
        Ok(Self::Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port,
            instance: instance.map(str::to_string),
        })
    }
}

/// Splits `host:port`, `[v6]:port` or a bare host (port 80).
fn split_host_port(path: &str) -> Result<(&str, u16), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    let (host, port) = if let Some(rest) = path.strip_prefix('[') {
        // Bracketed IPv6, with or without a port.
        let (v6, after) = rest.split_once(']').ok_or("unclosed '['")?;
        match after.strip_prefix(':') {
            Some(port) => (v6, Some(port)),
            None if after.is_empty() => (v6, None),
            None => return Err("junk after ']'"),
        }
    } else if path.matches(':').count() > 1 {
        // A bare IPv6 address has no room for a port.
        (path, None)
    } else {
        match path.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (path, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err("port is not a number from 1 to 65535"),
            Ok(p) => p,
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, port: u16) -> Lookup {
        Lookup::Service {
            namespace: ns.into(),
            name: name.into(),
            port,
            instance: None,
        }
    }

    fn parse(path: &str) -> Result<Lookup, InvalidAuthority> {
        Lookup::parse(path, "cluster.local", &ContextToken::default())
    }

    #[test]
    fn every_service_name_form_resolves_to_the_same_service() {
        for path in [
            "echo.default.svc.cluster.local:8080",
            "echo.default.svc.cluster.local.:8080",
            "ECHO.Default.svc.cluster.local:8080",
            "echo.default.svc:8080",
            "echo.default:8080",
        ] {
            assert_eq!(parse(path), Ok(svc("default", "echo", 8080)), "{path}");
        }
        assert_eq!(parse("echo.default"), Ok(svc("default", "echo", 80)));
    }

    #[test]
    fn instance_names_need_the_svc_suffix() {
        let web0 = Lookup::Service {
            namespace: "ns".into(),
            name: "web".into(),
            port: 80,
            instance: Some("web-0".into()),
        };
        assert_eq!(parse("web-0.web.ns.svc.cluster.local:80"), Ok(web0.clone()));
        assert_eq!(parse("web-0.web.ns.svc:80"), Ok(web0));
        assert_eq!(parse("web-0.web.ns:80"), Ok(Lookup::Unknown));
        assert_eq!(parse("a.b.c.d.svc.cluster.local:80"), Ok(Lookup::Unknown));
        assert_eq!(parse("web.svc.cluster.local:80"), Ok(Lookup::Unknown));
    }

    #[test]
    fn other_domains_and_shapes_are_unknown() {
        assert_eq!(
            parse("echo.default.svc.other.domain:80"),
            Ok(Lookup::Unknown)
        );
        assert_eq!(parse("a.b.c:80"), Ok(Lookup::Unknown));
        assert_eq!(parse("echo:80"), Ok(Lookup::Unknown));
    }

    #[test]
    fn one_label_names_resolve_in_the_callers_namespace() {
        let caller = ContextToken::parse(r#"{"ns":"emojivoto","nodeName":"n1","pod":"web-0"}"#);
        assert_eq!(caller.pod.as_deref(), Some("web-0"));
        let lookup = Lookup::parse("emoji:8080", "cluster.local", &caller);
        assert_eq!(lookup, Ok(svc("emojivoto", "emoji", 8080)));
    }

    #[test]
    fn addresses_are_lookups_by_address() {
        assert_eq!(
            parse("127.0.0.1:4143"),
            Ok(Lookup::Addr("127.0.0.1:4143".parse().unwrap()))
        );
        assert_eq!(
            parse("[::1]:4143"),
            Ok(Lookup::Addr("[::1]:4143".parse().unwrap()))
        );
    }

    #[test]
    fn malformed_paths_are_invalid() {
        for path in [
            "",
            ":80",
            "echo.default:http",
            "echo.default:0",
            "echo..default:80",
        ] {
            assert!(parse(path).is_err(), "{path:?} should be invalid");
        }
    }

    #[test]
    fn tokens_parse_leniently() {
        assert_eq!(
            ContextToken::parse("ns:default").ns.as_deref(),
            Some("default")
        );
        assert_eq!(ContextToken::parse("not json"), ContextToken::default());
        assert_eq!(ContextToken::parse(""), ContextToken::default());
        // What proxies build with the shared helper reads back field for field.
        let token = ferry_api::destination::context_token("ns\"1", "node\\1", "pod-0");
        let parsed = ContextToken::parse(&token);
        assert_eq!(parsed.ns.as_deref(), Some("ns\"1"));
        assert_eq!(parsed.node_name.as_deref(), Some("node\\1"));
        assert_eq!(parsed.pod.as_deref(), Some("pod-0"));
        let extra = ContextToken::parse(r#"{"ns":"a","extra":1}"#);
        assert_eq!(extra.ns.as_deref(), Some("a"));
    }
}
