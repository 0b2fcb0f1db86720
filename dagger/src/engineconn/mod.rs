//! Session provisioning: finding or starting an engine to talk to.
//!
//! Strategies are tried in this order, each in its own file:
//! 1. [`config`]: an endpoint given explicitly to the connection builder;
//! 2. [`env`]: `DAGGER_SESSION_PORT` and `DAGGER_SESSION_TOKEN`, as set by `dagger run`;
//! 3. [`cli`]: an engine CLI (`_EXPERIMENTAL_DAGGER_CLI_BIN`, or `dagger` on `PATH`) started as `session`;
//! 4. `embedded` (feature `embedded`, on by default): the engine started in this process. Set
//!    `DAGGER_RS_EMBEDDED=0` (or call `ConnectionBuilder::embedded(false)`) to skip it.
//!
//! A strategy that does not apply says why; when none applies, the error lists every reason. A strategy that
//! applies but fails (a malformed port, a CLI that exits early) is an error at once, never a fallthrough, so a
//! misconfiguration is not hidden by a later strategy.

use std::any::Any;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::SessionError;
use crate::logs::Logs;

pub(crate) mod cli;
pub(crate) mod config;
#[cfg(feature = "embedded")]
pub(crate) mod embedded;
pub(crate) mod env;

/// Where a session listens and how to authenticate to it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Base URL, such as `http://127.0.0.1:41234`.
    pub(crate) base: String,
    /// The session token (basic-auth user name).
    pub(crate) token: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A provisioned session: its endpoint and whatever must live as long as it.
pub(crate) struct Session {
    pub(crate) endpoint: Endpoint,
    pub(crate) keepalive: Option<Box<dyn Any + Send + Sync>>,
}

/// What the connection builder collected.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) endpoint: Option<(String, String)>,
    pub(crate) cli_bin: Option<PathBuf>,
    pub(crate) cli_timeout: Duration,
    pub(crate) workdir: Option<PathBuf>,
    pub(crate) embedded: bool,
    /// Where the run report goes (`ConnectionBuilder::report`); `DAGGER_RS_REPORT` when unset.
    pub(crate) report: Option<PathBuf>,
}

/// The environment variable naming a run report's HTML file (read by the embedded engine and by
/// `dagger-rs`).
pub(crate) const REPORT_ENV: &str = "DAGGER_RS_REPORT";

impl Default for Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            cli_bin: None,
            // The official SDKs wait this long: a first engine start can pull images.
            cli_timeout: Duration::from_secs(300),
            workdir: None,
            embedded: true,
            report: None,
        }
    }
}

/// Reads an environment variable; tests pass their own.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values treated as unset.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Tries each strategy in order.
pub(crate) async fn provision(opts: &Options, env: EnvLookup<'_>, logs: &Logs) -> Result<Session, SessionError> {
    let mut tried = Vec::new();

    match config::endpoint(opts)? {
        Some(endpoint) => {
            return Ok(Session {
                endpoint,
                keepalive: None,
            });
        }
        None => tried.push("an explicit endpoint: none was given to the connection builder".to_owned()),
    }

    match env::endpoint(env)? {
        Some(endpoint) => {
            return Ok(Session {
                endpoint,
                keepalive: None,
            });
        }
        None => tried.push("DAGGER_SESSION_PORT / DAGGER_SESSION_TOKEN: not set".to_owned()),
    }

    match cli::find(opts, env) {
        Ok(bin) => {
            let (endpoint, guard) = cli::start(&bin, opts, logs).await?;
            return Ok(Session {
                endpoint,
                keepalive: Some(Box::new(guard)),
            });
        }
        Err(why) => tried.push(why),
    }

    let disabled_by_env = env("DAGGER_RS_EMBEDDED").is_some_and(|v| v == "0" || v.eq_ignore_ascii_case("false"));
    if !opts.embedded || disabled_by_env {
        tried.push("the embedded engine: turned off (DAGGER_RS_EMBEDDED=0 or `embedded(false)`)".to_owned());
    } else {
        #[cfg(feature = "embedded")]
        {
            let report = opts.report.clone().or_else(|| env(REPORT_ENV).map(PathBuf::from));
            let (endpoint, guard) = embedded::start(opts, report, logs).await?;
            return Ok(Session {
                endpoint,
                keepalive: Some(Box::new(guard)),
            });
        }
        #[cfg(not(feature = "embedded"))]
        tried.push("the embedded engine: this build has no `embedded` feature".to_owned());
    }

    Err(SessionError::NotFound { tried })
}
