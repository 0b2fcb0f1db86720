//! A build matrix with `pipeline!`: the same build for several variants given at run time, run
//! concurrently, gathered into one directory and exported to the host.
//!
//! The `matrix` pipeline loops over its `variants` input (`for variant in variants { … }`): each
//! [`Variant`] is one container running the same build script with its own `TARGET` and `PROFILE`, and the
//! loop's output `summaries` is a map from variant to what its build printed. After the loop, `artifact` is
//! the map of every variant's artifact, which the `gather` step puts into one [`Directory`] with a
//! `BUILDINFO` index; that directory is exported. The steps and the loop body are checked at compile time;
//! only the number of variants is dynamic.
//!
//! However many variants there are, a run is **3 requests** (see [`plan`]): the sources' ID, the artifacts'
//! IDs, then every build's summary, the export and the listing together — the engine runs the builds side
//! by side. The plain API needed one request per variant and leaf. Each build records when it started and
//! finished (clock seconds inside its container), so the overlap is visible in [`Build`].

use std::collections::BTreeMap;

use dagger::prelude::*;

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

/// One cell of the matrix (ordered by target, then profile: the key of the pipeline's maps).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
#[step]
pub fn build(dag: &Query, image: String, src: Directory, target: String, profile: String, seconds: u32) -> Container {
    let artifact = format!("app-{target}-{profile}");
    dag.container()
        .from(image)
        .with_directory("/src", src)
        .with_workdir("/src")
        .with_env_variable("TARGET", target)
        .with_env_variable("PROFILE", profile)
        .with_env_variable("ARTIFACT", artifact)
        .with_env_variable("BUILD_SECONDS", seconds.to_string())
        .with_exec(["sh", "build.sh"])
}

/// The artifact a build wrote.
#[step]
pub fn artifact(built: Container, name: String) -> File {
    built.file(format!("/out/{name}"))
}

/// Every artifact in one directory, with a `BUILDINFO` index (`<artifact> <target> <profile> <size>` per
/// line, in variant order) written in the engine, where the sizes are known.
#[step]
pub fn gather(dag: &Query, image: String, artifacts: BTreeMap<Variant, File>) -> Directory {
    // The files go straight into the container (not through a directory of their own), so the artifacts'
    // IDs are the only object arguments: one ID round fewer.
    let mut ctr = dag.container().from(image);
    let mut script = String::from("set -eu\n: > /dist/BUILDINFO\n");
    for (variant, file) in artifacts {
        let name = variant.artifact();
        script.push_str(&format!(
            "echo \"{name} {} {} $(wc -c < /dist/{name} | tr -d ' ')\" >> /dist/BUILDINFO\n",
            variant.target, variant.profile
        ));
        ctr = ctr.with_file(format!("/dist/{name}"), file);
    }
    ctr.with_exec(["sh", "-c", &script]).directory("/dist")
}

pipeline! {
    /// Builds every variant concurrently, gathers the artifacts with a `BUILDINFO` index, and exports them.
    pub matrix(image: String, src: Directory, variants: Vec<Variant>, seconds: u32, out_dir: String) {
        for variant in variants {
            let built = build(image, src, variant.target, variant.profile, seconds);
            let artifact = artifact(built, variant.artifact());
            /// What each build printed: `<artifact> <size> <started> <finished>`.
            out summaries = built.stdout();
        }
        let dist = gather(image, artifact);
        /// Where the directory went on the host.
        out exported = dist.export(out_dir);
        /// The directory's entries.
        out entries = dist.entries();
    }
}

/// The requests [`run`] sends, computed without an engine.
pub fn plan(image: &str, variants: &[Variant], seconds: u32, out_dir: &str) -> Plan {
    let dag = Query::detached();
    matrix::plan(
        image.to_owned(),
        sources(&dag),
        variants.to_vec(),
        seconds,
        out_dir.to_owned(),
    )
}

/// Builds every variant concurrently (each build takes `seconds`), gathers the artifacts into one directory
/// with a `BUILDINFO` index, and exports it to `out_dir` on the host (relative paths resolve against the
/// session's working directory). Fails (a [`dagger::Error::Pipeline`] inside the box) if any build fails.
pub async fn run(
    dag: &Query,
    image: &str,
    variants: &[Variant],
    seconds: u32,
    out_dir: &str,
) -> Result<Report, BoxError> {
    let src = sources(dag);
    let out = matrix::run(
        dag,
        image.to_owned(),
        src.clone(),
        variants.to_vec(),
        seconds,
        out_dir.to_owned(),
    )
    .await
    .map_err(dagger::Error::from)?;
    let mut builds = Vec::new();
    for variant in variants {
        let summary = out.summaries.get(variant).map(String::as_str).unwrap_or_default();
        let (size, started, finished) = parse_summary(summary)?;
        // The same chain the pipeline built: no request, and the engine has it cached.
        let built = build(
            dag,
            image.to_owned(),
            src.clone(),
            variant.target.clone(),
            variant.profile.clone(),
            seconds,
        );
        builds.push(Build {
            artifact: artifact(built, variant.artifact()),
            variant: variant.clone(),
            size,
            started,
            finished,
        });
    }
    Ok(Report {
        builds,
        exported: out.exported,
        entries: out.entries,
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
