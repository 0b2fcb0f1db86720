//! Run reports: every progress event of a session, kept and turned into one self-contained HTML file (a
//! timeline of every operation, its arguments, logs and errors, a summary) and written as JSON lines for
//! tools; the text a person reads while it runs ([`Tracker`]); and, with the feature `otel`, a span per
//! operation over OTLP/HTTP (`Tracing`).
//!
//! It is the top layer: it reads the engine's events ([`Event`]) and nothing else of the engine, so the CLI
//! (`dagger-rs run|session|serve|query --report PATH`) and the SDK's embedded engine
//! (`ConnectionBuilder::report`, `DAGGER_RS_REPORT`) make the same report.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let session = dagger_engine::Session::start(dagger_engine::Config::default()).await?;
//! let report = dagger_engine::report::Report::start(&session.engine, "report.html".into(), None)?;
//! // … clients run their pipelines …
//! let summary = report.finish()?;
//! eprintln!("{} run, {} cached; report: {}", summary.run, summary.cached, report.html_path().display());
//! # Ok(()) }
//! ```

mod graph;
mod html;
#[cfg(feature = "otel")]
mod otel;
mod run;
mod text;

use std::io::{LineWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[cfg(feature = "otel")]
pub use otel::Tracing;
pub use run::{Op, Run, State, Summary};
pub use text::{Counts, Step, StepKind, Tracker, duration, short_label};

use crate::ops::engine::Engine;
use crate::solver::events::Event;

/// The environment variable that switches a report on: the path of its HTML file.
pub const REPORT_ENV: &str = "DAGGER_RS_REPORT";

/// One event as the report keeps it: when it happened, and the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it was sent, in milliseconds since the Unix epoch.
    pub at: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// The JSON-lines file of a report at `html`: `report.html` → `report.jsonl`, `out/run` → `out/run.jsonl`.
pub fn events_path_for(html: &Path) -> PathBuf {
    match html.extension() {
        Some(ext) if ext.eq_ignore_ascii_case("html") || ext.eq_ignore_ascii_case("htm") => {
            html.with_extension("jsonl")
        }
        _ => {
            let mut p = html.as_os_str().to_owned();
            p.push(".jsonl");
            PathBuf::from(p)
        }
    }
}

/// Reads back the JSON lines a report wrote (blank lines are skipped); an error names the line.
pub fn read_events(path: &Path) -> std::io::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} line {}: {e}", path.display(), i + 1),
                )
            })
        })
        .collect()
}

/// What a recorder holds while the run goes on.
struct Recording {
    records: Vec<Record>,
    events: Option<LineWriter<std::fs::File>>,
    /// The first error writing the events file (reported by `finish`; recording goes on in memory).
    write_error: Option<std::io::Error>,
    finished: bool,
}

/// Keeps every event of an engine from the moment it is attached, and writes each as a JSON line when given
/// a file. Cheap to clone (clones share the recording).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Recording>>,
    origin: (Instant, u64),
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("records", &self.inner.lock().records.len())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder writing JSON lines to `events` (created, or truncated) when given one.
    pub fn new(events: Option<&Path>) -> std::io::Result<Self> {
        let events = match events {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Some(LineWriter::new(std::fs::File::create(p)?))
            }
            None => None,
        };
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(Self {
            inner: Arc::new(Mutex::new(Recording {
                records: Vec::new(),
                events,
                write_error: None,
                finished: false,
            })),
            origin: (Instant::now(), epoch_ms),
        })
    }

    /// Records every event `engine` sends from now on.
    pub fn attach(&self, engine: &Engine) {
        let me = self.clone();
        engine.listen(move |e| me.record(e));
    }

    /// Records one event, now.
    pub fn record(&self, event: &Event) {
        let elapsed = u64::try_from(self.origin.0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = Record {
            at: self.origin.1.saturating_add(elapsed),
            event: event.clone(),
        };
        let mut r = self.inner.lock();
        if r.finished {
            return;
        }
        if r.write_error.is_none()
            && let Some(w) = r.events.as_mut()
        {
            let line = serde_json::to_string(&record).map_err(std::io::Error::other);
            if let Err(e) = line.and_then(|l| writeln!(w, "{l}")) {
                r.write_error = Some(e);
            }
        }
        r.records.push(record);
    }

    /// The events recorded so far.
    pub fn records(&self) -> Vec<Record> {
        self.inner.lock().records.clone()
    }

    /// When recording started, in milliseconds since the Unix epoch.
    pub fn started_at(&self) -> u64 {
        self.origin.1
    }

    /// The run so far, as the report shows it (`now` ends the operations still running).
    pub fn run(&self) -> Run {
        let now = self
            .origin
            .1
            .saturating_add(u64::try_from(self.origin.0.elapsed().as_millis()).unwrap_or(u64::MAX));
        Run::from_records(&self.records(), Some(self.origin.1), Some(now))
    }

    /// Stops recording and flushes the events file; an error writing it is reported here.
    pub fn stop(&self) -> std::io::Result<()> {
        let mut r = self.inner.lock();
        r.finished = true;
        if let Some(e) = r.write_error.take() {
            return Err(e);
        }
        if let Some(w) = r.events.as_mut() {
            w.flush()?;
        }
        Ok(())
    }
}

/// A report being made: a [`Recorder`] attached to an engine, and where its HTML and JSON lines go.
#[derive(Debug)]
pub struct Report {
    html: PathBuf,
    events: PathBuf,
    recorder: Recorder,
    finished: Mutex<Option<Summary>>,
}

impl Report {
    /// Starts recording `engine`'s events for a report at `html`, writing them as JSON lines to `events`
    /// (default: [`events_path_for`] `html`) as they come. The file is created now, so a path that cannot
    /// be written is an error before anything runs.
    pub fn start(engine: &Engine, html: PathBuf, events: Option<PathBuf>) -> std::io::Result<Self> {
        let events = events.unwrap_or_else(|| events_path_for(&html));
        let recorder = Recorder::new(Some(&events)).map_err(|e| with_path(e, &events))?;
        if let Some(dir) = html.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
        }
        // Written now as an empty run, so a bad path fails at once and an interrupted run leaves a report.
        std::fs::write(&html, recorder.run().html()).map_err(|e| with_path(e, &html))?;
        recorder.attach(engine);
        Ok(Self {
            html,
            events,
            recorder,
            finished: Mutex::new(None),
        })
    }

    /// Where the HTML report is written.
    pub fn html_path(&self) -> &Path {
        &self.html
    }

    /// Where the events are written as JSON lines.
    pub fn events_path(&self) -> &Path {
        &self.events
    }

    /// The recorder behind the report.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Stops recording and writes the HTML report (once: later calls return the same summary).
    pub fn finish(&self) -> std::io::Result<Summary> {
        let mut finished = self.finished.lock();
        if let Some(s) = finished.as_ref() {
            return Ok(s.clone());
        }
        let run = self.recorder.run();
        let stopped = self.recorder.stop().map_err(|e| with_path(e, &self.events));
        std::fs::write(&self.html, run.html()).map_err(|e| with_path(e, &self.html))?;
        stopped?;
        *finished = Some(run.summary.clone());
        Ok(run.summary)
    }
}

/// `e` with the path it is about.
fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("report file {}: {e}", path.display()))
}

/// The report path asked for by [`REPORT_ENV`], if it is set and not empty.
pub fn path_from_env() -> Option<PathBuf> {
    std::env::var_os(REPORT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::events::EventKind;

    #[test]
    fn the_events_file_sits_next_to_the_report() {
        assert_eq!(
            events_path_for(Path::new("out/report.html")),
            Path::new("out/report.jsonl")
        );
        assert_eq!(events_path_for(Path::new("out/run")), Path::new("out/run.jsonl"));
        assert_eq!(events_path_for(Path::new("r.HTM")), Path::new("r.jsonl"));
    }

    #[test]
    fn recorded_events_are_json_lines_that_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sub/events.jsonl");
        let rec = Recorder::new(Some(&path)).expect("recorder");
        rec.record(&Event::new("Container.withExec", "0123456789ab", EventKind::Started));
        rec.record(&Event::new(
            "Container.withExec",
            "0123456789ab",
            EventKind::Log("hi".into()),
        ));
        // Each line is on disk as soon as it is recorded.
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 2);
        rec.stop().expect("stop");
        rec.record(&Event::new("Container.withExec", "0123456789ab", EventKind::Done(3)));
        let back = read_events(&path).expect("read back");
        assert_eq!(back, rec.records(), "nothing is recorded after the stop");
        assert_eq!(back.len(), 2);
        assert!(back[0].at >= rec.started_at() && back[1].at >= back[0].at);

        std::fs::write(&path, "{\"at\":1}\nnot json\n").expect("write");
        let err = read_events(&path).expect_err("bad line");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
