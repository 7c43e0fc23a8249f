//! `ferry inject` and `ferry uninject`: read YAML streams, add or remove the proxy in every
//! pod template, write the stream to stdout and one line per resource to stderr.
//!
//! Every input is read and transformed before anything is written, so a malformed
//! document produces an error and no partial output.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use ferry_api::{images, k8s as names};
use serde_yaml_ng::Value;

use crate::patch::{self, PatchError, Report};
use crate::sidecar::{ProxyConfig, VERSION};
use crate::yaml::{self, YamlError};

/// Flags of `ferry inject`.
#[derive(Args, Debug, Clone)]
pub struct InjectArgs {
    /// Files or directories of YAML, or `-` for stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Registry (and path) of the proxy image: `<registry>/ferry-proxy:<tag>`, as
    /// `scripts/build-images.sh` names it.
    #[arg(long, env = images::REGISTRY_ENV, default_value = images::DEFAULT_REGISTRY)]
    pub registry: String,
    /// Proxy image, without tag (default: from `--registry`).
    #[arg(long)]
    pub proxy_image: Option<String>,
    /// Proxy version: the image tag and the `ferry.io/proxy-version` annotation.
    #[arg(long, visible_alias = "tag", default_value = VERSION)]
    pub proxy_version: String,
    /// Namespace of the control plane the proxies talk to.
    #[arg(long, default_value = names::CONTROL_NAMESPACE)]
    pub control_namespace: String,
    /// Identity trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// DNS suffix of the cluster's services (`<svc>.<ns>.svc.<cluster domain>`).
    #[arg(long, default_value = ferry_api::destination::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Put the proxy in `containers` instead of running it as a native sidecar
    /// (for clusters older than Kubernetes 1.29).
    #[arg(long)]
    pub no_native_sidecar: bool,
    /// The init step's firewall: `iptables-nft`, `iptables-legacy` or `auto`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "iptables-nft", "iptables-legacy"])]
    pub firewall_bin_path: String,
    /// Inbound ports not redirected to the proxy (comma-separated), for every pod.
    #[arg(long, value_delimiter = ',')]
    pub skip_inbound_ports: Vec<String>,
    /// The proxies' default inbound policy (`FERRY_PROXY_DEFAULT_INBOUND_POLICY`) for pods
    /// whose `config.ferry.io/default-inbound-policy` annotation does not name one.
    #[arg(long, value_parser = names::DEFAULT_INBOUND_POLICIES)]
    pub default_inbound_policy: Option<String>,
    /// Outbound ports not redirected to the proxy (comma-separated), for every pod.
    #[arg(long, value_delimiter = ',')]
    pub skip_outbound_ports: Vec<String>,
    /// CIDRs whose traffic is not redirected (comma-separated), for every pod.
    #[arg(long, value_delimiter = ',')]
    pub skip_subnets: Vec<String>,
    /// OTLP/gRPC collector the proxies export spans to (default: the control plane's own
    /// receiver, `ferry-control.<namespace>.svc.<cluster domain>:4317`; empty: no tracing).
    /// A pod's `config.ferry.io/trace-collector` annotation overrides it.
    #[arg(long)]
    pub trace_collector: Option<String>,
    /// The rate (0.0–1.0) at which the proxies trace requests that arrive without a trace
    /// context. A pod's `config.ferry.io/trace-sampling` annotation overrides it.
    #[arg(long, default_value = "0", value_parser = ferry_inject::sidecar::sampling_rate)]
    pub trace_sampling: String,
    /// PEM file of the identity trust anchors, handed to every proxy.
    #[arg(long)]
    pub identity_trust_anchors_file: Option<std::path::PathBuf>,
}

/// Flags of `ferry uninject`.
#[derive(Args, Debug, Clone)]
pub struct UninjectArgs {
    /// Files or directories of YAML, or `-` for stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
}

/// Errors of inject and uninject.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// Reading or parsing an input failed.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// Building the injected objects failed.
    #[error(transparent)]
    Patch(#[from] PatchError),
}

impl InjectArgs {
    /// The proxy configuration these flags describe.
    pub fn proxy_config(&self) -> anyhow::Result<ProxyConfig> {
        let trust_anchors_pem = match &self.identity_trust_anchors_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            None => None,
        };
        Ok(ProxyConfig {
            image: self
                .proxy_image
                .clone()
                .unwrap_or_else(|| images::repository(&self.registry, images::PROXY)),
            version: self.proxy_version.clone(),
            control_namespace: self.control_namespace.clone(),
            trust_domain: self.trust_domain.clone(),
            cluster_domain: self.cluster_domain.clone(),
            native_sidecar: !self.no_native_sidecar,
            firewall: self.firewall_bin_path.clone(),
            skip_inbound_ports: self.skip_inbound_ports.clone(),
            skip_outbound_ports: self.skip_outbound_ports.clone(),
            skip_subnets: self.skip_subnets.clone(),
            trust_anchors_pem,
            trace_collector: self.trace_collector.clone(),
            trace_sampling: self.trace_sampling.clone(),
            default_inbound_policy: self.default_inbound_policy.clone(),
            namespace_inbound_policies: Default::default(),
        })
    }
}

/// Reads every input into documents, failing before any output on a malformed one.
fn read_all(inputs: &[String]) -> Result<Vec<Value>, YamlError> {
    let mut docs = Vec::new();
    for input in inputs {
        for source in yaml::sources(input)? {
            let text = yaml::read_source(&source)?;
            docs.extend(yaml::parse_stream(&source.to_string(), &text)?);
        }
    }
    Ok(docs)
}

/// Injects the proxy into a parsed stream; returns the new stream and the reports.
pub fn inject_docs(
    mut docs: Vec<Value>,
    cfg: &ProxyConfig,
) -> Result<(Vec<Value>, Vec<Report>), InjectError> {
    let mut reports = Vec::new();
    for doc in &mut docs {
        patch::inject(doc, cfg, &mut reports)?;
    }
    Ok((docs, reports))
}

/// Removes the proxy from a parsed stream; returns the new stream and the reports.
pub fn uninject_docs(mut docs: Vec<Value>) -> (Vec<Value>, Vec<Report>) {
    let mut reports = Vec::new();
    for doc in &mut docs {
        patch::uninject(doc, &mut reports);
    }
    (docs, reports)
}

/// Injects text, as the command does: the output stream and the report lines.
pub fn inject_text(
    source_name: &str,
    text: &str,
    cfg: &ProxyConfig,
) -> Result<(String, Vec<Report>), InjectError> {
    let docs = yaml::parse_stream(source_name, text)?;
    let (docs, reports) = inject_docs(docs, cfg)?;
    Ok((yaml::write_stream(&docs), reports))
}

/// Uninjects text, as the command does: the output stream and the report lines.
pub fn uninject_text(source_name: &str, text: &str) -> Result<(String, Vec<Report>), InjectError> {
    let docs = yaml::parse_stream(source_name, text)?;
    let (docs, reports) = uninject_docs(docs);
    Ok((yaml::write_stream(&docs), reports))
}

fn emit(stream: &str, reports: &[Report]) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    for report in reports {
        writeln!(err, "{report}")?;
    }
    std::io::stdout().lock().write_all(stream.as_bytes())?;
    Ok(())
}

/// Runs `ferry inject`.
pub fn run_inject(args: &InjectArgs) -> anyhow::Result<()> {
    let cfg = args.proxy_config()?;
    let docs = read_all(&args.inputs)?;
    let (docs, reports) = inject_docs(docs, &cfg)?;
    emit(&yaml::write_stream(&docs), &reports)
}

/// Runs `ferry uninject`.
pub fn run_uninject(args: &UninjectArgs) -> anyhow::Result<()> {
    let docs = read_all(&args.inputs)?;
    let (docs, reports) = uninject_docs(docs);
    emit(&yaml::write_stream(&docs), &reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod whose `initContainers` is null or empty and followed by other fields is
    /// injected the same way again: the fuzzer's find (the list came back in another place
    /// the second time, since removing the proxy prunes the list it emptied).
    #[test]
    fn a_null_or_empty_list_followed_by_other_fields_injects_idempotently() {
        let cfg = ProxyConfig::default();
        for list in ["null", "[]", ""] {
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shop\nspec:\n  initContainers: {list}\n  \
                 hostname: shop\n  containers:\n  - name: app\n    image: shop:1\n"
            );
            let (once, _) = inject_text("pod", &pod, &cfg).unwrap();
            let (twice, _) = inject_text("injected", &once, &cfg).unwrap();
            assert_eq!(once, twice, "initContainers: {list:?}");
        }
    }
}
