//! The `matrix`, `chaining`, `errors`, `release`, `hello` and `integration` examples, run as they are shipped
//! (`examples::*`) on the embedded engine, in real containers, from a busybox image in a loopback registry
//! (`integration`: from the offline registry's `redis:7-bookworm`, through the `docker.io` mirror setting).

use std::os::unix::fs::PermissionsExt;

use dagger::prelude::*;
use dagger_engine::{Config, Session};
use examples::{chaining, errors, integration, matrix, release};
use testkit::registry::{LocalRegistry, push_busybox};

/// An engine, a connection to it, a loopback registry holding busybox, and the busybox reference.
struct Fixture {
    dag: Query,
    image: String,
    dir: tempfile::TempDir,
    _session: Session,
    _registry: LocalRegistry,
}

async fn fixture() -> Fixture {
    let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    push_busybox(&registry, "busybox:latest").await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (session, dag) = testkit::start_engine(Config {
        cache_dir: dir.path().join("cache"),
        ..Config::for_dir(dir.path())
    })
    .await;
    Fixture {
        dag,
        image: format!("{}/busybox:latest", registry.host()),
        dir,
        _session: session,
        _registry: registry,
    }
}

#[tokio::test]
async fn matrix_builds_every_variant_concurrently_and_exports_one_directory() {
    let f = fixture().await;
    let variants = vec![
        matrix::Variant::new("linux-amd64", "release"),
        matrix::Variant::new("linux-arm64", "release"),
        matrix::Variant::new("linux-amd64", "debug"),
    ];
    let out = f.dir.path().join("dist");
    let plan = matrix::plan(&f.image, &variants, 2, &out.to_string_lossy());
    let before = f._session.engine.requests.load(std::sync::atomic::Ordering::Relaxed);
    let report = matrix::run(&f.dag, &f.image, &variants, 2, &out.to_string_lossy())
        .await
        .unwrap_or_else(|e| panic!("the matrix runs: {e}"));
    let sent = f._session.engine.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
    // One request per wave, whatever the number of variants: the sources' ID, the artifacts' IDs, then
    // every build with the export and the listing. (The plain API took one request per variant and leaf.)
    assert_eq!(sent, 3, "{plan}");
    assert_eq!(plan.documents.len(), 3, "{plan}");
    assert_eq!(plan.documents[2].title, "summaries × 3, exported, entries", "{plan}");
    let more = matrix::plan(&f.image, &matrix::default_variants(), 2, "out");
    assert_eq!(more.documents.len(), 3, "{more}");

    assert_eq!(report.exported, out.to_string_lossy());
    assert_eq!(
        report.entries,
        [
            "BUILDINFO",
            "app-linux-amd64-debug",
            "app-linux-amd64-release",
            "app-linux-arm64-release"
        ]
    );
    assert_eq!(report.builds.len(), 3);
    // Each build sleeps 2 s; one after another, the last would start after the first finished.
    assert!(
        matrix::overlapped(&report.builds),
        "the builds did not overlap: {:?}",
        report
            .builds
            .iter()
            .map(|b| (b.started, b.finished))
            .collect::<Vec<_>>()
    );

    for (v, b) in variants.iter().zip(&report.builds) {
        assert_eq!(&b.variant, v);
        let path = out.join(v.artifact());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            text.starts_with(&format!("#!/bin/sh\n# app for {} ({})\n", v.target, v.profile)),
            "{text}"
        );
        assert_eq!(text.contains("set -x"), v.profile == "debug", "{text}");
        assert_eq!(text.len() as u64, b.size, "the size the build reported");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{}", path.display());
        // The artifact is a working program.
        let run = std::process::Command::new("sh").arg(&path).output().expect("sh runs");
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            format!("hello from {}\n", v.target)
        );
    }
    let info = std::fs::read_to_string(out.join("BUILDINFO")).expect("BUILDINFO exported");
    // BUILDINFO lists the variants in their order (target, then profile).
    let mut sorted: Vec<&matrix::Build> = report.builds.iter().collect();
    sorted.sort_by(|a, b| a.variant.cmp(&b.variant));
    let expected: String = sorted
        .iter()
        .map(|b| {
            format!(
                "{} {} {} {}\n",
                b.variant.artifact(),
                b.variant.target,
                b.variant.profile,
                b.size
            )
        })
        .collect();
    assert_eq!(info, expected);
}

#[tokio::test]
async fn chaining_feeds_a_string_a_file_and_a_directory_id_to_the_next_pipelines() {
    let f = fixture().await;
    let chain = chaining::run(&f.dag, &f.image, "1.4.0")
        .await
        .unwrap_or_else(|e| panic!("the chain runs: {e}"));

    let v = &chain.version;
    let rev = v.strip_prefix("1.4.0+").unwrap_or_else(|| panic!("version `{v}`"));
    assert!(
        rev.len() == 8 && rev.chars().all(|c| c.is_ascii_hexdigit()),
        "version `{v}`"
    );
    assert_eq!(chain.version_file, format!("{v}\n"));
    // Pipeline 2 received the string (label, env) and the file.
    assert_eq!(chain.label.as_deref(), Some(v.as_str()));
    assert_eq!(chain.env.as_deref(), Some(v.as_str()));
    assert_eq!(chain.package_log, format!("packaged app {v}\n"));
    // Pipeline 3 received the directory through its ID.
    assert_eq!(chain.dist_entries, ["SHA256SUMS", "app"]);
    assert_eq!(chain.verify_log, format!("app: OK\napp {v}\n"));
    let app = f
        .dag
        .load_directory_from_id(chain.dist_id.clone())
        .file("app")
        .contents()
        .await
        .expect("the ID loads again");
    assert!(app.contains(&format!("echo \"app {v}\"")), "{app}");

    // Other sources, another version: the chain is computed, not hard-coded.
    let other = chaining::run(&f.dag, &f.image, "2.0.0")
        .await
        .unwrap_or_else(|e| panic!("the chain runs: {e}"));
    assert_eq!(other.version, format!("2.0.0+{rev}"));
    assert_ne!(other.dist_id, chain.dist_id);
}

#[tokio::test]
async fn a_failed_command_is_an_exec_error_with_exit_code_output_and_a_report() {
    let f = fixture().await;
    let exec = errors::failed_command(&f.dag, &f.image)
        .await
        .unwrap_or_else(|e| panic!("expected an ExecError: {e}"));
    assert_eq!(exec.cmd, ["sh", "-c", errors::FAILING_BUILD]);
    assert_eq!(exec.exit_code, 2);
    assert_eq!(exec.stdout, "compiling app v0.1.0\ncompiling parser\n");
    assert_eq!(
        exec.stderr,
        "error[E0425]: cannot find value `x` in this scope\n  --> src/parser.rs:12:5\n\
         error: could not compile `app` (1 previous error)\n"
    );

    let report = errors::report(&exec, 2);
    assert!(
        report.starts_with("command failed with exit code 2\n  $ sh -c 'echo"),
        "{report}"
    );
    assert!(report.contains("stderr (last 2 of 3 lines):\n"), "{report}");
    assert!(
        report.ends_with("  |   --> src/parser.rs:12:5\n  | error: could not compile `app` (1 previous error)\n"),
        "{report}"
    );
    assert!(
        !report.lines().any(|l| l.starts_with("  |") && l.contains("E0425")),
        "only the tail of stderr is shown: {report}"
    );
    // The command line is quoted so that it can be pasted into a shell.
    let quoted = report
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("  $ "))
        .expect("command line");
    let words = std::process::Command::new("sh")
        .args(["-c", &format!("printf '%s\\n' {quoted}")])
        .output()
        .expect("sh runs");
    assert_eq!(
        String::from_utf8_lossy(&words.stdout),
        format!("sh\n-c\n{}\n", errors::FAILING_BUILD),
        "the quoted command splits back into the same words"
    );

    let t = errors::tolerated_failures(&f.dag, &f.image)
        .await
        .expect("allowed exit codes");
    assert_eq!(
        t,
        errors::Tolerated {
            exit_code: 1,
            stdout: String::new(),
            expected_failure: 1,
        }
    );
}

#[tokio::test]
async fn a_failed_pipeline_names_the_binding_and_keeps_what_earlier_levels_produced() {
    let f = fixture().await;
    let err = errors::failed_pipeline(&f.dag, &f.image)
        .await
        .expect_err("the tests fail");

    assert_eq!(err.pipeline, "checks");
    assert_eq!(err.failures.len(), 1, "{err}");
    let failure = &err.failures[0];
    assert_eq!(
        (failure.output, failure.binding, failure.step),
        ("test_log", "tests", "shell")
    );
    let Error::Exec(exec) = &failure.error else {
        panic!("expected an exec error, got {:?}", failure.error);
    };
    assert_eq!(exec.exit_code, 101);
    assert_eq!(exec.stdout, "test parse ... ok\ntest render ... FAILED\n");
    assert_eq!(exec.stderr, "assertion failed: left == right (left: 3, right: 4)\n");

    // The outputs of the level before finished; the output ordered after the failure never ran.
    assert_eq!(err.partial.lint_log.as_deref(), Some("lint: 0 warnings\n"));
    assert_eq!(err.partial.fmt_log.as_deref(), Some("fmt: 12 files formatted\n"));
    assert!(err.partial.test_log.is_none());
    assert!(err.partial.packaged.is_none());
    assert_eq!(err.skipped, ["packaged"]);

    let report = errors::pipeline_report(&err);
    assert!(
        report.starts_with("pipeline `checks` failed\noutput `test_log` (binding `tests`, step `shell`) failed:\n"),
        "{report}"
    );
    assert!(report.contains("command failed with exit code 101\n"), "{report}");
    assert!(report.contains("skipped: packaged\n"), "{report}");
    assert!(
        report.ends_with(
            "skipped: packaged\nfinished: lint_log = \"lint: 0 warnings\"\nfinished: fmt_log = \"fmt: 12 files formatted\"\n"
        ),
        "{report}"
    );
}

pipeline! {
    /// Two outputs in one level; one of them fails.
    pub same_level(image: String) {
        let base = errors::toolbox(image);
        let ok = errors::shell(base, "echo fine");
        let bad = errors::shell(base, "echo broken >&2; exit 3");
        out ok_log = ok.stdout();
        out bad_log = bad.stdout();
    }
}

/// A level is one GraphQL document; when one of its fields fails, the engine (like any spec-following
/// GraphQL server, since every root field is non-null) answers `data: null`; the SDK fetches the sibling
/// again and keeps its value.
#[tokio::test]
async fn a_sibling_in_the_failed_level_keeps_its_value() {
    let f = fixture().await;
    let err = same_level::run(&f.dag, f.image.clone()).await.expect_err("bad fails");
    assert_eq!(err.failures.len(), 1, "{err}");
    assert_eq!(err.failures[0].output, "bad_log");
    assert_eq!(err.partial.ok_log.as_deref(), Some("fine\n"));
}

#[tokio::test]
async fn hello_greets_from_a_container() {
    let f = fixture().await;
    let out = examples::hello::greet(&f.dag, &f.image).await.expect("hello runs");
    assert_eq!(out, "hello, pipelines\n");
}

#[tokio::test]
async fn release_tests_every_toolchain_and_publishes_the_tagged_image_only_when_asked() {
    use std::sync::atomic::Ordering;
    let f = fixture().await;
    let host = f._registry.host();
    push_busybox(&f._registry, "busybox:1.36").await;
    let mut s = release::Settings {
        version: "1.2.3".into(),
        toolchains: vec![f.image.clone(), format!("{host}/busybox:1.36")],
        base: f.image.clone(),
        registry: host.clone(),
        publish: false,
    };

    // Not asked to publish: the tests and the version only; the image is neither built nor sent.
    let plan = release::plan(&s);
    assert!(!plan.to_string().contains("publish"), "{plan}");
    let before = f._session.engine.requests.load(Ordering::Relaxed);
    let out = release::run(&f.dag, &s)
        .await
        .unwrap_or_else(|e| panic!("the release runs: {e}"));
    let sent = f._session.engine.requests.load(Ordering::Relaxed) - before;
    assert_eq!(sent, plan.documents.len(), "{plan}");
    assert_eq!(out.version, "1.2.3\n");
    assert_eq!(out.test_logs.len(), 2, "{:?}", out.test_logs);
    assert!(
        out.test_logs.values().all(|log| log.starts_with("tests ok")),
        "{:?}",
        out.test_logs
    );
    assert!(out.published.is_none());

    // Asked to publish: the version read from the sources tags and labels the image.
    s.publish = true;
    let plan = release::plan(&s);
    assert!(plan.to_string().contains("/app:<value:version>"), "{plan}");
    let out = release::run(&f.dag, &s)
        .await
        .unwrap_or_else(|e| panic!("the release runs: {e}"));
    let published = out.published.expect("published");
    assert!(
        published.starts_with(&format!("{host}/app:1.2.3@sha256:")),
        "{published}"
    );
    let tagged = format!("{host}/app:1.2.3");
    let ran = f
        .dag
        .container()
        .from(tagged.clone())
        .with_exec_opts(
            Vec::<String>::new(),
            dagger::ContainerWithExecOpts::default().use_entrypoint(true),
        )
        .stdout()
        .await
        .expect("the tagged image runs");
    assert_eq!(ran, "app 1.2.3\n");
    let label = f
        .dag
        .container()
        .from(tagged)
        .label("org.opencontainers.image.version")
        .await;
    assert_eq!(label.expect("label").as_deref(), Some("1.2.3"));
}

/// The runtime containers (`drs-…` state folders) the engine on `cache` has now.
fn containers(cache: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(cache.join("runtime"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("drs-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn integration_runs_redis_as_a_service_shared_by_concurrent_clients() {
    // Blocking, and before any runtime exists: `ensure` runs its own.
    if let Err(e) = testkit::images::ensure() {
        panic!("offline images: {e}");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let cache = tempfile::tempdir().expect("cache dir");
        let registries = dagger_engine::oci::RegistryConfig::parse(testkit::images::MIRRORS, "").expect("mirrors");
        let (session, dag) = testkit::start_engine(Config {
            registries: Some(registries),
            ..Config::for_dir(cache.path())
        })
        .await;
        let settings = integration::Settings {
            clients: 4,
            increments: 5,
            ..integration::Settings::default()
        };
        let report = integration::run(&dag, &settings)
            .await
            .unwrap_or_else(|e| panic!("the integration example failed: {e}"));
        report.check(&settings).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.version.starts_with("7."), "Debian bookworm's Redis: {report:?}");
        assert_eq!(report.ping, "PONG");
        assert_eq!(report.read, ["quickstart-app", "Hello, world!", "0.1.0"]);
        assert_eq!(report.counter, 20);
        assert_eq!(report.increments.len(), 4);
        let mut all: Vec<u64> = report.increments.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=20).collect::<Vec<u64>>(),
            "every INCR counted once, on one instance"
        );
        // The endpoint is the service's own host name, the same for the same service in any call.
        let host = integration::database(&dag, &settings)
            .hostname()
            .await
            .expect("hostname");
        assert_eq!(report.endpoint, format!("{host}:{}", integration::PORT));
        // `run` stopped the database: no container is left running.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !containers(cache.path()).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the database still runs: {:?}",
                containers(cache.path())
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }

        // Another run (its own run ID, so its execs are not cache hits) starts a new, empty instance: the
        // counter counts from 1 again, with other numbers of clients and increments.
        let again = integration::Settings {
            clients: 3,
            increments: 2,
            ..integration::Settings::default()
        };
        assert_ne!(again.run_id, settings.run_id);
        let report = integration::run(&dag, &again)
            .await
            .unwrap_or_else(|e| panic!("the integration example failed again: {e}"));
        report.check(&again).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.counter, 6);
        session.shutdown(std::time::Duration::from_secs(5)).await;
    });
}

/// The check fails when the clients did not share one instance (a reply twice, a count short) or when the
/// reader did not get what the writer stored.
#[test]
fn the_integration_check_needs_one_shared_instance() {
    let settings = integration::Settings {
        clients: 2,
        increments: 2,
        ..integration::Settings::default()
    };
    let good = integration::Report {
        endpoint: "db0:6379".into(),
        version: "7.0.15".into(),
        ping: "PONG".into(),
        written: "OK".into(),
        read: integration::RECORDS.iter().map(|(_, v)| v.to_string()).collect(),
        increments: vec![vec![1, 3], vec![2, 4]],
        counter: 4,
    };
    good.check(&settings).unwrap_or_else(|e| panic!("{e}"));
    // Two instances: each client counted from 1.
    let two = integration::Report {
        increments: vec![vec![1, 2], vec![1, 2]],
        counter: 2,
        ..good.clone()
    };
    let err = two.check(&settings).expect_err("two instances");
    assert!(err.contains("did not count to 4 on one instance"), "{err}");
    let lost = integration::Report {
        read: vec![String::new(); 3],
        ..good.clone()
    };
    let err = lost.check(&settings).expect_err("nothing read back");
    assert!(err.contains("did not keep what the writer stored"), "{err}");
    let short = integration::Report { counter: 3, ..good };
    short.check(&settings).expect_err("a count short");
}
