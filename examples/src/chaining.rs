//! Chaining: what one pipeline computes becomes the input of the next.
//!
//! 1. **version** computes a version string from the sources (`VERSION` plus a hash of `src/`), writes it to
//!    a file, and builds a `dist/` directory with a checksum list. We read the string with `stdout()` and
//!    the file with `file().contents()`, and keep the directory as an object: `sync()` evaluates it once
//!    and hands back a [`Directory`] whose [`Id`] is known.
//! 2. **package** uses those results as plain values and as objects: the version becomes an image label
//!    and an environment variable, and the version *file* (an object, never downloaded) is copied in.
//! 3. **verify** starts from nothing but the directory's ID (as a program that received it from elsewhere
//!    would, through `load_directory_from_id`), mounts it and checks the checksums.
//!
//! Each step is an ordinary Rust value in between: branch on it, log it, or send it to another process.

use dagger::prelude::*;

use crate::BoxError;

/// Computes the version, writes `/out/version.txt` and `/out/dist/{app,SHA256SUMS}`, prints the version.
pub const VERSION_SCRIPT: &str = r#"set -eu
base=$(cat VERSION)
rev=$(cat src/* | sha256sum | cut -c1-8)
version="$base+$rev"
mkdir -p /out/dist
echo "$version" > /out/version.txt
printf '#!/bin/sh\necho "app %s"\n' "$version" > /out/dist/app
chmod 755 /out/dist/app
cd /out/dist && sha256sum app > SHA256SUMS
printf %s "$version"
"#;

/// The label that carries the version on the packaged image.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// What the three pipelines produced.
#[derive(Clone, Debug)]
pub struct Chain {
    /// The version, from the first pipeline's stdout.
    pub version: String,
    /// The same version, read from the file the first pipeline wrote.
    pub version_file: String,
    /// The ID of the first pipeline's `dist/` directory, as handed to the third.
    pub dist_id: Id,
    /// The entries of `dist/`.
    pub dist_entries: Vec<String>,
    /// The packaged image's version label.
    pub label: Option<String>,
    /// The packaged image's `APP_VERSION`.
    pub env: Option<String>,
    /// What the packaging command printed.
    pub package_log: String,
    /// What the verification command printed.
    pub verify_log: String,
}

/// The sources, created in the engine (a real project would use `dag.host().directory(".")`).
pub fn sources(dag: &Query, base_version: &str) -> Directory {
    dag.directory()
        .with_new_file("VERSION", format!("{base_version}\n"))
        .with_new_file("src/main.sh", "echo working\n")
}

/// Pipeline 1: the container that computes the version and builds `dist/`.
pub fn version(dag: &Query, image: &str, src: Directory) -> Container {
    dag.container()
        .from(image)
        .with_directory("/src", src)
        .with_workdir("/src")
        .with_exec(["sh", "-c", VERSION_SCRIPT])
}

/// Pipeline 2: an image labelled with `version`, carrying it in `APP_VERSION` and in `/etc/app/VERSION`.
pub fn package(dag: &Query, image: &str, version: &str, version_file: File) -> Container {
    dag.container()
        .from(image)
        .with_label(VERSION_LABEL, version)
        .with_env_variable("APP_VERSION", version)
        .with_file("/etc/app/VERSION", version_file)
        .with_exec([
            "sh",
            "-c",
            r#"test "$(cat /etc/app/VERSION)" = "$APP_VERSION" && echo "packaged app $APP_VERSION""#,
        ])
}

/// Pipeline 3: checks the checksums of the directory with ID `dist` and runs the app in it.
pub fn verify(dag: &Query, image: &str, dist: Id) -> Container {
    dag.container()
        .from(image)
        .with_mounted_directory("/dist", dag.load_directory_from_id(dist))
        .with_workdir("/dist")
        .with_exec(["sh", "-c", "sha256sum -c SHA256SUMS && ./app"])
}

/// Runs the three pipelines in turn, each fed by the previous one's results.
pub async fn run(dag: &Query, image: &str, base_version: &str) -> Result<Chain, BoxError> {
    // 1. Evaluate once; everything read from `built` afterwards comes from the cache.
    let built = version(dag, image, sources(dag, base_version)).sync().await?;
    let version = built.stdout().await?;
    let version_file = built.file("/out/version.txt");
    let from_file = version_file.contents().await?;
    if from_file.trim_end() != version {
        return Err(format!("stdout says `{version}` but version.txt says `{from_file}`").into());
    }
    let dist = built.directory("/out/dist").sync().await?;
    let dist_id = dist.id().await?;

    // 2. A plain string and a File object flow into the next pipeline; its leaves run concurrently.
    let packaged = package(dag, image, &version, version_file).sync().await?;
    let (package_log, label, env) = tokio::try_join!(
        packaged.stdout().into_future(),
        packaged.label(VERSION_LABEL).into_future(),
        packaged.env_variable("APP_VERSION").into_future(),
    )?;

    // 3. Only the ID crosses over; the directory is loaded back from it.
    let verified = verify(dag, image, dist_id.clone());
    let (verify_log, dist_entries) = tokio::try_join!(verified.stdout().into_future(), dist.entries().into_future())?;

    Ok(Chain {
        version,
        version_file: from_file,
        dist_id,
        dist_entries,
        label,
        env,
        package_log,
        verify_log,
    })
}
