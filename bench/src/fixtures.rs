//! What the figures need besides the engine: a loopback registry with the busybox image, a busybox root
//! filesystem for the raw runtimes, a small source directory, and large generated images for the memory figure.
//!
//! Slow-to-make things (the packed busybox layer, the large layers and their gzip blobs) live in a work
//! directory kept between runs; the registry and the engines' caches are new every run.

use std::io::Write;
use std::path::{Path, PathBuf};

use dagger_engine::oci::{Platform, Reference, RegistryClient, RegistryConfig, build_image};
use dagger_engine::store::Store;
use testkit::registry::{LocalRegistry, busybox_config, busybox_layer, push_busybox_to};

/// The fixtures of one run.
pub(crate) struct Fixtures {
    pub(crate) registry: LocalRegistry,
    /// `127.0.0.1:PORT/busybox:latest`.
    pub(crate) busybox_tag: String,
    /// The same, pinned to its digest.
    pub(crate) busybox_pinned: String,
    /// A plain busybox root filesystem (for raw `runc`/`crun` bundles).
    pub(crate) rootfs: PathBuf,
    /// A few text files (the `ci` pipeline's sources).
    pub(crate) src: PathBuf,
    store: Store,
    work: PathBuf,
}

impl Fixtures {
    pub(crate) async fn prepare(work: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
        let store = Store::open(work.join("fixture-store")).map_err(|e| format!("fixture store: {e}"))?;
        let registry = LocalRegistry::start()?;
        let busybox_pinned = push_busybox_to(&registry.host(), "busybox:latest", &store).await?;
        let rootfs = work.join("rootfs-busybox");
        if !rootfs.join("bin/busybox").is_file() {
            let _ = std::fs::remove_dir_all(&rootfs);
            busybox_layer(&rootfs)?;
        }
        let src = work.join("src");
        std::fs::create_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        for n in 0..4 {
            let text: String = (0..50).map(|l| format!("line {l} of file {n}\n")).collect();
            std::fs::write(src.join(format!("f{n}.txt")), text).map_err(|e| e.to_string())?;
        }
        Ok(Self {
            busybox_tag: format!("{}/busybox:latest", registry.host()),
            registry,
            busybox_pinned,
            rootfs,
            src,
            store,
            work: work.to_owned(),
        })
    }

    /// Builds (once; kept in the work directory) and pushes an image with one layer of `mib` MiB of
    /// incompressible data; returns its reference.
    pub(crate) async fn push_big(&self, mib: u64) -> Result<String, String> {
        let dir = self.work.join(format!("big-layer-{mib}MiB-v1"));
        if !dir.join("done").is_file() {
            let _ = std::fs::remove_dir_all(&dir);
            let d = dir.clone();
            tokio::task::spawn_blocking(move || generate_layer(&d, mib))
                .await
                .map_err(|e| e.to_string())??;
        }
        let store = self.store.clone();
        let layer = dir.clone();
        let image = tokio::task::spawn_blocking(move || {
            build_image(&store, &[layer], &busybox_config()?, &Platform::default()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        let name = format!("{}/big:{mib}", self.registry.host());
        let reference = Reference::parse(&name).map_err(|e| e.to_string())?;
        let client = RegistryClient::new(RegistryConfig::default()).map_err(|e| e.to_string())?;
        client
            .push(&image, &reference, None)
            .await
            .map_err(|e| format!("pushing {name}: {e}"))?;
        Ok(name)
    }
}

/// 50 MiB files of pseudo-random bytes (xorshift, so gzip cannot shrink them) adding up to `mib`, then an
/// empty `done` marker, so a layer left half-made by an interrupted run is made again.
fn generate_layer(dir: &Path, mib: u64) -> Result<(), String> {
    const FILE_MIB: u64 = 50;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ mib;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = mib;
    let mut n = 0;
    while left > 0 {
        let size = left.min(FILE_MIB);
        let path = dir.join(format!("blob{n:03}.bin"));
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?);
        for _ in 0..size {
            for chunk in buf.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            f.write_all(&buf).map_err(|e| e.to_string())?;
        }
        f.flush().map_err(|e| e.to_string())?;
        left -= size;
        n += 1;
    }
    std::fs::write(dir.join("done"), b"").map_err(|e| e.to_string())
}
