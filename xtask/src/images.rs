//! `images`: a long-running loopback registry with the test images, for working on pipelines offline.
//!
//! Starts Debian's `docker-registry` on `127.0.0.1:5000` (or reuses whatever registry already answers there),
//! with its storage under `$DAGGER_RS_CACHE_DIR/registry` (default `~/.cache/dagger-rs/registry`), and pushes
//! the busybox image built from the host's `/bin/busybox` as `busybox:latest` and `library/busybox:latest`
//! (the latter makes it a `docker.io` mirror). Images already there are left alone, so running it again is
//! cheap. The registry keeps running after the command ends; stop it with the printed `kill` command.

use std::path::Path;

use dagger_engine::oci::{OciError, Reference, RegistryClient, RegistryConfig};
use dagger_engine::store::Store;
use tests::registry::{answers_v2, cache_dir, push_busybox_to, spawn_registry, wait_ready};

/// Where the registry listens.
pub const ADDR: &str = "127.0.0.1:5000";
/// The images pushed, as `repository:tag`.
pub const IMAGES: &[&str] = &["busybox:latest", "library/busybox:latest"];

/// Starts (or reuses) the registry and pushes the images that are missing; returns the summary to print.
pub fn run() -> Result<String, String> {
    let storage = cache_dir().join("registry");
    ensure_registry(&storage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let lines = runtime.block_on(push_missing(&storage))?;
    Ok(format!(
        "images on {ADDR}:\n{}\nto pull Docker Hub names from it: DAGGER_RS_REGISTRY_MIRRORS=docker.io=http://{ADDR}",
        lines.join("\n")
    ))
}

fn ensure_registry(storage: &Path) -> Result<(), String> {
    if answers_v2(ADDR) {
        println!("registry: reusing the registry that answers on {ADDR}");
        return Ok(());
    }
    println!(
        "registry: starting docker-registry on {ADDR} (storage {})",
        storage.display()
    );
    let mut child = spawn_registry(storage, ADDR, true)?;
    let log = storage.join("registry.log");
    wait_ready(ADDR, Some(&mut child), &log)?;
    println!(
        "registry: running as pid {} (log {}); stop it with `kill {}`",
        child.id(),
        log.display(),
        child.id()
    );
    Ok(())
}

async fn push_missing(storage: &Path) -> Result<Vec<String>, String> {
    let client = RegistryClient::new(RegistryConfig::default()).map_err(|e| e.to_string())?;
    let store_dir = storage.join("fixture-store");
    let store = Store::open(&store_dir).map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    for name in IMAGES {
        let reference = Reference::parse(&format!("{ADDR}/{name}")).map_err(|e| e.to_string())?;
        let pinned = match client.resolve(&reference, None).await {
            Ok(digest) => {
                println!("{name}: already there");
                reference.pinned(&digest)
            }
            Err(OciError::NotFound { .. }) => {
                println!("{name}: building from /bin/busybox and pushing");
                push_busybox_to(ADDR, name, &store).await?
            }
            Err(e) => return Err(e.to_string()),
        };
        lines.push(format!("  {reference}  ({pinned})"));
    }
    Ok(lines)
}
