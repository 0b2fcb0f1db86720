//! Progress a person reads while a run goes on: each operation by what it does, settings (environment
//! variables, working directory, mounts) folded into the command they shape instead of a line each, and a
//! summary line at the end. [`Tracker`] follows the events and says what to show; [`Step::plain`] is the
//! one-line-per-event form (logs, pipes, SDKs reading a session's stderr).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::report::State;
use crate::solver::events::{Event, EventKind, Role};

/// How many settings up a chain are folded into one command (a longer chain shows its nearest ones).
const FOLD_DEPTH: usize = 64;
/// Characters of a label kept in front of a log line.
const LOG_LABEL: usize = 40;

/// What happened, for a display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// It started.
    Started,
    /// It came from the cache.
    Cached,
    /// It finished, in this many milliseconds.
    Done(u64),
    /// It failed.
    Failed {
        /// The error.
        message: String,
        /// The exit code of its process, when that is why.
        exit_code: Option<i32>,
    },
    /// It printed a line.
    Log(String),
}

/// One thing to show: an operation of work (or a failure of any operation) and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The first characters of its digest.
    pub id: String,
    /// What it does (`withExec cargo test`).
    pub label: String,
    /// The settings it runs with that were made just for it, nearest last (`withEnvVariable A=1`,
    /// `withWorkdir /src`): shown with it rather than on lines of their own.
    pub settings: Vec<String>,
    /// What happened.
    pub kind: StepKind,
}

impl Step {
    /// The plain form: one line (a failure adds its message's lines, indented).
    pub fn plain(&self) -> String {
        let (label, id) = (&self.label, &self.id);
        match &self.kind {
            StepKind::Started if self.settings.is_empty() => format!("▶ {label} [{id}]"),
            StepKind::Started => format!("▶ {label} [{id}] · {}", self.settings.join(", ")),
            StepKind::Cached => format!("● {label} [{id}] cached"),
            StepKind::Done(ms) => format!("✔ {label} [{id}] {}", duration(*ms)),
            StepKind::Failed { message, exit_code } => {
                let mut out = match exit_code {
                    Some(code) => format!("✘ {label} [{id}] failed (exit code {code})"),
                    None => format!("✘ {label} [{id}] failed"),
                };
                for line in message.lines() {
                    out.push_str("\n    ");
                    out.push_str(line);
                }
                out
            }
            StepKind::Log(line) => format!("│ {} [{id}] {line}", short_label(label)),
        }
    }
}

/// A label cut for the front of a log line (at 40 characters).
pub fn short_label(label: &str) -> String {
    if label.chars().count() <= LOG_LABEL {
        return label.to_owned();
    }
    let mut s: String = label.chars().take(LOG_LABEL - 1).collect();
    s.push('…');
    s
}

/// The settings up the chain of parents of `id`, oldest first, runs of one field merged: `lookup` gives an
/// operation's label, role and parent.
pub(crate) fn settings_chain<'a>(
    id: &str,
    depth: usize,
    lookup: impl Fn(&str) -> Option<(&'a str, Role, Option<&'a str>)>,
) -> Vec<String> {
    let mut labels: Vec<&str> = Vec::new();
    let mut at = lookup(id).and_then(|(_, _, parent)| parent);
    while let Some(parent) = at {
        let Some((label, Role::Setting, up)) = lookup(parent) else {
            break;
        };
        if labels.len() == depth {
            break;
        }
        labels.push(label);
        at = up;
    }
    let mut out: Vec<String> = Vec::new();
    let mut last_field = "";
    for label in labels.into_iter().rev() {
        let (field, rest) = label.split_once(' ').unwrap_or((label, ""));
        match out.last_mut() {
            Some(prev) if field == last_field && !rest.is_empty() => {
                prev.push(' ');
                prev.push_str(rest);
            }
            _ => out.push(label.to_owned()),
        }
        last_field = field;
    }
    out
}

/// `512 B`, `3.1 KiB`, `245.2 MiB`, `1.3 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `850ms`, `2.4s`, `3m05s`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// What the tracker knows of an operation.
#[derive(Debug)]
struct Tracked {
    label: String,
    /// What it serves, as the client named it (a `pipeline!` output).
    serves: Option<String>,
    /// Bytes it downloaded from a registry.
    pulled: u64,
    /// Whether it is a service (op `Service`): it runs until it is stopped, so it is not work left undone.
    service: bool,
    role: Role,
    inputs: Vec<String>,
    state: State,
    /// When it started, for the running ones.
    started: Option<std::time::Instant>,
}

impl Tracked {
    /// Its label as a display shows it: what it does, then what it serves (`withExec cargo test → tests`).
    fn shown(&self) -> String {
        match &self.serves {
            Some(serves) => format!("{} → {serves}", self.label),
            None => self.label.clone(),
        }
    }
}

/// How many operations are where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Work that is running (services aside).
    pub running: usize,
    /// Services that are up.
    pub services: usize,
    /// Work that is waiting for what it is built from.
    pub queued: usize,
    /// Work that ran and succeeded.
    pub run: usize,
    /// Work that came from the cache.
    pub cached: usize,
    /// Operations that failed (of any role).
    pub failed: usize,
    /// Settings that took effect (folded into the work they shape).
    pub settings: usize,
}

/// Follows the events of a run and says what a display shows for each.
#[derive(Debug, Default)]
pub struct Tracker {
    ops: HashMap<String, Tracked>,
    /// Work running now, in the order it started.
    running: Vec<String>,
}

impl Tracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows `ev`; returns what to show for it, or `None` for what is folded away (a setting, a starting
    /// point, an operation being queued).
    pub fn update(&mut self, ev: &Event) -> Option<Step> {
        if let EventKind::Graph(_) = ev.kind {
            // A picture, for reports.
            return None;
        }
        let op = self.ops.entry(ev.id.clone()).or_insert_with(|| Tracked {
            label: ev.op.clone(),
            serves: None,
            pulled: 0,
            service: ev.op == "Service",
            role: Role::Work,
            inputs: Vec::new(),
            state: State::Queued,
            started: None,
        });
        if let Some(info) = &ev.info {
            op.label = ev.label();
            op.role = info.role;
            op.inputs = info.inputs.clone();
        }
        if op.serves.is_none() {
            op.serves.clone_from(&ev.serves);
        }
        let work = op.role == Role::Work;
        let kind = match &ev.kind {
            EventKind::Queued => {
                return None;
            }
            EventKind::Started => {
                op.state = State::Running;
                op.started = Some(std::time::Instant::now());
                StepKind::Started
            }
            EventKind::Cached => {
                op.state = State::Cached;
                StepKind::Cached
            }
            EventKind::Done(ms) => {
                op.state = State::Done;
                StepKind::Done(*ms)
            }
            EventKind::Pulled(bytes) => {
                op.pulled += bytes;
                return None;
            }
            EventKind::Graph(_) => return None,
            EventKind::Failed(message) => {
                op.state = State::Failed;
                StepKind::Failed {
                    message: message.clone(),
                    exit_code: ev.exit_code,
                }
            }
            EventKind::Log(line) => StepKind::Log(line.clone()),
        };
        let label = op.shown();
        if op.state == State::Running {
            if work && !self.running.contains(&ev.id) {
                self.running.push(ev.id.clone());
            }
        } else {
            self.running.retain(|id| *id != ev.id);
        }
        if !work && !matches!(kind, StepKind::Failed { .. } | StepKind::Log(_)) {
            return None;
        }
        let settings = match kind {
            StepKind::Started | StepKind::Cached => self.settings_of(&ev.id),
            _ => Vec::new(),
        };
        let label = match (&kind, self.ops.get(&ev.id).map_or(0, |o| o.pulled)) {
            (StepKind::Done(_) | StepKind::Failed { .. }, pulled) if pulled > 0 => {
                format!("{label} · pulled {}", bytes(pulled))
            }
            _ => label,
        };
        Some(Step {
            id: ev.id.clone(),
            label,
            settings,
            kind,
        })
    }

    /// The settings made just before `id` (up its chain of parents, stopping at the first operation that is
    /// not a setting), in the order they were made, runs of one field merged (`withEnvVariable A=1 B=2`).
    pub fn settings_of(&self, id: &str) -> Vec<String> {
        settings_chain(id, FOLD_DEPTH, |id| {
            self.ops
                .get(id)
                .map(|o| (o.label.as_str(), o.role, o.inputs.first().map(String::as_str)))
        })
    }

    /// The work running now, in the order it started: id, label, settings, and how long it has run.
    pub fn running(&self) -> Vec<(String, String, Vec<String>, Duration)> {
        self.running
            .iter()
            .filter_map(|id| {
                let op = self.ops.get(id)?;
                let ran = op.started.map(|s| s.elapsed()).unwrap_or_default();
                Some((id.clone(), op.shown(), self.settings_of(id), ran))
            })
            .collect()
    }

    /// How many operations are where.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for op in self.ops.values() {
            if op.state == State::Failed {
                c.failed += 1;
                continue;
            }
            if op.role != Role::Work {
                if op.role == Role::Setting && op.state != State::Queued {
                    c.settings += 1;
                }
                continue;
            }
            match op.state {
                State::Running if op.service => c.services += 1,
                State::Running => c.running += 1,
                State::Queued => c.queued += 1,
                State::Done => c.run += 1,
                State::Cached => c.cached += 1,
                State::Failed => {}
            }
        }
        c
    }

    /// The line that ends a run: `✔ 8 run, 3 cached, 0 failed in 5.2s (16 settings folded) · pulled 245.2 MiB
    /// · report: PATH`.
    pub fn summary_line(&self, wall: Duration, report: Option<&Path>) -> String {
        let c = self.counts();
        let mark = if c.failed == 0 { '✔' } else { '✘' };
        let wall = duration(u64::try_from(wall.as_millis()).unwrap_or(u64::MAX));
        let mut out = format!(
            "{mark} {} run, {} cached, {} failed in {wall}",
            c.run, c.cached, c.failed
        );
        if c.running > 0 {
            out.push_str(&format!(", {} still running", c.running));
        }
        if c.services > 0 {
            let s = if c.services == 1 { "" } else { "s" };
            out.push_str(&format!(", {} service{s} up", c.services));
        }
        if c.queued > 0 {
            // Asked for, and never started: what they are built from failed, or their request went away.
            out.push_str(&format!(", {} not started", c.queued));
        }
        if c.settings > 0 {
            out.push_str(&format!(
                " ({} setting{} folded)",
                c.settings,
                if c.settings == 1 { "" } else { "s" }
            ));
        }
        let pulled: u64 = self.ops.values().map(|o| o.pulled).sum();
        if pulled > 0 {
            out.push_str(&format!(" · pulled {}", bytes(pulled)));
        }
        if let Some(p) = report {
            out.push_str(&format!(" · report: {}", p.display()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::events::OpInfo;

    /// An event of `op` `id`, described as `detail` with `role` and `inputs` on the kinds that carry it.
    fn ev(op: &str, id: &str, kind: EventKind, detail: &str, role: Role, inputs: &[&str]) -> Event {
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

    /// Runs `events` through a tracker; returns the plain lines.
    fn plain(t: &mut Tracker, events: &[Event]) -> Vec<String> {
        events.iter().filter_map(|e| t.update(e)).map(|s| s.plain()).collect()
    }

    /// `container → from → withEnvVariable → withWorkdir → withExec`, each queued, started and done.
    fn chain() -> Vec<Event> {
        let steps: [(&str, &str, &str, Role, &[&str]); 5] = [
            ("Query.container", "c0", "", Role::Root, &[]),
            ("Container.from", "f1", "busybox:latest", Role::Work, &["c0"]),
            ("Container.withEnvVariable", "e2", "MODE=fast", Role::Setting, &["f1"]),
            ("Container.withWorkdir", "w3", "/src", Role::Setting, &["e2"]),
            ("Container.withExec", "x4", "sh -c 'make test'", Role::Work, &["w3"]),
        ];
        let mut out = Vec::new();
        for (op, id, detail, role, inputs) in steps {
            out.push(ev(op, id, EventKind::Queued, detail, role, inputs));
        }
        for (op, id, detail, role, inputs) in steps {
            out.push(ev(op, id, EventKind::Started, detail, role, inputs));
            if id == "x4" {
                out.push(ev(op, id, EventKind::Log("ok 3 tests".into()), "", role, &[]));
            }
            out.push(ev(
                op,
                id,
                EventKind::Done(if id == "x4" { 2400 } else { 0 }),
                "",
                role,
                &[],
            ));
        }
        out
    }

    #[test]
    fn settings_are_folded_into_the_command_they_shape() {
        let mut t = Tracker::new();
        let lines = plain(&mut t, &chain());
        assert_eq!(
            lines,
            [
                "▶ from busybox:latest [f1]",
                "✔ from busybox:latest [f1] 0ms",
                "▶ withExec sh -c 'make test' [x4] · withEnvVariable MODE=fast, withWorkdir /src",
                "│ withExec sh -c 'make test' [x4] ok 3 tests",
                "✔ withExec sh -c 'make test' [x4] 2.4s",
            ]
        );
        let c = t.counts();
        assert_eq!((c.run, c.cached, c.failed, c.settings), (2, 0, 0, 2));
    }

    #[test]
    fn what_an_operation_serves_and_what_it_pulled_are_shown() {
        let mut t = Tracker::new();
        let mut started = ev(
            "Container.from",
            "f",
            EventKind::Started,
            "rust:1-slim",
            Role::Work,
            &[],
        );
        started.serves = Some("build".into());
        let mut exec = ev(
            "Container.withExec",
            "x",
            EventKind::Started,
            "cargo test",
            Role::Work,
            &["f"],
        );
        exec.serves = Some("tests".into());
        let lines = plain(
            &mut t,
            &[
                started,
                ev("Container.from", "f", EventKind::Pulled(3 << 20), "", Role::Work, &[]),
                ev("Container.from", "f", EventKind::Done(1500), "", Role::Work, &[]),
                exec,
                ev(
                    "Container.withExec",
                    "x",
                    EventKind::Log("ok".into()),
                    "",
                    Role::Work,
                    &[],
                ),
            ],
        );
        assert_eq!(
            lines,
            [
                "▶ from rust:1-slim → build [f]",
                "✔ from rust:1-slim → build · pulled 3.0 MiB [f] 1.5s",
                "▶ withExec cargo test → tests [x]",
                "│ withExec cargo test → tests [x] ok",
            ]
        );
        let running: Vec<String> = t.running().into_iter().map(|(_, label, _, _)| label).collect();
        assert_eq!(running, ["withExec cargo test → tests"]);
        assert!(
            t.summary_line(Duration::from_secs(2), None)
                .ends_with(" · pulled 3.0 MiB"),
            "{}",
            t.summary_line(Duration::from_secs(2), None)
        );
    }

    #[test]
    fn a_service_still_up_is_not_work_left_undone() {
        let mut t = Tracker::new();
        plain(
            &mut t,
            &[
                ev("Service", "s", EventKind::Started, "abc: app serve", Role::Work, &[]),
                ev(
                    "Container.withExec",
                    "x",
                    EventKind::Started,
                    "wget app",
                    Role::Work,
                    &[],
                ),
                ev("Container.withExec", "x", EventKind::Done(5), "", Role::Work, &[]),
            ],
        );
        let c = t.counts();
        assert_eq!((c.running, c.services, c.run), (0, 1, 1));
        let line = t.summary_line(Duration::from_secs(1), None);
        assert!(line.ends_with("in 1.0s, 1 service up"), "{line}");
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(260 * 1024 * 1024), "260.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn a_failure_is_shown_whatever_its_role_with_its_exit_code() {
        let mut t = Tracker::new();
        let mut failed = ev(
            "Container.withExec",
            "x",
            EventKind::Failed("process failed\nstderr: boom".into()),
            "",
            Role::Work,
            &[],
        );
        failed.exit_code = Some(3);
        let lines = plain(
            &mut t,
            &[
                ev("Container.withExec", "x", EventKind::Started, "false", Role::Work, &[]),
                failed,
                ev(
                    "Container.withWorkdir",
                    "w",
                    EventKind::Started,
                    "$NOPE",
                    Role::Setting,
                    &[],
                ),
                ev(
                    "Container.withWorkdir",
                    "w",
                    EventKind::Failed("no variable NOPE".into()),
                    "",
                    Role::Setting,
                    &[],
                ),
            ],
        );
        assert_eq!(
            lines,
            [
                "▶ withExec false [x]",
                "✘ withExec false [x] failed (exit code 3)\n    process failed\n    stderr: boom",
                "✘ withWorkdir $NOPE [w] failed\n    no variable NOPE",
            ]
        );
        assert_eq!(t.counts().failed, 2);
        t.update(&ev(
            "Container.withExec",
            "z",
            EventKind::Queued,
            "make",
            Role::Work,
            &["x"],
        ));
        assert_eq!(
            t.summary_line(Duration::from_millis(1500), None),
            "✘ 0 run, 0 cached, 2 failed in 1.5s, 1 not started"
        );
    }

    #[test]
    fn concurrent_work_is_listed_in_the_order_it_started_until_it_ends() {
        let mut t = Tracker::new();
        for id in ["a", "b", "c"] {
            t.update(&ev(
                "Container.withExec",
                id,
                EventKind::Started,
                &format!("echo {id}"),
                Role::Work,
                &[],
            ));
        }
        t.update(&ev("Container.withExec", "b", EventKind::Done(5), "", Role::Work, &[]));
        let running: Vec<String> = t.running().into_iter().map(|(_, label, _, _)| label).collect();
        assert_eq!(running, ["withExec echo a", "withExec echo c"]);
        assert_eq!(t.counts().running, 2);
    }

    #[test]
    fn the_summary_counts_work_and_says_where_the_report_is() {
        let mut t = Tracker::new();
        plain(&mut t, &chain());
        t.update(&ev(
            "Container.withExec",
            "y",
            EventKind::Cached,
            "make lint",
            Role::Work,
            &["w3"],
        ));
        assert_eq!(
            t.summary_line(Duration::from_millis(5200), Some(Path::new("/tmp/r.html"))),
            "✔ 2 run, 1 cached, 0 failed in 5.2s (2 settings folded) · report: /tmp/r.html"
        );
    }

    #[test]
    fn runs_of_one_setting_read_as_one() {
        let mut t = Tracker::new();
        let mut parent: Option<String> = None;
        for (i, (op, detail)) in [
            ("Container.withWorkdir", "/src"),
            ("Container.withEnvVariable", "A=1"),
            ("Container.withEnvVariable", "B=2"),
            ("Container.withMountedCache", "/cache"),
            ("Container.withEnvVariable", "C=3"),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("s{i}");
            let inputs: Vec<&str> = parent.iter().map(String::as_str).collect();
            t.update(&ev(op, &id, EventKind::Cached, detail, Role::Setting, &inputs));
            parent = Some(id);
        }
        let last = parent.unwrap_or_default();
        t.update(&ev(
            "Container.withExec",
            "x",
            EventKind::Started,
            "make",
            Role::Work,
            &[&last],
        ));
        assert_eq!(
            t.settings_of("x"),
            [
                "withWorkdir /src",
                "withEnvVariable A=1 B=2",
                "withMountedCache /cache",
                "withEnvVariable C=3"
            ]
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(2400), "2.4s");
        assert_eq!(duration(185_000), "3m05s");
    }

    #[test]
    fn long_labels_are_cut_in_front_of_log_lines() {
        let label = format!("withExec {}", "x".repeat(100));
        assert_eq!(short_label(&label).chars().count(), LOG_LABEL);
    }
}
