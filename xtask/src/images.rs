//! `images`: a long-running loopback registry with the offline images, for working on pipelines offline.
//!
//! Starts Debian's `docker-registry` on `127.0.0.1:5000` (or reuses whatever registry already answers there),
//! with its storage under `$DAGGER_RS_CACHE_DIR/registry` (default `~/.cache/dagger-rs/registry`), and pushes
//! busybox (`busybox:latest`, `library/busybox:latest`) and, built with `mmdebstrap`, `library/debian:
//! bookworm-slim` and `library/rust:1-slim`. Images already there are left alone, so running it again is
//! cheap. The registry keeps running after the command ends; stop it with the printed `kill` command. The
//! work is done by [`testkit::images::ensure`], which the integration tests call too.

use std::time::Instant;

pub use testkit::images::{ADDR, MIRRORS};

/// Starts (or reuses) the registry and pushes the images that are missing; returns the summary to print.
pub fn run() -> Result<String, String> {
    let started = Instant::now();
    let lines = testkit::images::ensure()?;
    Ok(format!(
        "images on {ADDR} (ready in {:.1} s):\n{}\nto pull Docker Hub names from it: DAGGER_RS_REGISTRY_MIRRORS={MIRRORS}",
        started.elapsed().as_secs_f64(),
        lines.join("\n")
    ))
}
