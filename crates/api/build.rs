//! Embeds the git revision the binaries are built from as `FERRY_GIT_SHA`, read by
//! `ferry_api::version`. An explicit `FERRY_GIT_SHA` in the build environment wins (image
//! builds from a source tarball pass it); without git it is `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Reruns this script when HEAD moves: HEAD itself, the branch it points at, packed refs.
fn watch_head() {
    let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) else {
        return;
    };
    let head = Path::new(&git_dir).join("HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed={}", head.display());
    }
    let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .unwrap_or_else(|| git_dir.clone());
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let reference = Path::new(&common).join(branch);
        if reference.exists() {
            println!("cargo:rerun-if-changed={}", reference.display());
        }
    }
    let packed = Path::new(&common).join("packed-refs");
    if packed.exists() {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=FERRY_GIT_SHA");
    let sha = match std::env::var("FERRY_GIT_SHA") {
        Ok(sha) if !sha.trim().is_empty() => sha.trim().to_string(),
        _ => {
            watch_head();
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=FERRY_GIT_SHA={sha}");
}
