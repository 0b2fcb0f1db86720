//! Integration tests against a real database: Redis runs as a service, and client containers reach it by
//! the alias they bind it as.
//!
//! ```text
//! redis:7-bookworm ──► as a service (redis-server, port 6379) ◄── bound as `db` ──┬── writer: MSET
//!                                                                                 ├── reader: MGET, in another container
//!                                                                                 ├── client 1..N at once: INCR × K
//!                                                                                 └── reader: GET the counter
//! ```
//!
//! The service is started once ([`Service::start`]) and stopped at the end ([`Service::stop`]), so every
//! client talks to the same instance and what one writes the next reads (an unstarted service runs only while
//! its dependents run, and a new instance of this database starts empty). The clients use the same image's
//! `redis-cli -h db`. The counter shows that concurrent dependents share the instance: `INCR` is atomic, so
//! the replies of all clients together are exactly `1..=N×K`, and the counter ends at `N×K`.
//!
//! An exec that uses a service is cached by its inputs like any other, so the clients carry the run's
//! [`Settings::run_id`] in their environment: every run talks to its database again.

use dagger::prelude::*;
use futures_util::future::try_join_all;

use crate::BoxError;

/// The database image: Redis on Debian bookworm (the offline registry holds one built from Debian's
/// `redis-server` package under this Docker Hub name); it runs `redis-server` by default and has `redis-cli`.
pub const IMAGE: &str = "redis:7-bookworm";
/// The name the clients reach the database by.
pub const ALIAS: &str = "db";
/// The port Redis listens on.
pub const PORT: u16 = 6379;
/// The key the clients increment.
pub const COUNTER: &str = "visits";
/// The keys and values the writer stores and the reader reads back.
pub const RECORDS: &[(&str, &str)] = &[
    ("app:name", "quickstart-app"),
    ("app:greeting", "Hello, world!"),
    ("app:version", "0.1.0"),
];

/// What the example works on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The database image, whose default command is the server and which holds `redis-cli` (default
    /// [`IMAGE`]).
    pub image: String,
    /// How many clients increment the counter at once (default 4).
    pub clients: usize,
    /// How many times each of them increments it (default 5).
    pub increments: usize,
    /// Distinguishes this run's client execs from an earlier run's cached ones (default: the time now).
    pub run_id: String,
}

impl Default for Settings {
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Settings {
            image: IMAGE.to_owned(),
            clients: 4,
            increments: 5,
            run_id: format!("{}-{now}", std::process::id()),
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Where the service listens, as its dependents reach it under its own host name (`host:6379`).
    pub endpoint: String,
    /// The server's version, from `INFO server`.
    pub version: String,
    /// What `PING` answered.
    pub ping: String,
    /// What the writer's `MSET` answered.
    pub written: String,
    /// The values a reader in another container got back for [`RECORDS`]' keys, in their order.
    pub read: Vec<String>,
    /// Each client's `INCR` replies, in the clients' order.
    pub increments: Vec<Vec<u64>>,
    /// The counter, read after every client finished.
    pub counter: u64,
}

impl Report {
    /// Whether the database behaved as one shared instance: the records read back as written, and the
    /// counter's replies are `1..=clients×increments`, each given once, with the counter at the total.
    pub fn check(&self, settings: &Settings) -> Result<(), String> {
        let expected: Vec<&str> = RECORDS.iter().map(|(_, v)| *v).collect();
        if self.ping != "PONG" || self.written != "OK" || self.read != expected {
            return Err(format!(
                "the database did not keep what the writer stored: PING -> {:?}, MSET -> {:?}, MGET -> {:?} \
                 (expected {expected:?})",
                self.ping, self.written, self.read
            ));
        }
        let total = (settings.clients * settings.increments) as u64;
        let mut replies: Vec<u64> = self.increments.iter().flatten().copied().collect();
        replies.sort_unstable();
        let shared = self.increments.len() == settings.clients
            && self.increments.iter().all(|r| r.len() == settings.increments)
            && replies.iter().copied().eq(1..=total)
            && self.counter == total;
        if shared {
            Ok(())
        } else {
            Err(format!(
                "{} clients × {} increments did not count to {total} on one instance: replies {:?}, counter {}",
                settings.clients, settings.increments, self.increments, self.counter
            ))
        }
    }
}

/// The database as a service: the image's default command (`redis-server`), on [`PORT`].
pub fn database(dag: &Query, settings: &Settings) -> Service {
    dag.container()
        .from(settings.image.as_str())
        .with_exposed_port(i64::from(PORT))
        .as_service()
}

/// A client container: the same image, bound to `db` as [`ALIAS`], marked with the run and `name`.
pub fn client(dag: &Query, settings: &Settings, db: &Service, name: &str) -> Container {
    dag.container()
        .from(settings.image.as_str())
        .with_service_binding(ALIAS, db.clone())
        .with_env_variable("RUN_ID", settings.run_id.as_str())
        .with_env_variable("CLIENT", name)
}

/// `redis-cli -h db ARGS…` in `client`: what it printed.
pub async fn redis_cli(client: &Container, args: &[&str]) -> Result<String, dagger::Error> {
    let port = PORT.to_string();
    let mut argv = vec!["redis-cli", "-h", ALIAS, "-p", port.as_str()];
    argv.extend_from_slice(args);
    client.with_exec(argv).stdout().await
}

/// Reads `redis-cli`'s integer replies, one a line.
fn integers(out: &str) -> Result<Vec<u64>, BoxError> {
    out.lines()
        .map(|l| {
            l.trim()
                .parse()
                .map_err(|e| format!("`{l}` is not an integer reply ({e})").into())
        })
        .collect()
}

/// Runs the example: starts the database, writes and reads records from two containers, increments the
/// counter from [`Settings::clients`] containers at once, reads it, and stops the database.
pub async fn run(dag: &Query, settings: &Settings) -> Result<Report, BoxError> {
    let db = database(dag, settings);
    db.start().await?;
    let result = talk(dag, settings, &db).await;
    // Stopped whatever happened; the engine would stop it at the session's end anyway.
    let stopped = db.stop().await;
    let report = result?;
    stopped?;
    Ok(report)
}

async fn talk(dag: &Query, settings: &Settings, db: &Service) -> Result<Report, BoxError> {
    let endpoint = db.endpoint().await?;
    let writer = client(dag, settings, db, "writer");
    let ping = redis_cli(&writer, &["PING"]).await?;
    let info = redis_cli(&writer, &["INFO", "server"]).await?;
    let version = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .to_owned();
    let mut mset = vec!["MSET"];
    for (k, v) in RECORDS {
        mset.extend([*k, *v]);
    }
    let written = redis_cli(&writer, &mset).await?.trim_end().to_owned();

    let reader = client(dag, settings, db, "reader");
    let mut mget = vec!["MGET"];
    mget.extend(RECORDS.iter().map(|(k, _)| *k));
    let read = redis_cli(&reader, &mget).await?.lines().map(str::to_owned).collect();

    // The clients at once, each on its own connection repeating `INCR` (`redis-cli -r`).
    let repeat = settings.increments.to_string();
    let clients = (1..=settings.clients).map(|n| {
        let c = client(dag, settings, db, &format!("counter-{n}"));
        let repeat = repeat.clone();
        async move { integers(&redis_cli(&c, &["-r", &repeat, "INCR", COUNTER]).await?) }
    });
    let increments = try_join_all(clients).await?;

    let counted = redis_cli(&client(dag, settings, db, "after"), &["GET", COUNTER]).await?;
    let counter = integers(&counted)?.first().copied().unwrap_or_default();
    Ok(Report {
        endpoint,
        version,
        ping: ping.trim_end().to_owned(),
        written,
        read,
        increments,
        counter,
    })
}

/// Prints a report the way the binary does.
pub fn print_report(settings: &Settings, report: &Report) {
    println!(
        "redis {} as a service at {}, bound as `{ALIAS}`",
        report.version, report.endpoint
    );
    println!("  PING -> {}", report.ping);
    println!("  writer: MSET of {} keys -> {}", RECORDS.len(), report.written);
    for ((key, _), value) in RECORDS.iter().zip(&report.read) {
        println!("  reader: GET {key} -> {value}");
    }
    println!(
        "  {} clients × {} INCR {COUNTER} at once:",
        settings.clients, settings.increments
    );
    for (n, replies) in report.increments.iter().enumerate() {
        let replies: Vec<String> = replies.iter().map(u64::to_string).collect();
        println!("    counter-{}: {}", n + 1, replies.join(" "));
    }
    println!("  GET {COUNTER} -> {}", report.counter);
}
