//! Where everything of `ferry demo` listens, derived from one `--port-base`, and the
//! workloads file that tells the control plane about it.
//!
//! With base `B` (default 8080, which keeps the control plane on its usual 8084/8086):
//!
//! | port | what |
//! |---|---|
//! | `B+4` | control plane public API and dashboard |
//! | `B+6` | control plane gRPC (destination, identity) |
//! | `B+10·(i+1)` | workload `i`'s proxy inbound (the instance's `addr`): web 8090, emoji 8100, voting 8110, vote-bot 8120, voting-v2 8130, voting-v3 8140 |
//! | `+1` | the app itself (the proxy forwards inbound traffic here) |
//! | `+2` | the proxy's generic outbound listener |
//! | `+3` | the proxy's admin server (`/metrics`, `/ready`, `/state`) |
//! | `+4` | the proxy's tap server |
//! | `+5`, `+6` | the proxy's upstream listeners, one per dependency |

use std::{fmt::Write as _, net::SocketAddr};

/// The namespace every demo workload lives in.
pub const NAMESPACE: &str = "emojivoto";
/// Ports used from the base: `B` … `B+SPAN-1`.
pub const SPAN: u16 = 70;
/// The default `--port-base`.
pub const DEFAULT_PORT_BASE: u16 = 8080;

/// One workload of the demo with its proxy's ports.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Deployment name: `web`, `emoji`, `voting`, `vote-bot`, `voting-v2`, `voting-v3`.
    pub name: &'static str,
    /// Which app it runs (`ferry-emojivoto <app>`), also its service account and its `app`
    /// label: versions of one app share them.
    pub app_name: &'static str,
    /// The app's version (`--app-version`, and the `version` label) when it has several.
    pub version: Option<&'static str>,
    /// The single instance's (pod's) name.
    pub pod: String,
    /// The proxy's inbound listener: where peers reach this instance.
    pub inbound: SocketAddr,
    /// The app's own port; the bot has none but the proxy still needs a forward address.
    pub app: SocketAddr,
    /// Whether the workload serves (the bot only calls).
    pub serves: bool,
    /// The proxy's generic outbound listener.
    pub outbound: SocketAddr,
    /// The proxy's admin server.
    pub admin: SocketAddr,
    /// The proxy's tap server.
    pub tap: SocketAddr,
    /// Upstream listeners: local address → service the proxy resolves through the control plane.
    pub upstreams: Vec<(SocketAddr, String)>,
}

impl Workload {
    /// The local address of the upstream listener for `service` (`emoji-svc`).
    pub fn upstream(&self, service: &str) -> Option<SocketAddr> {
        self.upstreams
            .iter()
            .find(|(_, target)| target.starts_with(&format!("{service}.")))
            .map(|(addr, _)| *addr)
    }
}

/// A service in front of one workload: name, port and workload. voting's v2 and v3 have
/// their own, which no one calls until a rollout sends them traffic (deployed dark).
pub const SERVICES: &[(&str, u16, &str)] = &[
    ("web-svc", 80, "web"),
    ("emoji-svc", 8080, "emoji"),
    ("voting-svc", 8080, "voting"),
    ("voting-v2-svc", 8080, "voting-v2"),
    ("voting-v3-svc", 8080, "voting-v3"),
];

/// Every address of one demo, from its port base.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The base the ports are counted from.
    pub base: u16,
    /// The control plane's public API (and dashboard).
    pub api: SocketAddr,
    /// The control plane's gRPC port.
    pub grpc: SocketAddr,
    /// The control plane's OTLP trace receiver (docs/tracing.md).
    pub trace: SocketAddr,
    /// web, emoji, voting, vote-bot, voting-v2, voting-v3, in that order.
    pub workloads: Vec<Workload>,
}

/// The port base leaves no room for every port.
#[derive(Debug, thiserror::Error)]
#[error("--port-base {0} is too high: the demo uses {SPAN} ports from it, so at most {max}", max = u16::MAX - SPAN)]
pub struct PortBaseError(pub u16);

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn target(service: &str) -> String {
    let port = SERVICES
        .iter()
        .find(|(s, _, _)| *s == service)
        .map_or(80, |(_, p, _)| *p);
    format!("{service}.{NAMESPACE}:{port}")
}

impl Layout {
    /// The layout for `base`.
    pub fn new(base: u16) -> Result<Self, PortBaseError> {
        if base == 0 || base > u16::MAX - SPAN {
            return Err(PortBaseError(base));
        }
        // name, app, version, serves, calls.
        type Row = (
            &'static str,
            &'static str,
            Option<&'static str>,
            bool,
            &'static [&'static str],
        );
        let deps: [Row; 6] = [
            ("web", "web", None, true, &["emoji-svc", "voting-svc"]),
            ("emoji", "emoji", None, true, &[]),
            ("voting", "voting", Some("1"), true, &["emoji-svc"]),
            (
                "vote-bot",
                "vote-bot",
                None,
                false,
                &["web-svc", "voting-svc"],
            ),
            ("voting-v2", "voting", Some("2"), true, &["emoji-svc"]),
            ("voting-v3", "voting", Some("3"), true, &["emoji-svc"]),
        ];
        let workloads = deps
            .iter()
            .zip(1u16..)
            .map(|((name, app_name, version, serves, deps), slot)| {
                let s = base + 10 * slot;
                Workload {
                    name,
                    app_name,
                    version: *version,
                    pod: format!("{name}-0"),
                    inbound: local(s),
                    app: local(s + 1),
                    serves: *serves,
                    outbound: local(s + 2),
                    admin: local(s + 3),
                    tap: local(s + 4),
                    upstreams: deps
                        .iter()
                        .zip(5u16..)
                        .map(|(svc, i)| (local(s + i), target(svc)))
                        .collect(),
                }
            })
            .collect();
        Ok(Self {
            base,
            api: local(base + 4),
            grpc: local(base + 6),
            trace: local(base + 7),
            workloads,
        })
    }

    /// The workload called `name`.
    pub fn workload(&self, name: &str) -> &Workload {
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .expect("the layout has web, emoji, voting, vote-bot, voting-v2 and voting-v3")
    }

    /// Every port with what uses it, for checking they are free before starting.
    pub fn ports(&self) -> Vec<(SocketAddr, String)> {
        let mut all = vec![
            (self.api, "the control plane's API".to_string()),
            (self.grpc, "the control plane's gRPC port".to_string()),
            (self.trace, "the control plane's trace receiver".to_string()),
        ];
        for w in &self.workloads {
            let name = w.name;
            all.push((w.inbound, format!("{name}'s proxy inbound")));
            if w.serves {
                all.push((w.app, format!("the {name} app")));
            }
            all.push((w.outbound, format!("{name}'s proxy outbound")));
            all.push((w.admin, format!("{name}'s proxy admin")));
            all.push((w.tap, format!("{name}'s proxy tap")));
            for (addr, target) in &w.upstreams {
                all.push((*addr, format!("{name}'s proxy upstream for {target}")));
            }
        }
        all
    }

    /// The workloads file for `ferry-control`: one deployment per workload, each app with
    /// its own service account (shared by its versions), its serving port named (`http`
    /// or `grpc`, for policies), and the services.
    pub fn workloads_file(&self) -> String {
        let mut y = format!("# Written by `ferry demo` (port base {}).\n", self.base);
        let _ = writeln!(y, "namespaces: [{NAMESPACE}]\nworkloads:");
        for w in &self.workloads {
            let version = w
                .version
                .map(|v| format!(", version: v{v}"))
                .unwrap_or_default();
            let ports = if w.serves {
                let name = if w.app_name == "web" { "http" } else { "grpc" };
                format!("    ports: {{ {name}: {} }}\n", w.app.port())
            } else {
                String::new()
            };
            let _ = write!(
                y,
                "  - name: {name}\n    namespace: {NAMESPACE}\n    kind: deployment\n    \
                 serviceAccount: {sa}\n    labels: {{ app: {sa}{version} }}\n{ports}    \
                 instances:\n      - name: {pod}\n        addr: \"{addr}\"\n        \
                 adminAddr: \"{admin}\"\n        tapAddr: \"{tap}\"\n",
                name = w.name,
                sa = w.app_name,
                pod = w.pod,
                addr = w.inbound,
                admin = w.admin,
                tap = w.tap,
            );
        }
        y.push_str("services:\n");
        for (svc, port, workload) in SERVICES {
            let _ = writeln!(
                y,
                "  - name: {svc}\n    namespace: {NAMESPACE}\n    port: {port}\n    workloads: [{workload}]"
            );
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_base_keeps_the_standard_control_plane_ports() {
        let l = Layout::new(DEFAULT_PORT_BASE).unwrap();
        assert_eq!(l.api.port(), 8084);
        assert_eq!(l.grpc.port(), 8086);
        let web = l.workload("web");
        assert_eq!(
            (web.inbound.port(), web.app.port(), web.admin.port()),
            (8090, 8091, 8093)
        );
        assert_eq!(web.upstream("emoji-svc").unwrap().port(), 8095);
        assert_eq!(web.upstream("voting-svc").unwrap().port(), 8096);
        assert_eq!(
            l.workload("voting").upstreams[0].1,
            "emoji-svc.emojivoto:8080"
        );
        assert_eq!(
            l.workload("vote-bot").upstreams[0].1,
            "web-svc.emojivoto:80"
        );
    }

    #[test]
    fn every_port_is_distinct_and_inside_the_span() {
        let l = Layout::new(30000).unwrap();
        let ports = l.ports();
        let mut seen: Vec<u16> = ports.iter().map(|(a, _)| a.port()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ports.len());
        assert!(seen.iter().all(|p| (30000..30000 + SPAN).contains(p)));
        assert!(Layout::new(u16::MAX - 10).is_err());
        assert!(Layout::new(0).is_err());
    }

    #[test]
    fn the_workloads_file_declares_each_deployment_with_its_own_account() {
        let y = Layout::new(8080).unwrap().workloads_file();
        for name in ["web", "emoji", "voting", "vote-bot"] {
            assert!(y.contains(&format!("serviceAccount: {name}\n")), "{y}");
        }
        assert!(
            y.contains("  - name: voting-v2\n    namespace: emojivoto\n    kind: deployment\n    serviceAccount: voting\n    labels: { app: voting, version: v2 }\n    ports: { grpc: 8131 }\n"),
            "{y}"
        );
        assert!(y.contains("  - name: voting-v3-svc\n    namespace: emojivoto\n    port: 8080\n    workloads: [voting-v3]"), "{y}");
        assert!(y.contains("addr: \"127.0.0.1:8110\"\n        adminAddr: \"127.0.0.1:8113\"\n        tapAddr: \"127.0.0.1:8114\""), "{y}");
        assert!(y.contains("  - name: emoji-svc\n    namespace: emojivoto\n    port: 8080\n    workloads: [emoji]"), "{y}");
    }
}
