//! The official Rust SDK (dagger-sdk 0.21.8, from crates.io) as a real client of `dagger-rs`: the program in
//! `tests/rust-sdk/` (a crate of its own, outside the workspace, so the main build stays lean) runs under
//! `dagger-rs run` a quickstart-like pipeline and the common API: directories, files, the host and export,
//! container execs with env, mounts and secrets, exec errors, and `load_directory_from_id` /
//! `load_container_from_id` (the legacy `loadFooFromID` fields every official 0.21 SDK sends), and the
//! behaviours that follow the real engine (gitignore, directory modes, host file times, redirects through
//! mounts, supplementary groups, `expand`, mounted files and secrets, cache volume defaults, mount stubs,
//! Dagger's error wording, `publish`'s tag and digest), against a registry on loopback holding busybox.
//!
//! The test builds the program with `cargo build --offline --locked` into `target/rust-sdk` (about a minute and
//! a half the first time). `scripts/rust-sdk.sh --setup` fetches its pinned dependencies (`Cargo.lock`) and
//! builds it; `scripts/test-all.sh` runs that first. Only when the dependencies are not available offline is the
//! test skipped, saying how to fetch them; any other build failure fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::registry::{LocalRegistry, push_busybox};

const BIN: &str = env!("CARGO_BIN_EXE_dagger-rs");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds dagger-cli")
        .to_owned()
}

/// Builds the client offline; `None` (after saying why) when its dependencies have not been fetched.
fn build_client() -> Option<PathBuf> {
    let root = workspace();
    let target = root.join("target/rust-sdk");
    let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    // The variables cargo sets for this test (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …) are not the client's:
    // some build scripts track them, and inheriting them would rebuild what `scripts/rust-sdk.sh --setup` built.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_") && name != "CARGO_HOME" && !name.starts_with("CARGO_TERM_") {
            cargo.env_remove(&*name);
        }
    }
    let out = cargo
        .args(["build", "--offline", "--locked", "--manifest-path"])
        .arg(root.join("tests/rust-sdk/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("--offline") || stderr.contains("offline mode") {
            eprintln!(
                "skipped: the Rust SDK client's dependencies are not available offline; fetch them with \
                 `scripts/rust-sdk.sh --setup` (needs crates.io once), then rerun\n{stderr}"
            );
            return None;
        }
        panic!("building tests/rust-sdk failed ({}):\n{stderr}", out.status);
    }
    Some(target.join("debug/rust-sdk-client"))
}

fn report(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_official_rust_sdk_runs_its_quickstart_and_the_common_api_under_dagger_rs_run() {
    let Some(client) = build_client() else {
        return;
    };
    let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(push_busybox(&registry, "busybox:latest"));
    let cache = tempfile::tempdir().expect("cache");
    let out = Command::new(BIN)
        .arg("run")
        .arg(&client)
        .env("DAGGER_RS_CACHE_DIR", cache.path())
        .env("DAGGER_RS_PROGRESS", "plain")
        .env("DRS_TEST_REGISTRY", registry.host())
        .env_remove("DAGGER_SESSION_PORT")
        .env_remove("DAGGER_SESSION_TOKEN")
        .env_remove("_EXPERIMENTAL_DAGGER_CLI_BIN")
        .output()
        .expect("dagger-rs runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client failed ({}):\n{}",
        out.status,
        report(&out)
    );
    assert!(!stdout.contains("FAIL"), "{}", report(&out));
    for check in [
        "directories",
        "files",
        "paths like Dagger",
        "host directory and export",
        "gitignore",
        "modes, times and wording",
        "quickstart",
        "container exec and env",
        "container paths like Dagger",
        "secrets",
        "exec errors",
        "load by ID",
        "containers like Dagger",
    ] {
        assert!(
            stdout.lines().any(|l| l == format!("ok   {check}")),
            "missing `ok   {check}`:\n{}",
            report(&out)
        );
    }
}
