//! Run reports as a person sees them: a real run (busybox from the offline registry on `127.0.0.1:5000`, one
//! step served from the cache, a fan-out of three commands, one command that fails) recorded by
//! `report::Report`, then opened in headless Chromium (Debian's `chromium`, installed by
//! `scripts/install-packages.sh test`): the DOM Chromium built is checked (every operation present, the
//! failed one marked with its exit code, the timeline in order, the script working) and a screenshot taken.
//! A run of 1,000 operations is rendered too, and the time Chromium took is printed (not asserted).
//!
//! `REPORT_SCREENSHOT=PATH` also writes the screenshot to PATH (`scripts/report-screenshot.sh` regenerates
//! `docs/report.png` so).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dagger::prelude::*;
use dagger_engine::report::{Report, read_events};
use dagger_engine::{Config, Session};

/// The busybox image of the offline registry.
const BUSYBOX: &str = "127.0.0.1:5000/busybox:latest";

/// The browser; a failure says how to install it.
fn chromium_bin() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("chromium is not installed: run `scripts/install-packages.sh test` (Debian package `chromium`)");
}

/// Runs headless Chromium on the file `page` (with `#fragment` when given) with `args`, its standard output
/// into `out`; returns how long it took. Fails after a minute.
fn chromium(page: &Path, fragment: &str, args: &[&str], out: &Path) -> Duration {
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("file://{}{fragment}", page.display());
    let started = Instant::now();
    let mut child = Command::new(chromium_bin())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let status = testkit::process::wait_for_exit(&mut child, Duration::from_secs(60), "chromium");
    assert!(status.success(), "chromium {args:?} {url}: {status}");
    started.elapsed()
}

/// The DOM Chromium builds for `page`.
fn dom(page: &Path, fragment: &str) -> String {
    let out = page.with_extension("dom.html");
    chromium(page, fragment, &["--dump-dom"], &out);
    std::fs::read_to_string(&out).expect("the dumped DOM")
}

/// One operation's row in the DOM: the attributes of its `details.op` element.
#[derive(Debug)]
struct Row {
    id: String,
    op: String,
    state: String,
    start: u64,
    classes: String,
    open: bool,
}

/// The value of attribute `name` in the start tag `tag`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let end = tag[at..].find('"')?;
    Some(tag[at..at + end].to_owned())
}

/// The operation rows of a DOM, in document order.
fn rows(dom: &str) -> Vec<Row> {
    dom.match_indices("<details ")
        .filter_map(|(at, _)| {
            let tag = &dom[at..at + dom[at..].find('>')?];
            let classes = attr(tag, "class")?;
            classes.split(' ').any(|c| c == "op").then(|| Row {
                id: attr(tag, "data-id").unwrap_or_default(),
                op: attr(tag, "data-op").unwrap_or_default(),
                state: attr(tag, "data-state").unwrap_or_default(),
                start: attr(tag, "data-start").and_then(|s| s.parse().ok()).unwrap_or(u64::MAX),
                open: tag.contains(" open=\""),
                classes,
            })
        })
        .collect()
}

/// The text of the summary figure `key`.
fn figure(dom: &str, key: &str) -> String {
    let at = dom
        .find(&format!("data-figure=\"{key}\""))
        .unwrap_or_else(|| panic!("no figure {key}"));
    let b = at + dom[at..].find("<b>").expect("<b>") + 3;
    dom[b..b + dom[b..].find("</b>").expect("</b>")].to_owned()
}

/// Width and height of a PNG, from its header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (be(16), be(20))
}

async fn engine(cache: &Path) -> (Session, Query) {
    testkit::start_engine(Config::for_dir(cache)).await
}

/// The step the second session finds in the cache.
fn warm(dag: &Query) -> Container {
    dag.container()
        .from(BUSYBOX)
        .with_new_file("/app/warm.sh", "echo warming the cache; sleep 1\n")
        .with_exec(["sh", "/app/warm.sh"])
}

#[test]
fn a_real_run_reads_in_chromium_every_operation_in_order_the_failure_marked() {
    if let Err(e) = testkit::images::ensure() {
        panic!("offline images: {e}");
    }
    let dir = tempfile::tempdir().expect("dir");
    let cache = dir.path().join("cache");
    let html = dir.path().join("report.html");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let failed_id = rt.block_on(async {
        // A first session runs the step the reported one finds in the cache.
        {
            let (_session, dag) = engine(&cache).await;
            warm(&dag).sync().await.expect("warm the cache");
        }
        let (session, dag) = engine(&cache).await;
        let report = Report::start(&session.engine, html.clone(), None).expect("report");
        warm(&dag).sync().await.expect("from the cache");
        let base = dag
            .container()
            .from(BUSYBOX)
            .with_workdir("/src")
            .with_new_file("/src/test.sh", "echo \"shard $SHARD: ok\"; sleep 1\n");
        let shard = |n: &str| base.with_env_variable("SHARD", n).with_exec(["sh", "test.sh"]).stdout();
        let (a, b, c) = tokio::join!(shard("1"), shard("2"), shard("3"));
        for (n, out) in [("1", a), ("2", b), ("3", c)] {
            assert_eq!(out.expect("a shard"), format!("shard {n}: ok\n"));
        }
        let lint = base
            .with_exec(["sh", "-c", "echo \"lint: $((1 + 1)) problems\" >&2; exit 3"])
            .sync()
            .await;
        assert!(lint.is_err(), "the lint step fails");
        let summary = report.finish().expect("write the report");
        // Cached: the warm step, and the image (which the first session pulled).
        assert_eq!((summary.failed, summary.cached), (1, 2), "{summary:?}");
        let records = read_events(report.events_path()).expect("the events");
        records
            .iter()
            .find(|r| matches!(r.event.kind, dagger_engine::EventKind::Failed(_)))
            .map(|r| r.event.id.clone())
            .expect("a failure among the events")
    });
    let records = read_events(&html.with_extension("jsonl")).expect("the events");

    let dom = dom(&html, "");
    let rows = rows(&dom);
    // Every operation the events name is on the timeline, once.
    let mut ids: Vec<&str> = records
        .iter()
        .filter(|r| r.event.op != "engine")
        .map(|r| r.event.id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut shown: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    shown.sort_unstable();
    assert_eq!(shown, ids, "every operation, once");
    // In timeline order.
    let starts: Vec<u64> = rows.iter().map(|r| r.start).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "ordered by start: {starts:?}");
    // The failure is marked, open, with its exit code and its error output.
    let failed: Vec<&Row> = rows.iter().filter(|r| r.state == "failed").collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert_eq!(
        (failed[0].id.as_str(), failed[0].op.as_str()),
        (failed_id.as_str(), "Container.withExec")
    );
    assert!(
        failed[0].classes.contains("st-failed") && failed[0].open,
        "{:?}",
        failed[0]
    );
    assert!(dom.contains("data-exit-code=\"3\""), "the exit code is shown");
    assert!(dom.contains("lint: 2 problems"), "the command's output is shown");
    // The cached step, the fan-out, and the summary.
    assert!(
        rows.iter().any(|r| r.state == "cached" && r.op == "Container.withExec"),
        "{rows:?}"
    );
    let shards = dom.matches("SHARD=").count();
    assert!(shards >= 3, "the three shards with their setting: {shards}");
    assert_eq!(figure(&dom, "failed"), "1");
    assert_eq!(figure(&dom, "cached"), "2");
    let peak: usize = figure(&dom, "peak").parse().expect("a number");
    assert!(peak >= 2, "the shards ran side by side: peak {peak}");
    assert!(rows.iter().any(|r| r.classes.contains("critical")), "a critical path");
    // Nothing is fetched: no address outside the file itself.
    assert!(!dom.contains("src=\"http") && !dom.contains("href=\"http"));

    // The script runs: a link to a setting (hidden by default) opens it and shows the settings.
    let setting = rows
        .iter()
        .find(|r| r.classes.contains("minor"))
        .expect("a setting row");
    let linked = self::dom(&html, &format!("#op-{}", setting.id));
    let opened = self::rows(&linked);
    assert!(
        opened.iter().any(|r| r.id == setting.id && r.open),
        "the linked operation is opened"
    );
    assert!(linked.contains("class=\"show-minor\""), "and the settings are shown");
    assert!(
        linked.contains("data-rendered-ms=\""),
        "the page recorded its render time"
    );

    // A screenshot of it.
    let png = dir.path().join("report.png");
    chromium(
        &html,
        "",
        &["--window-size=1280,860", &format!("--screenshot={}", png.display())],
        &dir.path().join("screenshot.out"),
    );
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert_eq!(png_size(&bytes), (1280, 860));
    assert!(bytes.len() > 10_000, "a page, not a blank: {} bytes", bytes.len());
    if let Some(keep) = std::env::var_os("REPORT_SCREENSHOT") {
        std::fs::copy(&png, &keep).expect("copy the screenshot");
        eprintln!("screenshot written to {}", Path::new(&keep).display());
    }
}

#[test]
fn a_report_of_a_thousand_operations_renders_and_says_how_long_it_took() {
    const OPS: usize = 1_000;
    let dir = tempfile::tempdir().expect("dir");
    let html = dir.path().join("big.html");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (session, dag) = engine(&dir.path().join("cache")).await;
        let report = Report::start(&session.engine, html.clone(), None).expect("report");
        // Ten chains of a hundred files each, built side by side.
        let chains: Vec<_> = (0..10)
            .map(|c| {
                let mut d = dag.directory();
                for i in 0..OPS / 10 {
                    d = d.with_new_file(format!("c{c}/f{i}.txt"), format!("{c}.{i}\n"));
                }
                tokio::spawn(async move { d.entries().await })
            })
            .collect();
        for chain in chains {
            assert_eq!(chain.await.expect("join").expect("entries").len(), 1);
        }
        let summary = report.finish().expect("write the report");
        assert_eq!(summary.run, OPS, "{summary:?}");
    });
    let size = std::fs::metadata(&html).expect("the report").len();

    let took = chromium(&html, "", &["--dump-dom"], &dir.path().join("big.dom.html"));
    let dom = std::fs::read_to_string(dir.path().join("big.dom.html")).expect("the DOM");
    assert_eq!(
        rows(&dom).len(),
        OPS + 1,
        "every operation (and the empty directory) is in the DOM"
    );
    let rendered: u64 = dom
        .find("data-rendered-ms=\"")
        .and_then(|at| {
            let v = &dom[at + 18..];
            v[..v.find('"')?].parse().ok()
        })
        .expect("the page's render time");
    // And a small report, for the part of the time that is Chromium starting.
    let small = dir.path().join("small.html");
    std::fs::write(
        &small,
        dagger_engine::report::Run::from_records(&[], Some(0), Some(0)).html(),
    )
    .expect("write");
    let baseline = chromium(&small, "", &["--dump-dom"], &dir.path().join("small.dom.html"));
    let png = dir.path().join("big.png");
    let shot = chromium(
        &html,
        "",
        &["--window-size=1280,860", &format!("--screenshot={}", png.display())],
        &dir.path().join("big.out"),
    );
    eprintln!(
        "report of {OPS} operations: {} KB; laid out in {rendered} ms in the page (navigation to load, with \
         layout); chromium --dump-dom {took:?} (an empty report: {baseline:?}), --screenshot {shot:?}",
        size / 1024
    );
    assert!(took < Duration::from_secs(60), "rendered at all within a minute");
}

/// A toolchain of the offline busybox.
#[step]
fn shell(dag: &Query, image: String) -> Container {
    dag.container().from(image).with_workdir("/w")
}

#[step]
fn passing(shell: Container) -> Container {
    shell.with_exec(["sh", "-c", "echo all good"])
}

#[step]
fn failing(shell: Container) -> Container {
    shell.with_exec(["sh", "-c", "echo two problems >&2; exit 4"])
}

pipeline! {
    /// One check that passes and one that fails, on one toolchain.
    pub checks(image: String) {
        let sh = shell(image);
        let good = passing(sh);
        let bad = failing(sh);
        out good_log = good.stdout();
        out bad_log = bad.stdout();
    }
}

#[test]
fn a_pipeline_report_draws_its_graph_and_names_what_each_operation_serves() {
    if let Err(e) = testkit::images::ensure() {
        panic!("offline images: {e}");
    }
    let dir = tempfile::tempdir().expect("dir");
    let html = dir.path().join("pipeline.html");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (session, dag) = engine(&dir.path().join("cache")).await;
        let report = Report::start(&session.engine, html.clone(), None).expect("report");
        let err = checks::run(&dag, BUSYBOX.into()).await.expect_err("bad_log fails");
        assert_eq!(err.failures.len(), 1);
        let summary = report.finish().expect("write the report");
        assert!(summary.bytes_pulled > 100_000, "busybox was pulled: {summary:?}");
    });
    let dom = dom(&html, "");
    // The graph, outputs coloured by how their operations ended.
    assert!(
        dom.contains("<svg class=\"graph\" data-pipeline=\"checks\""),
        "the graph is drawn"
    );
    let node = |id: &str| {
        let at = dom
            .find(&format!("data-node=\"{id}\""))
            .unwrap_or_else(|| panic!("node {id}"));
        let tag = &dom[dom[..at].rfind('<').expect("tag")..at + dom[at..].find('>').expect("end")];
        attr(tag, "data-state")
    };
    assert_eq!(node("o_good_log").as_deref(), Some("done"));
    assert_eq!(node("o_bad_log").as_deref(), Some("failed"));
    assert_eq!(node("in_image"), None, "inputs have no state");
    // Each operation of work says which output it serves; the failed exec serves `bad_log`.
    let failed = rows(&dom)
        .into_iter()
        .find(|r| r.state == "failed")
        .expect("a failed row");
    let tag_at = dom.find(&format!("id=\"op-{}\"", failed.id)).expect("the failed row");
    let tag = &dom[dom[..tag_at].rfind('<').expect("tag")..tag_at + dom[tag_at..].find('>').expect("end")];
    assert_eq!(attr(tag, "data-serves").as_deref(), Some("bad_log"));
    assert!(dom.contains("data-serves=\"good_log\""));
    // The summary says what was pulled.
    assert!(figure(&dom, "pulled").ends_with("MiB") || figure(&dom, "pulled").ends_with("KiB"));
}
