//! Container image names: the registry, repository names and tag that `ferry install`,
//! `ferry inject`, the Helm chart and `scripts/build-images.sh` agree on (see
//! `docs/images.md`).

/// The default registry prefix: images are `ferrymesh/ferry-proxy:<version>`, which
/// container runtimes read as `docker.io/ferrymesh/ferry-proxy:<version>`.
pub const DEFAULT_REGISTRY: &str = "ferrymesh";
/// The proxy's image (the sidecar and the init step), without registry.
pub const PROXY: &str = "ferry-proxy";
/// The control plane's image, without registry.
pub const CONTROL: &str = "ferry-control";
/// The demo app's image (every emojivoto workload, chosen by arguments), without registry.
pub const DEMO: &str = "ferry-demo";
/// The proxy's image at the default registry, without tag.
pub const DEFAULT_PROXY_IMAGE: &str = "ferrymesh/ferry-proxy";
/// The control plane's image at the default registry, without tag.
pub const DEFAULT_CONTROL_IMAGE: &str = "ferrymesh/ferry-control";
/// The demo's image at the default registry, without tag.
pub const DEFAULT_DEMO_IMAGE: &str = "ferrymesh/ferry-demo";
/// Every image the build script writes, in build order.
pub const ALL: [&str; 3] = [PROXY, CONTROL, DEMO];
/// The `org.opencontainers.image.source` label of every image.
pub const SOURCE: &str = "https://github.com/ferrymesh/ferry";
/// The environment variable `ferry install`, `ferry inject` and the build script read the
/// registry from (the twin of `--registry`).
pub const REGISTRY_ENV: &str = "FERRY_REGISTRY";

/// `registry/name` (no tag); a trailing `/` on the registry is ignored.
pub fn repository(registry: &str, name: &str) -> String {
    let registry = registry.trim_end_matches('/');
    if registry.is_empty() {
        name.to_string()
    } else {
        format!("{registry}/{name}")
    }
}

/// The fully qualified form container runtimes resolve `reference` to: a first component
/// without `.` or `:` that is not `localhost` is a Docker Hub path (`docker.io/` is added;
/// a single component also gets `library/`). The build script names its archives this way.
pub fn normalize(reference: &str) -> String {
    let (first, _) = reference.split_once('/').unwrap_or(("", reference));
    let has_domain = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        reference.to_string()
    } else if reference.contains('/') {
        format!("docker.io/{reference}")
    } else {
        format!("docker.io/library/{reference}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_default_registry_s() {
        assert_eq!(DEFAULT_PROXY_IMAGE, repository(DEFAULT_REGISTRY, PROXY));
        assert_eq!(DEFAULT_CONTROL_IMAGE, repository(DEFAULT_REGISTRY, CONTROL));
        assert_eq!(DEFAULT_DEMO_IMAGE, repository(DEFAULT_REGISTRY, DEMO));
    }

    #[test]
    fn repository_joins_registry_and_name() {
        assert_eq!(repository(DEFAULT_REGISTRY, PROXY), "ferrymesh/ferry-proxy");
        assert_eq!(
            repository("localhost:5001/", CONTROL),
            "localhost:5001/ferry-control"
        );
        assert_eq!(repository("", DEMO), "ferry-demo");
    }

    #[test]
    fn normalize_follows_the_docker_rules() {
        assert_eq!(
            normalize("ferrymesh/ferry-proxy:0.1.0"),
            "docker.io/ferrymesh/ferry-proxy:0.1.0"
        );
        assert_eq!(
            normalize("ferry-proxy:1"),
            "docker.io/library/ferry-proxy:1"
        );
        assert_eq!(
            normalize("localhost:5001/ferry-proxy:1"),
            "localhost:5001/ferry-proxy:1"
        );
        assert_eq!(normalize("localhost/ferry/x:1"), "localhost/ferry/x:1");
        assert_eq!(
            normalize("ghcr.io/me/ferry-proxy:1"),
            "ghcr.io/me/ferry-proxy:1"
        );
    }
}
