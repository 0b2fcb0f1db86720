//! Figure 10, run reports: how large the HTML report of a 1,000-operation run is, and how long headless
//! Chromium takes to lay it out (the page records its own layout time in `data-rendered-ms`) and to start,
//! load and dump it, beside an empty report (Chromium's own start-up).
//!
//! The run is made in-process on a temporary engine: ten chains of a hundred `withNewFile` each, built side
//! by side (no container runs; what is measured is the report, not the engine).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dagger_engine::report::{Report, Run};
use dagger_engine::{Config, Session};

use crate::report::Row;
use crate::stats::{Samples, Unit};

const OPS: usize = 1_000;

fn chromium_bin() -> Result<PathBuf, String> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| "chromium is not installed (`scripts/install-packages.sh test`)".to_owned())
}

/// `chromium --headless --dump-dom` of `page`: the DOM and how long the whole command took.
async fn dump_dom(page: &Path) -> Result<(String, Duration), String> {
    let profile = std::env::temp_dir().join(format!("bench-chromium-{}", std::process::id()));
    let started = Instant::now();
    let out = tokio::process::Command::new(chromium_bin()?)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .args(["--disable-dev-shm-usage", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("chromium: {e}"))?;
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&profile);
    if !out.status.success() {
        return Err(format!("chromium --dump-dom {}: {}", page.display(), out.status));
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), took))
}

/// The layout time the report's script wrote into the page.
fn rendered_ms(dom: &str) -> Option<f64> {
    let at = dom.find("data-rendered-ms=\"")? + "data-rendered-ms=\"".len();
    let rest = &dom[at..];
    rest[..rest.find('"')?].parse().ok()
}

/// The report of a 1,000-operation run, written to `html`.
async fn big_report(dir: &Path, html: &Path) -> Result<(), String> {
    let session = Session::start(Config::for_dir(dir.join("cache")))
        .await
        .map_err(|e| format!("engine: {e}"))?;
    let report = Report::start(&session.engine, html.to_owned(), None).map_err(|e| e.to_string())?;
    let dag = dagger::Connection::builder()
        .endpoint(session.url(), session.token.clone())
        .quiet()
        .connect()
        .await
        .map(|c| c.query())
        .map_err(|e| format!("connecting: {e}"))?;
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
        chain.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let summary = report.finish().map_err(|e| e.to_string())?;
    if summary.run != OPS {
        return Err(format!(
            "the report holds {} operations of work, not {OPS}",
            summary.run
        ));
    }
    Ok(())
}

/// Figure 10: `reps` layouts of the report of a 1,000-operation run in headless Chromium.
pub(crate) async fn report_rendering(work: &Path, reps: usize) -> Result<Vec<Row>, String> {
    let dir = work.join("run").join("report");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let html = dir.join("big.html");
    big_report(&dir, &html).await?;
    let empty = dir.join("empty.html");
    std::fs::write(&empty, Run::from_records(&[], Some(0), Some(0)).html()).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(&html).map_err(|e| e.to_string())?.len();
    let (mut layout, mut dump, mut baseline, mut bytes) = Default::default();
    for i in 0..=reps {
        let (dom, took) = dump_dom(&html).await?;
        let ms = rendered_ms(&dom).ok_or("the report's page wrote no layout time")?;
        let (_, base) = dump_dom(&empty).await?;
        if i == 0 {
            continue; // warm-up
        }
        Samples::push(&mut layout, ms / 1000.0);
        Samples::push_duration(&mut dump, took);
        Samples::push_duration(&mut baseline, base);
        Samples::push(&mut bytes, size as f64);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![
        Row::new(
            "10a",
            format!("report of a {OPS}-operation run: size of the HTML file"),
            Unit::Bytes,
            bytes,
        ),
        Row::new(
            "10b",
            "the same, laid out by headless Chromium (the page's own navigation-to-layout time)",
            Unit::Seconds,
            layout,
        ),
        Row::new(
            "10c",
            "the same, `chromium --headless --dump-dom` from start to exit",
            Unit::Seconds,
            dump,
        )
        .note("compare 10d: most of it is Chromium starting"),
        Row::new(
            "10d",
            "an empty report, `chromium --headless --dump-dom` from start to exit (Chromium's start-up)",
            Unit::Seconds,
            baseline,
        ),
    ])
}
