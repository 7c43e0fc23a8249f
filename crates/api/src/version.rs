//! One version story: the release every part is built from and the git revision, as
//! `--version`, `/metrics` build info, the proxy's `/state`, the control plane's health and
//! `ferry version` report them. All of Ferry's crates share the workspace's version.

/// The release (`0.1.0`), the workspace's package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision built (12 hex digits), or what `FERRY_GIT_SHA` said at build time, or
/// `unknown` when built without git.
pub const GIT_SHA: &str = env!("FERRY_GIT_SHA");

/// What every binary's `--version` prints after its name: `0.1.0 (git 0123456789ab)`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("FERRY_GIT_SHA"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_version_names_release_and_revision() {
        assert_eq!(LONG, format!("{VERSION} (git {GIT_SHA})"));
        assert!(!GIT_SHA.is_empty());
        assert!(VERSION.split('.').count() == 3, "{VERSION}");
    }
}
