//! The offline image registry: a long-running `docker-registry` on `127.0.0.1:5000` holding busybox and two
//! Debian bookworm images, so pipelines written for Docker Hub names run without Docker Hub.
//!
//! [`ensure`] starts the registry (or reuses whatever answers there), then pushes what is missing:
//! - `busybox:latest` and `library/busybox:latest`, built from the host's `/bin/busybox`;
//! - `library/debian:bookworm-slim` ([`DEBIAN_SLIM`]): `mmdebstrap --variant=minbase`, documentation trimmed;
//! - `library/rust:1-slim` ([`RUST_SLIM`]): the same plus Debian's `rustc`, `cargo` and `ca-certificates`;
//! - `library/redis:7-bookworm` ([`REDIS`]): the same plus Debian's `redis-server` (and `redis-cli`), a
//!   database for service tests.
//!
//! Because they live under `library/…`, `DAGGER_RS_REGISTRY_MIRRORS=docker.io=http://127.0.0.1:5000` makes
//! `debian:bookworm-slim` and `rust:1-slim` resolve to them unchanged. Debian's `rustc` is 1.63, so whatever
//! builds in that image must build with Rust 1.63.
//!
//! Everything is cached under [`cache_dir`]`/registry` (registry storage, the mmdebstrap tarballs, the packed
//! layers): a tag already in the registry is skipped, a tarball already built is reused. A recipe change
//! bumps [`DebianImage::recipe`]; delete the registry's storage directory to rebuild what it holds. The first build of
//! both Debian images downloads about 150 MB of packages from `deb.debian.org` and takes a few minutes; later
//! runs take well under a second. A file lock serializes concurrent callers (parallel test processes).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use dagger_engine::oci::layer::{HashingWriter, extract};
use dagger_engine::oci::{OciError, Platform, Reference, RegistryClient, RegistryConfig, build_image};
use dagger_engine::store::Store;

use crate::registry::{answers_v2, cache_dir, push_busybox_to, spawn_registry, wait_ready};

/// Where the registry listens.
pub const ADDR: &str = "127.0.0.1:5000";
/// The value of `DAGGER_RS_REGISTRY_MIRRORS` that sends Docker Hub pulls to the registry.
pub const MIRRORS: &str = "docker.io=http://127.0.0.1:5000";
/// The busybox tags pushed, as `repository:tag`.
pub const BUSYBOX_IMAGES: &[&str] = &["busybox:latest", "library/busybox:latest"];
/// The Debian mirror `mmdebstrap` downloads from.
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// A Debian image built with `mmdebstrap`.
#[derive(Clone, Copy, Debug)]
pub struct DebianImage {
    /// Where it is pushed, as `repository:tag`.
    pub name: &'static str,
    /// Names the tarball and the layer in the cache; bump it when the recipe changes.
    pub recipe: &'static str,
    /// Packages installed on top of `minbase`.
    pub include: &'static [&'static str],
    /// Shell commands run on the finished tree (`$1` is its root), as `mmdebstrap --customize-hook`s.
    pub hooks: &'static [&'static str],
    /// The image configuration's environment.
    pub env: &'static [&'static str],
    /// The image's default command.
    pub cmd: &'static [&'static str],
    /// The ports it exposes (`6379/tcp`).
    pub exposed_ports: &'static [&'static str],
}

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `debian:bookworm-slim`: Debian 12, `minbase` variant.
pub const DEBIAN_SLIM: DebianImage = DebianImage {
    name: "library/debian:bookworm-slim",
    recipe: "debian-bookworm-slim-v2",
    include: &[],
    hooks: &[],
    env: &[PATH],
    cmd: &["bash"],
    exposed_ports: &[],
};

/// `rust:1-slim`: Debian 12 with its Rust 1.63 toolchain, `CARGO_HOME=/usr/local/cargo` (whose `bin` is first
/// on `PATH`) like the Docker Hub image.
pub const RUST_SLIM: DebianImage = DebianImage {
    name: "library/rust:1-slim",
    recipe: "rust-bookworm-slim-v2",
    include: &["rustc", "cargo", "ca-certificates"],
    // `CARGO_HOME` points there; it exists, empty, as in the Docker Hub image.
    hooks: &["mkdir -p \"$1/usr/local/cargo/bin\""],
    env: &[
        "PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "CARGO_HOME=/usr/local/cargo",
    ],
    cmd: &["bash"],
    exposed_ports: &[],
};

/// `redis:7-bookworm`: Debian 12 with its Redis 7 server and `redis-cli`, serving on port 6379 to the network
/// it is on (protected mode off, as in the Docker Hub image, which has no password either) and keeping no
/// data on disk: a database for integration tests, as a service.
pub const REDIS: DebianImage = DebianImage {
    name: "library/redis:7-bookworm",
    recipe: "redis-bookworm-v1",
    include: &["redis-server"],
    hooks: &[],
    env: &[PATH],
    cmd: &[
        "redis-server",
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
    ],
    exposed_ports: &["6379/tcp"],
};

/// The Debian images, in build order.
pub const DEBIAN_IMAGES: &[DebianImage] = &[DEBIAN_SLIM, RUST_SLIM, REDIS];

/// Makes sure the registry runs on [`ADDR`] and holds every image; returns one line per image
/// (`127.0.0.1:5000/library/rust:1-slim  (…@sha256:…)`). Prints progress to stdout as it goes.
pub fn ensure() -> Result<Vec<String>, String> {
    let storage = cache_dir().join("registry");
    std::fs::create_dir_all(&storage).map_err(|e| format!("{}: {e}", storage.display()))?;
    let _lock = lock(&storage.join("images.lock"))?;
    ensure_registry(&storage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(push_missing(&storage))
}

// Held for the whole of `ensure`: two processes building the same tarball would waste minutes and race on it.
fn lock(path: &Path) -> Result<File, String> {
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        println!("images: waiting for another process that is setting up the images");
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| format!("locking {}: {e}", path.display()))?;
    }
    Ok(file)
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
    let store = Store::open(storage.join("fixture-store")).map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    for name in BUSYBOX_IMAGES {
        let reference = reference(name)?;
        let pinned = match existing(&client, &reference).await? {
            Some(pinned) => {
                println!("{name}: already there");
                pinned
            }
            None => {
                println!("{name}: building from /bin/busybox and pushing");
                push_busybox_to(ADDR, name, &store).await?
            }
        };
        lines.push(format!("  {reference}  ({pinned})"));
    }
    for image in DEBIAN_IMAGES {
        let reference = reference(image.name)?;
        let pinned = match existing(&client, &reference).await? {
            Some(pinned) => {
                println!("{}: already there", image.name);
                pinned
            }
            None => push_debian(&client, &store, storage, image, &reference).await?,
        };
        lines.push(format!("  {reference}  ({pinned})"));
    }
    Ok(lines)
}

fn reference(name: &str) -> Result<Reference, String> {
    Reference::parse(&format!("{ADDR}/{name}")).map_err(|e| e.to_string())
}

// The pinned reference when the tag is in the registry, `None` when it is not.
async fn existing(client: &RegistryClient, reference: &Reference) -> Result<Option<String>, String> {
    match client.resolve(reference, None).await {
        Ok(digest) => Ok(Some(reference.pinned(&digest))),
        Err(OciError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

async fn push_debian(
    client: &RegistryClient,
    store: &Store,
    storage: &Path,
    image: &DebianImage,
    reference: &Reference,
) -> Result<String, String> {
    let started = Instant::now();
    let tarball = debian_tarball(storage, image)?;

    let step = Instant::now();
    let layer = layer_dir(store, image, &tarball)?;
    let built = build_image(
        store,
        std::slice::from_ref(&layer),
        &debian_config(image)?,
        &Platform::host(),
    )
    .map_err(|e| format!("{}: building the image: {e}", image.name))?;
    let size: u64 = built.layers.iter().map(|l| l.size).sum();
    println!(
        "{}: packed one layer ({:.1} MB compressed) in {:.1} s; pushing",
        image.name,
        size as f64 / 1e6,
        step.elapsed().as_secs_f64()
    );

    let step = Instant::now();
    let pinned = client
        .push(&built, reference, None)
        .await
        .map_err(|e| format!("{}: pushing to {ADDR}: {e}", image.name))?;
    println!("{}: pushed in {:.1} s", image.name, step.elapsed().as_secs_f64());
    // The packed blob stays in the store; the extracted tree is only needed to pack it.
    let _ = std::fs::remove_dir_all(&layer);
    println!(
        "{}: ready in {:.1} s ({pinned})",
        image.name,
        started.elapsed().as_secs_f64()
    );
    Ok(pinned)
}

/// The `mmdebstrap` tarball of `image`, built into `<storage>/tarballs/<recipe>.tar` unless it is there.
pub fn debian_tarball(storage: &Path, image: &DebianImage) -> Result<PathBuf, String> {
    let dir = storage.join("tarballs");
    let tarball = dir.join(format!("{}.tar", image.recipe));
    if tarball.is_file() {
        println!("{}: reusing {}", image.name, tarball.display());
        return Ok(tarball);
    }
    ensure_mmdebstrap()?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let partial = dir.join(format!("{}.partial.tar", image.recipe));
    let _ = std::fs::remove_file(&partial);
    println!(
        "{}: running mmdebstrap (Debian bookworm, minbase{}) from {DEBIAN_MIRROR}; first run only, a minute or two",
        image.name,
        if image.include.is_empty() {
            String::new()
        } else {
            format!(" + {}", image.include.join(", "))
        }
    );
    let started = Instant::now();
    let status = mmdebstrap_command(image, &partial)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("starting mmdebstrap: {e}"))?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "{}: mmdebstrap failed ({status}); its messages are above. It needs {DEBIAN_MIRROR} to be reachable.",
            image.name
        ));
    }
    std::fs::rename(&partial, &tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    let size = std::fs::metadata(&tarball).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: mmdebstrap wrote {} ({:.0} MB) in {:.1} s",
        image.name,
        tarball.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(tarball)
}

/// The `mmdebstrap` invocation for `image`, writing a tarball to `out`. Like Docker Hub's slim images, it
/// drops manual pages, documentation (but not copyright files), info pages and translations, for this build
/// and for later `apt-get install`s in the image; recommended packages are not installed.
pub fn mmdebstrap_command(image: &DebianImage, out: &Path) -> Command {
    let mut cmd = Command::new("mmdebstrap");
    cmd.args([
        "--variant=minbase",
        "--format=tar",
        "--aptopt=APT::Install-Recommends \"false\"",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    ]);
    for hook in image.hooks {
        cmd.arg(format!("--customize-hook={hook}"));
    }
    if !image.include.is_empty() {
        cmd.arg(format!("--include={}", image.include.join(",")));
    }
    cmd.arg("bookworm").arg(out).arg(DEBIAN_MIRROR);
    cmd
}

/// Installs `mmdebstrap` with apt-get when it is missing and this process runs as root; otherwise says how.
pub fn ensure_mmdebstrap() -> Result<(), String> {
    let found = Command::new("mmdebstrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    if !rustix::process::geteuid().is_root() {
        return Err("`mmdebstrap` is missing; it builds the Debian images. Install it: \
                    sudo apt-get install mmdebstrap (or run this as root, which installs it)"
            .to_owned());
    }
    println!("mmdebstrap: not installed; installing it with apt-get (it builds the Debian images)");
    for args in [
        &["update", "-q"][..],
        &["install", "-y", "-q", "--no-install-recommends", "mmdebstrap"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("starting apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("`apt-get {}` failed ({status})", args.join(" ")));
        }
    }
    Ok(())
}

// The tarball extracted into the store, under a name that changes with the tarball's bytes (so a rebuilt
// tarball is never confused with an older one's packed layer).
fn layer_dir(store: &Store, image: &DebianImage, tarball: &Path) -> Result<PathBuf, String> {
    let started = Instant::now();
    let mut file = File::open(tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    let mut hasher = HashingWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{}: {e}", tarball.display()))?;
    hasher.flush().map_err(|e| e.to_string())?;
    let digest = hasher.digest();
    let short = digest
        .trim_start_matches("sha256:")
        .get(..16)
        .unwrap_or_default()
        .to_owned();
    let fixtures = store.root().join("fixtures");
    let layer = fixtures.join(format!("{}-{short}", image.recipe));
    if layer.is_dir() {
        return Ok(layer);
    }
    std::fs::create_dir_all(&fixtures).map_err(|e| format!("{}: {e}", fixtures.display()))?;
    let tmp = fixtures.join(format!("tmp-{}-{}", image.recipe, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let extracted = extract(tarball, &tmp).map_err(|e| format!("extracting {}: {e}", tarball.display()))?;
    std::fs::rename(&tmp, &layer).map_err(|e| format!("{}: {e}", layer.display()))?;
    println!(
        "{}: extracted the tarball in {:.1} s ({} device nodes left out: the runtime provides /dev)",
        image.name,
        started.elapsed().as_secs_f64(),
        extracted.skipped.len()
    );
    Ok(layer)
}

/// The image configuration of a Debian image: its environment and `bash` as the command.
pub fn debian_config(image: &DebianImage) -> Result<oci_spec::image::ImageConfiguration, String> {
    let mut config = oci_spec::image::ConfigBuilder::default()
        .env(image.env.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
        .cmd(image.cmd.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())?;
    if !image.exposed_ports.is_empty() {
        config.set_exposed_ports(Some(image.exposed_ports.iter().map(|p| (*p).to_owned()).collect()));
    }
    oci_spec::image::ImageConfigurationBuilder::default()
        .config(config)
        .build()
        .map_err(|e| e.to_string())
}
