//! Errors: one enum for everything a leaf or a connection can fail with, with causes chained by `source()`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong when talking to an engine.
///
/// Builder methods never fail; errors surface at the leaf (`stdout`, `sync`, `export`, …) that runs the
/// pipeline, or when a connection is opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command run by `withExec` failed (a non-zero exit code, unless `expect` allowed it).
    #[error(transparent)]
    Exec(#[from] ExecError),

    /// The engine answered the query with a GraphQL error.
    #[error("{message}{}", fmt_path(path))]
    Query {
        /// The engine's message.
        message: String,
        /// The response path of the field that failed (aliases and field names; list indexes as numbers).
        path: Vec<String>,
    },

    /// No session could be found or started.
    #[error(transparent)]
    Session(#[from] SessionError),

    /// The engine could not be reached over HTTP.
    #[error("could not reach the engine at {url}: {source}; is the session still running?")]
    Connect {
        /// The URL that was tried.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },

    /// The engine refused the session token (HTTP 401).
    #[error(
        "the engine at {url} answered 401 Unauthorized: wrong session token; check DAGGER_SESSION_TOKEN, or \
         let the SDK start its own session"
    )]
    Unauthorized {
        /// The URL that was tried.
        url: String,
    },

    /// The engine answered with an HTTP status other than 200 and no GraphQL errors.
    #[error("the engine at {url} answered HTTP {status}: {body}")]
    Http {
        /// The URL that was tried.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },

    /// The engine's answer could not be decoded.
    #[error("could not decode the engine's answer: {message}; the answer began with: {body}")]
    Decode {
        /// What did not fit.
        message: String,
        /// The start of the response body (or of the value that did not decode).
        body: String,
    },

    /// The answer decoded, but holds no value at the leaf's path.
    #[error("the engine's answer has no value at `{path}`; is the engine a Dagger-compatible engine?")]
    MissingData {
        /// The dotted path that was looked up.
        path: String,
    },

    /// A leaf ran on an object built from a detached [`Query`](crate::Query), which has no engine.
    #[error(
        "this object was built from a detached `Query` and has no engine to run on; build it from the `Query` \
         that `dagger::connect` hands you"
    )]
    NotConnected,

    /// A `pipeline!` run did not complete: which outputs failed (with their errors), which were not run.
    ///
    /// `?` on a pipeline's `run` converts its [`PipelineError`](crate::PipelineError) into this variant, so a
    /// pipeline can be run inside a closure returning `dagger::Error`. The outputs that finished stay
    /// reachable through [`PipelineError::partial_as`](crate::PipelineError::partial_as).
    #[error(transparent)]
    Pipeline(Box<crate::pipeline::PipelineError<crate::pipeline::AnyPartial>>),

    /// An object argument's ID was missing when the query was printed (a bug in the SDK; please report it).
    #[error("internal error: the ID of a `{type_name}` argument was not resolved before the query was sent")]
    UnresolvedId {
        /// The type of the argument.
        type_name: &'static str,
    },
}

fn fmt_path(path: &[String]) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" (at `{}`)", path.join("."))
    }
}

/// A command run by `withExec` that did not end as expected, with what it printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecError {
    /// The command line that ran.
    pub cmd: Vec<String>,
    /// Its exit code.
    pub exit_code: i64,
    /// What it wrote to standard output.
    pub stdout: String,
    /// What it wrote to standard error.
    pub stderr: String,
    /// The engine's message.
    pub message: String,
}

impl std::error::Error for ExecError {}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.message.contains(&self.exit_code.to_string()) {
            write!(f, " (exit code {})", self.exit_code)?;
        }
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let text = text.trim_end();
            if !text.is_empty() {
                write!(f, "\n{name}:")?;
                for line in text.lines() {
                    write!(f, "\n  {line}")?;
                }
            }
        }
        Ok(())
    }
}

/// Why no session could be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// `DAGGER_SESSION_PORT` is set to something that is not a port.
    #[error("DAGGER_SESSION_PORT is `{value}`, which is not a port number (1-65535); fix it or unset it")]
    BadPort {
        /// The variable's value.
        value: String,
    },

    /// `DAGGER_SESSION_PORT` is set but `DAGGER_SESSION_TOKEN` is not.
    #[error("DAGGER_SESSION_PORT is set but DAGGER_SESSION_TOKEN is not; set both (as `dagger run` does) or neither")]
    MissingToken,

    /// An explicit endpoint URL could not be used.
    #[error("the engine URL `{url}` is not usable: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The engine CLI could not be started.
    #[error("could not start the engine CLI `{}`: {source}; check the path, or unset _EXPERIMENTAL_DAGGER_CLI_BIN", bin.display())]
    CliSpawn {
        /// The CLI binary.
        bin: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The engine CLI exited before it printed the session handshake.
    #[error("the engine CLI `{}` exited ({status}) before the session started{}", bin.display(), fmt_stderr(stderr))]
    CliExited {
        /// The CLI binary.
        bin: PathBuf,
        /// How it exited.
        status: String,
        /// The last lines it wrote to standard error.
        stderr: String,
    },

    /// The engine CLI printed nothing usable within the handshake timeout.
    #[error(
        "the engine CLI `{}` printed no session handshake within {timeout:?}; it was stopped{}",
        bin.display(),
        fmt_stderr(stderr)
    )]
    CliTimeout {
        /// The CLI binary.
        bin: PathBuf,
        /// How long the SDK waited.
        timeout: Duration,
        /// The last lines it wrote to standard error.
        stderr: String,
    },

    /// The engine CLI printed a first line that is not the session handshake.
    #[error(
        "the engine CLI `{}` printed `{line}` where the session handshake `{{\"port\":…,\"session_token\":…}}` \
         was expected: {reason}",
        bin.display()
    )]
    CliHandshake {
        /// The CLI binary.
        bin: PathBuf,
        /// The line it printed.
        line: String,
        /// Why it is not a handshake.
        reason: String,
    },

    /// Reading from the engine CLI failed.
    #[error("could not read from the engine CLI `{}`: {source}", bin.display())]
    CliIo {
        /// The CLI binary.
        bin: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The embedded engine could not start.
    #[error(
        "could not start the embedded engine: {source} (its configuration comes from DAGGER_RS_* variables and \
         ~/.config/dagger-rs/engine.json; DAGGER_RS_CACHE_DIR moves its cache directory)"
    )]
    Embedded {
        /// What failed.
        #[source]
        source: std::io::Error,
    },

    /// Every provisioning strategy was tried and none applied.
    #[error(
        "no engine to connect to; tried, in order:\n{}\nrun the program under `dagger run` (or `dagger-rs run`), \
         set DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN, put a `dagger` CLI on PATH, or enable the embedded \
         engine (the `embedded` feature, without DAGGER_RS_EMBEDDED=0)",
        tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n")
    )]
    NotFound {
        /// One line per strategy: what it looked for and why it did not apply.
        tried: Vec<String>,
    },
}

fn fmt_stderr(stderr: &str) -> String {
    let stderr = stderr.trim_end();
    if stderr.is_empty() {
        "; it wrote nothing to stderr".to_owned()
    } else {
        format!("; its stderr ends with:\n{stderr}")
    }
}
