//! One pod (a `Pod`, or a workload's pod template: anything with `metadata` and `spec`):
//! whether the proxy goes in, and the edits that put it in or take it out. Everything
//! Ferry adds carries a name it owns, so removing is exact and injecting twice (with
//! [`refresh`]) equals injecting once.

use std::fmt;

use ferry_api::k8s as names;
use serde::Serialize;

use crate::sidecar::{sampling_rate, PodOverrides, ProxyConfig, VOLUME_INIT_RUN};
use crate::tree::Tree;

/// Why a resource was left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its pods use the node's network; rules installed there would capture the node's traffic.
    HostNetwork,
    /// It, or its pod template, is annotated `ferry.io/inject: disabled`.
    Disabled,
    /// It does not describe pods.
    NotWorkload,
    /// It is a workload kind without a pod template.
    NoPodTemplate,
    /// (uninject) It carries no proxy.
    NotInjected,
    /// (webhook) It already carries a proxy, e.g. its manifest went through `ferry inject`.
    AlreadyInjected,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::HostNetwork => "hostNetwork",
            SkipReason::Disabled => "annotated ferry.io/inject: disabled",
            SkipReason::NotWorkload => "not a workload",
            SkipReason::NoPodTemplate => "no pod template",
            SkipReason::NotInjected => "no proxy to remove",
            SkipReason::AlreadyInjected => "already injected",
        })
    }
}

/// Errors editing a pod.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A typed object could not be turned into a tree node.
    #[error("serializing the injected {what}")]
    Serialize {
        /// What was being serialized (`proxy container`, ...).
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An annotation's value the proxy could not run with.
    #[error("annotation {key}: {value:?} is not {expected}")]
    Annotation {
        /// The annotation.
        key: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A field that must be a mapping or list holds something else.
    #[error("field {field} has an unexpected type")]
    Shape {
        /// The field, as a path from the pod (`spec.initContainers`).
        field: &'static str,
    },
}

/// Why the pod itself says to leave it alone (annotated `disabled`, or `hostNetwork`).
///
/// The workload's own annotation, when the pod is a template, is the caller's to check.
pub fn skip_reason<T: Tree>(pod: &T) -> Option<SkipReason> {
    if annotation(pod, names::ANNOTATION_INJECT) == Some("disabled") {
        Some(SkipReason::Disabled)
    } else if pod
        .get("spec")
        .and_then(|s| s.get("hostNetwork"))
        .is_some_and(T::is_true)
    {
        Some(SkipReason::HostNetwork)
    } else {
        None
    }
}

/// Whether the pod already runs a Ferry proxy (as a native sidecar or a container).
pub fn is_injected<T: Tree>(pod: &T) -> bool {
    let Some(spec) = pod.get("spec") else {
        return false;
    };
    ["initContainers", "containers"].iter().any(|field| {
        spec.get(field)
            .and_then(T::as_sequence)
            .is_some_and(|items| {
                items
                    .iter()
                    .any(|c| c.item_name() == Some(names::CONTAINER_PROXY))
            })
    })
}

/// The webhook's decision and edit: skips a pod that opted out, uses the node's network or
/// already has a proxy; otherwise adds the proxy. `created_by` is the
/// `ferry.io/created-by` annotation's value.
pub fn inject<T: Tree>(
    pod: &mut T,
    cfg: &ProxyConfig,
    created_by: &str,
) -> Result<Option<SkipReason>, PodError> {
    if let Some(why) = skip_reason(pod) {
        return Ok(Some(why));
    }
    if is_injected(pod) {
        return Ok(Some(SkipReason::AlreadyInjected));
    }
    add_proxy(pod, cfg, created_by)?;
    Ok(None)
}

/// `ferry inject`'s edit of a pod it decided to inject: removes any proxy already there,
/// then adds the one `cfg` describes, so re-injecting upgrades.
pub fn refresh<T: Tree>(pod: &mut T, cfg: &ProxyConfig, created_by: &str) -> Result<(), PodError> {
    remove_proxy(pod);
    add_proxy(pod, cfg, created_by)
}

fn annotation<'a, T: Tree>(pod: &'a T, key: &str) -> Option<&'a str> {
    pod.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

fn serialize<T: Tree>(what: &'static str, typed: &impl Serialize) -> Result<T, PodError> {
    T::from_typed(typed).map_err(|e| PodError::Serialize {
        what,
        source: Box::new(e),
    })
}

/// Adds the proxy's annotations, label, init container, proxy container and volumes.
pub fn add_proxy<T: Tree>(
    pod: &mut T,
    cfg: &ProxyConfig,
    created_by: &str,
) -> Result<(), PodError> {
    let shape = |field| PodError::Shape { field };
    let meta = pod
        .child_mapping("metadata")
        .ok_or_else(|| shape("metadata"))?;
    let overrides = overrides(meta)?;
    let annotations = meta
        .child_mapping("annotations")
        .ok_or_else(|| shape("metadata.annotations"))?;
    annotations.insert(names::ANNOTATION_PROXY_VERSION, T::string(&cfg.version));
    annotations.insert(names::ANNOTATION_CREATED_BY, T::string(created_by));
    let labels = meta
        .child_mapping("labels")
        .ok_or_else(|| shape("metadata.labels"))?;
    labels.insert(
        names::LABEL_CONTROL_PLANE_NS,
        T::string(&cfg.control_namespace),
    );

    let init: T = serialize("init container", &cfg.init_container(&overrides))?;
    let proxy: T = serialize("proxy container", &cfg.proxy_container(&overrides))?;
    let volumes = cfg
        .volumes()
        .iter()
        .map(|v| serialize("volume", v))
        .collect::<Result<Vec<T>, _>>()?;

    let spec = pod
        .get_mut("spec")
        .filter(|s| s.is_mapping())
        .ok_or_else(|| shape("spec"))?;
    let inits = spec
        .child_sequence("initContainers")
        .ok_or_else(|| shape("spec.initContainers"))?;
    inits.insert(0, init);
    if cfg.native_sidecar {
        // Right after the rules: the user's own init containers then run meshed.
        inits.insert(1, proxy);
    } else {
        spec.child_sequence("containers")
            .ok_or_else(|| shape("spec.containers"))?
            .push(proxy);
    }
    spec.child_sequence("volumes")
        .ok_or_else(|| shape("spec.volumes"))?
        .extend(volumes);
    Ok(())
}

/// The pod's own additions to the skip lists, from its annotations.
fn overrides<T: Tree>(meta: &T) -> Result<PodOverrides, PodError> {
    let list = |key: &str| -> Vec<String> {
        meta.get("annotations")
            .and_then(|a| a.get(key))
            .and_then(T::as_str)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let text = |key: &str| {
        meta.get("annotations")
            .and_then(|a| a.get(key))
            .and_then(T::as_str)
            .map(str::to_string)
    };
    let trace_sampling = text(names::ANNOTATION_TRACE_SAMPLING);
    if let Some(value) = trace_sampling
        .as_ref()
        .filter(|s| sampling_rate(s).is_err())
    {
        return Err(PodError::Annotation {
            key: names::ANNOTATION_TRACE_SAMPLING,
            value: value.clone(),
            expected: "a sampling rate from 0.0 to 1.0",
        });
    }
    Ok(PodOverrides {
        skip_inbound_ports: list(names::ANNOTATION_SKIP_INBOUND_PORTS),
        skip_outbound_ports: list(names::ANNOTATION_SKIP_OUTBOUND_PORTS),
        skip_subnets: list(names::ANNOTATION_SKIP_SUBNETS),
        trace_collector: text(names::ANNOTATION_TRACE_COLLECTOR),
        trace_sampling,
        // A value that names no policy is left out: the proxy would refuse to start.
        default_inbound_policy: [
            names::ANNOTATION_DEFAULT_INBOUND_POLICY,
            names::ANNOTATION_LINKERD_DEFAULT_INBOUND_POLICY,
        ]
        .iter()
        .find_map(|key| meta.get("annotations")?.get(key).and_then(T::as_str))
        .map(str::trim)
        .filter(|p| names::DEFAULT_INBOUND_POLICIES.contains(p))
        .map(str::to_string),
    })
}

/// Removes everything [`add_proxy`] adds; returns whether there was anything to remove.
pub fn remove_proxy<T: Tree>(pod: &mut T) -> bool {
    let mut removed = false;
    if let Some(spec) = pod.get_mut("spec").filter(|s| s.is_mapping()) {
        for (field, owned) in [
            (
                "initContainers",
                &[names::CONTAINER_INIT, names::CONTAINER_PROXY][..],
            ),
            ("containers", &[names::CONTAINER_PROXY][..]),
            (
                "volumes",
                &[names::VOLUME_IDENTITY_TOKEN, VOLUME_INIT_RUN][..],
            ),
        ] {
            if let Some(items) = spec.get_mut(field).and_then(T::as_sequence_mut) {
                let before = items.len();
                items.retain(|item| !item.item_name().is_some_and(|n| owned.contains(&n)));
                removed |= items.len() != before;
            }
        }
    }
    if let Some(meta) = pod.get_mut("metadata").filter(|m| m.is_mapping()) {
        for (field, keys) in [
            (
                "annotations",
                &[
                    names::ANNOTATION_PROXY_VERSION,
                    names::ANNOTATION_CREATED_BY,
                ][..],
            ),
            ("labels", &[names::LABEL_CONTROL_PLANE_NS][..]),
        ] {
            if let Some(map) = meta.get_mut(field) {
                for key in keys {
                    removed |= map.remove(key);
                }
            }
        }
    }
    if removed {
        prune(pod);
    }
    removed
}

/// Drops the lists and maps that removing the proxy left empty: injection created them,
/// so the input did not have them.
fn prune<T: Tree>(pod: &mut T) {
    if let Some(spec) = pod.get_mut("spec") {
        spec.prune_empty("initContainers");
        spec.prune_empty("volumes");
    }
    if let Some(meta) = pod.get_mut("metadata") {
        meta.prune_empty("annotations");
        meta.prune_empty("labels");
    }
    pod.prune_empty("metadata");
}

#[cfg(test)]
mod tests {
    use ferry_api::env;
    use serde_json::{json, Value};

    use super::*;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]},
        })
    }

    #[test]
    fn inject_adds_the_proxy_and_remove_takes_exactly_it_away() {
        let cfg = ProxyConfig::default();
        let mut injected = pod();
        assert_eq!(inject(&mut injected, &cfg, "test").unwrap(), None);
        let inits = injected["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(inits[0]["name"], names::CONTAINER_INIT);
        assert_eq!(inits[1]["name"], names::CONTAINER_PROXY);
        assert_eq!(inits[1]["restartPolicy"], "Always");
        assert_eq!(injected["spec"]["volumes"].as_array().unwrap().len(), 2);
        assert_eq!(
            injected["metadata"]["annotations"][names::ANNOTATION_CREATED_BY],
            "test"
        );
        assert_eq!(
            injected["metadata"]["labels"][names::LABEL_CONTROL_PLANE_NS],
            cfg.control_namespace
        );
        assert!(is_injected(&injected));

        let mut removed = injected.clone();
        assert!(remove_proxy(&mut removed));
        assert_eq!(removed, pod());
        assert!(!remove_proxy(&mut removed));
    }

    /// The proxy's trace env: the control plane's receiver at the injector's rate by
    /// default, the pod's annotations over that, none for an empty collector, and an
    /// error naming the annotation for a rate the proxy could not run with.
    #[test]
    fn tracing_goes_to_the_control_plane_unless_the_pod_says_otherwise() {
        let trace_env = |pod: &Value| -> Vec<(String, String)> {
            pod["spec"]["initContainers"][1]["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["name"].as_str().unwrap().starts_with("FERRY_PROXY_TRACE"))
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap().to_string();
                    (s("name"), s("value"))
                })
                .collect()
        };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let cfg = ProxyConfig {
            trace_sampling: "0.01".into(),
            ..ProxyConfig::default()
        };
        let mut plain = pod();
        inject(&mut plain, &cfg, "test").unwrap();
        assert_eq!(
            trace_env(&plain),
            [
                pair(
                    env::PROXY_TRACE_COLLECTOR,
                    "ferry-control.ferry.svc.cluster.local:4317"
                ),
                pair(env::PROXY_TRACE_SAMPLING, "0.01"),
            ]
        );

        let annotated = |annotations: Value| {
            let mut p = pod();
            p["metadata"]["annotations"] = annotations;
            p
        };
        let mut own = annotated(json!({
            names::ANNOTATION_TRACE_COLLECTOR: "otel.observability:4317",
            names::ANNOTATION_TRACE_SAMPLING: "1",
        }));
        inject(&mut own, &cfg, "test").unwrap();
        assert_eq!(
            trace_env(&own),
            [
                pair(env::PROXY_TRACE_COLLECTOR, "otel.observability:4317"),
                pair(env::PROXY_TRACE_SAMPLING, "1"),
            ]
        );

        let mut off = annotated(json!({names::ANNOTATION_TRACE_COLLECTOR: ""}));
        inject(&mut off, &cfg, "test").unwrap();
        assert!(trace_env(&off).is_empty());
        let mut off_everywhere = pod();
        let no_tracing = ProxyConfig {
            trace_collector: Some(String::new()),
            ..cfg.clone()
        };
        inject(&mut off_everywhere, &no_tracing, "test").unwrap();
        assert!(trace_env(&off_everywhere).is_empty());

        let mut bad = annotated(json!({names::ANNOTATION_TRACE_SAMPLING: "10%"}));
        let err = inject(&mut bad, &cfg, "test").unwrap_err().to_string();
        assert_eq!(
            err,
            "annotation config.ferry.io/trace-sampling: \"10%\" is not a sampling rate from 0.0 to 1.0"
        );
    }

    #[test]
    fn refresh_twice_equals_once_and_inject_leaves_injected_pods_alone() {
        let cfg = ProxyConfig::default();
        let mut once = pod();
        refresh(&mut once, &cfg, "test").unwrap();
        let mut twice = once.clone();
        refresh(&mut twice, &cfg, "test").unwrap();
        assert_eq!(once, twice);
        let mut again = once.clone();
        assert_eq!(
            inject(&mut again, &cfg, "test").unwrap(),
            Some(SkipReason::AlreadyInjected)
        );
        assert_eq!(again, once);

        let legacy = ProxyConfig {
            native_sidecar: false,
            ..ProxyConfig::default()
        };
        let mut sidecar = pod();
        inject(&mut sidecar, &legacy, "test").unwrap();
        assert_eq!(
            sidecar["spec"]["containers"][1]["name"],
            names::CONTAINER_PROXY
        );
        assert!(is_injected(&sidecar));
    }

    #[test]
    fn opted_out_and_host_network_pods_are_skipped_untouched() {
        let cfg = ProxyConfig::default();
        let mut disabled = pod();
        disabled["metadata"]["annotations"] = json!({(names::ANNOTATION_INJECT): "disabled"});
        let before = disabled.clone();
        assert_eq!(
            inject(&mut disabled, &cfg, "t").unwrap(),
            Some(SkipReason::Disabled)
        );
        assert_eq!(disabled, before);
        for spelling in [json!(true), json!("yes"), json!("On")] {
            let mut host = pod();
            host["spec"]["hostNetwork"] = spelling.clone();
            assert_eq!(
                inject(&mut host, &cfg, "t").unwrap(),
                Some(SkipReason::HostNetwork),
                "{spelling}"
            );
        }
    }

    #[test]
    fn per_pod_skip_annotations_reach_the_init_step() {
        let mut annotated = pod();
        annotated["metadata"]["annotations"] =
            json!({(names::ANNOTATION_SKIP_OUTBOUND_PORTS): "5432, 6379"});
        inject(&mut annotated, &ProxyConfig::default(), "t").unwrap();
        let args = annotated["spec"]["initContainers"][0]["args"]
            .as_array()
            .unwrap();
        let at = args
            .iter()
            .position(|a| a == "--outbound-ports-to-ignore")
            .expect("the flag is passed");
        assert_eq!(args[at + 1], "5432,6379");
    }

    fn proxy_env(pod: &Value, name: &str) -> Option<String> {
        let containers = pod["spec"]["initContainers"].as_array()?;
        let proxy = containers
            .iter()
            .find(|c| c["name"] == names::CONTAINER_PROXY)?;
        let env = proxy["env"].as_array()?;
        let var = env.iter().find(|e| e["name"] == name)?;
        var["value"].as_str().map(str::to_string)
    }

    #[test]
    fn the_default_inbound_policy_comes_from_the_pod_then_the_config() {
        let key = ferry_api::env::PROXY_DEFAULT_INBOUND_POLICY;
        let mut plain = pod();
        inject(&mut plain, &ProxyConfig::default(), "t").unwrap();
        assert_eq!(
            proxy_env(&plain, key),
            None,
            "unset: the proxy's own default"
        );
        let cluster = ProxyConfig {
            default_inbound_policy: Some("deny".into()),
            ..ProxyConfig::default()
        };
        let mut plain = pod();
        inject(&mut plain, &cluster, "t").unwrap();
        assert_eq!(proxy_env(&plain, key).as_deref(), Some("deny"));
        let mut annotated = pod();
        annotated["metadata"]["annotations"] =
            json!({(names::ANNOTATION_LINKERD_DEFAULT_INBOUND_POLICY): "audit"});
        inject(&mut annotated, &cluster, "t").unwrap();
        assert_eq!(proxy_env(&annotated, key).as_deref(), Some("audit"));
        let mut wrong = pod();
        wrong["metadata"]["annotations"] =
            json!({(names::ANNOTATION_DEFAULT_INBOUND_POLICY): "allow-all"});
        inject(&mut wrong, &cluster, "t").unwrap();
        assert_eq!(
            proxy_env(&wrong, key).as_deref(),
            Some("deny"),
            "an unknown name is ignored"
        );
    }

    #[test]
    fn a_field_of_the_wrong_shape_is_an_error_naming_it() {
        let mut broken = pod();
        broken["spec"]["initContainers"] = json!("oops");
        let error = inject(&mut broken, &ProxyConfig::default(), "t").unwrap_err();
        assert!(matches!(
            error,
            PodError::Shape {
                field: "spec.initContainers"
            }
        ));
    }
}
