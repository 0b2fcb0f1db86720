//! Progress on standard error: the engine's [`Event`]s as plain lines, or as live spinners on a terminal.
//!
//! Plain mode prints one line per event and suits logs and pipes (SDKs read the session's stderr). Terminal
//! mode keeps one spinner per running operation at the bottom and prints what finished above them; a
//! failure is printed in full, every line of its message.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use dagger_engine::{Event, EventKind};
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

/// What the renderer prints for one event, above the spinners.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Nothing: the event only starts a spinner.
    None,
    /// A one-line summary.
    One(String),
    /// A failure: the summary, then the message's lines indented.
    Failure(String, Vec<String>),
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";

/// The text terminal mode prints above the spinners for `ev`.
fn tty_line(ev: &Event) -> Line {
    let (op, id) = (&ev.op, &ev.id);
    match &ev.kind {
        EventKind::Started => Line::None,
        EventKind::Cached => Line::One(format!("{DIM}● {op} [{id}] cached{RESET}")),
        EventKind::Done(ms) => Line::One(format!("{GREEN}✔{RESET} {op} {DIM}[{id}] {}{RESET}", duration(*ms))),
        EventKind::Failed(msg) => Line::Failure(
            format!("{RED}✘ {op} [{id}] failed{RESET}"),
            msg.lines().map(|l| format!("    {l}")).collect(),
        ),
        EventKind::Log(line) => Line::One(format!("{DIM}│ {op}{RESET} {line}")),
    }
}

/// `850ms`, `2.4s`, `3m05s`.
fn duration(ms: u128) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// The live display: one spinner per running operation.
struct Live {
    multi: MultiProgress,
    running: HashMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl Live {
    fn new() -> Self {
        // indicatif hides the spinners when stderr is not a terminal; the lines above them still print.
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(15));
        let style = ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        Self {
            multi,
            running: HashMap::new(),
            style,
        }
    }

    fn show(&mut self, ev: &Event) {
        match &ev.kind {
            EventKind::Started => {
                let bar = self.multi.add(
                    ProgressBar::new_spinner()
                        .with_style(self.style.clone())
                        .with_message(format!("{} [{}]", ev.op, ev.id)),
                );
                bar.enable_steady_tick(Duration::from_millis(100));
                self.running.insert(ev.id.clone(), bar);
            }
            EventKind::Done(_) | EventKind::Failed(_) => {
                if let Some(bar) = self.running.remove(&ev.id) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
            }
            EventKind::Cached | EventKind::Log(_) => {}
        }
        match tty_line(ev) {
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

    fn above(&self, text: &str) {
        // `println` draws nothing when the target is hidden; then the line still belongs on stderr.
        if self.multi.is_hidden() || self.multi.println(text).is_err() {
            eprintln!("{text}");
        }
    }

    fn finish(&mut self) {
        for (_, bar) in self.running.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// One way of showing events.
enum Renderer {
    Plain,
    Live(Box<Live>),
}

impl Renderer {
    fn show(&mut self, ev: &Event) {
        match self {
            Renderer::Plain => eprintln!("{ev}"),
            Renderer::Live(live) => live.show(ev),
        }
    }

    fn skipped(&mut self, n: u64) {
        let text = format!("… {n} progress events skipped (the display fell behind)");
        match self {
            Renderer::Plain => eprintln!("{text}"),
            Renderer::Live(live) => live.above(&text),
        }
    }

    fn finish(&mut self) {
        if let Renderer::Live(live) = self {
            live.finish();
        }
    }
}

/// Progress being shown; [`Progress::finish`] prints what is left and clears the spinners.
pub(crate) struct Progress {
    stop: Option<oneshot::Sender<()>>,
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
        let renderer = if live {
            Renderer::Live(Box::new(Live::new()))
        } else {
            Renderer::Plain
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(render(rx, renderer, stopped));
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shows the events already sent, then clears the live display.
    pub(crate) async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn render(mut rx: broadcast::Receiver<Event>, mut renderer: Renderer, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => renderer.show(&ev),
                Err(broadcast::error::RecvError::Lagged(n)) => renderer.skipped(n),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = &mut stopped => {
                // Drain what was sent before the stop, so the last lines are not lost.
                loop {
                    match rx.try_recv() {
                        Ok(ev) => renderer.show(&ev),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => renderer.skipped(n),
                        Err(_) => break,
                    }
                }
                break;
            }
        }
    }
    renderer.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event {
            op: "Directory.withNewFile".into(),
            id: "0123456789ab".into(),
            kind,
        }
    }

    #[test]
    fn a_started_operation_prints_nothing_above_the_spinners() {
        assert_eq!(tty_line(&ev(EventKind::Started)), Line::None);
    }

    #[test]
    fn finished_and_cached_operations_print_one_line() {
        let Line::One(done) = tty_line(&ev(EventKind::Done(2400))) else {
            panic!("one line");
        };
        assert!(
            done.contains("Directory.withNewFile") && done.contains("2.4s"),
            "{done}"
        );
        let Line::One(cached) = tty_line(&ev(EventKind::Cached)) else {
            panic!("one line");
        };
        assert!(cached.contains("cached"), "{cached}");
    }

    #[test]
    fn a_failure_is_printed_in_full() {
        let line = tty_line(&ev(EventKind::Failed("exit code 3\nstderr:\nboom".into())));
        let Line::Failure(head, body) = line else {
            panic!("a failure");
        };
        assert!(head.contains("failed"), "{head}");
        assert_eq!(body, vec!["    exit code 3", "    stderr:", "    boom"]);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(2400), "2.4s");
        assert_eq!(duration(185_000), "3m05s");
    }
}
