//! The quickstart pipeline with the plain API: test, build, package, publish, then run what was published.
//!
//! ```text
//! examples/app ──► rust:1-slim ──┬─► cargo test
//!                                └─► cargo build --release ──► debian:bookworm-slim + app ──► publish
//!                                                                                          │
//!                       from(published reference) ──┬─► app self-test ◄───────────────────┘
//!                                                   └─► as a service (`app serve`, port 8080)
//!                                                          ▲ bound as `app`
//!                                        busybox client ───┘ GET every route: status and body
//! ```
//!
//! The tests and the release build run concurrently (two leaves awaited together); the image is published
//! only when both succeeded. The published image then runs twice: its self-test (the server answering
//! itself on loopback), and as a real server, a service that a second container reaches by its alias
//! ([`ALIAS`]) to request every route ([`ROUTES`]); the answers must be the self-test's, a 404 included.
//! [`dsl`](crate::quickstart_dsl) is the same pipeline written with `#[step]` and `pipeline!`.

use std::path::PathBuf;

use dagger::prelude::*;

/// The toolchain image (Debian's Rust on bookworm in the offline registry, Docker Hub's otherwise).
pub const RUST_IMAGE: &str = "rust:1-slim";
/// The runtime image the binary is copied into.
pub const RUNTIME_IMAGE: &str = "debian:bookworm-slim";
/// Where the app image is published by default: the loopback registry `xtask images` runs.
pub const ADDRESS: &str = "127.0.0.1:5000/quickstart-app:latest";
/// Where `cargo` builds, a cache volume shared by test and release builds and kept between runs.
pub const TARGET_DIR: &str = "/cargo-target";
/// Where the binary lands in the runtime image.
pub const BINARY: &str = "/usr/local/bin/app";
/// The command the published image runs to prove it works.
pub const CHECK: &[&str] = &["app", "self-test"];
/// The last line [`CHECK`] prints when the app works.
pub const CHECK_PASSED: &str = "self-test passed";
/// The image of the container that requests the running app's routes: busybox, for `nc` (the offline
/// registry holds it under its Docker Hub name).
pub const CLIENT_IMAGE: &str = "busybox:latest";
/// The name the client container reaches the running app by (`withServiceBinding`).
pub const ALIAS: &str = "app";
/// The port `app serve` listens on, which the image exposes.
pub const PORT: u16 = 8080;
/// The routes requested from the running app: the self-test's, in its order, the 404 included.
pub const ROUTES: &[&str] = &["/health", "/", "/greet/quickstart", "/version", "/nope"];
/// What the client container runs, as `sh -c REQUESTS sh HOST PORT PATH…`: one HTTP/1.1 request per path
/// with `nc`, each raw response after a `>>> GET PATH` line. `nc` rather than `wget`, which prints no body
/// for a 404; a connection that fails fails the command.
pub const REQUESTS: &str = r#"host=$1 port=$2; shift 2
for path in "$@"; do
  echo ">>> GET $path"
  printf 'GET %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n' "$path" "$host" | nc "$host" "$port" || exit 1
  echo
done"#;

/// What the pipeline works on; [`Settings::from_args`] reads it from flags and the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The app's source directory on the host (`--app-dir`, `QUICKSTART_APP_DIR`; default `examples/app`).
    pub app_dir: PathBuf,
    /// The toolchain image (`--rust-image`, `QUICKSTART_RUST_IMAGE`; default [`RUST_IMAGE`]).
    pub rust_image: String,
    /// The runtime image (`--runtime-image`, `QUICKSTART_RUNTIME_IMAGE`; default [`RUNTIME_IMAGE`]).
    pub runtime_image: String,
    /// Where to publish (`--address`, `QUICKSTART_ADDRESS`; default [`ADDRESS`]).
    pub address: String,
    /// The image of the container that requests the running app's routes (`--client-image`,
    /// `QUICKSTART_CLIENT_IMAGE`; default [`CLIENT_IMAGE`]); it needs `sh` and `nc`.
    pub client_image: String,
    /// Whether to run the published image as a service and request its routes (default `true`; `--no-serve`
    /// or `QUICKSTART_SERVE=0` turn it off, for an engine that cannot run services, such as this one
    /// rootless until its rootless networking lets containers reach each other).
    pub serve: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            app_dir: default_app_dir(),
            rust_image: RUST_IMAGE.to_owned(),
            runtime_image: RUNTIME_IMAGE.to_owned(),
            address: ADDRESS.to_owned(),
            client_image: CLIENT_IMAGE.to_owned(),
            serve: true,
        }
    }
}

/// The sample app's sources in this repository.
pub fn default_app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("app")
}

/// The flags [`Settings::from_args`] understands.
pub const USAGE: &str =
    "options: --app-dir DIR  --rust-image REF  --runtime-image REF  --address REF  --client-image REF
  --no-serve (or QUICKSTART_APP_DIR, QUICKSTART_RUST_IMAGE, QUICKSTART_RUNTIME_IMAGE, QUICKSTART_ADDRESS,
  QUICKSTART_CLIENT_IMAGE, QUICKSTART_SERVE=0)";

impl Settings {
    /// Reads the settings: each flag wins over its environment variable, which wins over the default. Flags
    /// not listed in [`USAGE`] are returned for the caller (such as `--plan`).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<(Settings, Vec<String>), String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut s = Settings::default();
        if let Some(v) = env("QUICKSTART_APP_DIR") {
            s.app_dir = v.into();
        }
        if let Some(v) = env("QUICKSTART_RUST_IMAGE") {
            s.rust_image = v;
        }
        if let Some(v) = env("QUICKSTART_RUNTIME_IMAGE") {
            s.runtime_image = v;
        }
        if let Some(v) = env("QUICKSTART_ADDRESS") {
            s.address = v;
        }
        if let Some(v) = env("QUICKSTART_CLIENT_IMAGE") {
            s.client_image = v;
        }
        if let Some(v) = env("QUICKSTART_SERVE") {
            s.serve = !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off");
        }
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--no-serve" {
                s.serve = false;
                continue;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let slot = match flag.as_str() {
                "--app-dir" => None,
                "--rust-image" => Some(&mut s.rust_image),
                "--runtime-image" => Some(&mut s.runtime_image),
                "--address" => Some(&mut s.address),
                "--client-image" => Some(&mut s.client_image),
                _ => {
                    rest.push(arg);
                    continue;
                }
            };
            let value = match inline.or_else(|| args.next()) {
                Some(v) if !v.is_empty() => v,
                _ => return Err(format!("`{flag}` needs a value\n{USAGE}")),
            };
            match slot {
                Some(slot) => *slot = value,
                None => s.app_dir = value.into(),
            }
        }
        Ok((s, rest))
    }
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What `cargo test` printed on stdout.
    pub test_log: String,
    /// The published image, its tag and digest (`127.0.0.1:5000/quickstart-app:latest@sha256:…`).
    pub published: String,
    /// What the published image printed when it ran [`CHECK`].
    pub output: String,
    /// What the published image answered when it ran as a service and a client container requested
    /// [`ROUTES`] (one line per route, in the self-test's form: `GET /health -> 200 ok`); `None` when
    /// [`Settings::serve`] was off.
    pub served: Option<Vec<String>>,
}

impl Report {
    /// Whether the published image passed its self-test ([`CHECK`] printed [`CHECK_PASSED`] last) and, when
    /// it ran as a service, answered the client container's requests exactly as it answered its self-test:
    /// the same routes in the same order, the same status codes and bodies.
    pub fn check(&self) -> Result<(), String> {
        let mut lines: Vec<&str> = self.output.lines().collect();
        if lines.pop() != Some(CHECK_PASSED) {
            return Err(format!(
                "the published image {} did not pass `{}`; it printed:\n{}",
                self.published,
                CHECK.join(" "),
                self.output
            ));
        }
        let Some(served) = &self.served else {
            return Ok(());
        };
        if served.len() == ROUTES.len() && served.iter().map(String::as_str).eq(lines.iter().copied()) {
            return Ok(());
        }
        Err(format!(
            "the published image {}, running as a service, did not answer `{ALIAS}`'s requests as it answered \
             its self-test; the client got:\n  {}\nthe self-test got:\n  {}",
            self.published,
            served.join("\n  "),
            lines.join("\n  ")
        ))
    }
}

/// The app's sources, without build output.
pub fn source(dag: &Query, settings: &Settings) -> Directory {
    dag.host().directory_opts(
        settings.app_dir.to_string_lossy(),
        HostDirectoryOpts::default().exclude(["target"]),
    )
}

/// Runs the pipeline: tests and the release build side by side, then publish, then run the published image.
pub async fn run(dag: &Query, settings: &Settings) -> Result<Report, dagger::Error> {
    let toolchain = dag
        .container()
        .from(settings.rust_image.as_str())
        // Downloaded crates and build output survive between runs (the app has no dependencies, but yours will).
        .with_mounted_cache(
            "/usr/local/cargo/registry",
            dag.cache_volume("quickstart-cargo-registry"),
        )
        .with_mounted_cache(TARGET_DIR, dag.cache_volume("quickstart-cargo-target"))
        .with_env_variable("CARGO_TARGET_DIR", TARGET_DIR)
        .with_directory("/src", source(dag, settings))
        .with_workdir("/src");

    let tests = toolchain.with_exec(["cargo", "test", "--locked"]);
    // A cache volume is not part of the container's files, so the binary is copied out of it.
    let binary = toolchain
        .with_exec([
            "sh",
            "-c",
            &format!("cargo build --release --locked && cp {TARGET_DIR}/release/app /app"),
        ])
        .file("/app");

    let image = dag
        .container()
        .from(settings.runtime_image.as_str())
        .with_file(BINARY, binary.clone())
        .with_label("org.opencontainers.image.title", "quickstart-app")
        .with_exposed_port(8080)
        .with_entrypoint([BINARY])
        .with_default_args(["serve"]);

    // Two leaves awaited together: the engine runs the tests and the release build concurrently.
    let (test_log, _) = tokio::try_join!(tests.stdout(), binary.sync())?;
    let published = image.publish(settings.address.as_str()).await?;
    // The self-test and the requests to the running server, side by side.
    let (output, served) = if settings.serve {
        let client = route_client(dag, app_service(dag, &published), &settings.client_image);
        let (output, raw) = tokio::try_join!(run_published(dag, &published), client.stdout())?;
        (output, Some(served_lines(&raw)))
    } else {
        (run_published(dag, &published).await?, None)
    };
    Ok(Report {
        test_log,
        published,
        output,
        served,
    })
}

/// Pulls `reference` back from the registry and runs [`CHECK`] in it; returns what it printed.
pub async fn run_published(dag: &Query, reference: &str) -> Result<String, dagger::Error> {
    dag.container().from(reference).with_exec(CHECK.to_vec()).stdout().await
}

/// The image `reference` as a service: its entrypoint and default arguments (`app serve`, on [`PORT`],
/// which the image exposes, so the engine waits until the port accepts connections).
pub fn app_service(dag: &Query, reference: &str) -> Service {
    dag.container().from(reference).as_service()
}

/// A container of `image` bound to `app` as [`ALIAS`] that requests every route of [`ROUTES`] ([`REQUESTS`]);
/// its stdout holds the raw responses, which [`served_lines`] reads.
pub fn route_client(dag: &Query, app: Service, image: &str) -> Container {
    let port = PORT.to_string();
    let mut args = vec!["sh", "-c", REQUESTS, "sh", ALIAS, port.as_str()];
    args.extend_from_slice(ROUTES);
    dag.container()
        .from(image)
        .with_service_binding(ALIAS, app)
        .with_exec(args)
}

/// The responses [`route_client`] printed, one line per request in the self-test's form
/// (`GET /nope -> 404 no route for /nope`); a response that is not HTTP says so in its line.
pub fn served_lines(raw: &str) -> Vec<String> {
    raw.split(">>> ")
        .filter_map(|chunk| chunk.split_once('\n'))
        .map(|(request, response)| match response.split_once("\r\n\r\n") {
            Some((head, body)) => {
                let status = head.split_whitespace().nth(1).unwrap_or("(no status)");
                format!("{request} -> {status} {}", body.trim_end())
            }
            None => format!("{request} -> not an HTTP response: {:?}", response.trim_end()),
        })
        .collect()
}

/// The `test result: …` lines of a `cargo test` log.
pub fn test_summary(test_log: &str) -> Vec<&str> {
    test_log.lines().filter(|l| l.starts_with("test result:")).collect()
}

/// Prints a report the way both binaries do.
pub fn print_report(report: &Report) {
    println!("tests:");
    for line in test_summary(&report.test_log) {
        println!("  {line}");
    }
    println!("published: {}", report.published);
    println!("output of `{}` in the published image:", CHECK.join(" "));
    for line in report.output.lines() {
        println!("  {line}");
    }
    if let Some(served) = &report.served {
        println!("the published image as a service, requested as `{ALIAS}:{PORT}` from another container:");
        for line in served {
            println!("  {line}");
        }
    }
}

/// Ends a quickstart binary: prints the report and checks it, or prints the error with its causes; the exit
/// code says which.
pub fn conclude(result: Result<Report, crate::BoxError>, started: std::time::Instant) -> std::process::ExitCode {
    match result {
        Ok(report) => {
            print_report(&report);
            if let Err(e) = report.check() {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
            println!("quickstart: done in {:.1} s", started.elapsed().as_secs_f64());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            crate::print_error(e.as_ref());
            std::process::ExitCode::FAILURE
        }
    }
}
