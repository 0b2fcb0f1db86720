//! Real work (figures 11–15): whole builds as users run them, each against its peer in the same run.
//!
//! - 11 `quickstart`: the quickstart pipeline (tests and release build of `examples/app` in `rust:1-slim`, the
//!   binary copied into `debian:bookworm-slim`) against the same work as a multi-stage Dockerfile built by
//!   BuildKit, cold and after one source file changed;
//! - 12 `concurrency`: 20 sessions × 10 small pipelines against one engine, against 20 `docker build` loops on
//!   one dockerd;
//! - 13 `bigimage`: pulling and unpacking `rust:1-slim` into a fresh engine, against `skopeo copy` + `umoci
//!   unpack`;
//! - 14 `start`: from `connect` to the first answer, the engine in-process against a `dagger-rs session`
//!   started by the official Python SDK;
//! - 15 `sdkbuild`: a clean build of a minimal pipeline crate without and with the `embedded` feature, and of
//!   the same program on the official Rust SDK.
//!
//! Where the time goes comes from what each side reports anyway ([`crate::steplog`]): the engine's progress
//! events, BuildKit's plain progress, cargo's timings.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dagger::prelude::*;

use crate::docker::Dockerd;
use crate::engine::{EngineOpts, EngineProc};
use crate::figures::Bench;
use crate::fixtures::Fixtures;
use crate::machine::peak_rss;
use crate::pipelines;
use crate::raw::{Bundle, Raw};
use crate::report::{Goal, Row};
use crate::stats::{Samples, Unit, format_value};
use crate::steplog::{self, Step};

/// The offline registry every quickstart runs against (`cargo run -p xtask -- images`).
const OFFLINE: &str = testkit::images::ADDR;
/// Sessions and pipelines per session of figure 12.
const SESSIONS: usize = 20;
const PIPELINES_PER_SESSION: usize = 10;
/// Source edits (one rebuild each) after every cold quickstart.
const TOUCHES: usize = 2;

fn ms(d: f64) -> String {
    format_value(d, Unit::Seconds)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn timed<T, E: std::fmt::Display>(f: impl IntoFuture<Output = Result<T, E>>) -> Result<(T, Duration), String> {
    let start = Instant::now();
    let v = f.await.map_err(|e| e.to_string())?;
    Ok((v, start.elapsed()))
}

/// Starts (or reuses) the offline registry with `rust:1-slim` and `debian:bookworm-slim`, as `xtask images`
/// does; returns their references there.
async fn offline_images() -> Result<(String, String), String> {
    tokio::task::spawn_blocking(testkit::images::ensure)
        .await
        .map_err(|e| e.to_string())??;
    Ok((
        format!("{OFFLINE}/library/rust:1-slim"),
        format!("{OFFLINE}/library/debian:bookworm-slim"),
    ))
}

/// The Dockerfile of the quickstart's work: a toolchain stage with the sources, the tests and the release
/// build as two stages on it (BuildKit runs them side by side, as the engine does), both with the same cache
/// mounts as the pipeline's cache volumes, and the runtime image. The tests' log is copied into the image so
/// the final stage depends on the tests (a plain `docker build` builds only the stages its target needs).
pub(crate) fn quickstart_dockerfile(rust: &str, debian: &str) -> String {
    use examples::quickstart::{BINARY, TARGET_DIR};
    let mounts = format!(
        "--mount=type=cache,id=quickstart-cargo-registry,target=/usr/local/cargo/registry \
         --mount=type=cache,id=quickstart-cargo-target,target={TARGET_DIR}"
    );
    format!(
        "FROM {rust} AS toolchain\n\
         ENV CARGO_TARGET_DIR={TARGET_DIR}\n\
         COPY . /src\n\
         WORKDIR /src\n\
         \n\
         FROM toolchain AS test\n\
         RUN {mounts} cargo test --locked > /test.log && cat /test.log\n\
         \n\
         FROM toolchain AS build\n\
         RUN {mounts} cargo build --release --locked && cp {TARGET_DIR}/release/app /app\n\
         \n\
         FROM {debian}\n\
         COPY --from=test /test.log /usr/share/doc/app/test.log\n\
         COPY --from=build /app {BINARY}\n\
         LABEL org.opencontainers.image.title=quickstart-app\n\
         EXPOSE 8080\n\
         ENTRYPOINT [\"{BINARY}\"]\n\
         CMD [\"serve\"]\n"
    )
}

/// The quickstart pipeline without its publish (`examples::quickstart::run` up to the image): the tests and the
/// image with the release binary, awaited together. Returns what `cargo test` printed.
async fn quickstart_ours(dag: &Query, app: &Path, rust: &str, debian: &str) -> Result<String, dagger::Error> {
    use examples::quickstart::{BINARY, TARGET_DIR};
    let src = dag
        .host()
        .directory_opts(app.to_string_lossy(), HostDirectoryOpts::default().exclude(["target"]));
    let toolchain = dag
        .container()
        .from(rust)
        .with_mounted_cache(
            "/usr/local/cargo/registry",
            dag.cache_volume("quickstart-cargo-registry"),
        )
        .with_mounted_cache(TARGET_DIR, dag.cache_volume("quickstart-cargo-target"))
        .with_env_variable("CARGO_TARGET_DIR", TARGET_DIR)
        .with_directory("/src", src)
        .with_workdir("/src");
    let tests = toolchain.with_exec(["cargo", "test", "--locked"]);
    let binary = toolchain
        .with_exec([
            "sh",
            "-c",
            &format!("cargo build --release --locked && cp {TARGET_DIR}/release/app /app"),
        ])
        .file("/app");
    let image = dag
        .container()
        .from(debian)
        .with_file(BINARY, binary)
        .with_label("org.opencontainers.image.title", "quickstart-app")
        .with_exposed_port(8080)
        .with_entrypoint([BINARY])
        .with_default_args(["serve"]);
    let (log, _) = tokio::try_join!(tests.stdout(), image.sync())?;
    Ok(log)
}

/// A fresh copy of `examples/app` (without `target`) at `to`.
fn copy_app(to: &Path) -> Result<(), String> {
    fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let name = e.file_name();
            if name == "target" {
                continue;
            }
            if e.file_type()?.is_dir() {
                copy(&e.path(), &to.join(&name))?;
            } else {
                std::fs::copy(e.path(), to.join(&name))?;
            }
        }
        Ok(())
    }
    let _ = std::fs::remove_dir_all(to);
    copy(&examples::quickstart::default_app_dir(), to).map_err(|e| format!("copying examples/app: {e}"))
}

/// Changes one source file of the app: appends a test named `name` to `src/lib.rs`, so a rebuild that really
/// compiled the change lists it in `cargo test`'s output.
fn touch_app(app: &Path, name: &str) -> Result<(), String> {
    use std::io::Write as _;
    let lib = app.join("src/lib.rs");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&lib)
        .map_err(|e| format!("{}: {e}", lib.display()))?;
    write!(f, "\n#[test]\nfn {name}() {{}}\n").map_err(|e| format!("{}: {e}", lib.display()))
}

/// The events an engine wrote to `path` after the first `from` bytes, and the new length.
fn events_since(path: &Path, from: usize) -> (Vec<Step>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let from = from.min(text.len());
    (steplog::engine_steps(&text[from..]), text.len())
}

/// The few longest steps, `name 1.23 s`, for the notes.
fn top_steps(steps: &[Step], n: usize) -> String {
    let mut done: Vec<&Step> = steps.iter().filter(|s| s.secs.is_some()).collect();
    done.sort_by(|a, b| b.secs.unwrap_or(0.0).total_cmp(&a.secs.unwrap_or(0.0)));
    done.iter()
        .take(n)
        .map(|s| {
            let mut name: String = s.name.chars().take(90).collect();
            if name.len() < s.name.len() {
                name.push('…');
            }
            format!("`{}` {}", name.replace('`', "'"), ms(s.secs.unwrap_or(f64::NAN)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The work steps of an engine run on a timeline, `name start–end s` from the first step's start, in the
/// order they started: which ran side by side, and what waited for what.
fn timeline(steps: &[Step]) -> String {
    let mut work: Vec<(&Step, (f64, f64))> = steps
        .iter()
        .filter_map(|s| s.span.map(|sp| (s, sp)))
        .filter(|(_, (a, b))| b - a >= 0.05)
        .collect();
    work.sort_by(|a, b| a.1.0.total_cmp(&b.1.0));
    let Some(origin) = steps
        .iter()
        .filter_map(|s| s.span.map(|sp| sp.0))
        .min_by(f64::total_cmp)
    else {
        return "no events".into();
    };
    work.iter()
        .map(|(s, (a, b))| {
            let name: String = s.name.chars().take(60).collect();
            format!("`{}` {:.2}–{:.2} s", name.replace('`', "'"), a - origin, b - origin)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A span row: our step's seconds over the repetitions, BuildKit's median in the note.
fn span_row(id: &'static str, what: &str, ours: Samples, theirs: &Samples, peer: &str) -> Row {
    let note = format!("{peer} {}", ms(theirs.median()));
    Row::new(id, format!("span: {what}, ours"), Unit::Seconds, ours).note(note)
}

/// The seconds of the longest step matching `words`, or NaN (a step that did not run: left out of the summary).
fn step_secs(steps: &[Step], words: &[&str]) -> f64 {
    steplog::longest(steps, words).and_then(|s| s.secs).unwrap_or(f64::NAN)
}

/// The spans compared in figure 11: what, our step's words, BuildKit's step's words.
const QUICKSTART_SPANS: &[(&str, &[&str], &[&str])] = &[
    (
        "pull + unpack `rust:1-slim`",
        &["Container.from", "rust:1-slim"],
        &["FROM", "rust:1-slim"],
    ),
    ("`cargo test`", &["withExec", "cargo test"], &["cargo test"]),
    (
        "`cargo build --release`",
        &["withExec", "cargo build"],
        &["cargo build"],
    ),
    (
        "pull + unpack `debian:bookworm-slim`",
        &["Container.from", "debian:bookworm-slim"],
        &["FROM", "debian:bookworm-slim"],
    ),
];

/// The samples of one side of figure 11.
#[derive(Default)]
struct Side {
    cold: Samples,
    touched: Samples,
    cold_spans: Vec<Samples>,
    touched_spans: Vec<Samples>,
    /// After an edit: the longer of the two cargo steps (they run side by side), the floor of the rebuild.
    touched_cargo: Samples,
    /// Cold: the `rust:1-slim` pull and then the longer cargo step, the build's critical path.
    cold_path: Samples,
}

impl Side {
    fn add_spans(&mut self, steps: &[Step], words: impl Fn(usize) -> &'static [&'static str], cold: bool) {
        let spans = if cold {
            &mut self.cold_spans
        } else {
            &mut self.touched_spans
        };
        spans.resize_with(QUICKSTART_SPANS.len(), Samples::default);
        for (i, s) in spans.iter_mut().enumerate() {
            s.push(step_secs(steps, words(i)));
        }
        let cargo = [1, 2].map(|i| step_secs(steps, words(i)));
        let cargo = cargo[0].max(cargo[1]);
        if cold {
            self.cold_path.push(step_secs(steps, words(0)) + cargo);
        } else {
            self.touched_cargo.push(cargo);
        }
    }
}

impl Bench {
    fn real_engine_opts(&self, name: &str, events: Option<PathBuf>) -> EngineOpts {
        EngineOpts {
            runtime: "runc",
            network_none: false,
            snapshotter: None,
            cache_dir: self.run_dir().join(format!("cache-{name}")),
            workdir: self.work.clone(),
            events,
        }
    }

    async fn real_engine(&self, name: &str, events: Option<PathBuf>) -> Result<EngineProc, String> {
        let opts = self.real_engine_opts(name, events);
        let _ = std::fs::remove_dir_all(&opts.cache_dir);
        EngineProc::start(
            &self.engine_bin,
            &opts,
            &self.run_dir().join(format!("engine-{name}.log")),
        )
        .await
    }

    // -----------------------------------------------------------------------------------------------------
    // 11. Quickstart against BuildKit
    // -----------------------------------------------------------------------------------------------------

    /// One repetition: a fresh engine and a fresh dockerd build the quickstart cold, then after each of
    /// [`TOUCHES`] edits of one source file, with their caches warm.
    async fn quickstart_rep(
        &mut self,
        rep: usize,
        rust: &str,
        debian: &str,
        ours: &mut Side,
        bk: &mut Side,
    ) -> Result<(), String> {
        let app = self.run_dir().join("qs-app");
        copy_app(&app)?;
        let events = self.run_dir().join(format!("qs-{rep}.jsonl"));
        let engine = self.real_engine(&format!("qs-{rep}"), Some(events.clone())).await?;
        let dockerfile = quickstart_dockerfile(rust, debian);
        let dir = PathBuf::from(format!("/tmp/drsq-{}", std::process::id()));
        let docker = match Dockerd::start(&dir, OFFLINE).await {
            Ok(d) => d,
            Err(e) => {
                engine.stop().await;
                return Err(format!("docker could not run: {e}"));
            }
        };
        let result = async {
            let dag = engine.client().await?;
            let (log, t) = timed(quickstart_ours(&dag, &app, rust, debian)).await?;
            if !log.contains("test result: ok") {
                return Err(format!("ours: `cargo test` printed no passing result:\n{log}"));
            }
            ours.cold.push(secs(t));
            let (steps, mut offset) = events_since(&events, 0);
            ours.add_spans(&steps, |i| QUICKSTART_SPANS[i].1, true);
            let ours_cold_top = top_steps(&steps, 6);
            let steps_cold = steps;

            let (t, log) = docker.build_in(&app, &dockerfile, &[], "quickstart-app:bench").await?;
            bk.cold.push(secs(t));
            let bk_steps = steplog::buildkit_steps(&log);
            bk.add_spans(&bk_steps, |i| QUICKSTART_SPANS[i].2, true);
            if rep == 0 {
                self.log.push(format!(
                    "quickstart cold (11a), first repetition, longest steps: ours {}; BuildKit {}. Our steps on a \
                     timeline (from the first step's start): {}",
                    ours_cold_top,
                    top_steps(&bk_steps, 6),
                    timeline(&steps_cold)
                ));
            }

            for k in 0..TOUCHES {
                let test = format!("touched_{rep}_{k}");
                touch_app(&app, &test)?;
                let (log, t) = timed(quickstart_ours(&dag, &app, rust, debian)).await?;
                if !log.contains(&format!("test {test} ... ok")) {
                    return Err(format!(
                        "ours: after the edit, `cargo test` did not run the new test `{test}` (the change was not \
                         compiled):\n{log}"
                    ));
                }
                ours.touched.push(secs(t));
                let (steps, at) = events_since(&events, offset);
                offset = at;
                ours.add_spans(&steps, |i| QUICKSTART_SPANS[i].1, false);
                let ours_top = format!("{}; on a timeline: {}", top_steps(&steps, 6), timeline(&steps));

                let (t, log) = docker.build_in(&app, &dockerfile, &[], "quickstart-app:bench").await?;
                if !log.contains(&format!("test {test} ... ok")) {
                    return Err(format!(
                        "BuildKit: after the edit, `cargo test` did not run the new test `{test}`:\n{}",
                        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
                    ));
                }
                bk.touched.push(secs(t));
                let bk_steps = steplog::buildkit_steps(&log);
                bk.add_spans(&bk_steps, |i| QUICKSTART_SPANS[i].2, false);
                if rep == 0 && k == 0 {
                    self.log.push(format!(
                        "quickstart after one edit (11b), first repetition, longest steps: ours {}; BuildKit {}",
                        ours_top,
                        top_steps(&bk_steps, 6)
                    ));
                }
            }
            Ok::<_, String>(())
        }
        .await;
        engine.stop().await;
        docker.stop().await;
        let _ = std::fs::remove_dir_all(self.run_dir().join(format!("cache-qs-{rep}")));
        result
    }

    pub(crate) async fn quickstart(&mut self) -> Result<Vec<Row>, String> {
        let (rust, debian) = offline_images().await?;
        let (mut ours, mut bk) = (Side::default(), Side::default());
        for rep in 0..self.real_reps {
            self.quickstart_rep(rep, &rust, &debian, &mut ours, &mut bk).await?;
        }
        let mut rows = vec![
            Row::new(
                "11a",
                "quickstart, cold (fresh engine, fresh dockerd): ours ÷ BuildKit (docker 20.10)",
                Unit::Ratio,
                ours.cold.ratio_to(&bk.cold),
            )
            .goal(Goal::AtMost(0.6))
            .note(format!(
                "ours {}, BuildKit {}",
                ms(ours.cold.median()),
                ms(bk.cold.median())
            )),
            Row::new(
                "11b",
                "quickstart after one `.rs` file changed, caches warm: ours ÷ BuildKit",
                Unit::Ratio,
                ours.touched.ratio_to(&bk.touched),
            )
            .goal(Goal::AtMost(0.6))
            .note(format!(
                "ours {}, BuildKit {}; {TOUCHES} edits after each cold build",
                ms(ours.touched.median()),
                ms(bk.touched.median())
            )),
        ];
        const COLD_IDS: [&str; 4] = ["11c", "11d", "11e", "11f"];
        const TOUCHED_IDS: [&str; 4] = ["", "11g", "11h", ""];
        for (i, (what, _, _)) in QUICKSTART_SPANS.iter().enumerate() {
            let (o, b) = (&ours.cold_spans[i], &bk.cold_spans[i]);
            rows.push(span_row(
                COLD_IDS[i],
                &format!("cold, {what}"),
                o.clone(),
                b,
                "BuildKit",
            ));
        }
        // Only the steps the edit makes run again: the two cargo steps.
        for (i, (what, _, _)) in QUICKSTART_SPANS.iter().enumerate() {
            if !TOUCHED_IDS[i].is_empty() {
                let (o, b) = (&ours.touched_spans[i], &bk.touched_spans[i]);
                rows.push(span_row(
                    TOUCHED_IDS[i],
                    &format!("after the edit, {what}"),
                    o.clone(),
                    b,
                    "BuildKit",
                ));
            }
        }
        rows.push(
            Row::new(
                "11k",
                "diagnostic: cold, the whole build ÷ its critical path (the `rust:1-slim` pull, then the longer \
                 cargo step; 1.00 = nothing else on the way)",
                Unit::Ratio,
                ours.cold.ratio_to(&ours.cold_path),
            )
            .note(format!(
                "ours' path {}; BuildKit's build ÷ the same path of its own ({}): {}",
                ms(ours.cold_path.median()),
                ms(bk.cold_path.median()),
                format_value(bk.cold.ratio_to(&bk.cold_path).median(), Unit::Ratio)
            )),
        );
        rows.push(
            Row::new(
                "11i",
                "diagnostic: after the edit, the whole rebuild ÷ its longer cargo step (1.00 = nothing but cargo)",
                Unit::Ratio,
                ours.touched.ratio_to(&ours.touched_cargo),
            )
            .note(format!(
                "BuildKit's rebuild ÷ its longer cargo step: {}",
                format_value(bk.touched.ratio_to(&bk.touched_cargo).median(), Unit::Ratio)
            )),
        );
        Ok(rows)
    }

    // -----------------------------------------------------------------------------------------------------
    // 12. Concurrency
    // -----------------------------------------------------------------------------------------------------

    pub(crate) async fn concurrency(&mut self, fx: &Fixtures) -> Result<Vec<Row>, String> {
        let engine = self.real_engine("conc", None).await?;
        let dir = PathBuf::from(format!("/tmp/drsc-{}", std::process::id()));
        let docker = match Dockerd::start(&dir, &fx.registry.host()).await {
            Ok(d) => d,
            Err(e) => {
                engine.stop().await;
                return Err(format!("docker could not run: {e}"));
            }
        };
        let mut opts = self.real_engine_opts("conc-nonet", None);
        opts.network_none = true;
        let _ = std::fs::remove_dir_all(&opts.cache_dir);
        let log = self.run_dir().join("engine-conc-nonet.log");
        let result = match EngineProc::start(&self.engine_bin, &opts, &log).await {
            Ok(nonet) => {
                let r = self.concurrency_on(&engine, &nonet, &docker, fx).await;
                nonet.stop().await;
                r
            }
            Err(e) => Err(e),
        };
        engine.stop().await;
        docker.stop().await;
        result
    }

    async fn concurrency_on(
        &mut self,
        engine: &EngineProc,
        nonet: &EngineProc,
        docker: &Dockerd,
        fx: &Fixtures,
    ) -> Result<Vec<Row>, String> {
        let mut sessions = Vec::new();
        let mut sessions_nonet = Vec::new();
        for _ in 0..SESSIONS {
            sessions.push(engine.client().await?);
            sessions_nonet.push(nonet.client().await?);
        }
        let dockerfile = pipelines::three_steps_dockerfile(&fx.busybox_tag);
        // Warm-up: both sides pull the base once.
        let nonce = self.nonce();
        docker.build(&dockerfile, &nonce, "bench-conc:warm").await?;
        for dag in [&sessions[0], &sessions_nonet[0]] {
            pipelines::three_steps(&dag.container().from(&fx.busybox_tag), &nonce)
                .sync()
                .await
                .map_err(|e| e.to_string())?;
        }
        // The floor: the same number of containers run by raw runc, as many at once.
        let bundle = Bundle::write(
            &self.work,
            "seq",
            &fx.rootfs,
            &["sh", "-c", "seq 1 20000 | wc -l > /dev/null"],
        )?;

        let (mut wall_ours, mut wall_bk, mut wall_raw) = (Samples::default(), Samples::default(), Samples::default());
        let mut wall_nonet = Samples::default();
        let (mut p95_ours, mut p95_bk) = (Samples::default(), Samples::default());
        let (mut all_ours, mut all_bk) = (Samples::default(), Samples::default());
        // Each repetition is 200 pipelines a side (BuildKit's take about two minutes here): at most two.
        for _ in 0..self.real_reps.min(2) {
            let nonces: Vec<Vec<String>> = (0..SESSIONS)
                .map(|_| (0..PIPELINES_PER_SESSION).map(|_| self.nonce()).collect())
                .collect();

            let (wall, ours) = run_sessions(&sessions, &fx.busybox_tag, &nonces).await?;
            wall_ours.push(wall);
            // Diagnostic: the same on an engine without bridge networking (loopback-only namespaces).
            let nonces_nonet: Vec<Vec<String>> = (0..SESSIONS)
                .map(|_| (0..PIPELINES_PER_SESSION).map(|_| self.nonce()).collect())
                .collect();
            wall_nonet.push(run_sessions(&sessions_nonet, &fx.busybox_tag, &nonces_nonet).await?.0);

            let start = Instant::now();
            let per_session = futures_util::future::try_join_all(nonces.iter().enumerate().map(|(i, nonces)| {
                let dockerfile = &dockerfile;
                async move {
                    let mut s = Samples::default();
                    for nonce in nonces {
                        s.push(secs(
                            docker
                                .build(dockerfile, nonce, &format!("bench-conc-{i}:latest"))
                                .await?,
                        ));
                    }
                    Ok::<_, String>(s)
                }
            }))
            .await?;
            wall_bk.push(secs(start.elapsed()));
            let mut bk = Samples::default();
            per_session.iter().for_each(|s| bk.extend(s));

            let start = Instant::now();
            futures_util::future::try_join_all((0..SESSIONS).map(|_| {
                let bundle = &bundle;
                async move {
                    for _ in 0..PIPELINES_PER_SESSION * 3 {
                        bundle.run(Raw::Runc).await?;
                    }
                    Ok::<_, String>(())
                }
            }))
            .await?;
            wall_raw.push(secs(start.elapsed()));

            p95_ours.push(ours.percentile(95.0));
            p95_bk.push(bk.percentile(95.0));
            all_ours.extend(&ours);
            all_bk.extend(&bk);
        }
        let n = SESSIONS * PIPELINES_PER_SESSION;
        Ok(vec![
            Row::new(
                "12a",
                format!(
                    "{SESSIONS} sessions × {PIPELINES_PER_SESSION} 3-step pipelines at once, total wall: ours ÷ \
                     {SESSIONS} concurrent `docker build` loops on one dockerd"
                ),
                Unit::Ratio,
                wall_ours.ratio_to(&wall_bk),
            )
            .goal(Goal::AtMost(0.3))
            .note(format!(
                "ours {}, BuildKit {} for {n} pipelines",
                ms(wall_ours.median()),
                ms(wall_bk.median())
            )),
            Row::new(
                "12b",
                "the same, p95 of one pipeline's wall: ours ÷ BuildKit",
                Unit::Ratio,
                p95_ours.ratio_to(&p95_bk),
            )
            .goal(Goal::AtMost(0.3))
            .note(format!(
                "ours p95 {} (p50 {}), BuildKit p95 {} (p50 {}), over all repetitions",
                ms(all_ours.percentile(95.0)),
                ms(all_ours.percentile(50.0)),
                ms(all_bk.percentile(95.0)),
                ms(all_bk.percentile(50.0))
            )),
            Row::new(
                "12c",
                format!(
                    "diagnostic: the same total wall ÷ {} raw `runc run`s of one step, {SESSIONS} at a time (the \
                     floor on this machine)",
                    n * 3
                ),
                Unit::Ratio,
                wall_ours.ratio_to(&wall_raw),
            )
            .note(format!("raw runc {}", ms(wall_raw.median()))),
            Row::new(
                "12d",
                "diagnostic: our total wall with `DAGGER_RS_NETWORK=none` (loopback-only namespaces) ÷ the same \
                 raw `runc run`s",
                Unit::Ratio,
                wall_nonet.ratio_to(&wall_raw),
            )
            .note(format!(
                "ours without bridge networking {} (with it {})",
                ms(wall_nonet.median()),
                ms(wall_ours.median())
            )),
        ])
    }

    // -----------------------------------------------------------------------------------------------------
    // 13. A big real image
    // -----------------------------------------------------------------------------------------------------

    pub(crate) async fn big_image(&mut self) -> Result<Vec<Row>, String> {
        let (rust, _) = offline_images().await?;
        for tool in ["skopeo", "umoci"] {
            if which(tool).is_none() {
                return Err(format!("`{tool}` is not installed (apt-get install {tool})"));
            }
        }
        let [mut ours, mut peak, mut idle, mut skopeo, mut umoci, mut from]: [Samples; 6] = Default::default();
        let [mut inflate, mut gzip, mut extract]: [Samples; 3] = Default::default();
        let mut compressed = 0;
        for rep in 0..self.real_reps {
            let events = self.run_dir().join(format!("big-{rep}.jsonl"));
            let engine = self.real_engine("big", Some(events.clone())).await?;
            let result = async {
                let dag = engine.client().await?;
                dag.directory().entries().await.map_err(|e| e.to_string())?;
                let idle = peak_rss(engine.pid).ok_or("no VmHWM")?;
                let (_, t) = timed(dag.container().from(rust.as_str()).sync()).await?;
                let peak = peak_rss(engine.pid).ok_or("no VmHWM")?;
                Ok::<_, String>((t, idle, peak))
            }
            .await;
            engine.stop().await;
            let _ = std::fs::remove_dir_all(self.run_dir().join("cache-big"));
            let (t, i, p) = result?;
            ours.push(secs(t));
            idle.push(i as f64);
            peak.push(p as f64);
            let (steps, _) = events_since(&events, 0);
            from.push(step_secs(&steps, &["Container.from", "rust:1-slim"]));
            if rep == 0 {
                self.log.push(format!(
                    "big image (13a), first repetition, the engine's longest steps: {}",
                    top_steps(&steps, 4)
                ));
            }

            let dir = self.run_dir().join("umoci");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let layout = format!("{}:1-slim", dir.join("layout").display());
            let copy = run_tool(
                "skopeo",
                &[
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    &format!("docker://{rust}"),
                    &format!("oci:{layout}"),
                ],
            )
            .await;
            let unpack = match &copy {
                Ok(_) => {
                    run_tool(
                        "umoci",
                        &["unpack", "--image", &layout, &dir.join("bundle").to_string_lossy()],
                    )
                    .await
                }
                Err(e) => Err(e.clone()),
            };
            // Where a pull's time goes on this machine: the layer blobs skopeo fetched, decompressed alone by the
            // engine's decoder and by `gzip -dc`, and extracted by the engine's own `layer::extract`.
            let pieces = match (&copy, &unpack) {
                (Ok(_), Ok(_)) => layer_pieces(&dir.join("layout"), &dir.join("extract")).await,
                _ => Err("not measured: the copy or the unpack failed".into()),
            };
            let _ = std::fs::remove_dir_all(&dir);
            skopeo.push(secs(copy?));
            umoci.push(secs(unpack?));
            let pieces = pieces?;
            inflate.push(pieces.inflate);
            gzip.push(pieces.gzip);
            extract.push(pieces.extract);
            compressed = pieces.compressed;
        }
        let peer = Samples(skopeo.0.iter().zip(&umoci.0).map(|(a, b)| a + b).collect());
        Ok(vec![
            Row::new(
                "13a",
                "pull + unpack `rust:1-slim` (785 MB unpacked) into a fresh engine ÷ `skopeo copy` + `umoci unpack`",
                Unit::Ratio,
                ours.ratio_to(&peer),
            )
            .goal(Goal::AtMost(1.0))
            .note(format!(
                "ours {} (its `Container.from` step {}), skopeo {} + umoci {} = {}",
                ms(ours.median()),
                ms(from.median()),
                ms(skopeo.median()),
                ms(umoci.median()),
                ms(peer.median())
            )),
            Row::new(
                "13b",
                "engine peak RSS (VmHWM) pulling + unpacking `rust:1-slim`",
                Unit::Bytes,
                peak,
            )
            .note(format!("idle engine {}", format_value(idle.median(), Unit::Bytes))),
            Row::new(
                "13c",
                "span: the image's layer blobs decompressed by the engine's decoder (`oci::layer::decompress`, flate2 \
                 on miniz_oxide) into nothing",
                Unit::Seconds,
                inflate,
            )
            .note(format!(
                "{} compressed; `gzip -dc` of the same blobs {}",
                format_value(compressed as f64, Unit::Bytes),
                ms(gzip.median())
            )),
            Row::new(
                "13d",
                "span: the same blobs extracted by the engine's `oci::layer::extract` (decompress + write the files)",
                Unit::Seconds,
                extract.clone(),
            )
            .note(format!(
                "the rest of the engine's `Container.from` ({}), {} per repetition (median), is the download, its \
                 hashing and the store's writes, done before the extraction starts",
                ms(from.median()),
                ms(from.minus(&extract).median())
            )),
        ])
    }

    // -----------------------------------------------------------------------------------------------------
    // 14. Engine start
    // -----------------------------------------------------------------------------------------------------

    pub(crate) async fn engine_start(&mut self, workspace: &Path) -> Result<Vec<Row>, String> {
        let connect = self
            .engine_bin
            .parent()
            .map(|d| d.join("bench-connect"))
            .filter(|p| p.is_file())
            .ok_or("bench-connect was not built next to dagger-rs: cargo build --release -p bench")?;
        let python = workspace.join("target/python-sdk-venv/bin/python");
        if !python.is_file() {
            return Err(format!(
                "the Python SDK is not installed: run `scripts/python-sdk.sh --setup` (it creates {})",
                python.display()
            ));
        }
        let script = self.run_dir().join("start_client.py");
        std::fs::create_dir_all(self.run_dir()).map_err(|e| e.to_string())?;
        std::fs::write(&script, PYTHON_START).map_err(|e| format!("{}: {e}", script.display()))?;
        let [mut rc, mut rw, mut pc, mut pw, mut rc_proc, mut pc_proc]: [Samples; 6] = Default::default();
        let mut rc_no_roots = Samples::default();
        let no_certs = self.run_dir().join("no-certs");
        std::fs::create_dir_all(&no_certs).map_err(|e| format!("{}: {e}", no_certs.display()))?;
        for rep in 0..self.reps {
            let cache = self.run_dir().join(format!("start-rust-{rep}"));
            let _ = std::fs::remove_dir_all(&cache);
            let rust = |c: &Path| {
                let mut cmd = tokio::process::Command::new(&connect);
                cmd.env("DAGGER_RS_CACHE_DIR", c)
                    .env_remove("_EXPERIMENTAL_DAGGER_CLI_BIN");
                cmd
            };
            let (cold, whole) = start_client(rust(&cache)).await?;
            rc.push(cold);
            rc_proc.push(whole);
            rw.push(start_client(rust(&cache)).await?.0);
            let _ = std::fs::remove_dir_all(&cache);
            // Diagnostic: the same cold start with no CA roots for OpenSSL to load.
            let mut cmd = rust(&cache);
            cmd.env("SSL_CERT_FILE", "/dev/null").env("SSL_CERT_DIR", &no_certs);
            rc_no_roots.push(start_client(cmd).await?.0);
            let _ = std::fs::remove_dir_all(&cache);

            let cache = self.run_dir().join(format!("start-py-{rep}"));
            let _ = std::fs::remove_dir_all(&cache);
            let py = |c: &Path| {
                let mut cmd = tokio::process::Command::new(&python);
                cmd.arg(&script)
                    .env("DAGGER_RS_CACHE_DIR", c)
                    .env("_EXPERIMENTAL_DAGGER_CLI_BIN", &self.engine_bin)
                    .env("DAGGER_RS_PROGRESS", "plain");
                cmd
            };
            let (cold, whole) = start_client(py(&cache)).await?;
            pc.push(cold);
            pc_proc.push(whole);
            pw.push(start_client(py(&cache)).await?.0);
            let _ = std::fs::remove_dir_all(&cache);
        }
        Ok(vec![
            Row::new(
                "14a",
                "engine start, in-process (`connect` → first answered query), cold cache",
                Unit::Seconds,
                rc.clone(),
            )
            .note(format!(
                "the whole `bench-connect` process, start to exit: {}",
                ms(rc_proc.median())
            )),
            Row::new("14b", "the same, warm cache", Unit::Seconds, rw.clone()),
            Row::new(
                "14c",
                "engine start, `dagger-rs session` started by the official Python SDK (`dagger.Connection` → first \
                 answered query), cold cache",
                Unit::Seconds,
                pc.clone(),
            )
            .note(format!(
                "the whole `python` process, start to exit: {}",
                ms(pc_proc.median())
            )),
            Row::new("14d", "the same, warm cache", Unit::Seconds, pw.clone()),
            Row::new(
                "14e",
                "engine start, cold cache: in-process ÷ Python SDK's session",
                Unit::Ratio,
                rc.ratio_to(&pc),
            ),
            Row::new(
                "14f",
                "engine start, warm cache: in-process ÷ Python SDK's session",
                Unit::Ratio,
                rw.ratio_to(&pw),
            ),
            Row::new(
                "14g",
                "diagnostic: 14a with `SSL_CERT_FILE=/dev/null` and an empty `SSL_CERT_DIR` (no CA roots for \
                 OpenSSL to load when the SDK's HTTP client is built)",
                Unit::Seconds,
                rc_no_roots.clone(),
            )
            .note(format!(
                "14a − 14g per repetition: {} (the system's CA roots, which OpenSSL loads when the SDK builds its \
                 loopback HTTP client)",
                ms(rc.minus(&rc_no_roots).median())
            )),
        ])
    }

    // -----------------------------------------------------------------------------------------------------
    // 15. SDK build cost
    // -----------------------------------------------------------------------------------------------------

    pub(crate) async fn sdk_build(&mut self, workspace: &Path) -> Result<Vec<Row>, String> {
        let root = self.work.join("sdkbuild");
        let mut rows = Vec::new();
        let mut builds: Vec<(&'static str, CleanBuild)> = Vec::new();
        let variants: [(&str, &str, &'static str, Option<f64>); 3] = [
            ("15a", "without the `embedded` feature", "lean", Some(20.0)),
            (
                "15b",
                "with the `embedded` feature (the default)",
                "embedded",
                Some(60.0),
            ),
            (
                "15c",
                "peer: the same program on the official Rust SDK (`dagger-sdk` 0.21.8)",
                "official",
                None,
            ),
        ];
        for (id, what, name, goal) in variants {
            let result = match sdk_crate(&root, name, workspace) {
                Ok(dir) => clean_build(&dir, &root.join(format!("target-{name}"))).await,
                Err(e) => Err(e),
            };
            let what =
                format!("clean debug build of a minimal pipeline crate, {what} (`cargo build --offline`, 2 jobs)");
            match result {
                Ok(b) => {
                    let mut s = Samples::default();
                    s.push(b.wall);
                    let crates = match &b.units_error {
                        Some(e) => e.clone(),
                        None => format!("{} crates, longest: {}", b.units.len(), top_units(&b.units, 5)),
                    };
                    let mut note = format!(
                        "CPU time (user + system) {} (on 2 cores the wall cannot be under half of it); debug binary \
                         {}; {crates}",
                        ms(b.cpu),
                        format_value(b.size as f64, Unit::Bytes),
                    );
                    if name == "embedded"
                        && let Some((_, lean)) = builds.iter().find(|(n, _)| *n == "lean")
                    {
                        let added: Vec<&steplog::Unit> = b
                            .units
                            .iter()
                            .filter(|u| !lean.units.iter().any(|l| l.name == u.name))
                            .collect();
                        let total: f64 = added.iter().map(|u| u.secs).sum();
                        note.push_str(&format!(
                            "; the {} crates `embedded` adds take {} of compile time, longest: {}",
                            added.len(),
                            ms(total),
                            top_units(added.iter().copied(), 8)
                        ));
                    }
                    let mut row = Row::new(id, what, Unit::Seconds, s).note(note);
                    if let Some(g) = goal {
                        row = row.goal(Goal::AtMost(g));
                    }
                    rows.push(row);
                    builds.push((name, b));
                }
                Err(e) => rows.push(Row::skipped(id, what, e)),
            }
        }
        let wall = |n: &str| builds.iter().find(|(w, _)| *w == n).map(|(_, b)| b.wall);
        if let (Some(e), Some(o)) = (wall("embedded"), wall("official")) {
            let mut s = Samples::default();
            s.push(e / o);
            rows.push(Row::new(
                "15d",
                "clean build with the `embedded` feature ÷ the official Rust SDK's",
                Unit::Ratio,
                s,
            ));
        }
        let _ = std::fs::remove_dir_all(&root);
        Ok(rows)
    }
}

/// The Python client of figure 14: the seconds from `dagger.Connection` to the answer of `version`, then the
/// seconds until the session has ended.
const PYTHON_START: &str = r#"import asyncio, sys, time
import dagger

async def main():
    start = time.monotonic()
    async with dagger.Connection(dagger.Config(log_output=None)) as client:
        version = await client.version()
        answered = time.monotonic() - start
    print(f"{answered:.6f} {time.monotonic() - start:.6f} {version}")

asyncio.run(main())
"#;

/// Runs a figure-14 client; returns the seconds it printed (connect → first answer) and the process's whole
/// wall time.
async fn start_client(mut cmd: tokio::process::Command) -> Result<(f64, f64), String> {
    cmd.env_remove("DAGGER_SESSION_PORT")
        .env_remove("DAGGER_SESSION_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().await.map_err(|e| format!("starting the client: {e}"))?;
    let whole = secs(start.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "the client failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let first = stdout
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("the client printed no time: {stdout}"))?;
    Ok((first, whole))
}

/// Runs `nonces[i]`'s 3-step pipelines one after another in session `i`, all sessions at once; the total wall
/// and every pipeline's wall.
async fn run_sessions(sessions: &[Query], base: &str, nonces: &[Vec<String>]) -> Result<(f64, Samples), String> {
    let start = Instant::now();
    let per_session = futures_util::future::try_join_all(sessions.iter().zip(nonces).map(|(dag, nonces)| {
        let base = dag.container().from(base);
        async move {
            let mut s = Samples::default();
            for nonce in nonces {
                let (_, t) = timed(pipelines::three_steps(&base, nonce).sync()).await?;
                s.push(secs(t));
            }
            Ok::<_, String>(s)
        }
    }))
    .await?;
    let wall = secs(start.elapsed());
    let mut all = Samples::default();
    per_session.iter().for_each(|s| all.extend(s));
    Ok((wall, all))
}

/// What a pull is made of on this machine, measured on the layer blobs of an OCI layout.
struct LayerPieces {
    /// Bytes of the layer blobs.
    compressed: u64,
    /// Seconds to decompress them with the engine's decoder, into nothing.
    inflate: f64,
    /// Seconds for `gzip -dc` of them into nothing.
    gzip: f64,
    /// Seconds for the engine's `layer::extract` of them.
    extract: f64,
}

/// The layer blobs of the single-image OCI layout at `layout` (index → manifest → layers).
fn layout_layers(layout: &Path) -> Result<Vec<PathBuf>, String> {
    let read = |p: &Path| -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let blob = |digest: &str| -> Result<PathBuf, String> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("digest {digest}"))?;
        Ok(layout.join("blobs/sha256").join(hex))
    };
    let index = read(&layout.join("index.json"))?;
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or("the layout's index names no manifest")?;
    let manifest = read(&blob(manifest)?)?;
    manifest["layers"]
        .as_array()
        .ok_or("the manifest has no layers")?
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap_or_default()))
        .collect()
}

async fn layer_pieces(layout: &Path, scratch: &Path) -> Result<LayerPieces, String> {
    let layers = layout_layers(layout)?;
    let compressed = layers
        .iter()
        .map(|l| std::fs::metadata(l).map(|m| m.len()).unwrap_or(0))
        .sum();
    let blobs = layers.clone();
    let inflate = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        for blob in &blobs {
            let (_, mut reader) = dagger_engine::oci::layer::open_blob(blob).map_err(|e| e.to_string())?;
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| format!("{}: {e}", blob.display()))?;
        }
        Ok::<_, String>(secs(start.elapsed()))
    })
    .await
    .map_err(|e| e.to_string())??;
    let start = Instant::now();
    for blob in &layers {
        let status = tokio::process::Command::new("gzip")
            .arg("-dc")
            .arg(blob)
            .stdout(Stdio::null())
            .status()
            .await
            .map_err(|e| format!("gzip: {e}"))?;
        if !status.success() {
            return Err(format!("gzip -dc {} failed ({status})", blob.display()));
        }
    }
    let gzip = secs(start.elapsed());
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let dest = scratch.to_owned();
    let extract = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        for (i, blob) in layers.iter().enumerate() {
            dagger_engine::oci::layer::extract(blob, &dest.join(i.to_string())).map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(secs(start.elapsed()))
    })
    .await
    .map_err(|e| e.to_string())??;
    let _ = std::fs::remove_dir_all(scratch);
    Ok(LayerPieces {
        compressed,
        inflate,
        gzip,
        extract,
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|p| p.is_file()))
}

/// Runs a tool to completion; its wall time, or its error output.
async fn run_tool(bin: &str, args: &[&str]) -> Result<Duration, String> {
    let start = Instant::now();
    let out = tokio::process::Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{bin} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(start.elapsed())
}

/// Writes the minimal pipeline crate `name` under `root`: one `main` that runs one exec and prints its output.
/// `lean` and `embedded` depend on this workspace's `dagger` by path (with the workspace's lock file, so the
/// same versions as the workspace), `official` on `dagger-sdk` 0.21.8 from the local registry cache.
fn sdk_crate(root: &Path, name: &str, workspace: &Path) -> Result<PathBuf, String> {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dagger = workspace.join("dagger");
    let (dep, main) = match name {
        "official" => (
            "dagger-sdk = \"=0.21.8\"\n".to_owned(),
            "#[tokio::main]\nasync fn main() {\n    let r = dagger_sdk::connect(|client| async move {\n        let out = \
             client.container().from(\"busybox\").with_exec(vec![\"echo\", \"hi\"]).stdout().await?;\n        \
             println!(\"{out}\");\n        Ok(())\n    })\n    .await;\n    if let Err(e) = r {\n        \
             eprintln!(\"{e}\");\n        std::process::exit(1);\n    }\n}\n",
        ),
        _ => (
            format!(
                "dagger = {{ path = {:?}{} }}\n",
                dagger.display().to_string(),
                if name == "lean" {
                    ", default-features = false"
                } else {
                    ""
                }
            ),
            "use dagger::prelude::*;\n\n#[tokio::main]\nasync fn main() -> Result<(), dagger::Error> {\n    let out = \
             dagger::connect(|dag| async move {\n        dag.container().from(\"busybox\").with_exec([\"echo\", \
             \"hi\"]).stdout().await\n    })\n    .await?;\n    println!(\"{out}\");\n    Ok(())\n}\n",
        ),
    };
    let manifest = format!(
        "[package]\nname = \"minimal-pipeline\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\n{dep}tokio = {{ version = \"1.47\", features = [\"rt-multi-thread\", \"macros\"] }}\n\n\
         [workspace]\n"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("src/main.rs"), main).map_err(|e| e.to_string())?;
    if name != "official" {
        std::fs::copy(workspace.join("Cargo.lock"), dir.join("Cargo.lock"))
            .map_err(|e| format!("copying the workspace's Cargo.lock: {e}"))?;
    }
    Ok(dir)
}

/// One clean build's figures.
struct CleanBuild {
    wall: f64,
    /// CPU seconds (user + system) of cargo and everything it ran.
    cpu: f64,
    size: u64,
    /// Compile time by crate (cargo's timings), longest first; empty when the page could not be read.
    units: Vec<steplog::Unit>,
    /// Why `units` is empty.
    units_error: Option<String>,
}

/// The first `n` units, `name 1.23 s`.
fn top_units<'a>(units: impl IntoIterator<Item = &'a steplog::Unit>, n: usize) -> String {
    units
        .into_iter()
        .take(n)
        .map(|u| format!("{} {}", u.name, ms(u.secs)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cargo build --offline --timings` of the crate in `dir` into a fresh `target`; removed afterwards.
async fn clean_build(dir: &Path, target: &Path) -> Result<CleanBuild, String> {
    let _ = std::fs::remove_dir_all(target);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cpu_before = crate::machine::children_cpu_secs();
    let start = Instant::now();
    let out = tokio::process::Command::new(cargo)
        .args(["build", "--offline", "--timings"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_JOBS")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cargo: {e}"))?;
    let wall = secs(start.elapsed());
    let cpu = match (cpu_before, crate::machine::children_cpu_secs()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let result = if out.status.success() {
        let size = std::fs::metadata(target.join("debug/minimal-pipeline"))
            .map(|m| m.len())
            .map_err(|e| format!("the built binary: {e}"))?;
        let html = std::fs::read_to_string(target.join("cargo-timings/cargo-timing.html")).unwrap_or_default();
        let (units, units_error) = match steplog::cargo_units(&html) {
            Ok(units) => (units, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        Ok(CleanBuild {
            wall,
            cpu,
            size,
            units,
            units_error,
        })
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        Err(format!(
            "cargo build failed: {}",
            lines[lines.len().saturating_sub(15)..].join("\n")
        ))
    };
    let _ = std::fs::remove_dir_all(target);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_does_the_pipelines_work() {
        let f = quickstart_dockerfile("r:1", "d:2");
        assert!(f.starts_with("FROM r:1 AS toolchain\n"));
        // The same cache mounts as the pipeline's cache volumes, on both cargo steps.
        assert_eq!(
            f.matches("--mount=type=cache,id=quickstart-cargo-target,target=/cargo-target")
                .count(),
            2
        );
        assert_eq!(
            f.matches("--mount=type=cache,id=quickstart-cargo-registry,target=/usr/local/cargo/registry")
                .count(),
            2
        );
        assert!(f.contains("cargo test --locked"));
        assert!(f.contains("cargo build --release --locked && cp /cargo-target/release/app /app"));
        assert!(f.contains("FROM d:2\n"));
        assert!(f.contains("COPY --from=build /app /usr/local/bin/app\n"));
        // No `# syntax=` line: the frontend built into dockerd, nothing pulled from Docker Hub.
        assert!(!f.contains("syntax"));
    }

    #[test]
    fn touching_appends_a_test() {
        let dir = std::env::temp_dir().join(format!("bench-touch-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src"))
            .map_err(|e| e.to_string())
            .unwrap_or(());
        std::fs::write(dir.join("src/lib.rs"), "pub fn f() {}\n").unwrap_or(());
        assert_eq!(touch_app(&dir, "touched_0_0"), Ok(()));
        let text = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
        assert_eq!(text, "pub fn f() {}\n\n#[test]\nfn touched_0_0() {}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
