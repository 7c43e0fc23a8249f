//! The coverage-guided fuzz targets in `fuzz/` (docs/security.md, "Fuzzing and abuse
//! tests"), each run for a bounded time from its committed seed corpus: a crash, a failed
//! property or a timeout in any target fails this test, naming the input libFuzzer saved.
//!
//! Needs `cargo fuzz` (`.ci/setup` installs it). Without it the test skips, saying so,
//! unless `FERRY_REQUIRE_ATTACK_TOOLS` is set (CI sets it), when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Every target in `fuzz/Cargo.toml`, each with a seed corpus in `fuzz/corpus/<target>`.
const TARGETS: &[&str] = &[
    "detect",
    "h1_head",
    "h1_chunked",
    "tls_sni",
    "der_cert",
    "workloads_file",
    "inject",
    "yaml_emitter",
];

/// Seconds each target runs, unless `FERRY_FUZZ_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 10;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn cargo_fuzz_installed() -> bool {
    let mut probe = Command::new("cargo");
    probe.args(["fuzz", "--version"]);
    ferry_testkit::process::attack_tool(&mut probe, "cargo-fuzz")
}

/// `cargo fuzz` with the flags every run uses (build and run must agree, or the run
/// rebuilds): no sanitizer (safe Rust; and `-s none` builds on the stable toolchain), 16
/// codegen units (the build parallelises; the default for release is 1), and the fuzz crate's own
/// target directory.
fn cargo_fuzz(sub: &str) -> Command {
    let dir = fuzz_dir();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir.join(".."))
        .args([
            "fuzz",
            sub,
            "-s",
            "none",
            "--codegen-units",
            "16",
            "--target-dir",
        ])
        .arg(dir.join("target"))
        // The workspace's target directory is for the workspace; the fuzz build is apart.
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn every_target_has_a_seed_corpus_and_is_run() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let declared: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "ferry-fuzz")
        .collect();
    assert_eq!(
        declared, TARGETS,
        "fuzz/Cargo.toml's targets are not the ones run here"
    );
    for t in TARGETS {
        let seeds = std::fs::read_dir(fuzz_dir().join("corpus").join(t))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{t}: {e}"))
            .count();
        assert!(seeds > 0, "fuzz/corpus/{t} has no seeds");
    }
}

#[test]
fn fuzz_targets_find_nothing_in_a_bounded_run() {
    if !cargo_fuzz_installed() {
        return;
    }
    let seconds: u64 = std::env::var("FERRY_FUZZ_SECONDS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("FERRY_FUZZ_SECONDS is a number of seconds")
        })
        .unwrap_or(DEFAULT_SECONDS);
    let started = Instant::now();
    let build = cargo_fuzz("build").output().expect("cargo fuzz runs");
    assert!(
        build.status.success(),
        "cargo fuzz build failed:\n{}",
        tail(&build.stderr)
    );
    eprintln!("fuzz targets built in {:.0?}", started.elapsed());
    let mut failures = Vec::new();
    for t in TARGETS {
        // New inputs go to a scratch corpus under the target directory; the seeds in
        // fuzz/corpus stay as committed.
        let scratch = fuzz_dir().join("target/corpus").join(t);
        std::fs::create_dir_all(&scratch).unwrap();
        let run = cargo_fuzz("run")
            .arg(t)
            .arg(&scratch)
            .arg(fuzz_dir().join("corpus").join(t))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-timeout=10",
                "-rss_limit_mb=2048",
            ])
            .output()
            .expect("cargo fuzz runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        let execs = stderr
            .lines()
            .rev()
            .find_map(|l| {
                l.strip_prefix("Done ")?
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "?".into());
        eprintln!(
            "{t}: {execs} runs in {seconds} s, {}",
            if run.status.success() {
                "nothing found"
            } else {
                "FAILED"
            }
        );
        if !run.status.success() {
            failures.push(format!("{t}:\n{}", tail(&run.stderr)));
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz targets failed (the inputs are in fuzz/artifacts/<target>/; `cargo fuzz run -s none <target> <input>` replays one):\n{}",
        failures.join("\n\n")
    );
}
