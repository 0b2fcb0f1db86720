//! A build matrix: the same build for several variants, run concurrently, gathered into one directory and
//! exported to the host.
//!
//! Each [`Variant`] is one container running the same build script with its own `TARGET` and `PROFILE`. The
//! builds are independent, so [`run`] starts them all at once (`join_all` over their `sync()` leaves): the
//! engine receives one request per variant and runs the containers side by side. Each build records when
//! it started and finished (clock seconds inside its container), so the overlap is visible in [`Build`].
//!
//! Once every build succeeded, their artifacts go into one [`Directory`] (`with_file` per variant, plus a
//! `BUILDINFO` index) and that directory is exported in one call.

use dagger::prelude::*;
use futures_util::future::try_join_all;

use crate::BoxError;

/// The stand-in for a compiler: "links" `src/main.sh` for `$TARGET` in `$PROFILE` mode into
/// `/out/$ARTIFACT`, takes `$BUILD_SECONDS` like real work would, and prints one summary line.
pub const BUILD_SCRIPT: &str = r##"set -eu
started=$(date +%s)
mkdir -p /out
out="/out/$ARTIFACT"
{
  echo '#!/bin/sh'
  echo "# app for $TARGET ($PROFILE)"
  if [ "$PROFILE" = debug ]; then echo 'set -x'; fi
  echo "TARGET=$TARGET"
  cat src/main.sh
} > "$out"
chmod 755 "$out"
sleep "$BUILD_SECONDS"
echo "$ARTIFACT $(wc -c < "$out") $started $(date +%s)"
"##;

/// The program every variant builds.
pub const MAIN_SH: &str = "echo \"hello from $TARGET\"\n";

/// One cell of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The target triple-like name (`linux-amd64`).
    pub target: String,
    /// `release` or `debug`.
    pub profile: String,
}

impl Variant {
    /// A variant for `target` in `profile` mode.
    pub fn new(target: &str, profile: &str) -> Self {
        Self {
            target: target.to_owned(),
            profile: profile.to_owned(),
        }
    }

    /// The artifact's file name: `app-<target>-<profile>`.
    pub fn artifact(&self) -> String {
        format!("app-{}-{}", self.target, self.profile)
    }
}

/// The matrix the `matrix` binary builds: three targets in release mode, one in debug mode.
pub fn default_variants() -> Vec<Variant> {
    vec![
        Variant::new("linux-amd64", "release"),
        Variant::new("linux-arm64", "release"),
        Variant::new("linux-riscv64", "release"),
        Variant::new("linux-amd64", "debug"),
    ]
}

/// What one variant's build reported.
#[derive(Clone, Debug)]
pub struct Build {
    /// The variant built.
    pub variant: Variant,
    /// The artifact, still in the engine (not yet exported).
    pub artifact: File,
    /// The artifact's size in bytes, as the build measured it.
    pub size: u64,
    /// When the build started (Unix seconds, container clock).
    pub started: u64,
    /// When the build finished (Unix seconds, container clock).
    pub finished: u64,
}

/// What [`run`] produced.
#[derive(Clone, Debug)]
pub struct Report {
    /// One entry per variant, in the order given.
    pub builds: Vec<Build>,
    /// The host path the gathered directory was exported to.
    pub exported: String,
    /// The exported directory's entries.
    pub entries: Vec<String>,
}

/// The sources every variant builds from, created in the engine (a real project would use
/// `dag.host().directory(".")`).
pub fn sources(dag: &Query) -> Directory {
    dag.directory()
        .with_new_file("src/main.sh", MAIN_SH)
        .with_new_file("build.sh", BUILD_SCRIPT)
}

/// The build of one variant, not yet run: `image` with the sources, the variant's environment and the
/// build script.
pub fn build(dag: &Query, image: &str, src: &Directory, variant: &Variant, seconds: u32) -> Container {
    dag.container()
        .from(image)
        .with_directory("/src", src.clone())
        .with_workdir("/src")
        .with_env_variable("TARGET", variant.target.clone())
        .with_env_variable("PROFILE", variant.profile.clone())
        .with_env_variable("ARTIFACT", variant.artifact())
        .with_env_variable("BUILD_SECONDS", seconds.to_string())
        .with_exec(["sh", "build.sh"])
}

/// Builds every variant concurrently (each build takes `seconds`), gathers the artifacts into one directory
/// with a `BUILDINFO` index, and exports it to `out_dir` on the host (relative paths resolve against the
/// session's working directory). Fails with the first error (a [`dagger::Error`] inside the box) if any
/// build fails.
pub async fn run(
    dag: &Query,
    image: &str,
    variants: &[Variant],
    seconds: u32,
    out_dir: &str,
) -> Result<Report, BoxError> {
    let src = sources(dag);
    // One future per variant; `try_join_all` polls them together, so their requests are in flight at once.
    let builds = try_join_all(variants.iter().map(|variant| {
        let container = build(dag, image, &src, variant, seconds);
        async move {
            // `sync` runs the build once; reading its stdout and file afterwards reuses the cached result.
            let built = container.sync().await?;
            let summary = built.stdout().await?;
            let (size, started, finished) = parse_summary(&summary)?;
            Ok::<_, BoxError>(Build {
                artifact: built.file(format!("/out/{}", variant.artifact())),
                variant: variant.clone(),
                size,
                started,
                finished,
            })
        }
    }))
    .await?;

    let index: String = builds
        .iter()
        .map(|b| {
            format!(
                "{} {} {} {}\n",
                b.variant.artifact(),
                b.variant.target,
                b.variant.profile,
                b.size
            )
        })
        .collect();
    let dist = builds
        .iter()
        .fold(dag.directory(), |dir, b| {
            dir.with_file(b.variant.artifact(), b.artifact.clone())
        })
        .with_new_file("BUILDINFO", index);
    let exported = dist.export(out_dir).await?;
    let entries = dist.entries().await?;
    Ok(Report {
        builds,
        exported,
        entries,
    })
}

/// Reads the build script's last line: `<artifact> <size> <started> <finished>`.
fn parse_summary(stdout: &str) -> Result<(u64, u64, u64), BoxError> {
    let line = stdout.lines().last().unwrap_or_default();
    let nums: Vec<u64> = line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
    match nums[..] {
        [size, started, finished] => Ok((size, started, finished)),
        _ => Err(format!("the build printed `{line}`, not `<artifact> <size> <started> <finished>`").into()),
    }
}

/// Whether every build's time window overlaps every other's, i.e. they ran concurrently.
pub fn overlapped(builds: &[Build]) -> bool {
    let last_start = builds.iter().map(|b| b.started).max();
    let first_end = builds.iter().map(|b| b.finished).min();
    matches!((last_start, first_end), (Some(s), Some(e)) if s < e)
}
