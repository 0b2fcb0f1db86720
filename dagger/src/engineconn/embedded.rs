//! Strategy 4: the engine, started in this process (feature `embedded`).
//!
//! It serves the same HTTP protocol on a loopback port with a random token, so the rest of the SDK does not
//! know the difference. Engine progress goes to the connection's log sink as the lines `dagger-rs` prints
//! (each operation by what it does, settings folded into their command), with a summary line when the
//! session ends; a report asked for ([`ConnectionBuilder::report`](crate::ConnectionBuilder::report) or
//! `DAGGER_RS_REPORT`) is written then too. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, each operation is also a
//! span sent over OTLP/HTTP, parented on the `traceparent` the SDK sends with its requests.
//!
//! As an ordinary user (not root), the program is first started again inside a user namespace of its own
//! (`dagger_engine::rootless::reexec`: the same arguments, environment and standard streams; this process
//! waits for it and exits with its status), where the engine runs rootless. `DAGGER_RS_ROOTLESS=0` turns that
//! off (and with it containers).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[cfg(feature = "otel")]
use dagger_engine::report::Tracing;
use dagger_engine::report::{Report, Tracker};

use super::{Endpoint, Options};
use crate::error::SessionError;
use crate::logs::Logs;

/// Keeps the in-process engine running; dropping it stops the server, writes the report and logs the
/// summary line.
pub(crate) struct EmbeddedGuard {
    _session: dagger_engine::Session,
    report: Option<Report>,
    #[cfg(feature = "otel")]
    tracing: Option<Tracing>,
    tracker: Option<Arc<Mutex<Tracker>>>,
    logs: Logs,
    started: Instant,
}

impl Drop for EmbeddedGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(tracing) = &self.tracing
            && let Err(e) = tracing.shutdown()
        {
            self.logs.line(&e);
        }
        let written = self.report.as_ref().and_then(|r| match r.finish() {
            Ok(_) => Some(r.html_path().to_owned()),
            Err(e) => {
                self.logs.line(&format!("cannot write the report: {e}"));
                None
            }
        });
        match self.tracker.as_ref().and_then(|t| t.lock().ok()) {
            Some(t) => self
                .logs
                .line(&t.summary_line(self.started.elapsed(), written.as_deref())),
            None => {
                if let Some(path) = written {
                    self.logs.line(&format!("report: {}", path.display()));
                }
            }
        }
    }
}

/// Starts the engine on `127.0.0.1:0`, recording a report at `report` when given one.
pub(crate) async fn start(
    opts: &Options,
    report: Option<PathBuf>,
    logs: &Logs,
) -> Result<(Endpoint, EmbeddedGuard), SessionError> {
    dagger_engine::rootless::reexec()
        .await
        .map_err(|e| SessionError::Embedded {
            source: std::io::Error::other(e),
        })?;
    let mut config = dagger_engine::Config::load().map_err(|e| SessionError::Embedded {
        source: std::io::Error::other(e),
    })?;
    if let Some(dir) = &opts.workdir {
        config.workdir = dir.clone();
    }
    let session = dagger_engine::Session::start(config)
        .await
        .map_err(|source| SessionError::Embedded { source })?;
    let report = match report {
        Some(path) => {
            Some(Report::start(&session.engine, path, None).map_err(|source| SessionError::Embedded { source })?)
        }
        None => None,
    };
    // Spans over OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_*` variables ask for them.
    #[cfg(feature = "otel")]
    let tracing = Tracing::from_env().map_err(|e| SessionError::Embedded {
        source: std::io::Error::other(e),
    })?;
    #[cfg(feature = "otel")]
    if let Some(t) = &tracing {
        t.attach(&session.engine);
    }
    #[cfg(not(feature = "otel"))]
    if ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        logs.line(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this program was built without the `otel` feature of `dagger`: \
             the embedded engine exports no spans (enable it with `features = [\"otel\"]`)",
        );
    }
    let tracker = logs.0.is_some().then(|| Arc::new(Mutex::new(Tracker::new())));
    if let Some(tracker) = &tracker {
        // A listener, not a subscriber: each line is written as its event is sent, so none is dropped and the
        // summary line, written when the session ends, comes after them all.
        let (logs, tracker) = (logs.clone(), tracker.clone());
        session.engine.listen_with_start_report(move |event| {
            let step = match tracker.lock() {
                Ok(mut t) => t.update(event),
                Err(_) => None,
            };
            for line in step
                .iter()
                .flat_map(|s| s.plain().lines().map(str::to_owned).collect::<Vec<_>>())
            {
                logs.line(&line);
            }
        });
    }
    Ok((
        Endpoint {
            base: session.url(),
            token: session.token.clone(),
        },
        EmbeddedGuard {
            _session: session,
            report,
            #[cfg(feature = "otel")]
            tracing,
            tracker,
            logs: logs.clone(),
            started: Instant::now(),
        },
    ))
}
