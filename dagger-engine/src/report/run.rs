//! A run as the report shows it, made from its events: every operation with its times, state, arguments,
//! logs and error; the critical path; the summary.

use std::collections::{BTreeMap, HashMap};

use crate::report::Record;
use crate::solver::events::{EventKind, PipelineGraph, Role};

/// Log lines kept per operation (the last ones: where a failure explains itself).
const LOG_LINES: usize = 1000;
/// Characters kept per log line.
const LOG_LINE_CHARS: usize = 2000;
/// How many settings up a chain an operation lists.
const SETTINGS_DEPTH: usize = 64;

/// Where an operation ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Needed, never started (its request went away, or something below it failed).
    Queued,
    /// Started and not finished when the report was made.
    Running,
    /// Served from the cache.
    Cached,
    /// Run, successfully.
    Done,
    /// Run, and failed.
    Failed,
}

impl State {
    /// Its name in the report: `queued`, `running`, `cached`, `done`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Cached => "cached",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// One operation of the run. Times are milliseconds since the run started.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// The first characters of its digest.
    pub id: String,
    /// `Type.field`.
    pub op: String,
    /// What it does, for a person (`withExec cargo test`).
    pub label: String,
    /// What it serves, as the client named the field that needed it first (a `pipeline!` output).
    pub serves: Option<String>,
    /// Bytes it downloaded from a registry.
    pub pulled: u64,
    /// Its arguments, secrets as `***`.
    pub args: BTreeMap<String, serde_json::Value>,
    /// The objects it is built from.
    pub inputs: Vec<String>,
    /// The settings made just for it (environment variables, working directory, mounts), as the progress
    /// display folds them into it.
    pub settings: Vec<String>,
    /// Work, a setting, or a starting point.
    pub role: Role,
    /// Where it ended up.
    pub state: State,
    /// When a request first needed it.
    pub queued: Option<u64>,
    /// When it started (for a cached one: when it was found in the cache).
    pub started: Option<u64>,
    /// When it finished (for a cached one: when it was found).
    pub ended: Option<u64>,
    /// The last lines of its output.
    pub logs: Vec<String>,
    /// How many earlier lines were not kept.
    pub logs_dropped: usize,
    /// Its error.
    pub error: Option<String>,
    /// The exit code of its process, when that is why it failed.
    pub exit_code: Option<i32>,
    /// Whether it is on the critical path: the chain of operations, each waiting for the one before, that
    /// ended last.
    pub critical: bool,
}

impl Op {
    /// When it appears on the timeline: started, else found in the cache, else queued.
    pub fn start(&self) -> u64 {
        self.started.or(self.queued).unwrap_or(0)
    }

    /// How long it ran, when it ran and finished.
    pub fn duration(&self) -> Option<u64> {
        match (self.state, self.started, self.ended) {
            (State::Done | State::Failed, Some(s), Some(e)) => Some(e.saturating_sub(s)),
            _ => None,
        }
    }
}

/// The figures of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// From the first event to the last (or to when the report was made).
    pub wall_ms: u64,
    /// Operations of work that ran and succeeded.
    pub run: usize,
    /// Operations of work served from the cache.
    pub cached: usize,
    /// Operations that failed (of any role).
    pub failed: usize,
    /// Settings and starting points (folded into the work they shape).
    pub settings: usize,
    /// Operations still running when the report was made.
    pub running: usize,
    /// Operations needed but never started.
    pub queued: usize,
    /// `cached / (run + cached + failed)` of the work, from 0 to 1 (0 when there was none).
    pub cache_hit_ratio: f64,
    /// The most operations of work running at one moment.
    pub peak_concurrency: usize,
    /// How long the critical path ran, from the start of its first operation to the end of its last.
    pub critical_ms: u64,
    /// How many operations it has.
    pub critical_ops: usize,
    /// Bytes downloaded from registries.
    pub bytes_pulled: u64,
}

/// A run: its operations in timeline order and its summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: u64,
    /// The operations, by the time they appear on the timeline (then by id, for a stable order).
    pub ops: Vec<Op>,
    /// Lines of the engine itself (such as what it collected at start-up).
    pub notes: Vec<String>,
    /// The graphs of the pipelines the clients ran (`pipeline!`), one per pipeline name.
    pub graphs: Vec<PipelineGraph>,
    /// The figures.
    pub summary: Summary,
}

impl Run {
    /// The run of `records`; `start` and `end` (milliseconds since the epoch) default to the first and the
    /// last record. Operations still running at `end` are shown running until then.
    pub fn from_records(records: &[Record], start: Option<u64>, end: Option<u64>) -> Run {
        let first = records.iter().map(|r| r.at).min();
        let started_at = start.or(first).unwrap_or(0);
        let rel = |at: u64| at.saturating_sub(started_at);
        let last = records.iter().map(|r| rel(r.at)).max().unwrap_or(0);
        let wall = end.map(rel).unwrap_or(last).max(last);

        let mut ops: Vec<Op> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut notes = Vec::new();
        let mut graphs = Vec::new();
        for r in records {
            let ev = &r.event;
            let at = rel(r.at);
            if let EventKind::Graph(g) = &ev.kind {
                // One picture per pipeline: the last one sent.
                graphs.retain(|known: &PipelineGraph| known.name != g.name);
                graphs.push((**g).clone());
                continue;
            }
            if ev.op == "engine" {
                if let EventKind::Log(line) = &ev.kind {
                    notes.push(line.clone());
                }
                continue;
            }
            let i = *index.entry(ev.id.clone()).or_insert_with(|| {
                ops.push(Op {
                    id: ev.id.clone(),
                    op: ev.op.clone(),
                    label: ev.op.clone(),
                    serves: None,
                    pulled: 0,
                    args: BTreeMap::new(),
                    inputs: Vec::new(),
                    settings: Vec::new(),
                    role: Role::Work,
                    state: State::Queued,
                    queued: None,
                    started: None,
                    ended: None,
                    logs: Vec::new(),
                    logs_dropped: 0,
                    error: None,
                    exit_code: None,
                    critical: false,
                });
                ops.len() - 1
            });
            let op = &mut ops[i];
            if let Some(info) = &ev.info {
                op.label = ev.label();
                op.args = info.args.clone();
                op.inputs = info.inputs.clone();
                op.role = info.role;
            }
            if op.serves.is_none() {
                op.serves.clone_from(&ev.serves);
            }
            match &ev.kind {
                EventKind::Queued => {
                    op.queued.get_or_insert(at);
                }
                EventKind::Started => {
                    // A second run of the same operation (it failed, and was asked for again) starts over.
                    if op.state != State::Running {
                        op.started = Some(at);
                        op.ended = None;
                        op.error = None;
                        op.exit_code = None;
                    }
                    op.state = State::Running;
                }
                EventKind::Cached => {
                    if op.state != State::Done {
                        op.state = State::Cached;
                        op.started = Some(at);
                        op.ended = Some(at);
                    }
                }
                EventKind::Done(_) => {
                    op.state = State::Done;
                    op.ended = Some(at);
                }
                EventKind::Failed(msg) => {
                    op.state = State::Failed;
                    op.started.get_or_insert(at);
                    op.ended = Some(at);
                    op.error = Some(msg.clone());
                    op.exit_code = ev.exit_code;
                }
                EventKind::Pulled(bytes) => op.pulled += bytes,
                EventKind::Graph(_) => {}
                EventKind::Log(line) => {
                    if op.logs.len() == LOG_LINES {
                        op.logs.remove(0);
                        op.logs_dropped += 1;
                    }
                    op.logs.push(line.chars().take(LOG_LINE_CHARS).collect());
                }
            }
        }
        for op in &mut ops {
            if op.state == State::Queued {
                op.started = None;
            }
        }
        let settings: Vec<Vec<String>> = ops
            .iter()
            .map(|op| match op.role {
                Role::Work => crate::report::text::settings_chain(&op.id, SETTINGS_DEPTH, |id| {
                    let o = &ops[*index.get(id)?];
                    Some((o.label.as_str(), o.role, o.inputs.first().map(String::as_str)))
                }),
                _ => Vec::new(),
            })
            .collect();
        for (op, settings) in ops.iter_mut().zip(settings) {
            op.settings = settings;
        }
        ops.sort_by(|a, b| a.start().cmp(&b.start()).then_with(|| a.id.cmp(&b.id)));
        let (critical_ms, critical_ops) = mark_critical_path(&mut ops);
        let summary = summarize(&ops, wall, critical_ms, critical_ops);
        Run {
            started_at,
            ops,
            notes,
            graphs,
            summary,
        }
    }
}

/// Marks the critical path: the chain of operations, each waiting for the one before, that ended last.
///
/// From the operation of work that ended last, it goes back to what that one waited for: the input that
/// ended last before it started or, when the client asked for the operation only later (a value it read fed
/// the next request, as a published reference feeds a `from`), the operation that ended last before it was
/// asked for, whichever ended later. Starting points (`container`, `directory`) are left out: everything is
/// built on them. Returns the path's span and how many operations of work it has.
fn mark_critical_path(ops: &mut [Op]) -> (u64, usize) {
    let ended = |op: &Op| match (op.state, op.role) {
        (_, Role::Root) => None,
        (State::Done | State::Failed | State::Cached, _) => op.ended,
        _ => None,
    };
    // Every operation that ended, by its end (then its start): the candidates for "ended last before t".
    let mut by_end: Vec<(u64, u64, usize)> = (0..ops.len())
        .filter_map(|i| ended(&ops[i]).map(|e| (e, ops[i].start(), i)))
        .collect();
    by_end.sort_unstable();
    let Some(&(end, _, mut at)) = by_end
        .iter()
        .rev()
        .find(|(_, _, i)| ops[*i].role == Role::Work)
        .or(by_end.last())
    else {
        return (0, 0);
    };
    let by_id: HashMap<String, usize> = ops.iter().enumerate().map(|(i, o)| (o.id.clone(), i)).collect();
    let mut count = 0;
    loop {
        ops[at].critical = true;
        if ops[at].role == Role::Work {
            count += 1;
        }
        let start = ops[at].start();
        let input = ops[at]
            .inputs
            .iter()
            .filter_map(|id| by_id.get(id).copied())
            .filter(|&i| !ops[i].critical && ended(&ops[i]).is_some_and(|e| e <= start))
            .max_by_key(|&i| (ended(&ops[i]), ops[i].start()));
        let asked = ops[at].queued.unwrap_or(start).min(start);
        let before = by_end.partition_point(|(e, _, _)| *e <= asked);
        let earlier = by_end[..before]
            .iter()
            .rev()
            .find(|(_, _, i)| !ops[*i].critical && *i != at)
            .map(|(_, _, i)| *i);
        let next = match (input, earlier) {
            (Some(a), Some(b)) if ended(&ops[b]) > ended(&ops[a]) => Some(b),
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
        match next {
            Some(i) => at = i,
            None => break,
        }
    }
    (end.saturating_sub(ops[at].start()), count)
}

/// The figures of `ops`.
fn summarize(ops: &[Op], wall_ms: u64, critical_ms: u64, critical_ops: usize) -> Summary {
    let mut s = Summary {
        wall_ms,
        critical_ms,
        critical_ops,
        ..Summary::default()
    };
    let mut edges = Vec::new();
    for op in ops {
        s.bytes_pulled += op.pulled;
        if op.state == State::Failed {
            s.failed += 1;
        }
        if op.role != Role::Work {
            s.settings += 1;
            continue;
        }
        match op.state {
            State::Done => s.run += 1,
            State::Cached => s.cached += 1,
            // A service runs until it is stopped: up when the report is made is not work left undone.
            State::Running if op.op == "Service" => {}
            State::Running => s.running += 1,
            State::Queued => s.queued += 1,
            State::Failed => {}
        }
        if let (Some(start), State::Done | State::Failed | State::Running) = (op.started, op.state) {
            let end = op.ended.unwrap_or(wall_ms);
            edges.push((start, 1i64));
            edges.push((end.max(start + 1), -1i64));
        }
    }
    // Ends before starts at the same moment: one that ends as the next starts did not overlap it.
    edges.sort();
    let mut now = 0i64;
    for (_, d) in edges {
        now += d;
        s.peak_concurrency = s.peak_concurrency.max(usize::try_from(now).unwrap_or(0));
    }
    let work_failed = ops
        .iter()
        .filter(|o| o.role == Role::Work && o.state == State::Failed)
        .count();
    let total = s.run + s.cached + work_failed;
    if total > 0 {
        s.cache_hit_ratio = s.cached as f64 / total as f64;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::events::{Event, OpInfo};

    /// A record at `at` ms of operation `id`, described with `inputs` and `role` when `described`.
    fn rec(at: u64, id: &str, kind: EventKind, inputs: &[&str], role: Role) -> Record {
        let described = matches!(kind, EventKind::Queued | EventKind::Started | EventKind::Cached);
        let mut event = Event::new("Container.withExec", id, kind);
        if described {
            event.info = Some(Box::new(OpInfo {
                detail: format!("run {id}"),
                inputs: inputs.iter().map(|s| s.to_string()).collect(),
                role,
                ..OpInfo::default()
            }));
        }
        Record { at: 1000 + at, event }
    }

    fn work(at: u64, id: &str, kind: EventKind, inputs: &[&str]) -> Record {
        rec(at, id, kind, inputs, Role::Work)
    }

    #[test]
    fn what_each_operation_serves_and_the_bytes_pulled_are_kept() {
        let mut queued = work(0, "a", EventKind::Queued, &[]);
        queued.event.serves = Some("tests".into());
        let mut started = work(1, "a", EventKind::Started, &[]);
        // A later event without the name (another field asked too) keeps the first name.
        started.event.serves = None;
        let records = vec![
            queued,
            started,
            work(2, "a", EventKind::Pulled(1000), &[]),
            work(3, "a", EventKind::Pulled(24), &[]),
            work(4, "a", EventKind::Done(3), &[]),
            work(5, "b", EventKind::Started, &["a"]),
            work(6, "b", EventKind::Pulled(1), &[]),
            work(7, "b", EventKind::Done(2), &[]),
        ];
        let run = Run::from_records(&records, None, None);
        assert_eq!(run.ops[0].serves.as_deref(), Some("tests"));
        assert_eq!(run.ops[0].pulled, 1024);
        assert_eq!(run.ops[1].serves, None);
        assert_eq!(run.summary.bytes_pulled, 1025);
    }

    #[test]
    fn states_times_logs_and_errors_come_from_the_events() {
        let records = vec![
            work(0, "a", EventKind::Queued, &[]),
            work(5, "a", EventKind::Started, &[]),
            work(6, "a", EventKind::Log("hello".into()), &[]),
            work(20, "a", EventKind::Done(15), &[]),
            work(21, "b", EventKind::Cached, &["a"]),
            work(22, "c", EventKind::Started, &["b"]),
            failed(40, "c", 3),
            work(41, "d", EventKind::Queued, &["c"]),
        ];
        let run = Run::from_records(&records, None, None);
        assert_eq!(run.started_at, 1000);
        let ids: Vec<&str> = run.ops.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"], "in timeline order");
        let a = &run.ops[0];
        assert_eq!(
            (a.state, a.queued, a.started, a.ended),
            (State::Done, Some(0), Some(5), Some(20))
        );
        assert_eq!(a.logs, ["hello"]);
        assert_eq!(a.label, "withExec run a");
        assert_eq!(run.ops[1].state, State::Cached);
        let c = &run.ops[2];
        assert_eq!((c.state, c.exit_code, c.duration()), (State::Failed, Some(3), Some(18)));
        assert_eq!(c.error.as_deref(), Some("exit code 3"));
        assert_eq!((run.ops[3].state, run.ops[3].started), (State::Queued, None));
        let s = &run.summary;
        assert_eq!((s.run, s.cached, s.failed, s.queued), (1, 1, 1, 1));
        assert!((s.cache_hit_ratio - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.wall_ms, 41);
    }

    /// A `Failed` record with an exit code.
    fn failed(at: u64, id: &str, code: i32) -> Record {
        let mut r = work(at, id, EventKind::Failed(format!("exit code {code}")), &[]);
        r.event.exit_code = Some(code);
        r
    }

    #[test]
    fn the_critical_path_follows_the_inputs_that_ended_last() {
        // base → (fast, slow) → join; the slow branch decides when `join` can start.
        let records = vec![
            work(0, "base", EventKind::Started, &[]),
            work(10, "base", EventKind::Done(10), &[]),
            work(10, "fast", EventKind::Started, &["base"]),
            work(10, "slow", EventKind::Started, &["base"]),
            work(15, "fast", EventKind::Done(5), &[]),
            work(50, "slow", EventKind::Done(40), &[]),
            work(50, "join", EventKind::Started, &["fast", "slow"]),
            work(60, "join", EventKind::Done(10), &[]),
        ];
        let run = Run::from_records(&records, None, None);
        let critical: Vec<&str> = run.ops.iter().filter(|o| o.critical).map(|o| o.id.as_str()).collect();
        assert_eq!(critical, ["base", "slow", "join"]);
        assert_eq!((run.summary.critical_ms, run.summary.critical_ops), (60, 3));
        assert_eq!(run.summary.peak_concurrency, 2, "fast and slow ran together");
    }

    #[test]
    fn the_critical_path_goes_through_what_the_client_waited_for_and_not_the_starting_points() {
        // container → build → publish; then the client reads the published reference and asks for `from` of
        // it (no input of the build), then runs a test in it.
        let records = vec![
            rec(0, "root", EventKind::Cached, &[], Role::Root),
            work(0, "build", EventKind::Queued, &["root"]),
            work(1, "build", EventKind::Started, &["root"]),
            work(30, "build", EventKind::Done(29), &[]),
            work(30, "publish", EventKind::Started, &["build"]),
            work(40, "publish", EventKind::Done(10), &[]),
            work(41, "pull", EventKind::Queued, &["root"]),
            work(41, "pull", EventKind::Started, &["root"]),
            work(45, "pull", EventKind::Done(4), &[]),
            work(45, "test", EventKind::Started, &["pull"]),
            work(50, "test", EventKind::Done(5), &[]),
            // Concurrent, unrelated, and ending before the client asked for `pull`: not on the path.
            work(2, "lint", EventKind::Started, &["root"]),
            work(20, "lint", EventKind::Done(18), &[]),
        ];
        let run = Run::from_records(&records, None, None);
        let mut critical: Vec<&str> = run.ops.iter().filter(|o| o.critical).map(|o| o.id.as_str()).collect();
        critical.sort_unstable();
        assert_eq!(critical, ["build", "publish", "pull", "test"]);
        assert_eq!((run.summary.critical_ms, run.summary.critical_ops), (49, 4));
    }

    #[test]
    fn settings_are_counted_apart_and_running_work_ends_at_the_report() {
        let records = vec![
            rec(0, "env", EventKind::Started, &[], Role::Setting),
            rec(0, "env", EventKind::Done(0), &[], Role::Setting),
            work(1, "exec", EventKind::Started, &["env"]),
        ];
        let run = Run::from_records(&records, Some(1000), Some(1100));
        let s = &run.summary;
        assert_eq!((s.settings, s.running, s.run, s.wall_ms), (1, 1, 0, 100));
        assert_eq!(s.peak_concurrency, 1);
        assert_eq!(run.ops[1].state, State::Running);
        assert_eq!(
            run.ops[1].settings,
            ["withExec run env"],
            "the setting is listed with its work"
        );
    }

    #[test]
    fn a_long_output_keeps_its_last_lines() {
        let mut records = vec![work(0, "a", EventKind::Started, &[])];
        for i in 0..LOG_LINES + 5 {
            records.push(work(1, "a", EventKind::Log(format!("line {i}")), &[]));
        }
        let run = Run::from_records(&records, None, None);
        let a = &run.ops[0];
        assert_eq!((a.logs.len(), a.logs_dropped), (LOG_LINES, 5));
        assert_eq!(a.logs[0], "line 5");
    }
}
