//! `dagger-rs`: the engine's command-line interface.
//!
//! It lives in a crate of its own so that the engine (and the SDK's `embedded` feature, which depends on
//! it) builds without clap and indicatif. It drives the engine only through `dagger-engine`'s public API,
//! which must therefore stay public:
//! - [`Config`] (`Config::load`, the `cache_dir` and `workdir` fields), [`Engine`] (`Engine::new`,
//!   `Engine::subscribe_with_start_report`) and [`Session`] (`Session::start`, `Session::serve`,
//!   `Session::shutdown`, the `engine`, `port` and `token` fields);
//! - `graphql::{Request, Response, Data, execute}` for `query`;
//! - `server::{check_token, random_token}` for `serve`;
//! - `store::Store` (`open`, `prune`, `size`) and `cleanup::start` for `cache`;
//! - `Event` and `EventKind` for the progress display, `report::{Report, Recorder, Tracker}` for `--report`,
//!   `--events` and the progress text.

mod progress;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dagger_engine::graphql::{Data, Response};
use dagger_engine::report::{Recorder, Report};
use dagger_engine::{Config, Engine, Session};
use serde_json::Value;

use crate::progress::{Progress, ProgressMode};

/// An engine for Dagger-style pipelines, speaking the Dagger v0.21 protocol.
#[derive(Parser)]
#[command(
    name = "dagger-rs",
    version,
    about,
    after_help = "Progress goes to standard error: live spinners on a terminal, one line per operation \
                  otherwise (see --progress), then a summary line; --quiet turns it off. --report PATH (or \
                  DAGGER_RS_REPORT) writes an HTML report of the run.\n\
                  SDKs find the engine through `dagger-rs run <cmd>` (DAGGER_SESSION_PORT and \
                  DAGGER_SESSION_TOKEN) or by starting `dagger-rs session` (_EXPERIMENTAL_DAGGER_CLI_BIN)."
)]
struct Cli {
    /// The cache directory (default: $DAGGER_RS_CACHE_DIR, $XDG_CACHE_HOME/dagger-rs, or ~/.cache/dagger-rs).
    #[arg(long, global = true, env = "DAGGER_RS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not print progress to standard error.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// How to show progress: `auto` (live on a terminal, plain otherwise), `plain` (one line per event), or
    /// `tty` (live spinners and coloured lines).
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto, env = "DAGGER_RS_PROGRESS")]
    progress: ProgressMode,
    /// Write a report of the run to PATH when it ends: one self-contained HTML file (a timeline of every
    /// operation, its arguments, logs and errors, a summary), with its events as JSON lines beside it
    /// (`PATH` with the extension `.jsonl`, or --events). For `run`, `session`, `serve` and `query`.
    #[arg(long, global = true, value_name = "PATH", env = "DAGGER_RS_REPORT")]
    report: Option<PathBuf>,
    /// Write every progress event as a JSON line to PATH as it happens (with --report: instead of next to
    /// the report).
    #[arg(long, global = true, value_name = "PATH", env = "DAGGER_RS_EVENTS")]
    events: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a session for an SDK: print `{"port":…,"session_token":…}` on one line, serve until stdin closes.
    #[command(long_about = "Start a session for an SDK.\n\n\
        Listens on 127.0.0.1 on a free port with a random token, prints exactly one JSON line \
        `{\"port\":PORT,\"session_token\":TOKEN}` on standard output, and serves `POST /query` (HTTP basic \
        auth, the token as user name) until standard input is closed or SIGTERM or SIGINT arrives; then it \
        kills the running containers, cleans up and exits 0. Logs and progress go to standard \
        error. This is how SDKs start an engine when _EXPERIMENTAL_DAGGER_CLI_BIN names this binary.")]
    Session {
        /// A label `key:value` describing the client (repeatable), such as `dagger.io/sdk.name:python`; it is
        /// shown in the log.
        #[arg(long = "label", value_name = "KEY:VALUE", value_parser = parse_label)]
        labels: Vec<String>,
        /// The directory relative host paths resolve against (default: the current directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// Run a command with a session, forwarding its exit code.
    #[command(long_about = "Run a command with a session.\n\n\
        Starts a session, runs COMMAND with DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN set so that any \
        SDK inside it connects to this engine, and exits with the command's exit code (127 when the command \
        cannot be found, 128+N when it is killed by signal N). On SIGTERM or SIGINT the command gets SIGTERM \
        (then SIGKILL after 10 s), the running containers are killed, and dagger-rs cleans up and exits 0. \
        Put `--` before a command whose arguments start with `-`.")]
    Run {
        /// The directory relative host paths resolve against (default: the current directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        cmd: Vec<String>,
    },
    /// Run one GraphQL query and print its `data` as JSON.
    #[command(long_about = "Run one GraphQL query and print its `data` as JSON.\n\n\
        The document is the argument, or standard input when there is none. On success the `data` object \
        is printed on standard output; when the response has errors, each is printed on standard error \
        (with its path) and the exit code is 1.")]
    Query {
        /// The document; read from stdin when absent.
        document: Option<String>,
        /// The directory relative host paths resolve against (default: the current directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// Serve a long-running engine on an address with a fixed token.
    #[command(long_about = "Serve a long-running engine on an address with a fixed token.\n\n\
        Clients connect with DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN set to the port and the token. \
        Ctrl-C (SIGINT) or SIGTERM stops it: it stops accepting, kills the running containers, cleans up \
        and exits 0.")]
    Serve {
        /// Where to listen (keep it on loopback: the token is sent in clear).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The session token clients must present (default: $DAGGER_SESSION_TOKEN, else a random one).
        #[arg(long, env = "DAGGER_SESSION_TOKEN")]
        token: Option<String>,
        /// The directory relative host paths resolve against (default: the current directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// Make the HTML report of a run from its events (the JSON lines `--report` or `--events` wrote).
    #[command(long_about = "Make the HTML report of a run from its events.\n\n\
        Reads the JSON lines `--report PATH` (PATH with the extension .jsonl) or `--events PATH` wrote, one \
        event a line, and writes the self-contained HTML report of that run to --output (default: the events \
        file with the extension .html). The run's time starts at its first event.")]
    Report {
        /// The events file.
        events: PathBuf,
        /// Where to write the HTML report.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Show or prune the cache directory.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Remove the oldest results until the cache is at most `--max-size`.
    Prune {
        /// The size to prune to, such as `500MB`, `2GiB` or `0` (everything but the ID registry).
        #[arg(long, default_value = "0")]
        max_size: String,
    },
    /// Print the cache directory and its size.
    Info,
}

fn parse_label(s: &str) -> Result<String, String> {
    match s.split_once(':') {
        Some((k, _)) if !k.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("`{s}` is not a label: write it `key:value`")),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 500MB or 2GiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

fn config(cli_cache: &Option<PathBuf>, workdir: Option<PathBuf>) -> Result<Config, String> {
    let mut c = Config::load().map_err(|e| e.to_string())?;
    if let Some(d) = cli_cache {
        c.cache_dir = d.clone();
    }
    if let Some(w) = workdir {
        c.workdir = std::fs::canonicalize(&w).map_err(|e| format!("workdir {}: {e}", w.display()))?;
    }
    Ok(c)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // As an ordinary user, everything runs again inside a user namespace, where the engine is rootless.
    if let Err(e) = dagger_engine::rootless::reexec().await {
        eprintln!("dagger-rs: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dagger-rs: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start_session(cli: &Cli, workdir: Option<PathBuf>) -> Result<(Session, Progress, Outputs), String> {
    let session = Session::start(config(&cli.cache_dir, workdir)?)
        .await
        .map_err(|e| format!("cannot start the engine: {e}"))?;
    let outputs = Outputs::start(cli, &session.engine)?;
    let progress = Progress::start(session.engine.subscribe_with_start_report(), cli.progress, cli.quiet);
    Ok((session, progress, outputs))
}

/// What a run leaves behind when asked: the HTML report and its JSON lines (`--report`), or the JSON lines
/// alone (`--events`).
struct Outputs {
    report: Option<Report>,
    events: Option<Recorder>,
    /// Spans over OTLP/HTTP, when the `OTEL_EXPORTER_OTLP_*` variables ask for them.
    #[cfg(feature = "otel")]
    tracing: Option<dagger_engine::report::Tracing>,
}

impl Outputs {
    /// Starts recording `engine`'s events for what `cli` asks; a path that cannot be written is an error
    /// now, before anything runs.
    fn start(cli: &Cli, engine: &Engine) -> Result<Self, String> {
        #[cfg(feature = "otel")]
        let tracing = match dagger_engine::report::Tracing::from_env()? {
            Some(t) => {
                t.attach(engine);
                Some(t)
            }
            None => None,
        };
        let (report, events) = match (&cli.report, &cli.events) {
            (Some(html), events) => {
                let report = Report::start(engine, html.clone(), events.clone()).map_err(|e| e.to_string())?;
                (Some(report), None)
            }
            (None, Some(path)) => {
                let recorder = Recorder::new(Some(path)).map_err(|e| format!("events file {}: {e}", path.display()))?;
                recorder.attach(engine);
                (None, Some(recorder))
            }
            (None, None) => (None, None),
        };
        Ok(Self {
            report,
            events,
            #[cfg(feature = "otel")]
            tracing,
        })
    }

    /// Writes what was asked; returns the report's path for the summary line. A failure to write is said
    /// on stderr (the run itself is not failed by it).
    fn finish(self) -> Option<PathBuf> {
        #[cfg(feature = "otel")]
        if let Some(tracing) = &self.tracing
            && let Err(e) = tracing.shutdown()
        {
            eprintln!("dagger-rs: {e}");
        }
        if let Some(recorder) = self.events
            && let Err(e) = recorder.stop()
        {
            eprintln!("dagger-rs: cannot write the events: {e}");
        }
        let report = self.report?;
        match report.finish() {
            Ok(_) => Some(report.html_path().to_owned()),
            Err(e) => {
                eprintln!("dagger-rs: cannot write the report: {e}");
                None
            }
        }
    }
}

/// How long a stopping engine waits for the requests in flight once their containers are killed, and how
/// long `run` waits for its command after passing it SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// SIGTERM and SIGINT, watched from the start: either one stops the engine cleanly (exit code 0) instead of
/// killing the process. The TypeScript SDK ends a session with SIGTERM and treats a CLI killed by it as a
/// failure.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
        Ok(Self {
            term: watch(SignalKind::terminate())?,
            int: watch(SignalKind::interrupt())?,
        })
    }

    /// Waits for either signal.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Resolves when standard input reaches its end. The read runs on a thread of its own, so a process that
/// stops for another reason never waits for it.
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _ = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(());
    });
    rx
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match &cli.command {
        Command::Session { labels, workdir } => session(&cli, labels, workdir).await,
        Command::Run { workdir, cmd } => run_command(&cli, workdir, cmd).await,
        Command::Query { document, workdir } => query(&cli, document, workdir).await,
        Command::Serve { listen, token, workdir } => serve(&cli, listen, token, workdir).await,
        Command::Cache { command } => cache(&cli, command).await,
        Command::Report { events, output } => report(events, output),
    }
}

/// Start a session for `dagger-rs session`: the handshake on stdout, until stdin closes or a signal.
async fn session(cli: &Cli, labels: &[String], workdir: &Option<PathBuf>) -> Result<ExitCode, String> {
    let mut signals = StopSignals::new()?;
    let (session, progress, outputs) = start_session(cli, workdir.clone()).await?;
    if !labels.is_empty() && !cli.quiet {
        eprintln!("session for {}", labels.join(", "));
    }
    // The handshake: exactly one line on stdout (line-buffered, so it is flushed here).
    println!(
        "{}",
        serde_json::json!({ "port": session.port, "session_token": session.token })
    );
    // The session lives until stdin closes, or a signal stops it.
    tokio::select! {
        _ = stdin_closed() => {}
        () = signals.recv() => {}
    }
    session.shutdown(GRACE).await;
    progress.finish(outputs.finish()).await;
    Ok(ExitCode::SUCCESS)
}

/// `dagger-rs run`: the command with a session in its environment; its exit code is ours.
async fn run_command(cli: &Cli, workdir: &Option<PathBuf>, cmd: &[String]) -> Result<ExitCode, String> {
    let (program, args) = cmd.split_first().ok_or("nothing to run: give a command")?;
    let mut signals = StopSignals::new()?;
    let (session, progress, outputs) = start_session(cli, workdir.clone()).await?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("DAGGER_SESSION_PORT", session.port.to_string())
        .env("DAGGER_SESSION_TOKEN", &session.token)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            session.shutdown(GRACE).await;
            progress.finish(outputs.finish()).await;
            if e.kind() == std::io::ErrorKind::NotFound {
                eprintln!("dagger-rs: cannot run `{program}`: command not found (is it installed and on PATH?)");
                return Ok(ExitCode::from(127));
            }
            eprintln!("dagger-rs: cannot run `{program}`: {e}");
            return Ok(ExitCode::from(126));
        }
    };
    let status = tokio::select! {
        status = child.wait() => Some(status),
        () = signals.recv() => None,
    };
    let code = match status {
        Some(Ok(status)) => exit_code(status),
        Some(Err(e)) => {
            eprintln!("dagger-rs: cannot wait for `{program}`: {e}");
            ExitCode::FAILURE
        }
        None => {
            // Stopped by a signal: the command stops first (it may be using the session), then the engine.
            if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            ExitCode::SUCCESS
        }
    };
    session.shutdown(GRACE).await;
    progress.finish(outputs.finish()).await;
    Ok(code)
}

/// `dagger-rs query`: one document against an engine of this process.
async fn query(cli: &Cli, document: &Option<String>, workdir: &Option<PathBuf>) -> Result<ExitCode, String> {
    let document = match document {
        Some(d) => d.clone(),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read the query from stdin: {e}"))?;
            s
        }
    };
    if document.trim().is_empty() {
        return Err("no query: pass a document as the argument or on stdin".into());
    }
    let engine = Engine::new(config(&cli.cache_dir, workdir.clone())?).map_err(|e| e.to_string())?;
    let outputs = Outputs::start(cli, &engine)?;
    let progress = Progress::start(engine.subscribe_with_start_report(), cli.progress, cli.quiet);
    let req = dagger_engine::graphql::Request {
        query: document,
        ..Default::default()
    };
    let response = dagger_engine::graphql::execute(&engine, req).await;
    // What the document left running (a service it started) ends with the process.
    engine.stop_containers().await;
    dagger_engine::cleanup::stop(&engine.store);
    progress.finish(outputs.finish()).await;
    print_response(&response)
}

/// `dagger-rs serve`: a session on `listen` until a signal.
async fn serve(cli: &Cli, listen: &str, token: &Option<String>, workdir: &Option<PathBuf>) -> Result<ExitCode, String> {
    let token = match token {
        // An empty `--token ""` or DAGGER_SESSION_TOKEN= would serve without authentication: refuse
        // before anything starts.
        Some(t) => {
            dagger_engine::server::check_token(t).map_err(|e| e.to_string())?;
            t.clone()
        }
        None => dagger_engine::server::random_token(),
    };
    let mut signals = StopSignals::new()?;
    let engine = Engine::new(config(&cli.cache_dir, workdir.clone())?).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("serving on http://{addr}/query (token: {token}); Ctrl-C stops");
    let outputs = Outputs::start(cli, &engine)?;
    let progress = Progress::start(engine.subscribe_with_start_report(), cli.progress, cli.quiet);
    let session = Session::serve(listener, token, engine).map_err(|e| e.to_string())?;
    signals.recv().await;
    session.shutdown(GRACE).await;
    progress.finish(outputs.finish()).await;
    Ok(ExitCode::SUCCESS)
}

/// `dagger-rs report`: the HTML report of recorded events.
fn report(events: &std::path::Path, output: &Option<PathBuf>) -> Result<ExitCode, String> {
    let records = dagger_engine::report::read_events(events).map_err(|e| format!("cannot read the events: {e}"))?;
    let run = dagger_engine::report::Run::from_records(&records, None, None);
    let out = output.clone().unwrap_or_else(|| events.with_extension("html"));
    std::fs::write(&out, run.html()).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    let s = &run.summary;
    println!(
        "{}: {} operations run, {} cached, {} failed in {}",
        out.display(),
        s.run,
        s.cached,
        s.failed,
        dagger_engine::report::duration(s.wall_ms)
    );
    Ok(ExitCode::SUCCESS)
}

/// `dagger-rs cache`: pruning and the size of the cache directory.
async fn cache(cli: &Cli, command: &CacheCommand) -> Result<ExitCode, String> {
    let dir = config(&cli.cache_dir, None)?.cache_dir;
    let store = dagger_engine::store::Store::open(&dir).map_err(|e| e.to_string())?;
    match command {
        CacheCommand::Prune { max_size } => {
            let max = parse_size(max_size)?;
            // What engines that are gone left goes first; what running engines use is never pruned.
            let collected = dagger_engine::cleanup::start(&store);
            if !collected.is_empty() && !cli.quiet {
                eprintln!("dagger-rs: {collected}");
            }
            let freed = store.prune(max).map_err(|e| e.to_string())?;
            println!(
                "freed {freed} bytes; {} now holds {} bytes",
                dir.display(),
                store.size()
            );
        }
        CacheCommand::Info => println!("{}: {} bytes", dir.display(), store.size()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `data` on stdout and each error on stderr; errors make the exit code 1.
fn print_response(response: &Response) -> Result<ExitCode, String> {
    if let Some(data) = response.data.as_ref().filter(|d| **d != Data::Json(Value::Null)) {
        let text = serde_json::to_string_pretty(data).map_err(|e| e.to_string())?;
        println!("{text}");
    }
    let errors = &response.errors;
    for e in errors {
        let message = e.get("message").and_then(Value::as_str).unwrap_or("unknown error");
        let path: Vec<String> = e
            .get("path")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .map(|s| s.as_str().map(str::to_owned).unwrap_or_else(|| s.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if path.is_empty() {
            eprintln!("error: {message}");
        } else {
            eprintln!("error at `{}`: {message}", path.join("."));
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The child's exit code, or 128 + the signal that killed it (as shells report it).
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn labels_need_a_key_and_a_colon() {
        assert!(parse_label("dagger.io/sdk.name:python").is_ok());
        assert!(parse_label("k:").is_ok());
        assert!(parse_label("novalue").is_err());
        assert!(parse_label(":v").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
