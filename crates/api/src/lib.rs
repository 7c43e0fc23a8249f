//! The contract Ferry's parts share: default ports, `FERRY_*` environment names, header
//! names, metric names and the reasons a proxy gives for errors it makes.
//!
//! No IO and no async here: everything is a `const` or a plain type, written once so that
//! the proxy, the control plane, the CLI and the dashboard cannot drift apart.
//!
//! # Layout
//! - [`ports`]: default ports of every listener.
//! - [`env`]: environment variable names, each the twin of a command-line flag.
//! - [`headers`]: HTTP header names the mesh reads or writes.
//! - [`k8s`]: Kubernetes annotations, labels and object names the parts agree on.
//! - [`metrics`]: Prometheus metric and label names the proxy exports.
//! - [`ProxyErrorReason`]: why the proxy, not the application, answered a request.
//! - [`identity`]: workload identity names (DNS-like and SPIFFE).
//! - [`destination`]: cluster domain and endpoint metric label keys of the destination API.
//! - [`control_api`]: paths and JSON bodies of the control plane's public API.
//! - [`overview`]: the control plane's health in detail and its proxies, for the dashboard.
//! - [`check`]: the local checks' judgements, shared by `ferry check` and the dashboard.
//! - [`resource`]: kubectl-style resource names (`deploy/web`), parsed once for every part.
//! - [`rollout`]: the `Rollout` resource and the rollouts routes of the public API.
//! - [`tap`]: the tap route of the public API and its JSON event.
//! - [`trace`]: the traces routes of the public API and the span contract's attribute names.
//! - [`stat`]: the metrics API's paths and JSON bodies (stat, edges, history, Prometheus SD).
//! - [`cause`]: how an error chain is shown to a user (its innermost cause).
//! - [`version`]: the release and git revision every binary reports.
//! - [`images`]: container image names, registry and labels.
//! - `ca` (feature `ca`): the identity CA's certificate profiles and their generation.

pub mod env;
pub mod headers;
pub mod k8s;
pub mod metrics;
pub mod ports;
mod reason;
pub mod stat;

pub mod authz;
#[cfg(feature = "ca")]
pub mod ca;
pub mod cause;
pub mod check;
pub mod control_api;
pub mod destination;
pub mod identity;
pub mod images;
pub mod overview;
#[cfg(feature = "policy")]
pub mod policy;
pub mod resource;
pub mod rollout;
pub mod tap;
pub mod trace;
pub mod version;

pub use reason::{AuthzFailure, ProxyErrorReason, TlsFailure};
