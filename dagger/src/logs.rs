//! Where session logs and engine progress go.

use std::sync::Arc;

/// Receives the lines a session logs: the engine CLI's stderr, and engine progress events.
///
/// Implemented for closures, so `.log_sink(|line: &str| eprintln!("{line}"))` works.
pub trait LogSink: Send + Sync {
    /// Handles one line, without its line terminator.
    fn line(&self, line: &str);
}

impl<F: Fn(&str) + Send + Sync> LogSink for F {
    fn line(&self, line: &str) {
        self(line)
    }
}

/// A [`LogSink`] that writes every line to the process's standard error (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct StderrLogs;

impl LogSink for StderrLogs {
    fn line(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// A shared, optional log sink.
#[derive(Clone, Default)]
pub(crate) struct Logs(pub(crate) Option<Arc<dyn LogSink>>);

impl Logs {
    pub(crate) fn line(&self, line: &str) {
        if let Some(sink) = &self.0 {
            sink.line(line);
        }
    }
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Logs(sink)" } else { "Logs(none)" })
    }
}
