//! Progress on standard error: each operation by what it does (the command of an exec, the image of a
//! `from`, a path), as plain lines or as a live display on a terminal, and a summary line at the end.
//!
//! Settings (environment variables, the working directory, mounts) are not shown on lines of their own: they
//! are listed with the command they shape ([`dagger_engine::report::Tracker`] decides). Plain mode prints one
//! line per event and suits logs and pipes (SDKs read the session's stderr). Terminal mode keeps a header
//! (how many operations are running, queued, done, cached, failed) above one spinner per running operation,
//! and prints what finished above them; a failure is printed in full, every line of its message.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dagger_engine::Event;
use dagger_engine::report::{Step, StepKind, Tracker, duration, short_label};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// How progress is shown, as chosen by `--progress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProgressMode {
    /// Live spinners when standard error is a terminal, plain lines otherwise.
    Auto,
    /// One line per event, no colours or cursor movement.
    Plain,
    /// The terminal display: live spinners and coloured lines (without a terminal, only the coloured lines).
    Tty,
}

/// What the terminal display prints for a step, above the spinners.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Nothing: the step only starts a spinner.
    None,
    /// A one-line summary.
    One(String),
    /// A failure: the summary, then the message's lines indented.
    Failure(String, Vec<String>),
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";

/// The text terminal mode prints above the spinners for `step`.
fn tty_line(step: &Step) -> Line {
    let (label, id) = (&step.label, &step.id);
    match &step.kind {
        StepKind::Started => Line::None,
        StepKind::Cached => Line::One(format!("{DIM}● {label} [{id}] cached{RESET}")),
        StepKind::Done(ms) => Line::One(format!("{GREEN}✔{RESET} {label} {DIM}[{id}] {}{RESET}", duration(*ms))),
        StepKind::Failed { message, exit_code } => {
            let code = exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default();
            Line::Failure(
                format!("{RED}✘ {label} [{id}] failed{code}{RESET}"),
                message.lines().map(|l| format!("    {l}")).collect(),
            )
        }
        StepKind::Log(line) => Line::One(format!("{DIM}│ {} [{id}]{RESET} {line}", short_label(label))),
    }
}

/// The spinner text of a running operation: what it does, and the settings it runs with.
fn running_text(label: &str, settings: &[String]) -> String {
    if settings.is_empty() {
        label.to_owned()
    } else {
        format!("{label} {DIM}· {}{RESET}", settings.join(", "))
    }
}

/// The header of the live display: where the operations are.
fn header_text(t: &Tracker) -> String {
    let c = t.counts();
    let mut s = format!(
        "{BOLD}{} running{RESET} · {} queued · {} done · {} cached",
        c.running, c.queued, c.run, c.cached
    );
    if c.failed > 0 {
        s.push_str(&format!(" · {RED}{} failed{RESET}", c.failed));
    }
    s
}

/// The live display: a header, then one spinner per running operation.
struct Live {
    multi: MultiProgress,
    header: Option<ProgressBar>,
    bars: Vec<(String, ProgressBar)>,
    style: ProgressStyle,
}

impl Live {
    fn new() -> Self {
        // indicatif hides the spinners when stderr is not a terminal; the lines above them still print.
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(15));
        let style = ProgressStyle::with_template("  {spinner:.cyan} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        Self {
            multi,
            header: None,
            bars: Vec::new(),
            style,
        }
    }

    fn show(&mut self, tracker: &Tracker, step: Option<Step>) {
        if let Some(step) = &step {
            match tty_line(step) {
                Line::None => {}
                Line::One(text) => self.above(&text),
                Line::Failure(head, body) => {
                    self.above(&head);
                    for line in body {
                        self.above(&line);
                    }
                }
            }
        }
        self.sync(tracker);
    }

    /// Makes the spinners those of the operations running now, and the header say how many there are.
    fn sync(&mut self, tracker: &Tracker) {
        let running = tracker.running();
        self.bars.retain(|(id, bar)| {
            let keep = running.iter().any(|(r, ..)| r == id);
            if !keep {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            keep
        });
        for (id, label, settings, ran) in running {
            if self.bars.iter().any(|(b, _)| *b == id) {
                continue;
            }
            let bar = self.multi.add(
                ProgressBar::new_spinner()
                    .with_style(self.style.clone())
                    .with_elapsed(ran)
                    .with_message(running_text(&label, &settings)),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            self.bars.push((id, bar));
        }
        let header = self.header.get_or_insert_with(|| {
            let bar = self.multi.insert(
                0,
                ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{msg} {elapsed:.dim}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        header.set_message(header_text(tracker));
    }

    fn above(&self, text: &str) {
        // `println` draws nothing when the target is hidden; then the line still belongs on stderr.
        if self.multi.is_hidden() || self.multi.println(text).is_err() {
            eprintln!("{text}");
        }
    }

    fn finish(&mut self) {
        for (_, bar) in self.bars.drain(..) {
            bar.finish_and_clear();
        }
        if let Some(h) = self.header.take() {
            h.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// One way of showing events.
enum Display {
    Plain,
    Live(Box<Live>),
}

/// Shows events: follows them with a [`Tracker`] and prints what it says to show.
struct Renderer {
    tracker: Tracker,
    display: Display,
    started: Instant,
}

impl Renderer {
    fn new(display: Display) -> Self {
        Self {
            tracker: Tracker::new(),
            display,
            started: Instant::now(),
        }
    }

    /// The plain lines of an event (none when it is folded away).
    fn plain_lines(&mut self, ev: &Event) -> Option<String> {
        self.tracker.update(ev).map(|s| s.plain())
    }

    fn show(&mut self, ev: &Event) {
        match &mut self.display {
            Display::Plain => {
                if let Some(text) = self.plain_lines(ev) {
                    eprintln!("{text}");
                }
            }
            Display::Live(live) => {
                let step = self.tracker.update(ev);
                live.show(&self.tracker, step);
            }
        }
    }

    fn skipped(&mut self, n: u64) {
        let text = format!("… {n} progress events skipped (the display fell behind)");
        match &self.display {
            Display::Plain => eprintln!("{text}"),
            Display::Live(live) => live.above(&text),
        }
    }

    /// Clears the live display and prints the summary line.
    fn finish(&mut self, report: Option<&std::path::Path>) {
        let line = self.tracker.summary_line(self.started.elapsed(), report);
        match &mut self.display {
            Display::Plain => eprintln!("{line}"),
            Display::Live(live) => {
                live.finish();
                eprintln!("{BOLD}{line}{RESET}");
            }
        }
    }
}

/// Progress being shown; [`Progress::finish`] prints what is left, clears the spinners and prints the
/// summary.
pub(crate) struct Progress {
    stop: Option<oneshot::Sender<Option<PathBuf>>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the events of `rx` on stderr; `quiet` shows nothing.
    pub(crate) fn start(rx: broadcast::Receiver<Event>, mode: ProgressMode, quiet: bool) -> Self {
        if quiet {
            return Self { stop: None, task: None };
        }
        let live = match mode {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Plain => false,
            ProgressMode::Tty => true,
        };
        let display = if live {
            Display::Live(Box::new(Live::new()))
        } else {
            Display::Plain
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(render(rx, Renderer::new(display), stopped));
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shows the events already sent, clears the live display, and prints the summary line (naming the
    /// report when there is one).
    pub(crate) async fn finish(mut self, report: Option<PathBuf>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(report);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn render(
    mut rx: broadcast::Receiver<Event>,
    mut renderer: Renderer,
    mut stopped: oneshot::Receiver<Option<PathBuf>>,
) {
    let report = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => renderer.show(&ev),
                Err(broadcast::error::RecvError::Lagged(n)) => renderer.skipped(n),
                // The engine is gone (its session stopped): what is left is the summary, once asked for.
                Err(broadcast::error::RecvError::Closed) => break (&mut stopped).await.ok().flatten(),
            },
            report = &mut stopped => {
                // Drain what was sent before the stop, so the last lines are not lost.
                loop {
                    match rx.try_recv() {
                        Ok(ev) => renderer.show(&ev),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => renderer.skipped(n),
                        Err(_) => break,
                    }
                }
                break report.ok().flatten();
            }
        }
    };
    renderer.finish(report.as_deref());
}

#[cfg(test)]
mod tests {
    use dagger_engine::{EventKind, OpInfo, Role};

    use super::*;

    fn ev(op: &str, id: &str, kind: EventKind, detail: &str, role: Role, inputs: &[&str]) -> Event {
        // As the engine sends them: queued, started and cached events say what the operation is.
        let described = matches!(kind, EventKind::Queued | EventKind::Started | EventKind::Cached);
        let mut e = Event::new(op, id, kind);
        if described {
            e.info = Some(Box::new(OpInfo {
                detail: detail.into(),
                role,
                inputs: inputs.iter().map(|s| s.to_string()).collect(),
                ..OpInfo::default()
            }));
        }
        e
    }

    fn step(kind: StepKind) -> Step {
        Step {
            id: "0123456789ab".into(),
            label: "withNewFile /app/a.txt".into(),
            settings: Vec::new(),
            kind,
        }
    }

    /// What the `matrix` example looked like before: sixteen `withEnvVariable` lines, then spinners that did
    /// not say which command ran. Now the settings go with their command, and nothing else prints for them.
    #[test]
    fn plain_lines_say_what_runs_and_fold_settings_into_it() {
        let mut r = Renderer::new(Display::Plain);
        let mut lines = Vec::new();
        let mut feed = |e: Event| lines.extend(r.plain_lines(&e));
        feed(ev("Query.container", "c", EventKind::Started, "", Role::Root, &[]));
        feed(ev("Query.container", "c", EventKind::Done(0), "", Role::Root, &[]));
        feed(ev(
            "Container.from",
            "f",
            EventKind::Cached,
            "rust:1-slim",
            Role::Work,
            &["c"],
        ));
        for (i, v) in ["1.80", "1.81"].iter().enumerate() {
            let (env, exec) = (format!("e{i}"), format!("x{i}"));
            let detail = format!("RUST_VERSION={v}");
            feed(ev(
                "Container.withEnvVariable",
                &env,
                EventKind::Started,
                &detail,
                Role::Setting,
                &["f"],
            ));
            feed(ev(
                "Container.withEnvVariable",
                &env,
                EventKind::Done(0),
                "",
                Role::Setting,
                &[],
            ));
            feed(ev(
                "Container.withExec",
                &exec,
                EventKind::Started,
                "cargo test",
                Role::Work,
                &[&env],
            ));
        }
        feed(ev(
            "Container.withExec",
            "x0",
            EventKind::Log("test result: ok".into()),
            "",
            Role::Work,
            &[],
        ));
        feed(ev(
            "Container.withExec",
            "x0",
            EventKind::Done(2400),
            "",
            Role::Work,
            &[],
        ));
        let mut failed = ev(
            "Container.withExec",
            "x1",
            EventKind::Failed("exit code: 101".into()),
            "",
            Role::Work,
            &[],
        );
        failed.exit_code = Some(101);
        feed(failed);
        assert_eq!(
            lines,
            [
                "● from rust:1-slim [f] cached",
                "▶ withExec cargo test [x0] · withEnvVariable RUST_VERSION=1.80",
                "▶ withExec cargo test [x1] · withEnvVariable RUST_VERSION=1.81",
                "│ withExec cargo test [x0] test result: ok",
                "✔ withExec cargo test [x0] 2.4s",
                "✘ withExec cargo test [x1] failed (exit code 101)\n    exit code: 101",
            ]
        );
        let summary = r
            .tracker
            .summary_line(Duration::from_secs(3), Some(std::path::Path::new("r.html")));
        assert_eq!(
            summary,
            "✘ 1 run, 1 cached, 1 failed in 3.0s (2 settings folded) · report: r.html"
        );
    }

    #[test]
    fn the_live_header_counts_where_operations_are_and_spinners_say_what_runs() {
        let mut t = Tracker::new();
        t.update(&ev(
            "Container.withEnvVariable",
            "e",
            EventKind::Started,
            "A=1",
            Role::Setting,
            &[],
        ));
        t.update(&ev(
            "Container.withEnvVariable",
            "e",
            EventKind::Done(0),
            "",
            Role::Setting,
            &[],
        ));
        t.update(&ev(
            "Container.withExec",
            "x",
            EventKind::Queued,
            "make",
            Role::Work,
            &["e"],
        ));
        t.update(&ev(
            "Container.withExec",
            "y",
            EventKind::Started,
            "make lint",
            Role::Work,
            &["e"],
        ));
        let header = header_text(&t);
        assert!(
            header.contains("1 running") && header.contains("1 queued"),
            "{header:?}"
        );
        let running = t.running();
        assert_eq!(running.len(), 1);
        let (_, label, settings, _) = &running[0];
        let text = running_text(label, settings);
        assert!(
            text.starts_with("withExec make lint") && text.contains("withEnvVariable A=1"),
            "{text:?}"
        );
    }

    #[test]
    fn a_started_operation_prints_nothing_above_the_spinners() {
        assert_eq!(tty_line(&step(StepKind::Started)), Line::None);
    }

    #[test]
    fn finished_and_cached_operations_print_one_line() {
        let Line::One(done) = tty_line(&step(StepKind::Done(2400))) else {
            panic!("one line");
        };
        assert!(
            done.contains("withNewFile /app/a.txt") && done.contains("2.4s"),
            "{done}"
        );
        let Line::One(cached) = tty_line(&step(StepKind::Cached)) else {
            panic!("one line");
        };
        assert!(cached.contains("cached"), "{cached}");
        let Line::One(log) = tty_line(&step(StepKind::Log("hello".into()))) else {
            panic!("one line");
        };
        assert!(
            log.contains("withNewFile /app/a.txt [0123456789ab]") && log.ends_with("hello"),
            "{log:?}"
        );
    }

    #[test]
    fn a_failure_is_printed_in_full_with_its_exit_code() {
        let line = tty_line(&step(StepKind::Failed {
            message: "exit code 3\nstderr:\nboom".into(),
            exit_code: Some(3),
        }));
        let Line::Failure(head, body) = line else {
            panic!("a failure");
        };
        assert!(head.contains("failed (exit code 3)"), "{head}");
        assert_eq!(body, vec!["    exit code 3", "    stderr:", "    boom"]);
    }
}
