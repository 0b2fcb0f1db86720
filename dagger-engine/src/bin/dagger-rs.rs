//! `dagger-rs`: the engine's command-line interface.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dagger_engine::{Config, Session};
use tokio::io::AsyncReadExt;

/// An engine for Dagger-style pipelines, speaking the Dagger v0.21 protocol.
#[derive(Parser)]
#[command(name = "dagger-rs", version, about)]
struct Cli {
    /// The cache directory (default: $DAGGER_RS_CACHE_DIR, $XDG_CACHE_HOME/dagger-rs, or ~/.cache/dagger-rs).
    #[arg(long, global = true, env = "DAGGER_RS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not print progress to standard error.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a session for an SDK: print `{"port":…,"session_token":…}` on one line, serve until stdin closes.
    Session {
        /// A label (`key:value`) describing the client; accepted for compatibility, recorded in the log.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The directory host paths resolve against (default: the current directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// Run a command with a session: sets DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN, forwards the exit code.
    Run {
        /// The directory host paths resolve against (default: the current directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Run one GraphQL query (from the argument, or stdin) and print the JSON result.
    Query {
        /// The document; read from stdin when absent.
        document: Option<String>,
    },
    /// Serve a long-running engine on an address with a fixed token.
    Serve {
        /// Where to listen (keep it on loopback: the token is sent in clear).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The session token clients must present (default: $DAGGER_SESSION_TOKEN, else a random one).
        #[arg(long, env = "DAGGER_SESSION_TOKEN")]
        token: Option<String>,
    },
    /// Manage the cache directory.
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
    Ok(n * mult)
}

fn config(cli_cache: &Option<PathBuf>, workdir: Option<PathBuf>) -> Config {
    let mut c = Config::default();
    if let Some(d) = cli_cache {
        c.cache_dir = d.clone();
    }
    if let Some(w) = workdir {
        c.workdir = std::fs::canonicalize(&w).unwrap_or(w);
    }
    c
}

/// Prints progress events to stderr until the engine goes away.
fn show_progress(session: &Session, quiet: bool) {
    if quiet {
        return;
    }
    let mut rx = session.engine.subscribe();
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        while let Ok(ev) = rx.recv().await {
            if tty {
                eprintln!("\x1b[2m{ev}\x1b[0m");
            } else {
                eprintln!("{ev}");
            }
        }
    });
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dagger-rs: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Session { labels, workdir } => {
            let session = Session::start(config(&cli.cache_dir, workdir))
                .await
                .map_err(|e| format!("cannot start the engine: {e}"))?;
            show_progress(&session, cli.quiet);
            if !labels.is_empty() {
                eprintln!("session for {}", labels.join(", "));
            }
            println!(
                "{}",
                serde_json::json!({ "port": session.port, "session_token": session.token })
            );
            // The session lives until stdin closes.
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            drop(session);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { workdir, cmd } => {
            let session = Session::start(config(&cli.cache_dir, workdir))
                .await
                .map_err(|e| format!("cannot start the engine: {e}"))?;
            show_progress(&session, cli.quiet);
            let (program, args) = cmd.split_first().ok_or("nothing to run")?;
            let status = tokio::process::Command::new(program)
                .args(args)
                .env("DAGGER_SESSION_PORT", session.port.to_string())
                .env("DAGGER_SESSION_TOKEN", &session.token)
                .status()
                .await
                .map_err(|e| format!("cannot run `{program}`: {e}"))?;
            drop(session);
            Ok(match status.code() {
                Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
                None => ExitCode::FAILURE,
            })
        }
        Command::Query { document } => {
            let document = match document {
                Some(d) => d,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .map_err(|e| format!("cannot read stdin: {e}"))?;
                    s
                }
            };
            let engine = dagger_engine::Engine::new(config(&cli.cache_dir, None)).map_err(|e| e.to_string())?;
            let req = dagger_engine::exec::Request {
                query: document,
                ..Default::default()
            };
            let body = dagger_engine::exec::execute(&engine, req).await;
            println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
            Ok(if body.get("errors").is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Serve { listen, token } => {
            let engine = dagger_engine::Engine::new(config(&cli.cache_dir, None)).map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let token = token.unwrap_or_else(dagger_engine::server::random_token);
            eprintln!("serving on http://{addr}/query (token: {token}); Ctrl-C stops");
            if !cli.quiet {
                let mut rx = engine.subscribe();
                tokio::spawn(async move {
                    while let Ok(ev) = rx.recv().await {
                        eprintln!("{ev}");
                    }
                });
            }
            dagger_engine::server::run(listener, token, engine, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { command } => {
            let dir = cli
                .cache_dir
                .clone()
                .unwrap_or_else(dagger_engine::store::Store::default_dir);
            let store = dagger_engine::store::Store::open(&dir).map_err(|e| e.to_string())?;
            match command {
                CacheCommand::Prune { max_size } => {
                    let max = parse_size(&max_size)?;
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
    }
}
