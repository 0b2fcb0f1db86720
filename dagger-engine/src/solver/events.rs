//! Progress events: what happened to each operation (started, cached, done, failed, a line of output),
//! broadcast to whoever subscribes (the CLI's progress display, tests).

/// One progress event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The operation, such as `Directory.withNewFile`.
    pub op: String,
    /// The first characters of its digest.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// It started.
    Started,
    /// Its result came from the cache.
    Cached,
    /// It finished, in this many milliseconds.
    Done(u128),
    /// It failed with this message.
    Failed(String),
    /// A line of output it produced.
    Log(String),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            EventKind::Started => write!(f, "▶ {} [{}]", self.op, self.id),
            EventKind::Cached => write!(f, "● {} [{}] cached", self.op, self.id),
            EventKind::Done(ms) => write!(f, "✔ {} [{}] {ms}ms", self.op, self.id),
            EventKind::Failed(msg) => write!(f, "✘ {} [{}] failed: {msg}", self.op, self.id),
            EventKind::Log(line) => write!(f, "│ {} [{}] {line}", self.op, self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_as_one_line_each() {
        let ev = |kind| Event {
            op: "Container.withExec".into(),
            id: "0123456789ab".into(),
            kind,
        };
        assert_eq!(
            ev(EventKind::Started).to_string(),
            "▶ Container.withExec [0123456789ab]"
        );
        assert_eq!(
            ev(EventKind::Cached).to_string(),
            "● Container.withExec [0123456789ab] cached"
        );
        assert_eq!(
            ev(EventKind::Done(12)).to_string(),
            "✔ Container.withExec [0123456789ab] 12ms"
        );
        assert_eq!(
            ev(EventKind::Failed("exit code: 1".into())).to_string(),
            "✘ Container.withExec [0123456789ab] failed: exit code: 1"
        );
        assert_eq!(
            ev(EventKind::Log("hello".into())).to_string(),
            "│ Container.withExec [0123456789ab] hello"
        );
    }
}
