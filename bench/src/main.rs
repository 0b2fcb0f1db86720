//! `bench`: the benchmark harness. Runs the engine (`dagger-rs serve`, built next to this binary) against its
//! peers — raw `runc`/`crun`, Docker BuildKit — in one run, prints the table and writes `BENCHMARKS.md`.
//!
//! Run it as root from the workspace: `cargo run --release -p bench` (`--help` for the knobs).
//!
//! # Layout
//! - `figures`: the measurements, ours and the peer back to back in each repetition; `chains` (deep chains'
//!   memory) and `collect` (the start-up collection after a killed engine);
//! - `pipelines`: the `#[step]`s and `pipeline!`s measured, and their plain-API twins;
//! - `services` (figure 16) and `rootless` (figure 17, engines run as an ordinary user);
//! - `engine`: the engine process; `raw`: raw runtime bundles; `docker`: the private dockerd;
//! - `fixtures`: the loopback registry and images; `proxy`: the request counter;
//! - `stats`, `machine`, `report`: summaries, `/proc` readers and the Markdown output.

mod chains;
mod collect;
mod docker;
mod engine;
mod figures;
mod fixtures;
mod machine;
mod pipelines;
mod proxy;
mod raw;
mod realwork;
mod report;
mod reportfig;
mod rootless;
mod services;
mod spans;
mod stats;
mod steplog;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::figures::Bench;
use crate::report::Row;

const FIGURES: &[&str] = &[
    "query",
    "bytes",
    "exec",
    "fanout",
    "cached",
    "requests",
    "buildkit",
    "memory",
    "chains",
    "collect",
    "report",
    "quickstart",
    "concurrency",
    "bigimage",
    "start",
    "sdkbuild",
    "services",
    "rootless",
];

/// Benchmarks the engine against raw runc/crun and Docker BuildKit, side by side in one run.
#[derive(Parser)]
#[command(name = "bench")]
struct Args {
    /// Repetitions of the slow figures (fan-out, cached re-run, requests, BuildKit, start-up collection).
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Repetitions of the per-exec figure.
    #[arg(long, default_value_t = 30)]
    exec_reps: usize,
    /// Repetitions of the memory figures (each pulls every large image, or answers every deep chain, in a fresh
    /// engine).
    #[arg(long, default_value_t = 3)]
    mem_reps: usize,
    /// Repetitions of the real-work figures against BuildKit and umoci (quickstart, concurrency, bigimage): each
    /// takes one to a few minutes.
    #[arg(long, default_value_t = 3)]
    real_reps: usize,
    /// Sizes of the generated layers for the memory figure, in MiB.
    #[arg(long, value_delimiter = ',', default_value = "250,500")]
    big_mib: Vec<u64>,
    /// Only these figures (comma-separated): query, bytes, exec, fanout, cached, requests, buildkit, memory,
    /// chains, collect, report, quickstart, concurrency, bigimage, start, sdkbuild, services, rootless.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Leave these figures out (comma-separated; same names as --only), such as `sdkbuild` (three clean builds,
    /// about four minutes of both cores).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Leave Docker BuildKit out.
    #[arg(long)]
    no_docker: bool,
    /// Where to write the report (default: BENCHMARKS.md at the workspace root).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The work directory (kept between runs: generated layers take a while to make).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The engine binary (default: `dagger-rs` built by cargo next to this binary).
    #[arg(long)]
    engine_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if rustix::process::geteuid().as_raw() != 0 {
        return Err("run as root: the engine and the raw runtimes start containers".into());
    }
    for f in args.only.iter().chain(&args.skip) {
        if !FIGURES.contains(&f.as_str()) {
            return Err(format!("unknown figure `{f}`; figures: {}", FIGURES.join(", ")));
        }
    }
    let which: Vec<&str> = if args.only.is_empty() {
        FIGURES.to_vec()
    } else {
        args.only.iter().map(String::as_str).collect()
    };
    let which: Vec<&str> = which
        .into_iter()
        .filter(|f| !args.skip.iter().any(|s| s == f))
        .collect();
    let workspace = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let work = match args.work_dir.clone() {
        Some(w) => w,
        None => target_dir()?.join("bench-work"),
    };
    let engine_bin = match args.engine_bin.clone() {
        Some(b) => b,
        None => engine::engine_binary(&workspace)?,
    };
    let machine = machine::Machine::probe();
    let load_before = machine::load_now();
    let started = Instant::now();
    eprintln!("bench: {} ({} cores), load {load_before}", machine.cpu, machine.cores);

    let mut bench = Bench::new(work.clone(), engine_bin);
    bench.reps = args.reps.max(1);
    bench.exec_reps = args.exec_reps.max(1);
    bench.mem_reps = args.mem_reps.max(1);
    bench.real_reps = args.real_reps.max(1);
    bench.big_mib = args.big_mib.clone();
    let _ = std::fs::remove_dir_all(work.join("run"));

    let mut rows: Vec<Row> = Vec::new();
    let progress = |rows: &[Row]| {
        if let Some(r) = rows.last() {
            eprintln!("bench: {} done", r.id);
        }
    };
    if which.contains(&"query") {
        match bench.query_build() {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::skipped("5", "query build", e)),
        }
        progress(&rows);
    }
    if which.contains(&"bytes") {
        rows.extend(bench.plan_bytes());
        progress(&rows);
    }
    if which.contains(&"chains") {
        match bench.chains().await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::skipped("8", "engine peak RSS answering one deep chain", e)),
        }
        progress(&rows);
    }
    if which.contains(&"report") {
        match reportfig::report_rendering(&work, args.reps.min(5)).await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::skipped("10", "a run report laid out in headless Chromium", e)),
        }
        progress(&rows);
    }
    if which.contains(&"start") {
        match bench.engine_start(&workspace).await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::skipped("14", "engine start", e)),
        }
        progress(&rows);
    }
    if which.contains(&"sdkbuild") {
        match bench.sdk_build(&workspace).await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::skipped("15", "SDK build cost", e)),
        }
        progress(&rows);
    }
    if which.contains(&"bigimage") {
        match bench.big_image().await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::skipped("13", "a big real image", e)),
        }
        progress(&rows);
    }
    if which.contains(&"quickstart") {
        let what = "quickstart against BuildKit";
        if args.no_docker {
            rows.push(Row::skipped("11", what, "skipped (--no-docker)"));
        } else {
            match bench.quickstart().await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::skipped("11", what, e)),
            }
        }
        progress(&rows);
    }
    let needs_engine = which.iter().any(|w| {
        ![
            "query",
            "bytes",
            "chains",
            "report",
            "start",
            "sdkbuild",
            "bigimage",
            "quickstart",
        ]
        .contains(w)
    });
    if needs_engine {
        eprintln!("bench: preparing fixtures in {}", work.display());
        let fx = fixtures::Fixtures::prepare(&work).await?;
        if which.contains(&"exec") {
            rows.extend(bench.exec_overhead(&fx).await);
            progress(&rows);
        }
        if which
            .iter()
            .any(|w| ["fanout", "cached", "requests", "buildkit"].contains(w))
        {
            rows.extend(bench.on_default_engine(&fx, &which, !args.no_docker).await);
            progress(&rows);
        }
        if which.contains(&"memory") {
            match bench.memory(&fx).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::skipped("6", "engine peak RSS during a large pull", e)),
            }
            progress(&rows);
        }
        if which.contains(&"concurrency") {
            let what = "concurrent sessions against BuildKit";
            if args.no_docker {
                rows.push(Row::skipped("12", what, "skipped (--no-docker)"));
            } else {
                match bench.concurrency(&fx).await {
                    Ok(r) => rows.extend(r),
                    Err(e) => rows.push(Row::skipped("12", what, e)),
                }
            }
            progress(&rows);
        }
        if which.contains(&"services") {
            match bench.services(&fx).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::skipped("16", "services", e)),
            }
            progress(&rows);
        }
        if which.contains(&"rootless") {
            match bench.rootless(&fx).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::skipped("17", "rootless mode", e)),
            }
            progress(&rows);
        }
        if which.contains(&"collect") {
            match bench.collect(&fx).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::skipped("9", "start-up collection after a killed engine", e)),
            }
            progress(&rows);
        }
    }
    rows.sort_by_key(|r| report::id_order(r.id));
    let retries = figures::VETH_RETRIES.load(std::sync::atomic::Ordering::SeqCst);
    if retries > 0 {
        bench.log.push(format!(
            "the engine hit its veth name race (`RTNETLINK answers: File exists`, finding 3) {retries} time(s); \
             each of those measurements was made again"
        ));
    }
    let _ = std::fs::remove_dir_all(work.join("run"));

    let load_after = machine::load_now();
    let mut command = String::from("cargo run --release -p bench");
    let given: Vec<String> = std::env::args().skip(1).collect();
    if !given.is_empty() {
        command.push_str(" -- ");
        command.push_str(&given.join(" "));
    }
    let table = report::table(&rows);
    println!("{table}");
    println!("load average before: {load_before}, after: {load_after}");
    let doc = report::document(&report::Document {
        machine: &machine,
        command: &command,
        load_before: &load_before,
        load_after: &load_after,
        wall: started.elapsed(),
        rows: &rows,
        log: &bench.log,
    });
    let out = args.out.unwrap_or_else(|| workspace.join("BENCHMARKS.md"));
    std::fs::write(&out, doc).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("bench: wrote {}", out.display());
    Ok(())
}

/// The cargo target directory this binary was built into (`target/release/bench` → `target`).
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .ok_or_else(|| "cannot tell the target directory".into())
}
