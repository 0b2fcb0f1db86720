//! The figures. Each one measures ours and its peer back to back in every repetition, so slow moments of a
//! busy machine hit both sides of a ratio alike.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dagger::prelude::*;
use dagger::querybuilder::IdMode;

use crate::docker::Dockerd;
use crate::engine::{EngineOpts, EngineProc};
use crate::fixtures::Fixtures;
use crate::machine::peak_rss;
use crate::pipelines::{self, ci, fan8, linear10, unbalanced};
use crate::proxy::CountingProxy;
use crate::raw::{Bundle, Raw};
use crate::report::{Goal, Row};
use crate::stats::{Samples, Unit, format_value};

/// How an engine under test is configured beyond its runtime.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Variant {
    network_none: bool,
    snapshotter: Option<&'static str>,
}

impl Variant {
    /// What a user gets: bridge networking, the snapshotter the engine picks.
    pub(crate) const DEFAULT: Variant = Variant {
        network_none: false,
        snapshotter: None,
    };
    /// overlayfs forced (`DAGGER_RS_SNAPSHOTTER=overlay`).
    pub(crate) const OVERLAY: Variant = Variant {
        network_none: false,
        snapshotter: Some("overlay"),
    };
    /// overlayfs forced and loopback-only networking.
    pub(crate) const OVERLAY_NO_NET: Variant = Variant {
        network_none: true,
        snapshotter: Some("overlay"),
    };

    fn label(self) -> String {
        format!(
            "{}{}",
            self.snapshotter.unwrap_or("auto"),
            if self.network_none { "-nonet" } else { "" }
        )
    }

    fn describe(self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.snapshotter {
            parts.push(format!("`DAGGER_RS_SNAPSHOTTER={s}`"));
        }
        if self.network_none {
            parts.push("`DAGGER_RS_NETWORK=none`".to_owned());
        }
        parts.join(" and ")
    }
}

/// One exec figure's samples.
#[derive(Default)]
struct ExecPair {
    ours: Samples,
    raw: Samples,
    cached: Samples,
}

/// What every figure shares.
pub(crate) struct Bench {
    pub(crate) reps: usize,
    pub(crate) exec_reps: usize,
    pub(crate) mem_reps: usize,
    /// Repetitions of the real-work figures (11–13), each minutes long.
    pub(crate) real_reps: usize,
    pub(crate) big_mib: Vec<u64>,
    pub(crate) work: PathBuf,
    pub(crate) engine_bin: PathBuf,
    /// Remarks for the report (a peer that could not run, a figure that failed).
    pub(crate) log: Vec<String>,
    nonce_prefix: String,
    nonce: u64,
}

fn ms(d: f64) -> String {
    format_value(d, Unit::Seconds)
}

/// What the engine answers when it hits its veth name race (finding 3 in `FINDINGS.md`).
const VETH_RACE: &str = "RTNETLINK answers: File exists";

/// How many measurements were made again because of that race.
pub(crate) static VETH_RETRIES: AtomicUsize = AtomicUsize::new(0);

/// [`timed`], made again (up to three times) when the engine hit its veth name race: that is a known engine
/// bug with its own finding, not what these figures measure. Retries are counted and reported.
pub(crate) async fn timed_retry<T, E: std::fmt::Display, F: IntoFuture<Output = Result<T, E>>>(
    mut make: impl FnMut() -> F,
) -> Result<Duration, String> {
    let mut attempt = 0;
    loop {
        match timed(make()).await {
            Err(e) if e.contains(VETH_RACE) && attempt < 3 => {
                attempt += 1;
                VETH_RETRIES.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r,
        }
    }
}

pub(crate) async fn timed<T, E: std::fmt::Display>(
    f: impl IntoFuture<Output = Result<T, E>>,
) -> Result<Duration, String> {
    let start = Instant::now();
    f.await.map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

impl Bench {
    pub(crate) fn new(work: PathBuf, engine_bin: PathBuf) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Bench {
            reps: 5,
            exec_reps: 20,
            mem_reps: 2,
            real_reps: 3,
            big_mib: vec![250, 500],
            work,
            engine_bin,
            log: Vec::new(),
            nonce_prefix: format!("{t}-{}", std::process::id()),
            nonce: 0,
        }
    }

    /// A value never used before (in this run or an earlier one), to make every exec run.
    pub(crate) fn nonce(&mut self) -> String {
        self.nonce += 1;
        format!("{}-{}", self.nonce_prefix, self.nonce)
    }

    pub(crate) fn run_dir(&self) -> PathBuf {
        self.work.join("run")
    }

    pub(crate) async fn engine(
        &self,
        name: &str,
        runtime: &'static str,
        variant: Variant,
    ) -> Result<EngineProc, String> {
        let opts = EngineOpts {
            runtime,
            network_none: variant.network_none,
            snapshotter: variant.snapshotter,
            cache_dir: self.run_dir().join(format!("cache-{name}")),
            workdir: self.work.clone(),
            events: None,
        };
        EngineProc::start(
            &self.engine_bin,
            &opts,
            &self.run_dir().join(format!("engine-{name}.log")),
        )
        .await
    }

    // -----------------------------------------------------------------------------------------------------
    // 5. Query build
    // -----------------------------------------------------------------------------------------------------

    /// Building and printing a 1000-op chain, without an engine.
    pub(crate) fn query_build(&mut self) -> Result<Vec<Row>, String> {
        fn once() -> Result<usize, String> {
            let dag = Query::detached();
            let mut c = dag.container().from("busybox");
            for i in 0..1000 {
                let arg = i.to_string();
                c = c.with_exec(["echo", arg.as_str()]);
            }
            let doc = c
                .selection()
                .select("stdout", vec![])
                .print(IdMode::Resolved)
                .map_err(|e| format!("printing: {e:?}"))?;
            Ok(doc.len())
        }
        once()?;
        let mut s = Samples::default();
        let mut len = 0;
        for _ in 0..200 {
            let start = Instant::now();
            len = std::hint::black_box(once()?);
            s.push_duration(start.elapsed());
        }
        Ok(vec![
            Row::new(
                "5",
                "query build: 1000 chained `withExec` built and printed",
                Unit::Seconds,
                s,
            )
            .goal(Goal::Below(1e-3))
            .note(format!("no engine; document of {len} bytes; 200 repetitions")),
        ])
    }

    // -----------------------------------------------------------------------------------------------------
    // 4g, 4h. Bytes a plan sends, with and without known IDs reused
    // -----------------------------------------------------------------------------------------------------

    /// The bytes of the documents of two plans, with ID reuse (objects whose IDs are known are loaded with
    /// `node(id:)`) and without (every document repeats each object's chain), without an engine.
    pub(crate) fn plan_bytes(&mut self) -> Vec<Row> {
        /// The size of one of this engine's IDs (`Container:sha256:` and 64 hex digits), counted for each
        /// `<id:…>` placeholder of a plan.
        const ID_BYTES: usize = 81;
        fn bytes(plan: &Plan) -> usize {
            plan.documents
                .iter()
                .map(|d| {
                    let placeholders = d.query.matches("\"<id:").count();
                    let placeholder_bytes: usize = d
                        .query
                        .match_indices("\"<id:")
                        .filter_map(|(at, _)| d.query[at + 1..].find('>').map(|end| end + 1))
                        .sum();
                    d.query.len() - placeholder_bytes + placeholders * ID_BYTES
                })
                .sum()
        }
        let settings = examples::quickstart::Settings::default();
        let src = || Query::detached().host().directory(".");
        let base = || "debian:bookworm-slim".to_owned();
        let plans = [
            (
                "4g",
                "quickstart_dsl",
                examples::quickstart_dsl::plan(&settings),
                dagger::__private::without_id_reuse(|| examples::quickstart_dsl::plan(&settings)),
            ),
            (
                "4h",
                "diamond",
                pipelines::diamond_steps::diamond::plan(src(), base()),
                dagger::__private::without_id_reuse(|| pipelines::diamond_steps::diamond::plan(src(), base())),
            ),
        ];
        plans
            .into_iter()
            .map(|(id, name, after, before)| {
                let (after_n, before_n) = (bytes(&after), bytes(&before));
                let mut s = Samples::default();
                s.push(after_n as f64 / before_n as f64);
                Row::new(
                    id,
                    format!("bytes sent by the `{name}` plan: known IDs reused ÷ every chain repeated"),
                    Unit::Ratio,
                    s,
                )
                .note(format!(
                    "{after_n} bytes with reuse, {before_n} without, in {} requests; no engine (the plan's documents, \
                     each ID counted at {ID_BYTES} bytes)",
                    after.documents.len()
                ))
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------------------------
    // 3. Per-exec overhead
    // -----------------------------------------------------------------------------------------------------

    /// One `withExec(["true"])` on a cached base through the engine, and `runtime run` of the same bundle; also
    /// the same exec again (cached).
    async fn exec_pair(&mut self, fx: &Fixtures, raw: Raw, variant: Variant) -> Result<ExecPair, String> {
        let name = format!("exec-{}-{}", raw.name(), variant.label());
        let engine = self.engine(&name, raw.name(), variant).await?;
        let result = async {
            let dag = engine.client().await?;
            let base = dag.container().from(&fx.busybox_pinned);
            base.sync().await.map_err(|e| e.to_string())?;
            let bundle = Bundle::write(&self.work, "true", &fx.rootfs, &["true"])?;
            let mut pair = ExecPair::default();
            for i in 0..=self.exec_reps {
                let nonce = self.nonce();
                let exec = base.with_env_variable("BENCH_NONCE", nonce).with_exec(["true"]);
                let t = timed_retry(|| exec.sync()).await?;
                let r = bundle.run(raw).await?;
                // The same exec again: only the request and the engine's cache lookup.
                let c = timed_retry(|| exec.sync()).await?;
                // The first round warms both sides up.
                if i > 0 {
                    pair.ours.push_duration(t);
                    pair.raw.push_duration(r);
                    pair.cached.push_duration(c);
                }
            }
            Ok::<_, String>(pair)
        }
        .await;
        engine.stop().await;
        result
    }

    pub(crate) async fn exec_overhead(&mut self, fx: &Fixtures) -> Vec<Row> {
        let mut rows = Vec::new();
        self.log.push(crate::spans::overlay_probe(&self.work));
        let cases = [
            ("3a", Raw::Runc, Variant::DEFAULT, true),
            ("3b", Raw::Crun, Variant::DEFAULT, true),
            ("3c", Raw::Runc, Variant::OVERLAY, false),
            ("3d", Raw::Crun, Variant::OVERLAY, false),
            ("3e", Raw::Runc, Variant::OVERLAY_NO_NET, false),
            ("3f", Raw::Crun, Variant::OVERLAY_NO_NET, false),
        ];
        for (id, raw, variant, headline) in cases {
            let what = if headline {
                format!(
                    "one `withExec([\"true\"])` ÷ raw `{} run` of the same bundle",
                    raw.name()
                )
            } else {
                format!(
                    "diagnostic: the same, engine with {} ÷ raw `{} run`",
                    variant.describe(),
                    raw.name()
                )
            };
            match self.exec_pair(fx, raw, variant).await {
                Ok(pair) => {
                    if id == "3a" {
                        rows.push(Row::new(
                            "3n",
                            "span: the same `withExec` requested again (cached: request + cache lookup)",
                            Unit::Seconds,
                            pair.cached.clone(),
                        ));
                    }
                    let mut row = Row::new(id, what, Unit::Ratio, pair.ours.ratio_to(&pair.raw)).note(format!(
                        "ours {} (min {}), raw {} {} (min {})",
                        ms(pair.ours.median()),
                        ms(pair.ours.summary().map_or(f64::NAN, |s| s.min)),
                        raw.name(),
                        ms(pair.raw.median()),
                        ms(pair.raw.summary().map_or(f64::NAN, |s| s.min)),
                    ));
                    if headline {
                        row = row.goal(Goal::AtMost(1.5));
                    }
                    rows.push(row);
                }
                Err(e) => rows.push(Row::skipped(id, what, e)),
            }
        }
        match crate::spans::exec_spans(&self.work, fx, self.exec_reps).await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::skipped("3g", "spans of one exec", e)),
        }
        rows
    }

    // -----------------------------------------------------------------------------------------------------
    // 1, 2, 4, 7: on one runc engine
    // -----------------------------------------------------------------------------------------------------

    /// Fan-out: eight `sleep 1` steps in one level.
    async fn fan_out(&mut self, dag: &Query, fx: &Fixtures) -> Result<Vec<Row>, String> {
        let base = dag.container().from(&fx.busybox_pinned);
        base.sync().await.map_err(|e| e.to_string())?;
        let bundle = Bundle::write(&self.work, "sleep1", &fx.rootfs, &["sleep", "1"])?;
        let (mut ours, mut raw8, mut single) = (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..self.reps {
            let nonce = self.nonce();
            let wall = timed_retry(|| fan8::run(dag, base.clone(), nonce.clone(), "sleep 1".to_owned())).await?;
            ours.push_duration(wall);
            raw8.push_duration(bundle.run_parallel(Raw::Runc, 8).await?);
            let nonce = self.nonce();
            single.push_duration(
                timed_retry(|| pipelines::tagged(base.clone(), nonce.clone(), 0, "sleep 1".to_owned()).sync()).await?,
            );
        }
        let peers = format!(
            "ours {}; 8 raw `runc run` at once {}; one `sleep 1` exec through the engine {}",
            ms(ours.median()),
            ms(raw8.median()),
            ms(single.median())
        );
        Ok(vec![
            Row::new(
                "1a",
                "fan-out: 8 × `sleep 1` in one level, wall ÷ critical path (1 s)",
                Unit::Ratio,
                ours.divided_by(1.0),
            )
            .goal(Goal::AtMost(1.10))
            .note(peers),
            Row::new(
                "1b",
                "fan-out wall ÷ 8 raw `runc run` started at once (the floor on this machine)",
                Unit::Ratio,
                ours.ratio_to(&raw8),
            ),
            Row::new(
                "1c",
                "fan-out wall ÷ one `sleep 1` exec through the engine (measured critical path)",
                Unit::Ratio,
                ours.ratio_to(&single),
            ),
        ])
    }

    /// Fan-out on engines with overlayfs forced (what the default would give with a working overlay probe), with
    /// bridge networking and with loopback only: how much of the fan-out overhead each part makes.
    pub(crate) async fn fan_out_variants(&mut self, fx: &Fixtures) -> Vec<Row> {
        let mut rows = Vec::new();
        for (id_wall, id_raw, variant) in [("1d", "1e", Variant::OVERLAY), ("1f", "1g", Variant::OVERLAY_NO_NET)] {
            let what = format!("diagnostic: fan-out wall ÷ 1 s, engine with {}", variant.describe());
            let engine = match self.engine(&format!("fan-{}", variant.label()), "runc", variant).await {
                Ok(e) => e,
                Err(e) => {
                    rows.push(Row::skipped(id_wall, what, e));
                    continue;
                }
            };
            let result = async {
                let dag = engine.client().await?;
                self.fan_out(&dag, fx).await
            }
            .await;
            engine.stop().await;
            match result {
                Ok(r) => rows.extend(r.into_iter().filter_map(|r| match r.id {
                    "1a" => Some(Row {
                        id: id_wall,
                        what: what.clone(),
                        goal: None,
                        ..r
                    }),
                    "1b" => Some(Row {
                        id: id_raw,
                        what: "diagnostic: the same ÷ 8 raw `runc run` started at once".to_owned(),
                        note: String::new(),
                        ..r
                    }),
                    _ => None,
                })),
                Err(e) => rows.push(Row::skipped(id_wall, what, e)),
            }
        }
        rows
    }

    /// The 10-step pipeline, cold and then cached in the same engine.
    async fn cached_rerun(&mut self, dag: &Query, fx: &Fixtures) -> Result<(Vec<Row>, Vec<String>), String> {
        let base = dag.container().from(&fx.busybox_pinned);
        let (mut cold, mut cached) = (Samples::default(), Samples::default());
        let mut nonces = Vec::new();
        for _ in 0..self.reps {
            let nonce = self.nonce();
            cold.push_duration(timed_retry(|| linear10::run(dag, base.clone(), nonce.clone())).await?);
            cached.push_duration(timed_retry(|| linear10::run(dag, base.clone(), nonce.clone())).await?);
            nonces.push(nonce);
        }
        Ok((
            vec![
                Row::new(
                    "2a",
                    "cached re-run of a 10-step pipeline (same engine), absolute",
                    Unit::Seconds,
                    cached.clone(),
                )
                .goal(Goal::Below(0.050))
                .note(format!("cold run {}", ms(cold.median()))),
                Row::new(
                    "2b",
                    "cached re-run ÷ cold run of the same pipeline",
                    Unit::Ratio,
                    cached.ratio_to(&cold),
                ),
            ],
            nonces,
        ))
    }

    /// The re-run against a new engine process on the same cache directory (results come from disk).
    async fn disk_rerun(&mut self, fx: &Fixtures, nonces: &[String]) -> Result<Vec<Row>, String> {
        let engine = self.engine("main", "runc", Variant::DEFAULT).await?;
        let result = async {
            let dag = engine.client().await?;
            // The first request of a new process pays one-time costs (schema, store); time it apart.
            let first = timed(dag.directory().entries()).await?;
            let base = dag.container().from(&fx.busybox_pinned);
            let mut s = Samples::default();
            for nonce in nonces {
                s.push_duration(timed_retry(|| linear10::run(&dag, base.clone(), nonce.clone())).await?);
            }
            Ok::<_, String>((s, first))
        }
        .await;
        engine.stop().await;
        let (s, first) = result?;
        Ok(vec![
            Row::new(
                "2c",
                "cached re-run of the 10-step pipeline in a new engine process (disk cache)",
                Unit::Seconds,
                s,
            )
            .goal(Goal::Below(0.050))
            .note(format!(
                "restarted engine on the same cache directory, after one trivial request (which took {})",
                ms(first.as_secs_f64())
            )),
        ])
    }

    /// Requests per pipeline and wall time, `pipeline!` against the plain API, counted by a proxy.
    async fn requests(&mut self, engine: &EngineProc, fx: &Fixtures) -> Result<Vec<Row>, String> {
        let proxy = CountingProxy::start(engine.port).await.map_err(|e| e.to_string())?;
        let dag = engine.client_at(&proxy.url()).await?;
        let src_path = fx.src.to_string_lossy().into_owned();
        let mut rows = Vec::new();
        for (name, id_count, id_wall) in [
            ("fan8", "4a", "4b"),
            ("linear10", "4c", "4d"),
            ("ci", "4e", "4f"),
            ("unbalanced", "4i", "4j"),
        ] {
            let (mut dsl_n, mut plain_n, mut dsl_t, mut plain_t) = (
                Samples::default(),
                Samples::default(),
                Samples::default(),
                Samples::default(),
            );
            for _ in 0..self.reps {
                // Fresh objects every time, as in a new program: no ID is known yet.
                for dsl in [true, false] {
                    // Made again from scratch (new nonce, new objects) when the engine hit its veth race, so
                    // the failed attempt's requests are not counted.
                    let mut attempt = 0;
                    let (t, before) = loop {
                        let base = dag.container().from(&fx.busybox_pinned);
                        let src = dag.host().directory(src_path.as_str());
                        let nonce = self.nonce();
                        let before = proxy.count();
                        let t = match (name, dsl) {
                            ("fan8", true) => timed(fan8::run(&dag, base, nonce, "true".to_owned())).await,
                            ("fan8", false) => timed(pipelines::fan8_plain(&base, &nonce, "true")).await,
                            ("linear10", true) => timed(linear10::run(&dag, base, nonce)).await,
                            ("linear10", false) => timed(pipelines::linear10_plain(&base, &nonce)).await,
                            ("unbalanced", true) => timed(unbalanced::run(&dag, base, nonce)).await,
                            ("unbalanced", false) => timed(pipelines::unbalanced_plain(&base, &nonce)).await,
                            (_, true) => timed(ci::run(&dag, base, src, nonce)).await,
                            (_, false) => timed(pipelines::ci_plain(&dag, &base, &src, &nonce)).await,
                        };
                        match t {
                            Err(e) if e.contains(VETH_RACE) && attempt < 3 => {
                                attempt += 1;
                                VETH_RETRIES.fetch_add(1, Ordering::SeqCst);
                            }
                            t => break (t?, before),
                        }
                    };
                    let n = (proxy.count() - before) as f64;
                    if dsl {
                        dsl_n.push(n);
                        dsl_t.push_duration(t);
                    } else {
                        plain_n.push(n);
                        plain_t.push_duration(t);
                    }
                }
            }
            let levels = match name {
                "fan8" => fan8::LEVELS.len(),
                "linear10" => linear10::LEVELS.len(),
                "unbalanced" => unbalanced::LEVELS.len(),
                _ => ci::LEVELS.len(),
            };
            rows.push(
                Row::new(
                    id_count,
                    format!("requests per run of `{name}` with `pipeline!`"),
                    Unit::Count,
                    dsl_n,
                )
                .note(format!("plain API: {} requests; {levels} level(s)", plain_n.median())),
            );
            let wall = Row::new(
                id_wall,
                format!("wall of `{name}`: `pipeline!` ÷ plain API"),
                Unit::Ratio,
                dsl_t.ratio_to(&plain_t),
            )
            .note(format!(
                "pipeline! {}, plain {}",
                ms(dsl_t.median()),
                ms(plain_t.median())
            ));
            // The unbalanced graph: requests follow dependencies, so the chain does not wait for the slow
            // branch, as with `tokio::try_join!`.
            rows.push(if name == "unbalanced" {
                wall.goal(Goal::AtMost(1.05))
            } else {
                wall
            });
        }
        Ok(rows)
    }

    /// The same three steps as a Dockerfile built by BuildKit and as our pipeline, cold and cached.
    async fn buildkit(&mut self, dag: &Query, fx: &Fixtures) -> Result<Vec<Row>, String> {
        let dir = PathBuf::from(format!("/tmp/drsb-{}", std::process::id()));
        let docker = Dockerd::start(&dir, &fx.registry.host()).await?;
        let result = async {
            let dockerfile = pipelines::three_steps_dockerfile(&fx.busybox_tag);
            let base = dag.container().from(&fx.busybox_tag);
            // Warm-up: both sides pull the base once.
            let nonce = self.nonce();
            docker.build(&dockerfile, &nonce, "bench-three:latest").await?;
            timed_retry(|| pipelines::three_steps(&base, &nonce).sync()).await?;
            let mut rows = Vec::new();
            let linear_dockerfile = pipelines::linear10_dockerfile(&fx.busybox_tag);
            for (ids, what, dockerfile) in [
                (["7a", "7b"], "3-step build", &dockerfile),
                (["7c", "7d"], "10-step linear build (`linear10`)", &linear_dockerfile),
            ] {
                let mut s: [Samples; 4] = Default::default();
                for _ in 0..self.reps {
                    let nonce = self.nonce();
                    s[0].push_duration(docker.build(dockerfile, &nonce, "bench-build:latest").await?);
                    s[1].push_duration(docker.build(dockerfile, &nonce, "bench-build:latest").await?);
                    for i in [2, 3] {
                        let t = if ids[0] == "7a" {
                            timed_retry(|| pipelines::three_steps(&base, &nonce).sync()).await?
                        } else {
                            timed_retry(|| linear10::run(dag, base.clone(), nonce.clone())).await?
                        };
                        s[i].push_duration(t);
                    }
                }
                let [bk_cold, bk_cached, our_cold, our_cached] = s;
                rows.push(
                    Row::new(
                        ids[0],
                        format!("{what}, cold: ours ÷ BuildKit (docker 20.10)"),
                        Unit::Ratio,
                        our_cold.ratio_to(&bk_cold),
                    )
                    .note(format!(
                        "ours {}, BuildKit {}",
                        ms(our_cold.median()),
                        ms(bk_cold.median())
                    )),
                );
                rows.push(
                    Row::new(
                        ids[1],
                        format!("{what}, fully cached: ours ÷ BuildKit"),
                        Unit::Ratio,
                        our_cached.ratio_to(&bk_cached),
                    )
                    .note(format!(
                        "ours {}, BuildKit {}",
                        ms(our_cached.median()),
                        ms(bk_cached.median())
                    )),
                );
            }
            Ok::<_, String>(rows)
        }
        .await;
        docker.stop().await;
        result
    }

    /// Figures 1, 2, 4 and 7 on one engine (runc, bridge networking: the defaults), then 2c on a restart.
    pub(crate) async fn on_default_engine(&mut self, fx: &Fixtures, which: &[&str], docker: bool) -> Vec<Row> {
        let mut rows = Vec::new();
        let engine = match self.engine("main", "runc", Variant::DEFAULT).await {
            Ok(e) => e,
            Err(e) => {
                rows.push(Row::skipped("1–4, 7", "figures on the default engine", e));
                return rows;
            }
        };
        let dag = match engine.client().await {
            Ok(d) => d,
            Err(e) => {
                engine.stop().await;
                rows.push(Row::skipped("1–4, 7", "figures on the default engine", e));
                return rows;
            }
        };
        if which.contains(&"fanout") {
            match self.fan_out(&dag, fx).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::skipped("1", "fan-out", e)),
            }
        }
        let mut nonces = Vec::new();
        if which.contains(&"cached") {
            match self.cached_rerun(&dag, fx).await {
                Ok((r, n)) => {
                    rows.extend(r);
                    nonces = n;
                }
                Err(e) => rows.push(Row::skipped("2", "cached re-run", e)),
            }
        }
        if which.contains(&"requests") {
            match self.requests(&engine, fx).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::skipped("4", "requests per pipeline", e)),
            }
        }
        if which.contains(&"buildkit") {
            let what = "3-step build against BuildKit";
            if docker {
                match self.buildkit(&dag, fx).await {
                    Ok(r) => rows.extend(r),
                    Err(e) => rows.push(Row::skipped("7", what, format!("docker could not run: {e}"))),
                }
            } else {
                rows.push(Row::skipped("7", what, "skipped (--no-docker)"));
            }
        }
        // The engine shuts down gracefully once its clients' kept-alive connections are closed.
        drop(dag);
        engine.stop().await;
        if which.contains(&"fanout") {
            rows.extend(self.fan_out_variants(fx).await);
        }
        if !nonces.is_empty() {
            match self.disk_rerun(fx, &nonces).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::skipped("2c", "cached re-run in a new engine", e)),
            }
        }
        rows
    }

    // -----------------------------------------------------------------------------------------------------
    // 6. Memory
    // -----------------------------------------------------------------------------------------------------

    /// Peak RSS of a fresh engine while it pulls and unpacks a `mib` MiB layer; also the pull's wall time and the
    /// idle peak.
    async fn pull_peak(&mut self, reference: &str, mib: u64) -> Result<(f64, f64, Duration), String> {
        let name = format!("mem-{mib}");
        let cache = self.run_dir().join(format!("cache-{name}"));
        let _ = std::fs::remove_dir_all(&cache);
        let engine = self.engine(&name, "runc", Variant::DEFAULT).await?;
        let result = async {
            let dag = engine.client().await?;
            // One trivial request first, so the idle figure includes a served request.
            dag.directory().entries().await.map_err(|e| e.to_string())?;
            let idle = peak_rss(engine.pid).ok_or("no VmHWM")? as f64;
            let took = timed(dag.container().from(reference).sync()).await?;
            let peak = peak_rss(engine.pid).ok_or("no VmHWM")? as f64;
            Ok::<_, String>((peak, idle, took))
        }
        .await;
        engine.stop().await;
        let _ = std::fs::remove_dir_all(&cache);
        result
    }

    pub(crate) async fn memory(&mut self, fx: &Fixtures) -> Result<Vec<Row>, String> {
        let mut refs = Vec::new();
        for &mib in &self.big_mib {
            refs.push((mib, fx.push_big(mib).await?));
        }
        let mut peaks: Vec<(u64, Samples, Samples, Samples)> = refs
            .iter()
            .map(|(m, _)| (*m, Samples::default(), Samples::default(), Samples::default()))
            .collect();
        for _ in 0..self.mem_reps {
            for (i, (mib, reference)) in refs.iter().enumerate() {
                let (peak, idle, took) = self.pull_peak(reference, *mib).await?;
                peaks[i].1.push(peak);
                peaks[i].2.push(idle);
                peaks[i].3.push_duration(took);
            }
        }
        let mut rows = Vec::new();
        const IDS: [&str; 6] = ["6a", "6b", "6c", "6d", "6e", "6f"];
        for (i, (mib, peak, idle, took)) in peaks.iter().enumerate() {
            rows.push(
                Row::new(
                    IDS.get(i).copied().unwrap_or("6"),
                    format!("engine peak RSS (VmHWM) pulling + unpacking a {mib} MiB layer"),
                    Unit::Bytes,
                    peak.clone(),
                )
                .goal(Goal::Below(64.0 * 1024.0 * 1024.0))
                .note(format!(
                    "idle engine {}; pull + unpack {} ({:.0} MiB/s)",
                    format_value(idle.median(), Unit::Bytes),
                    ms(took.median()),
                    *mib as f64 / took.median()
                )),
            );
        }
        if let (Some(first), Some(last)) = (peaks.first(), peaks.last())
            && peaks.len() > 1
        {
            rows.push(
                Row::new(
                    "6r",
                    format!("peak RSS {} MiB layer ÷ {} MiB layer (flat = 1.00)", last.0, first.0),
                    Unit::Ratio,
                    last.1.ratio_to(&first.1),
                )
                .goal(Goal::AtMost(1.10)),
            );
        }
        Ok(rows)
    }
}
