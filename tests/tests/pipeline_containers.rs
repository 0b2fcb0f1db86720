//! A `pipeline!` of real container steps on the embedded engine: it runs, its requests are what its plan
//! says (levels + ID rounds, never one per leaf), its image lands in a real registry, and a failing step is
//! reported by binding with its siblings' results kept.

use std::sync::atomic::Ordering;

use dagger::prelude::*;
use dagger_engine::{Config, Session};
use testkit::registry::{LocalRegistry, push_busybox};

/// A "toolchain": the base image with the sources.
#[step]
fn toolchain(dag: &Query, base: String, src: Directory) -> Container {
    dag.container()
        .from(base)
        .with_directory("/src", src)
        .with_workdir("/src")
}

/// "Unit tests": every source file must say hello.
#[step]
fn unit_tests(toolchain: Container) -> Container {
    toolchain.with_exec([
        "sh",
        "-c",
        "for f in *.txt; do grep -q hello \"$f\" || exit 1; done; echo tests ok",
    ])
}

/// "Lint": a deliberately failing check when asked to be strict.
#[step]
fn lint(toolchain: Container, strict: bool) -> Container {
    let script = if strict {
        "echo 'lint: line too long' >&2; exit 2"
    } else {
        "echo lint ok"
    };
    toolchain.with_exec(["sh", "-c", script])
}

/// "Build": an executable script made from the sources.
#[step]
fn binary(toolchain: Container) -> File {
    toolchain
        .with_exec(["sh", "-c", "mkdir -p out && { echo '#!/bin/sh'; echo 'cat <<EOF'; cat *.txt; echo 'EOF'; } > out/app && chmod +x out/app"])
        .file("out/app")
}

/// The runtime image.
#[step]
fn image(dag: &Query, base: String, binary: File) -> Container {
    dag.container()
        .from(base)
        .with_file("/usr/local/bin/app", binary)
        .with_entrypoint(["/usr/local/bin/app"])
}

pipeline! {
    /// Test and lint side by side, build, then publish only after both passed.
    pub ci(base: String, src: Directory, strict: bool, address: String) {
        let tc = toolchain(base, src);
        let tests = unit_tests(tc);
        let checks = lint(tc, strict);
        let img = image(base, binary(tc));
        out test_log = tests.stdout();
        out lint_log = checks.stdout();
        out published = img.publish(address) after test_log, lint_log;
    }
}

/// "Slow tests": take two seconds, then pass.
#[step]
fn slow_tests(toolchain: Container) -> Container {
    toolchain.with_exec(["sh", "-c", "sleep 2; echo slow tests ok"])
}

pipeline! {
    /// A failing lint beside the tests: the tests and the build after them still run; only the publish,
    /// which waits for the lint, is skipped.
    pub waves(base: String, src: Directory, address: String) {
        let tc = toolchain(base, src);
        let tests = slow_tests(tc);
        let checks = lint(tc, true);
        let img = image(base, binary(tc));
        out test_log = tests.stdout();
        out built = img.sync() after test_log;
        out lint_log = checks.stdout();
        out published = img.publish(address) after lint_log;
    }
}

pipeline! {
    /// The same graph, stopping at the first failure.
    #[fail_fast]
    pub waves_fail_fast(base: String, src: Directory, address: String) {
        let tc = toolchain(base, src);
        let tests = slow_tests(tc);
        let checks = lint(tc, true);
        let img = image(base, binary(tc));
        out test_log = tests.stdout();
        out built = img.sync() after test_log;
        out lint_log = checks.stdout();
        out published = img.publish(address) after lint_log;
    }
}

pipeline! {
    /// Tests always; lint unless this is a draft; publish only when asked.
    pub gated(base: String, src: Directory, address: String, draft: bool, publish: bool) {
        let tc = toolchain(base, src);
        let tests = unit_tests(tc);
        out test_log = tests.stdout();
        if !draft {
            let checks = lint(tc, true);
            out lint_log = checks.stdout();
        }
        if publish {
            let img = image(base, binary(tc));
            out published = img.publish(address) after test_log;
        }
    }
}

pipeline! {
    /// The toolchain is synced first: the tests, the lint and the build load it by that ID; the build is
    /// synced in turn, and the image takes it by the ID its `sync` returned.
    pub reuse(base: String, src: Directory, address: String) {
        let tc = toolchain(base, src);
        let tests = unit_tests(tc);
        let checks = lint(tc, false);
        let bin = binary(tc);
        let img = image(base, bin);
        out built = tc.sync();
        out test_log = tests.stdout() after built;
        out lint_log = checks.stdout() after built;
        out app = bin.sync() after built;
        out published = img.publish(address) after test_log, lint_log, app;
    }
}

/// What to greet and how: a config struct is a step parameter like any `Clone` value.
#[derive(Clone, Debug)]
pub struct Greeting {
    /// Whom to greet.
    pub who: String,
    /// What follows the name, if anything.
    pub suffix: Option<String>,
}

/// How loud.
#[derive(Clone, Copy, Debug)]
pub enum Volume {
    /// As written.
    Normal,
    /// In capitals.
    Loud,
}

/// The greeting as a file and the sources with a copy of it: a step returning two objects.
#[step]
fn greet(toolchain: Container, greeting: Greeting, volume: Volume) -> (File, Directory) {
    let text = format!("hello {}{}", greeting.who, greeting.suffix.unwrap_or_default());
    let filter = match volume {
        Volume::Normal => "cat",
        Volume::Loud => "tr a-z A-Z",
    };
    let made = toolchain.with_exec([
        "sh",
        "-c",
        &format!("mkdir -p out && echo '{text}' | {filter} > out/greeting && cp *.txt out/"),
    ]);
    (made.file("out/greeting"), made.directory("out"))
}

pipeline! {
    /// Config values shape the commands; a tuple step's two results are outputs of their own.
    pub greetings(base: String, src: Directory, greeting: Greeting, volume: Volume) {
        let tc = toolchain(base, src);
        let (text, all) = greet(tc, greeting, volume);
        let (quiet, _) = greet(tc, Greeting { who: "quietly".into(), suffix: None }, Volume::Normal);
        out said = text.contents();
        out files = all.entries();
        out whispered = quiet.contents();
    }
}

/// `gated`, written as a function.
#[pipeline_fn]
pub fn gated_fn(base: String, src: Directory, address: String, draft: bool, publish: bool) {
    let tc = toolchain(base, src);
    let tests = unit_tests(tc);
    #[out]
    let test_log = tests.stdout();
    if !draft {
        let checks = lint(tc, true);
        #[out]
        let lint_log = checks.stdout();
    }
    if publish {
        let img = image(base, binary(tc));
        #[out(after(test_log))]
        let published = img.publish(address);
    }
}

/// The first line of file `name` of the sources, printed.
#[step]
fn first_line(toolchain: Container, name: String) -> Container {
    toolchain.with_exec(["sh", "-c", &format!("head -n1 {name}")])
}

/// A container that prints `text` (trimmed).
#[step]
fn saying(dag: &Query, base: String, text: String) -> Container {
    dag.container().from(base).with_exec(["echo", text.trim()])
}

/// A container that prints `text` (trimmed) in capitals.
#[step]
fn shouting(dag: &Query, base: String, text: String) -> Container {
    dag.container()
        .from(base)
        .with_exec(["sh", "-c", "echo \"$0\" | tr a-z A-Z", text.trim()])
}

/// A file `name` holding `text`.
#[step]
fn note(dag: &Query, name: String, text: String) -> File {
    dag.directory().with_new_file(name.clone(), text).file(name)
}

/// The notes in one directory, named by key.
#[step]
fn notes(dag: &Query, files: std::collections::BTreeMap<String, File>) -> Directory {
    files.into_iter().fold(dag.directory(), |dir, (name, file)| {
        dir.with_file(format!("note-{name}"), file)
    })
}

pipeline! {
    /// Every shape of blocks and values at once: the title (a value of the body) and each file's first line
    /// (a value per element) feed that element's steps; only the files marked for it are shouted (an `if` on
    /// the loop's variable), from what that element said (a value computed from a value); the notes made from the values are gathered after the loop (a map of bindings
    /// that waited for values); when loud, every file is counted (a loop inside an `if`) and the title is
    /// said twice, the second time from what the first printed (a value computed from a value).
    pub shapes(base: String, src: Directory, files: std::collections::BTreeMap<String, bool>, loud: bool) {
        let tc = toolchain(base, src);
        let head = first_line(tc, "a.txt");
        out title = head.stdout();
        for (name, shout) in files {
            let line = first_line(tc, name);
            out lines = line.stdout();
            let echo = saying(base, format!("{} / {}", title.trim(), lines.trim()));
            out said = echo.stdout();
            let kept = note(name, lines);
            if shout {
                let louder = shouting(base, said);
                out shouted = louder.stdout();
            }
        }
        let all = notes(kept);
        out kept_files = all.entries();
        if loud {
            for (counted, _marked) in files {
                let wc = first_line(tc, counted);
                out counts = wc.exit_code();
            }
            let first = saying(base, title);
            out once = first.stdout();
            let second = saying(base, format!("again: {}", once));
            out twice = second.stdout();
        }
    }
}

struct Env {
    _registry: LocalRegistry,
    base: String,
    host: String,
    session: Session,
    dag: Query,
    _cache: tempfile::TempDir,
}

async fn start() -> Env {
    let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    push_busybox(&registry, "busybox:latest").await;
    let cache = tempfile::tempdir().expect("cache");
    let (session, dag) = testkit::start_engine(Config::for_dir(cache.path())).await;
    Env {
        base: format!("{}/busybox:latest", registry.host()),
        host: registry.host(),
        _registry: registry,
        session,
        dag,
        _cache: cache,
    }
}

fn sources(dag: &Query) -> Directory {
    dag.directory()
        .with_new_file("a.txt", "hello from a\n")
        .with_new_file("b.txt", "hello from b\n")
}

#[tokio::test]
async fn the_pipeline_runs_in_containers_and_publishes_after_its_checks() {
    let env = start().await;
    let address = format!("{}/ci-app:latest", env.host);
    let plan = ci::plan(env.base.clone(), sources(&env.dag), false, address.clone());
    let before = env.session.engine.requests.load(Ordering::Relaxed);
    let out = ci::run(&env.dag, env.base.clone(), sources(&env.dag), false, address.clone())
        .await
        .expect("pipeline runs");
    let sent = env.session.engine.requests.load(Ordering::Relaxed) - before;
    assert_eq!(out.test_log, "tests ok\n");
    assert_eq!(out.lint_log, "lint ok\n");
    assert!(
        out.published
            .starts_with(&format!("{}/ci-app:latest@sha256:", env.host)),
        "{}",
        out.published
    );
    // Exactly the documents of the plan: two levels and the ID rounds, not one request per leaf.
    assert_eq!(sent, plan.documents.len(), "{plan}");
    assert!(
        sent <= ci::LEVELS.len() + 2,
        "{sent} requests for {} levels",
        ci::LEVELS.len()
    );

    // The published image runs its entrypoint.
    let ran = env
        .dag
        .container()
        .from(address)
        .with_exec_opts(
            Vec::<String>::new(),
            dagger::ContainerWithExecOpts::default().use_entrypoint(true),
        )
        .stdout()
        .await
        .expect("published image runs");
    assert_eq!(ran, "hello from a\nhello from b\n");
}

#[tokio::test]
async fn a_failing_check_is_named_and_stops_the_publish() {
    let env = start().await;
    let address = format!("{}/ci-app:strict", env.host);
    let err = ci::run(&env.dag, env.base.clone(), sources(&env.dag), true, address)
        .await
        .expect_err("strict lint fails");
    assert_eq!(err.failures.len(), 1, "{err}");
    let f = &err.failures[0];
    assert_eq!((f.output, f.binding, f.step), ("lint_log", "checks", "lint"));
    let dagger::Error::Exec(exec) = &f.error else {
        panic!("expected an exec error, got {:?}", f.error);
    };
    assert_eq!(exec.exit_code, 2);
    assert_eq!(exec.stderr, "lint: line too long\n");
    // The sibling in the same level still reports; the publish never ran.
    assert_eq!(err.partial.test_log.as_deref(), Some("tests ok\n"));
    assert!(err.partial.published.is_none());
    assert_eq!(err.skipped, vec!["published"]);
}

#[tokio::test]
async fn a_failure_skips_only_the_outputs_that_wait_for_it() {
    let env = start().await;
    let address = format!("{}/ci-app:waves", env.host);
    let plan = waves::plan(env.base.clone(), sources(&env.dag), address.clone());
    let before = env.session.engine.requests.load(Ordering::Relaxed);
    let err = waves::run(&env.dag, env.base.clone(), sources(&env.dag), address)
        .await
        .expect_err("strict lint fails");
    let sent = env.session.engine.requests.load(Ordering::Relaxed) - before;
    assert_eq!(err.failures.len(), 1, "{err}");
    assert_eq!(err.failures[0].output, "lint_log");
    // Under level barriers `built` (level 2) would have been skipped with the publish.
    assert_eq!(err.partial.test_log.as_deref(), Some("slow tests ok\n"));
    assert!(err.partial.built.is_some(), "{err}");
    assert_eq!(err.skipped, vec!["published"]);
    // Every planned request but the publish's was sent (the lint's own request ends with the failure).
    assert_eq!(sent, plan.documents.len() - 1, "{plan}");
}

#[tokio::test]
async fn fail_fast_skips_what_was_not_sent_at_the_first_failure() {
    let env = start().await;
    let address = format!("{}/ci-app:waves-ff", env.host);
    let err = waves_fail_fast::run(&env.dag, env.base.clone(), sources(&env.dag), address)
        .await
        .expect_err("strict lint fails");
    assert_eq!(err.failures[0].output, "lint_log");
    // The slow tests were in flight when the lint failed, and finished; the build after them was never sent.
    assert_eq!(err.partial.test_log.as_deref(), Some("slow tests ok\n"));
    assert!(err.partial.built.is_none());
    let mut skipped = err.skipped.clone();
    skipped.sort_unstable();
    assert_eq!(skipped, vec!["built", "published"]);
}

#[tokio::test]
async fn conditions_decide_what_runs() {
    let env = start().await;
    let address = format!("{}/ci-app:gated", env.host);
    // A draft that publishes: the failing lint is never sent, so the run succeeds and the image is pushed.
    let before = env.session.engine.requests.load(Ordering::Relaxed);
    let out = gated::run(
        &env.dag,
        env.base.clone(),
        sources(&env.dag),
        address.clone(),
        true,
        true,
    )
    .await
    .expect("the lint is left out");
    let sent = env.session.engine.requests.load(Ordering::Relaxed) - before;
    assert!(out.lint_log.is_none());
    let published = out.published.expect("published");
    assert!(
        published.starts_with(&format!("{}/ci-app:gated@sha256:", env.host)),
        "{published}"
    );
    let plan = gated::plan(env.base.clone(), sources(&env.dag), address.clone(), true, true);
    assert_eq!(sent, plan.documents.len(), "{plan}");
    // Not a draft, not published: the lint runs (and fails); nothing is published.
    let err = gated::run(&env.dag, env.base.clone(), sources(&env.dag), address, false, false)
        .await
        .expect_err("the strict lint fails");
    assert_eq!(err.failures[0].output, "lint_log");
    assert_eq!(err.partial.test_log.as_deref(), Some("tests ok\n"));
    assert!(err.partial.published.is_none());
    assert!(err.skipped.is_empty(), "nothing waited for the lint: {err}");
}

#[tokio::test]
async fn later_requests_load_known_objects_by_id() {
    let env = start().await;
    let address = format!("{}/ci-app:reuse", env.host);
    let plan = reuse::plan(env.base.clone(), sources(&env.dag), address.clone());
    // After `built`, no document repeats the toolchain's chain: they load it with `node(id:)`, and the image
    // takes the binary by the ID `app` returned.
    let later: Vec<&str> = plan.documents[2..].iter().map(|d| d.query.as_str()).collect();
    assert!(later.iter().all(|q| !q.contains("withDirectory")), "{plan}");
    assert!(
        later
            .iter()
            .any(|q| q.contains(r#"o1:node(id:"<id:o0>"){... on Container{"#)),
        "{plan}"
    );
    assert!(later.iter().any(|q| q.contains(r#"source:"<id:o3>""#)), "{plan}");
    let before = env.session.engine.requests.load(Ordering::Relaxed);
    let out = reuse::run(&env.dag, env.base.clone(), sources(&env.dag), address.clone())
        .await
        .unwrap_or_else(|e| panic!("pipeline runs: {e}"));
    let sent = env.session.engine.requests.load(Ordering::Relaxed) - before;
    assert_eq!(sent, plan.documents.len(), "{plan}");
    assert_eq!(out.test_log, "tests ok\n");
    assert_eq!(out.lint_log, "lint ok\n");
    assert_eq!(
        out.app.contents().await.expect("the binary"),
        "#!/bin/sh\ncat <<EOF\nhello from a\nhello from b\nEOF\n"
    );
    let ran = env
        .dag
        .container()
        .from(address)
        .with_exec_opts(
            Vec::<String>::new(),
            dagger::ContainerWithExecOpts::default().use_entrypoint(true),
        )
        .stdout()
        .await
        .expect("published image runs");
    assert_eq!(ran, "hello from a\nhello from b\n");
}

#[tokio::test]
async fn steps_take_config_values_and_return_tuples() {
    let env = start().await;
    let greeting = Greeting {
        who: "world".into(),
        suffix: Some("!".into()),
    };
    let plan = greetings::plan(env.base.clone(), sources(&env.dag), greeting.clone(), Volume::Loud);
    let before = env.session.engine.requests.load(Ordering::Relaxed);
    let out = greetings::run(&env.dag, env.base.clone(), sources(&env.dag), greeting, Volume::Loud)
        .await
        .unwrap_or_else(|e| panic!("pipeline runs: {e}"));
    let sent = env.session.engine.requests.load(Ordering::Relaxed) - before;
    assert_eq!(sent, plan.documents.len(), "{plan}");
    assert_eq!(out.said, "HELLO WORLD!\n");
    assert_eq!(out.files, ["a.txt", "b.txt", "greeting"]);
    assert_eq!(out.whispered, "hello quietly\n");
}

#[tokio::test]
async fn the_function_form_runs_like_the_macro_form() {
    let env = start().await;
    let address = format!("{}/ci-app:gated-fn", env.host);
    let plan = gated_fn::plan(env.base.clone(), sources(&env.dag), address.clone(), true, true);
    assert_eq!(
        plan.documents,
        gated::plan(env.base.clone(), sources(&env.dag), address.clone(), true, true).documents
    );
    let before = env.session.engine.requests.load(Ordering::Relaxed);
    let out = gated_fn::run(&env.dag, env.base.clone(), sources(&env.dag), address, true, true)
        .await
        .unwrap_or_else(|e| panic!("pipeline runs: {e}"));
    let sent = env.session.engine.requests.load(Ordering::Relaxed) - before;
    assert_eq!(sent, plan.documents.len(), "{plan}");
    assert_eq!(out.test_log, "tests ok\n");
    assert!(out.lint_log.is_none());
    let published = out.published.expect("published");
    assert!(
        published.starts_with(&format!("{}/ci-app:gated-fn@sha256:", env.host)),
        "{published}"
    );
}

#[tokio::test]
async fn blocks_nest_and_values_feed_steps_per_element_on_the_engine() {
    let env = start().await;
    let files = || std::collections::BTreeMap::from([("a.txt".to_owned(), false), ("b.txt".to_owned(), true)]);
    for loud in [true, false] {
        let plan = shapes::plan(env.base.clone(), sources(&env.dag), files(), loud);
        let before = env.session.engine.requests.load(Ordering::Relaxed);
        let out = shapes::run(&env.dag, env.base.clone(), sources(&env.dag), files(), loud)
            .await
            .unwrap_or_else(|e| panic!("pipeline runs: {e}"));
        let sent = env.session.engine.requests.load(Ordering::Relaxed) - before;
        assert_eq!(sent, plan.documents.len(), "{plan}");
        assert_eq!(out.title, "hello from a\n");
        assert_eq!(out.lines["b.txt"], "hello from b\n");
        // Each element's step got the title and that element's own line.
        assert_eq!(out.said["a.txt"], "hello from a / hello from a\n");
        assert_eq!(out.said["b.txt"], "hello from a / hello from b\n");
        // Only the marked file was shouted.
        assert_eq!(out.shouted.keys().collect::<Vec<_>>(), ["b.txt"]);
        assert_eq!(out.shouted["b.txt"], "HELLO FROM A / HELLO FROM B\n");
        assert_eq!(out.kept_files, ["note-a.txt", "note-b.txt"]);
        if loud {
            assert_eq!(out.counts.map(|c| c.len()), Some(2));
            assert_eq!(out.once.as_deref(), Some("hello from a\n"));
            assert_eq!(out.twice.as_deref(), Some("again: hello from a\n"));
        } else {
            assert!(out.counts.is_none() && out.once.is_none() && out.twice.is_none());
            assert!(!plan.to_string().contains("again"), "{plan}");
        }
    }
}
