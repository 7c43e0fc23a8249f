//! `ferry`, the command-line tool: renders the control plane's manifests, injects proxies
//! into workload YAML, and checks an installation.
//!
//! # Layout
//! One module per subcommand, each with its clap `Args` and a `run` function; `main.rs`
//! only dispatches.
//! - [`install`]: `ferry install`, the control plane as typed Kubernetes objects
//!   ([`identity`] makes its certificates).
//! - [`inject`]: `ferry inject` / `ferry uninject` over YAML streams ([`yaml`]), finding pod
//!   templates ([`workload`]) and editing them ([`patch`]) with `ferry-inject`'s [`sidecar`]
//!   containers and pod edits (shared with the control plane's injector webhook);
//!   [`emitter`] writes YAML that kubectl reads back exactly.
//! - [`chart`]: generates the Helm chart `charts/ferry` from the same objects as `install`.
//! - [`check`]: `ferry check`, named health checks.
//! - [`dashboard`]: `ferry dashboard`, the web dashboard's URL, opened in a browser.
//! - [`demo`]: `ferry demo`, the emoji-voting app in a local mesh.
//! - [`stat`], [`edges`]: golden metrics per resource and who talks to whom, over the
//!   control plane's metrics API.
//! - [`tap`], [`top`]: live requests of a resource, as lines or a table, over the
//!   control plane's tap stream.
//! - [`diagnostics`]: `ferry diagnostics endpoints`, over the control plane's public API
//!   ([`control`] is its client; [`cluster`] reaches it on a cluster through a port-forward,
//!   with the user's kubeconfig).
//! - [`trace`]: `ferry trace`, recent slow or failed traces and one trace's waterfall.
//! - [`version`]: `ferry version`, the CLI's, control plane's and proxies' versions.

pub mod authz;
pub mod chart;
pub mod check;
pub mod cluster;
pub mod control;
pub mod dashboard;
pub mod demo;
pub mod diagnostics;
pub mod edges;
pub mod emitter;
pub mod identity;
pub mod inject;
pub mod install;
pub mod patch;
pub mod rollout;
pub mod routes;
pub mod stat;
pub mod tap;
pub mod top;
pub mod trace;
pub mod version;
pub mod workload;
pub mod yaml;

/// The injected containers, from the `ferry-inject` crate the injector webhook shares.
pub use ferry_inject::sidecar;
