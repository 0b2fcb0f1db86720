//! `#[step]` and `pipeline!` end to end: offline plans (snapshots), and runs against a real HTTP server that
//! counts requests and checks that one level's outputs arrive in one document.

use std::collections::BTreeMap;

use dagger::prelude::*;
use dagger::{ContainerWithExecOpts, ReturnType};
use serde_json::{Value, json};
use testkit::{FakeEngine, auto_reply};

/// A toolchain with the sources mounted and a registry cache.
#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container()
        .from("rust:1-slim")
        .with_mounted_cache("/usr/local/cargo/registry", dag.cache_volume("cargo-registry"))
        .with_directory("/src", src)
        .with_workdir("/src")
}

#[step]
fn unit_tests(toolchain: Container, filter: &str) -> Container {
    toolchain.with_exec(["cargo", "test", filter])
}

#[step]
fn lint(toolchain: Container) -> Container {
    toolchain.with_exec(["cargo", "clippy", "--", "-D", "warnings"])
}

#[step]
fn binary(toolchain: Container) -> File {
    toolchain
        .with_exec(["cargo", "build", "--release"])
        .file("target/release/app")
}

#[step]
fn image(dag: &Query, binary: File, base: String) -> Container {
    dag.container().from(base).with_file("/usr/local/bin/app", binary)
}

#[step]
fn smoke(image: Container) -> Container {
    image.with_exec_opts(
        ["app", "--version"],
        ContainerWithExecOpts::default().expect(ReturnType::Any),
    )
}

mod steps {
    use dagger::prelude::*;

    /// A step in another module.
    #[step]
    pub(crate) fn report(dag: &Query, title: String, count: i64) -> File {
        dag.file("report.txt", format!("{title}: {count}"))
    }
}

pipeline! {
    /// Test, then build: a linear chain of levels.
    pub linear(src: Directory) {
        let tc = toolchain(src);
        let tests = unit_tests(tc, "--quiet");
        let bin = binary(tc);
        out tested = tests.sync();
        out size = bin.size() after tested;
        out digest = bin.digest() after size;
    }
}

pipeline! {
    /// Independent outputs of one toolchain: one level, one request.
    pub fan_out(src: Directory) {
        let tc = toolchain(src);
        let tests = unit_tests(tc, "");
        let clippy = lint(tc);
        let bin = binary(tc);
        let summary = steps::report("checks", 3);
        out test_log = tests.stdout();
        out lint_log = clippy.stderr();
        out bin_size = bin.size();
        out report = summary.contents();
    }
}

pipeline! {
    /// Build once, then test and lint side by side, then publish.
    pub diamond(src: Directory, base: String) {
        let tc = toolchain(src);
        let tests = unit_tests(tc, "");
        let clippy = lint(tc);
        let img = image(binary(tc), base);
        out built = tc.sync();
        out test_log = tests.stdout() after built;
        out lint_log = clippy.stdout() after built;
        out image_ref = img.publish("127.0.0.1:5000/app:latest") after test_log, lint_log;
    }
}

/// The diamond written as a function (`#[pipeline_fn]`): the same parser, checks and expansion.
#[pipeline_fn]
pub fn diamond_fn(src: Directory, base: String) {
    let tc = toolchain(src);
    let tests = unit_tests(tc, "");
    let clippy = lint(tc);
    let img = image(binary(tc), base);
    /// The toolchain, synced.
    #[out]
    let built = tc.sync();
    #[out(after(built))]
    let test_log = tests.stdout();
    #[out(after(built))]
    let lint_log = clippy.stdout();
    #[out(after(test_log, lint_log))]
    let image_ref = img.publish("127.0.0.1:5000/app:latest");
}

pipeline! {
    /// Publish only after the smoke test passed, although no data orders them.
    pub ordered(src: Directory, base: String) {
        let tc = toolchain(src);
        let bin = binary(tc);
        let img = image(bin, base);
        let check = smoke(img);
        out smoke_code = check.exit_code();
        out image_ref = img.publish("127.0.0.1:5000/app:v1") after check;
    }
}

pipeline! {
    /// One slow branch beside a short chain of dependent outputs: the chain does not wait for the slow branch,
    /// and a failure in the chain skips only what follows it.
    pub unbalanced(src: Directory) {
        let tc = toolchain(src);
        let slow = unit_tests(tc, "slow");
        let checks = lint(tc);
        let bin = binary(tc);
        out slow_log = slow.stdout();
        out slow_code = slow.exit_code() after slow_log;
        out linted = checks.sync();
        out size = bin.size() after linted;
        out digest = bin.digest() after size;
    }
}

pipeline! {
    /// The same graph; the first failure stops everything not sent yet.
    #[fail_fast]
    pub unbalanced_fail_fast(src: Directory) {
        let tc = toolchain(src);
        let slow = unit_tests(tc, "slow");
        let checks = lint(tc);
        let bin = binary(tc);
        out slow_log = slow.stdout();
        out slow_code = slow.exit_code() after slow_log;
        out linted = checks.sync();
        out size = bin.size() after linted;
        out digest = bin.digest() after size;
    }
}

/// A toolchain of a version chosen at run time.
#[step]
fn toolchain_for(dag: &Query, src: Directory, version: String) -> Container {
    dag.container()
        .from(format!("rust:{version}-slim"))
        .with_directory("/src", src)
        .with_workdir("/src")
}

/// Every binary in one directory, named by key.
#[step]
fn bundle(dag: &Query, bins: BTreeMap<String, File>) -> Directory {
    bins.into_iter().fold(dag.directory(), |dir, (name, bin)| {
        dir.with_file(format!("app-{name}"), bin)
    })
}

pipeline! {
    /// Tests on every toolchain version given at run time; the build waits for all of them.
    pub matrix(src: Directory, versions: Vec<String>) {
        for version in versions {
            let tc = toolchain_for(src, version);
            let tests = unit_tests(tc, "");
            /// The test log of each version.
            out test_logs = tests.stdout();
            out test_codes = tests.exit_code() after test_logs;
        }
        let stable = toolchain(src);
        let bin = binary(stable);
        out size = bin.size() after test_logs;
    }
}

pipeline! {
    /// One build per named image; the binaries are bundled after the loop.
    pub per_image(src: Directory, images: BTreeMap<String, String>) {
        for (name, image) in images {
            let tc = toolchain_for(src, image);
            let bin = binary(tc);
            out sizes = bin.size();
        }
        let all = bundle(bin);
        out entries = all.entries();
    }
}

pipeline! {
    /// Publish only when asked; the long tests only when this is not a draft.
    pub release(src: Directory, base: String, publish: bool, draft: bool) {
        let tc = toolchain(src);
        let img = image(binary(tc), base);
        out built = img.sync();
        if !draft {
            let tests = unit_tests(tc, "--include-ignored");
            out test_log = tests.stdout();
        }
        if publish {
            out image_ref = img.publish("127.0.0.1:5000/app:1") after built, test_log;
        }
    }
}

/// The version file of the sources.
#[step]
fn version_file(src: Directory) -> File {
    src.file("VERSION")
}

/// The runtime image, labelled with its version.
#[step]
fn tagged(dag: &Query, bin: File, base: String, version: String) -> Container {
    dag.container()
        .from(base)
        .with_file("/usr/local/bin/app", bin)
        .with_label("org.opencontainers.image.version", version)
}

pipeline! {
    /// The version read from the sources labels and tags the image.
    pub versioned(src: Directory, base: String) {
        let tc = toolchain(src);
        let tests = unit_tests(tc, "");
        let bin = binary(tc);
        let vfile = version_file(src);
        out version = vfile.contents();
        out test_log = tests.stdout();
        let img = tagged(bin, base, version);
        out image_ref = img.publish(format!("127.0.0.1:5000/app:{}", version)) after test_log;
    }
}

pipeline! {
    /// The version labels the image, which is built and published only when asked.
    pub tagged_release(src: Directory, base: String, publish: bool) {
        let tc = toolchain(src);
        let bin = binary(tc);
        let vfile = version_file(src);
        out version = vfile.contents();
        if publish {
            let img = tagged(bin, base, version);
            out image_ref = img.publish(format!("127.0.0.1:5000/app:{}", version));
        }
    }
}

/// How to build: any `Clone` type can be a step parameter; it only shapes the query the step builds.
#[derive(Clone, Debug)]
struct BuildConfig {
    profile: String,
    features: Vec<String>,
    jobs: Option<u32>,
}

/// How thorough the checks are.
#[derive(Clone, Copy, Debug)]
enum Checks {
    Quick,
    Full,
}

/// A toolchain behind an optional proxy.
#[step]
fn toolchain_behind(dag: &Query, src: Directory, proxy: Option<String>) -> Container {
    let tc = dag
        .container()
        .from("rust:1-slim")
        .with_directory("/src", src)
        .with_workdir("/src");
    match proxy {
        Some(proxy) => tc.with_env_variable("HTTPS_PROXY", proxy),
        None => tc,
    }
}

/// The binary and its docs, from one build: a step returning a tuple.
#[step]
fn configured(tc: Container, config: BuildConfig, checks: Checks) -> (File, Directory) {
    let mut args = vec![
        "cargo".to_owned(),
        "build".to_owned(),
        "--profile".to_owned(),
        config.profile,
    ];
    if !config.features.is_empty() {
        args.push(format!("--features={}", config.features.join(",")));
    }
    if let Some(jobs) = config.jobs {
        args.push(format!("-j{jobs}"));
    }
    let built = tc.with_exec(args);
    let checked = match checks {
        Checks::Quick => built,
        Checks::Full => built.with_exec(["cargo", "doc", "--no-deps"]),
    };
    (checked.file("target/app"), checked.directory("target/doc"))
}

pipeline! {
    /// A build shaped by a config struct, an enum and an optional proxy; its step returns two objects.
    pub configured_build(src: Directory, config: BuildConfig, checks: Checks, proxy: Option<String>) {
        let tc = toolchain_behind(src, proxy);
        let (bin, docs) = configured(tc, config, checks);
        let (_, quick_docs) = configured(tc, BuildConfig { profile: "dev".into(), features: vec![], jobs: None }, Checks::Quick);
        out size = bin.size();
        out doc_entries = docs.entries();
        out quick_entries = quick_docs.entries();
    }
}

/// What a toolchain says its version is.
#[step]
fn rustc_version(toolchain: Container) -> Container {
    toolchain.with_exec(["rustc", "--version"])
}

/// The binary, built with a label in its environment.
#[step]
fn labelled_binary(toolchain: Container, label: String) -> File {
    toolchain
        .with_env_variable("APP_LABEL", label)
        .with_exec(["cargo", "build", "--release"])
        .file("target/release/app")
}

/// The changelog section of a version.
#[step]
fn changelog(src: Directory, version: String) -> File {
    src.file(format!("changes/{}.md", version.trim()))
}

pipeline! {
    /// Each toolchain's own version labels the image built with it: a value feeding a step, per element.
    pub per_version(src: Directory, versions: Vec<String>, base: String) {
        for version in versions {
            let tc = toolchain_for(src, version);
            let asked = rustc_version(tc);
            /// What each toolchain reported.
            out reported = asked.stdout();
            let img = tagged(binary(tc), base, reported);
            out image_refs = img.publish(format!("127.0.0.1:5000/app:{}", version));
        }
    }
}

pipeline! {
    /// The version read once tags one image per channel: a value of the body feeding a loop.
    pub channels(src: Directory, base: String, channels: Vec<String>) {
        let tc = toolchain(src);
        let bin = binary(tc);
        let vfile = version_file(src);
        out version = vfile.contents();
        for channel in channels {
            let img = tagged(bin, base, version);
            out published = img.publish(format!("127.0.0.1:5000/app:{}-{}", version, channel));
        }
    }
}

pipeline! {
    /// Per target, an image; only the targets marked for it are published (an `if` on the loop's own
    /// variable); the soak tests run on every version, only on a nightly (a loop inside an `if`).
    pub targets(src: Directory, targets: BTreeMap<String, bool>, nightly: bool, versions: Vec<String>) {
        let tc = toolchain(src);
        for (target, publish) in targets {
            let img = image(binary(tc.with_env_variable("TARGET", target)), "debian:bookworm-slim");
            out built = img.sync();
            if publish {
                out refs = img.publish(format!("127.0.0.1:5000/app:{}", target)) after built;
            }
        }
        if nightly {
            for version in versions {
                let vtc = toolchain_for(src, version);
                let soak = unit_tests(vtc, "--ignored");
                out soak_logs = soak.stdout();
            }
        }
    }
}

pipeline! {
    /// Each toolchain's version labels its binary, and the binaries are bundled after the loop: a loop
    /// binding that waits for a value, used as a map.
    pub bundled(src: Directory, versions: Vec<String>) {
        for version in versions {
            let tc = toolchain_for(src, version);
            let asked = rustc_version(tc);
            out reported = asked.stdout();
            let bin = labelled_binary(tc, reported);
            out sizes = bin.size();
        }
        let all = bundle(bin);
        out entries = all.entries();
    }
}

pipeline! {
    /// Only when publishing: the version picks the changelog, whose text labels the image (a value computed
    /// from a value, inside an `if` block).
    pub noted(src: Directory, base: String, publish: bool) {
        let tc = toolchain(src);
        let bin = binary(tc);
        let vfile = version_file(src);
        out version = vfile.contents();
        if publish {
            let notes = changelog(src, version);
            out notes_text = notes.contents();
            let img = tagged(bin, base, notes_text);
            out image_ref = img.publish("127.0.0.1:5000/app:noted");
        }
    }
}

fn versions() -> Vec<String> {
    // Out of order and with a duplicate: elements are keys, sorted and unique.
    ["1.85", "1.80", "1.85"].map(String::from).to_vec()
}

fn src() -> Directory {
    Query::detached().host().directory(".")
}

#[test]
fn linear_plan() {
    insta::assert_snapshot!(linear::plan(src()).to_string());
}

#[test]
fn fan_out_plan() {
    insta::assert_snapshot!(fan_out::plan(src()).to_string());
}

#[test]
fn diamond_plan() {
    insta::assert_snapshot!(diamond::plan(src(), "debian:bookworm-slim".into()).to_string());
}

#[test]
fn known_ids_are_reused_instead_of_repeating_chains() {
    let base = || "debian:bookworm-slim".to_owned();
    let toolchain_chain = r#"container{from(address:"rust:1-slim")"#;
    let chains = |plan: &Plan| -> usize {
        plan.documents
            .iter()
            .map(|d| d.query.matches(toolchain_chain).count())
            .sum()
    };
    let bytes = |plan: &Plan| -> usize { plan.documents.iter().map(|d| d.query.len()).sum() };
    let reused = diamond::plan(src(), base());
    let repeated = dagger::__private::without_id_reuse(|| diamond::plan(src(), base()));
    // The toolchain is synced by `built`: the tests, the lint and the build load it by that ID. Without
    // reuse, its chain is in the build's ID field, `built`, the tests and the lint.
    assert_eq!(chains(&reused), 1, "{reused}");
    assert_eq!(chains(&repeated), 4, "{repeated}");
    assert!(bytes(&reused) < bytes(&repeated));
    let later: Vec<&str> = reused.documents[2..].iter().map(|d| d.query.as_str()).collect();
    assert!(later.iter().all(|q| !q.contains(toolchain_chain)), "{reused}");
    assert_eq!(
        later[0].matches(r#"node(id:"<id:o0>"){... on Container{"#).count(),
        3,
        "{reused}"
    );
    // Turned off, the plan is the one of repeated chains, IDs riding along in the earliest request.
    insta::assert_snapshot!("diamond_plan_without_id_reuse", repeated.to_string());
    // An object an output synced is passed by that ID, with no ID field of its own.
    let published = release::plan(src(), base(), true, false);
    let last = published.documents.last().expect("the publish");
    assert!(
        last.query
            .starts_with(r#"query{o2:node(id:"<id:o0>"){... on Container{publish("#),
        "{published}"
    );
}

#[test]
fn looser_steps_take_any_clone_value_and_return_tuples() {
    let config = BuildConfig {
        profile: "release".into(),
        features: vec!["tls".into()],
        jobs: Some(4),
    };
    let plan = configured_build::plan(src(), config.clone(), Checks::Full, Some("http://proxy:3128".into()));
    insta::assert_snapshot!(plan.to_string());
    let all: String = plan.documents.iter().map(|d| d.query.clone()).collect();
    assert!(
        all.contains(r#"args:["cargo","build","--profile","release","--features=tls","-j4"]"#),
        "{plan}"
    );
    assert!(
        all.contains(r#"withEnvVariable(name:"HTTPS_PROXY",value:"http://proxy:3128")"#),
        "{plan}"
    );
    // `None` and another variant shape another query.
    let quick = configured_build::plan(src(), config.clone(), Checks::Quick, None);
    let all: String = quick.documents.iter().map(|d| d.query.clone()).collect();
    assert!(
        !all.contains("HTTPS_PROXY") && !all.contains(r#""cargo","doc""#),
        "{quick}"
    );
    assert_eq!(
        configured_build::STEPS[1..3],
        [("bin", "configured"), ("docs", "configured")]
    );
    // A tuple step's own plan asks for every element's ID, in one request.
    let tc = toolchain_behind(&Query::detached(), src(), None);
    let step = configured::plan(tc, config, Checks::Quick);
    let titles: Vec<&str> = step.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(titles, ["resolve object IDs (round 1)", "0.id, 1.id"], "{step}");
}

#[test]
fn the_function_form_is_the_same_pipeline() {
    let macro_form = diamond::plan(src(), "debian:bookworm-slim".into());
    let fn_form = diamond_fn::plan(src(), "debian:bookworm-slim".into());
    assert_eq!(fn_form.documents, macro_form.documents);
    assert_eq!(diamond_fn::EDGES, diamond::EDGES);
    assert_eq!(diamond_fn::LEVELS, diamond::LEVELS);
}

#[test]
fn ordered_plan() {
    insta::assert_snapshot!(ordered::plan(src(), "debian:bookworm-slim".into()).to_string());
}

/// Each request of a plan: its title, and the requests it waits for.
fn titles_and_waits(plan: &Plan) -> Vec<(&str, &[usize])> {
    plan.documents
        .iter()
        .map(|d| (d.title.as_str(), &d.after[..]))
        .collect()
}

#[test]
fn unbalanced_plan() {
    // The slow branch and the chain's head are separate requests: nothing waits for the slow one but its
    // own follower.
    let plan = unbalanced::plan(src());
    let titles = titles_and_waits(&plan);
    assert_eq!(
        titles,
        [
            ("resolve object IDs (round 1)", &[][..]),
            ("slow_log", &[1][..]),
            ("linted", &[1]),
            ("slow_code", &[2]),
            ("size", &[3]),
            ("digest", &[5]),
        ]
    );
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn a_single_step_and_a_single_leaf_have_plans() {
    // `#[step]` gives every step a `plan` with the step's own parameters (`&str` stays `&str`).
    insta::assert_snapshot!(
        "step_plan_unit_tests",
        unit_tests::plan(toolchain(&Query::detached(), src()), "--quiet").to_string()
    );
    let plan = steps::report::plan("checks".into(), 3);
    assert_eq!(plan.pipeline, "report");
    assert_eq!(plan.documents.len(), 1, "no object argument, no ID round: {plan}");
    assert!(
        plan.documents[0]
            .query
            .contains(r#"file(name:"report.txt",contents:"checks: 3")"#),
        "{plan}"
    );
    // Any leaf, as the output of a one-output pipeline.
    let leaf = binary(toolchain(&Query::detached(), src())).size();
    insta::assert_snapshot!("leaf_plan_binary_size", Plan::of_leaf("binary size", leaf).to_string());
}

#[test]
fn matrix_plan() {
    // All elements of a loop output go in one request: 3 requests for any number of versions.
    let plan = matrix::plan(src(), versions());
    let titles = titles_and_waits(&plan);
    assert_eq!(
        titles,
        [
            ("resolve object IDs (round 1)", &[][..]),
            // The build's cache volume is needed only later: it rides along.
            ("test_logs × 2 (and object IDs for later requests)", &[1][..]),
            ("test_codes × 2, size", &[2]),
        ]
    );
    let more = matrix::plan(src(), ["1.70", "1.75", "1.80", "1.85"].map(String::from).to_vec());
    assert_eq!(more.documents.len(), 3);
    assert!(more.documents[1].title.starts_with("test_logs × 4"));
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn a_loop_binding_after_its_loop_is_a_map() {
    let images = BTreeMap::from([
        ("slim".to_owned(), "1.85".to_owned()),
        ("alpine".to_owned(), "1.85-alpine".to_owned()),
    ]);
    let plan = per_image::plan(src(), images);
    // The binaries' IDs ride along with their sizes; the bundle's entries need them.
    let titles: Vec<&str> = plan.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "resolve object IDs (round 1)",
            "resolve object IDs (round 2)",
            "sizes × 2, entries"
        ]
    );
    let last = &plan.documents[2].query;
    assert!(last.contains(r#"withFile(path:"app-alpine",source:"<id:a"#), "{plan}");
    assert!(last.contains(r#"withFile(path:"app-slim",source:"<id:a"#), "{plan}");
}

#[test]
fn conditions_leave_out_what_is_not_needed() {
    let base = || "debian:bookworm-slim".to_owned();
    // A draft that is not published: the image only; neither the tests nor the publish appear.
    let draft = release::plan(src(), base(), false, true);
    let all: String = draft.documents.iter().map(|d| d.query.clone()).collect();
    assert!(
        !all.contains("--include-ignored") && !all.contains("publish"),
        "{draft}"
    );
    assert_eq!(draft.documents.last().map(|d| d.title.as_str()), Some("built"));
    // A release: the tests beside the image, then the publish after both.
    let full = release::plan(src(), base(), true, false);
    let titles: Vec<&str> = full.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "resolve object IDs (round 1)",
            "resolve object IDs (round 2)",
            "built, test_log",
            "image_ref"
        ],
        "{full}"
    );
    insta::assert_snapshot!("release_plan_published", full.to_string());
    // A published draft: the publish waits only for what exists.
    let quick = release::plan(src(), base(), true, true);
    assert_eq!(
        quick.documents.last().map(|d| (d.title.as_str(), d.after.clone())),
        Some(("image_ref", vec![3]))
    );
}

#[test]
fn a_value_feeding_a_step_cuts_a_wave_and_shows_a_placeholder() {
    let plan = versioned::plan(src(), "debian:bookworm-slim".into());
    let titles = titles_and_waits(&plan);
    assert_eq!(
        titles,
        [
            ("resolve object IDs (round 1)", &[][..]),
            ("version, test_log", &[1][..]),
            ("resolve object IDs (round 2) (with the value of `version`)", &[1, 2]),
            ("image_ref (with the value of `version`)", &[2, 3]),
        ],
        "{plan}"
    );
    let last = &plan.documents[3].query;
    assert!(
        last.contains(r#"withLabel(name:"org.opencontainers.image.version",value:"<value:version>")"#),
        "{plan}"
    );
    assert!(
        last.contains(r#"publish(address:"127.0.0.1:5000/app:<value:version>")"#),
        "{plan}"
    );
    assert!(versioned::EDGES.contains(&("version", "image_ref")));
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn a_value_can_feed_a_step_in_an_if_block() {
    let off = tagged_release::plan(src(), "debian:bookworm-slim".into(), false);
    let titles: Vec<&str> = off.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(titles, ["version"], "{off}");
    let on = tagged_release::plan(src(), "debian:bookworm-slim".into(), true);
    let titles: Vec<&str> = on.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "version",
            // The image's object arguments are only known once its step is called, with the value.
            "resolve object IDs (round 1) (with the value of `version`)",
            "resolve object IDs (round 2) (with the value of `version`)",
            "image_ref (with the value of `version`)"
        ],
        "{on}"
    );
}

#[test]
fn static_metadata() {
    assert_eq!(linear::NAME, "linear");
    assert_eq!(linear::DOC, "Test, then build: a linear chain of levels.");
    assert_eq!(linear::LEVELS, &[&["tested"][..], &["size"], &["digest"]]);
    assert_eq!(fan_out::LEVELS, &[&["test_log", "lint_log", "bin_size", "report"][..]]);
    assert_eq!(
        diamond::LEVELS,
        &[&["built"][..], &["test_log", "lint_log"], &["image_ref"]]
    );
    assert_eq!(ordered::LEVELS, &[&["smoke_code"][..], &["image_ref"]]);
    assert_eq!(fan_out::STEPS[4], ("summary", "steps::report"));
    assert!(diamond::EDGES.contains(&("test_log", "image_ref")));
    assert!(diamond::EDGES.contains(&("tc", "tests")));
}

#[test]
fn steps_stay_plain_functions() {
    let dag = Query::detached();
    let tc = toolchain(&dag, dag.directory());
    let printed = unit_tests(tc, "x")
        .selection()
        .select("stdout", vec![])
        .print(dagger::querybuilder::IdMode::Placeholder(&|o| o.type_name.to_owned()))
        .expect("prints");
    assert!(printed.contains(r#"withExec(args:["cargo","test","x"])"#), "{printed}");
}

/// Answers ID requests with the plan's placeholders, so documents of a run equal the plan's.
fn plan_like_engine(fail_on: Option<&'static str>) -> impl Fn(&testkit::Recorded) -> testkit::Reply + Send + Sync {
    move |req| {
        let doc = req.document();
        let data = auto_reply(&doc, &|path: &[String]| match path.last().map(String::as_str) {
            Some("id") => json!(format!("<id:{}>", path[0])),
            Some("size") => json!(1234),
            Some("exitCode") => json!(0),
            Some("entries") => json!(["entry"]),
            // `sync` returns the object's ID, which later documents load with `node(id:)`.
            Some("sync") => json!(format!("<id:{}>", path[0])),
            _ => json!(format!("value of {}", path[0])),
        });
        if let Some(bad) = fail_on.filter(|bad| doc.contains(&format!("{bad}:"))) {
            let body = json!({
                "data": data,
                "errors": [{
                    "message": "process \"cargo test\" did not complete successfully: exit code: 101",
                    "path": [bad],
                    "extensions": {"_type": "EXEC_ERROR", "cmd": ["cargo", "test"], "exitCode": 101,
                                   "stdout": "test result: FAILED", "stderr": "thread panicked"}
                }]
            });
            let mut body = body;
            if let Some(d) = body.get_mut("data").and_then(Value::as_object_mut) {
                d.insert(bad.to_owned(), Value::Null);
            }
            return (200, "application/json", body.to_string());
        }
        (200, "application/json", json!({ "data": data }).to_string())
    }
}

async fn connect(engine: &FakeEngine) -> Query {
    Connection::builder()
        .endpoint(engine.url(), "t")
        .quiet()
        .connect()
        .await
        .expect("connect")
        .query()
}

#[tokio::test]
async fn a_run_sends_exactly_the_plan_one_request_per_level() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let plan = diamond::plan(src(), "debian:bookworm-slim".into());
    let out = diamond::run(&dag, dag.host().directory("."), "debian:bookworm-slim".into())
        .await
        .expect("runs");
    assert_eq!(out.test_log, "value of o1");
    assert_eq!(out.image_ref, "value of o3");
    assert!(
        out.built.selection().known_id().is_some(),
        "sync returns the loaded object"
    );

    let mut sent = engine.documents();
    let mut planned: Vec<String> = plan.documents.iter().map(|d| d.query.clone()).collect();
    // Requests that wait for different ones may be sent in either order; here each waits for the previous.
    assert_eq!(sent, planned, "the run sends exactly the planned documents");
    sent.sort();
    planned.sort();
    let id_rounds = plan.documents.iter().filter(|d| d.title.starts_with("resolve")).count();
    assert_eq!(sent.len(), diamond::LEVELS.len() + id_rounds);
    // One level's two outputs arrive in one document.
    assert!(sent.iter().any(|d| d.contains("o1:") && d.contains("o2:")), "{sent:#?}");
}

#[tokio::test]
async fn fan_out_costs_levels_plus_one_requests() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let out = fan_out::run(&dag, dag.host().directory(".")).await.expect("runs");
    assert_eq!(out.bin_size, 1234);
    assert_eq!(out.report, "value of o3");
    // The host directory and the cache volume are resolved together; then the one level.
    assert_eq!(
        engine.requests().len(),
        fan_out::LEVELS.len() + 1,
        "{:#?}",
        engine.documents()
    );
}

#[tokio::test]
async fn each_output_field_tells_the_engine_which_output_it_serves() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    fan_out::run(&dag, dag.host().directory(".")).await.expect("runs");
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for req in engine.requests() {
        let body: Value = serde_json::from_str(&req.body).expect("JSON body");
        let document = body["query"].as_str().expect("query").to_owned();
        match body.get("extensions").and_then(|e| e.get("serves")) {
            // An ID round names nothing.
            None => assert!(!document.contains("o0:") && !document.contains("o1:"), "{document}"),
            Some(serves) => {
                for (alias, name) in serves.as_object().expect("serves") {
                    assert!(
                        document.contains(&format!("{alias}:")),
                        "{alias} is a field of {document}"
                    );
                    named.insert(alias.clone(), name.as_str().expect("a name").to_owned());
                }
            }
        }
    }
    let names: Vec<&str> = named.values().map(String::as_str).collect();
    assert_eq!(names.len(), 4, "{named:?}");
    for output in ["bin_size", "report"] {
        assert!(names.contains(&output), "{output} in {named:?}");
    }
    // The first request carries the pipeline's graph, once, in the shape the engine reads; its outputs are
    // named as their fields are.
    let graphs: Vec<(usize, Value)> = engine
        .requests()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let body: Value = serde_json::from_str(&r.body).ok()?;
            Some((i, body.get("extensions")?.get("pipeline")?.clone()))
        })
        .collect();
    assert_eq!(graphs.len(), 1);
    assert_eq!(graphs[0].0, 0, "with the first request");
    let graph = dagger_engine::PipelineGraph::from_extension(&graphs[0].1).expect("a graph the engine reads");
    assert_eq!(graph.name, "fan_out");
    let mut served: Vec<&str> = graph.nodes.iter().filter_map(|n| n.serves.as_deref()).collect();
    served.sort_unstable();
    let mut names = names;
    names.sort_unstable();
    assert_eq!(served, names);
    assert_eq!(
        graph
            .nodes
            .iter()
            .filter(|n| n.kind == dagger_engine::NodeKind::Step)
            .count(),
        fan_out::STEPS.len()
    );
    assert!(graph.edges.len() >= fan_out::EDGES.len(), "{:?}", graph.edges);
}

#[tokio::test]
async fn a_failed_output_names_its_binding_and_step_and_keeps_partial_results() {
    let engine = FakeEngine::start(plan_like_engine(Some("o1"))).await;
    let dag = connect(&engine).await;
    let err = diamond::run(&dag, dag.host().directory("."), "debian:bookworm-slim".into())
        .await
        .expect_err("o1 fails");
    assert_eq!(err.failures.len(), 1);
    let failure = &err.failures[0];
    assert_eq!(
        (failure.output, failure.binding, failure.step),
        ("test_log", "tests", "unit_tests")
    );
    let Error::Exec(exec) = &failure.error else {
        panic!("expected an exec error, got {:?}", failure.error);
    };
    assert_eq!(exec.exit_code, 101);
    assert_eq!(exec.stderr, "thread panicked");
    // The sibling in the same level finished; the later level did not run.
    assert_eq!(err.partial.lint_log.as_deref(), Some("value of o2"));
    assert!(err.partial.built.is_some());
    assert!(err.partial.image_ref.is_none());
    assert_eq!(err.skipped, vec!["image_ref"]);
    assert!(
        !engine.documents().iter().any(|d| d.contains("o3:")),
        "the last level was not sent"
    );
    insta::assert_snapshot!("failed_output_display", err.to_string());
}

/// Answers like [`plan_like_engine`], but holds the slow branch's first request (`o0`) for two seconds and
/// records whether the chain's last request arrived while the slow one was still being answered.
/// A fake engine whose request for `o0` (the slow branch) is slow: it is answered only once the request for
/// `o4` (the end of the other chain) has arrived — or after 2 s when `wait_for_chain_end` is off or after 60 s
/// at the most, so a run that waits for the slow branch before sending `o4` is seen, however loaded the
/// machine, and not by a race against a fixed sleep.
fn slow_branch_engine(
    fail_on: Option<&'static str>,
    slow_done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    chain_end_early: std::sync::Arc<std::sync::Mutex<Option<bool>>>,
    wait_for_chain_end: bool,
) -> impl Fn(&testkit::Recorded) -> testkit::Reply + Send + Sync {
    use std::sync::atomic::Ordering;
    let inner = plan_like_engine(fail_on);
    let chain_end = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    move |req| {
        let doc = req.document();
        if doc.contains("o4:") {
            *chain_end_early.lock().expect("lock") = Some(!slow_done.load(Ordering::SeqCst));
            let (seen, cv) = &*chain_end;
            *seen.lock().expect("lock") = true;
            cv.notify_all();
        }
        if doc.contains("o0:") {
            let (seen, cv) = &*chain_end;
            let limit = if wait_for_chain_end { 60 } else { 2 };
            let guard = seen.lock().expect("lock");
            let _ = cv
                .wait_timeout_while(guard, std::time::Duration::from_secs(limit), |seen| {
                    !wait_for_chain_end || !*seen
                })
                .expect("wait");
            slow_done.store(true, Ordering::SeqCst);
        }
        inner(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_does_not_wait_for_a_slow_branch() {
    let slow_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let early = std::sync::Arc::new(std::sync::Mutex::new(None));
    let engine = FakeEngine::start(slow_branch_engine(None, slow_done.clone(), early.clone(), true)).await;
    let dag = connect(&engine).await;
    let plan = unbalanced::plan(src());
    let out = unbalanced::run(&dag, dag.host().directory(".")).await.expect("runs");
    assert_eq!(out.slow_log, "value of o0");
    assert_eq!(out.digest, "value of o4");
    assert_eq!(
        *early.lock().expect("lock"),
        Some(true),
        "the chain's last output was sent while the slow branch was still running"
    );
    let mut sent = engine.documents();
    let mut planned: Vec<String> = plan.documents.iter().map(|d| d.query.clone()).collect();
    sent.sort();
    planned.sort();
    assert_eq!(
        sent, planned,
        "the run sends exactly the planned documents, in some order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_skips_only_what_waits_for_it() {
    let slow_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let early = std::sync::Arc::new(std::sync::Mutex::new(None));
    let engine = FakeEngine::start(slow_branch_engine(Some("o2"), slow_done, early, false)).await;
    let dag = connect(&engine).await;
    let err = unbalanced::run(&dag, dag.host().directory("."))
        .await
        .expect_err("linted fails");
    assert_eq!(err.failures.len(), 1, "{err}");
    assert_eq!(err.failures[0].output, "linted");
    assert_eq!(err.skipped, vec!["size", "digest"], "{err}");
    // The slow branch and its follower ran to the end.
    assert_eq!(err.partial.slow_log.as_deref(), Some("value of o0"));
    assert_eq!(err.partial.slow_code, Some(0));
    assert!(!engine.documents().iter().any(|d| d.contains("o3:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_fast_stops_everything_not_sent_yet() {
    let slow_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let early = std::sync::Arc::new(std::sync::Mutex::new(None));
    let engine = FakeEngine::start(slow_branch_engine(Some("o2"), slow_done, early, false)).await;
    let dag = connect(&engine).await;
    let err = unbalanced_fail_fast::run(&dag, dag.host().directory("."))
        .await
        .expect_err("linted fails");
    assert_eq!(err.failures[0].output, "linted");
    // The slow request was in flight and finished; its follower was never sent.
    assert_eq!(err.partial.slow_log.as_deref(), Some("value of o0"));
    assert!(err.partial.slow_code.is_none());
    let mut skipped = err.skipped.clone();
    skipped.sort_unstable();
    assert_eq!(skipped, vec!["digest", "size", "slow_code"], "{err}");
    assert!(!engine.documents().iter().any(|d| d.contains("o1:")));
}

/// `?` turns a pipeline's error into `dagger::Error`, keeping the partial results reachable.
async fn diamond_with_question_mark(dag: &Query) -> Result<String, Error> {
    let out = diamond::run(dag, dag.host().directory("."), "debian:bookworm-slim".into()).await?;
    Ok(out.image_ref)
}

#[tokio::test]
async fn question_mark_converts_a_pipeline_error_into_dagger_error() {
    let engine = FakeEngine::start(plan_like_engine(Some("o1"))).await;
    let dag = connect(&engine).await;
    let err = diamond_with_question_mark(&dag).await.expect_err("o1 fails");
    let Error::Pipeline(e) = &err else {
        panic!("expected Error::Pipeline, got {err:?}");
    };
    assert_eq!(e.pipeline, "diamond");
    assert_eq!(e.failures[0].output, "test_log");
    let partial = e
        .partial_as::<diamond::Partial>()
        .expect("the diamond's partial outputs");
    assert_eq!(partial.lint_log.as_deref(), Some("value of o2"));
    // The same text as the pipeline error, and the failed command as its source.
    assert!(
        err.to_string()
            .starts_with("pipeline `diamond` failed\n- output `test_log`"),
        "{err}"
    );
    let source = std::error::Error::source(&err).expect("a source");
    assert!(source.to_string().contains("exit code: 101"), "{source}");
}

#[tokio::test]
async fn a_matrix_runs_every_element_in_one_request_and_returns_maps() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let plan = matrix::plan(src(), versions());
    let out = matrix::run(&dag, dag.host().directory("."), versions())
        .await
        .expect("runs");
    assert_eq!(
        out.test_logs,
        BTreeMap::from([
            ("1.80".to_owned(), "value of o0".to_owned()),
            ("1.85".to_owned(), "value of o1".to_owned())
        ])
    );
    assert_eq!(out.test_codes.len(), 2);
    assert_eq!(out.size, 1234);
    let sent = engine.documents();
    let planned: Vec<String> = plan.documents.iter().map(|d| d.query.clone()).collect();
    assert_eq!(sent, planned, "3 requests for the whole matrix");
}

#[tokio::test]
async fn a_failed_element_skips_its_own_followers_and_what_waits_for_all() {
    // Outputs are numbered in declaration order, then element order: o0 = test_logs["1.80"],
    // o1 = test_logs["1.85"], o2 = test_codes["1.80"], o3 = test_codes["1.85"], o4 = size.
    let engine = FakeEngine::start(plan_like_engine(Some("o0"))).await;
    let dag = connect(&engine).await;
    let err = matrix::run(&dag, dag.host().directory("."), versions())
        .await
        .expect_err("1.80 fails");
    assert_eq!(err.failures.len(), 1, "{err}");
    assert_eq!(
        (err.failures[0].output, err.failures[0].key.as_deref()),
        ("test_logs", Some("\"1.80\""))
    );
    assert_eq!(err.skipped, ["test_codes[\"1.80\"]", "size"], "{err}");
    // The other element went on.
    assert_eq!(
        err.partial.test_logs.get("1.85").map(String::as_str),
        Some("value of o1")
    );
    assert_eq!(err.partial.test_codes.get("1.85"), Some(&0));
    assert!(
        err.to_string()
            .contains("- output `test_logs[\"1.80\"]` (binding `tests`, step `unit_tests`)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_false_condition_sends_nothing_and_gives_none() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let out = release::run(
        &dag,
        dag.host().directory("."),
        "debian:bookworm-slim".into(),
        false,
        true,
    )
    .await
    .expect("runs");
    assert!(out.image_ref.is_none() && out.test_log.is_none());
    assert!(
        !engine
            .documents()
            .iter()
            .any(|d| d.contains("publish") || d.contains("--include-ignored"))
    );

    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let plan = release::plan(src(), "debian:bookworm-slim".into(), true, false);
    let out = release::run(
        &dag,
        dag.host().directory("."),
        "debian:bookworm-slim".into(),
        true,
        false,
    )
    .await
    .expect("runs");
    assert_eq!(out.test_log.as_deref(), Some("value of o1"));
    assert_eq!(out.image_ref.as_deref(), Some("value of o2"));
    let planned: Vec<String> = plan.documents.iter().map(|d| d.query.clone()).collect();
    assert_eq!(engine.documents(), planned);
}

#[tokio::test]
async fn a_value_feeds_the_steps_after_it() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let plan = versioned::plan(src(), "debian:bookworm-slim".into());
    let out = versioned::run(&dag, dag.host().directory("."), "debian:bookworm-slim".into())
        .await
        .expect("runs");
    assert_eq!(out.version, "value of o0");
    assert_eq!(out.image_ref, "value of o2");
    // The same documents as the plan, with the value where the plan has its placeholder.
    let planned: Vec<String> = plan
        .documents
        .iter()
        .map(|d| d.query.replace("<value:version>", "value of o0"))
        .collect();
    assert_eq!(engine.documents(), planned);
}

#[tokio::test]
async fn a_failed_value_skips_the_steps_it_feeds() {
    let engine = FakeEngine::start(plan_like_engine(Some("o0"))).await;
    let dag = connect(&engine).await;
    let err = versioned::run(&dag, dag.host().directory("."), "debian:bookworm-slim".into())
        .await
        .expect_err("the version cannot be read");
    assert_eq!(err.failures[0].output, "version");
    assert_eq!(err.partial.test_log.as_deref(), Some("value of o1"));
    assert_eq!(err.skipped, ["image_ref"], "{err}");
    assert!(!engine.documents().iter().any(|d| d.contains("publish")));
}

#[tokio::test]
async fn a_value_feeds_a_step_only_when_its_condition_holds() {
    for publish in [false, true] {
        let engine = FakeEngine::start(plan_like_engine(None)).await;
        let dag = connect(&engine).await;
        let plan = tagged_release::plan(src(), "debian:bookworm-slim".into(), publish);
        let out = tagged_release::run(&dag, dag.host().directory("."), "debian:bookworm-slim".into(), publish)
            .await
            .expect("runs");
        assert_eq!(out.version, "value of o0");
        assert_eq!(out.image_ref.is_some(), publish);
        let planned: Vec<String> = plan
            .documents
            .iter()
            .map(|d| d.query.replace("<value:version>", "value of o0"))
            .collect();
        assert_eq!(engine.documents(), planned);
    }
}

#[tokio::test]
async fn an_empty_matrix_runs_what_is_outside_the_loop() {
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let out = matrix::run(&dag, dag.host().directory("."), Vec::new())
        .await
        .expect("runs");
    assert!(out.test_logs.is_empty() && out.test_codes.is_empty());
    assert_eq!(out.size, 1234);
    let plan = matrix::plan(src(), Vec::new());
    let titles: Vec<&str> = plan.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(titles, ["resolve object IDs (round 1)", "size"], "{plan}");
}

/// `doc` with every `<value:…>` placeholder of a plan, and every value the fake engine answers
/// (`value of o3`), replaced by `<value>`: a plan's documents and a run's then read the same.
fn values_blanked(doc: &str) -> String {
    let mut out = String::new();
    let mut rest = doc;
    loop {
        let next = [rest.find("<value:"), rest.find("value of o")]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let len = if tail.starts_with("<value:") {
            tail.find('>').map_or(tail.len(), |e| e + 1)
        } else {
            "value of o".len()
                + tail["value of o".len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .count()
        };
        out.push_str("<value>");
        rest = &tail[len..];
    }
}

#[test]
fn a_value_feeds_the_steps_of_its_own_element() {
    let plan = per_version::plan(src(), versions(), "debian:bookworm-slim".into());
    let titles = titles_and_waits(&plan);
    assert_eq!(
        titles,
        [
            ("resolve object IDs (round 1)", &[][..]),
            ("reported × 2", &[1][..]),
            // The binaries' IDs are asked for once the images that take them are built, with the values.
            (
                "resolve object IDs (round 2) (with the value of `reported` × 2)",
                &[1, 2]
            ),
            ("image_refs × 2 (with the value of `reported` × 2)", &[2, 3]),
        ],
        "{plan}"
    );
    // Each element's image carries its own toolchain's binary: two publishes, two toolchains.
    let last = &plan.documents[3].query;
    assert_eq!(last.matches("publish(").count(), 2, "{plan}");
    assert!(last.contains("app:1.80") && last.contains("app:1.85"), "{plan}");
    assert!(per_version::EDGES.contains(&("reported", "img")));
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn a_value_of_the_body_feeds_every_element() {
    let plan = channels::plan(
        src(),
        "debian:bookworm-slim".into(),
        ["beta", "stable"].map(String::from).to_vec(),
    );
    let titles: Vec<&str> = plan.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "version",
            "resolve object IDs (round 1) (with the value of `version`)",
            "resolve object IDs (round 2) (with the value of `version`)",
            "published × 2 (with the value of `version`)"
        ],
        "{plan}"
    );
    let last = &plan.documents[3].query;
    assert!(
        last.contains("app:<value:version>-beta") && last.contains("app:<value:version>-stable"),
        "{plan}"
    );
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn blocks_nest() {
    let targets_of = |pairs: &[(&str, bool)]| -> BTreeMap<String, bool> {
        pairs.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    };
    let two = targets_of(&[("arm64", false), ("x86_64", true)]);
    let plan = targets::plan(src(), two.clone(), true, versions());
    let titles: Vec<&str> = plan.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "resolve object IDs (round 1)",
            "resolve object IDs (round 2)",
            // Apart: `refs` waits for `built`, nothing waits for `soak_logs`.
            "built × 2",
            "soak_logs × 2",
            "refs × 1"
        ],
        "{plan}"
    );
    let all: String = plan.documents.iter().map(|d| d.query.clone()).collect();
    assert!(
        !all.contains("app:arm64"),
        "only the marked target is published: {plan}"
    );
    insta::assert_snapshot!(plan.to_string());
    // Not a nightly: no soak test is planned.
    let day = targets::plan(src(), two, false, versions());
    let all: String = day.documents.iter().map(|d| d.query.clone()).collect();
    assert!(!all.contains("--ignored"), "{day}");
}

#[test]
fn a_loop_binding_that_waits_for_a_value_is_a_map_after_its_loop() {
    let plan = bundled::plan(src(), versions());
    let titles: Vec<&str> = plan.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "resolve object IDs (round 1)",
            "reported × 2",
            "resolve object IDs (round 2) (with the value of `reported` × 2)",
            "sizes × 2, entries (with the value of `reported` × 2)"
        ],
        "{plan}"
    );
    let last = &plan.documents[3].query;
    assert!(
        last.contains(r#"withFile(path:"app-1.80""#) && last.contains(r#"withFile(path:"app-1.85""#),
        "{plan}"
    );
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn a_value_computed_from_a_value_inside_an_if_block() {
    let plan = noted::plan(src(), "debian:bookworm-slim".into(), true);
    let titles: Vec<&str> = plan.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "version",
            "notes_text (with the value of `version`)",
            "resolve object IDs (round 1) (with the value of `notes_text`)",
            "resolve object IDs (round 2) (with the value of `notes_text`)",
            "image_ref (with the value of `notes_text`)"
        ],
        "{plan}"
    );
    assert!(
        plan.documents[1]
            .query
            .contains(r#"file(path:"changes/<value:version>.md")"#),
        "{plan}"
    );
    insta::assert_snapshot!(plan.to_string());
    let off = noted::plan(src(), "debian:bookworm-slim".into(), false);
    let titles: Vec<&str> = off.documents.iter().map(|d| d.title.as_str()).collect();
    assert_eq!(titles, ["version"], "{off}");
}

/// Runs `run` on the fake engine and checks it sent the documents of `plan`, values in place of placeholders.
async fn runs_as_planned<T, F, Fut>(plan: Plan, run: F) -> T
where
    F: FnOnce(Query) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let engine = FakeEngine::start(plan_like_engine(None)).await;
    let dag = connect(&engine).await;
    let out = run(dag).await;
    let sent: Vec<String> = engine.documents().iter().map(|d| values_blanked(d)).collect();
    let planned: Vec<String> = plan.documents.iter().map(|d| values_blanked(&d.query)).collect();
    assert_eq!(sent, planned, "{plan}");
    out
}

#[tokio::test]
async fn nested_shapes_run_as_planned() {
    let base = || "debian:bookworm-slim".to_owned();
    let out = runs_as_planned(per_version::plan(src(), versions(), base()), |dag| async move {
        per_version::run(&dag, dag.host().directory("."), versions(), base()).await
    })
    .await
    .expect("runs");
    assert_eq!(out.reported.len(), 2);
    assert_eq!(out.image_refs.keys().collect::<Vec<_>>(), ["1.80", "1.85"]);

    let chans = || ["beta", "stable"].map(String::from).to_vec();
    let out = runs_as_planned(channels::plan(src(), base(), chans()), |dag| async move {
        channels::run(&dag, dag.host().directory("."), base(), chans()).await
    })
    .await
    .expect("runs");
    assert_eq!(out.published.len(), 2);

    let marked = || BTreeMap::from([("arm64".to_owned(), false), ("x86_64".to_owned(), true)]);
    let out = runs_as_planned(targets::plan(src(), marked(), true, versions()), |dag| async move {
        targets::run(&dag, dag.host().directory("."), marked(), true, versions()).await
    })
    .await
    .expect("runs");
    assert_eq!(out.built.len(), 2);
    assert_eq!(out.refs.keys().collect::<Vec<_>>(), ["x86_64"]);
    assert_eq!(out.soak_logs.map(|m| m.len()), Some(2));
    let out = runs_as_planned(targets::plan(src(), marked(), false, versions()), |dag| async move {
        targets::run(&dag, dag.host().directory("."), marked(), false, versions()).await
    })
    .await
    .expect("runs");
    assert!(out.soak_logs.is_none());

    let out = runs_as_planned(bundled::plan(src(), versions()), |dag| async move {
        bundled::run(&dag, dag.host().directory("."), versions()).await
    })
    .await
    .expect("runs");
    assert_eq!(out.sizes.len(), 2);

    let out = runs_as_planned(noted::plan(src(), base(), true), |dag| async move {
        noted::run(&dag, dag.host().directory("."), base(), true).await
    })
    .await
    .expect("runs");
    assert!(out.image_ref.is_some() && out.notes_text.is_some());
}

#[tokio::test]
async fn a_failed_element_value_skips_only_that_elements_steps() {
    // `o0` is the first element's `reported` (1.80): its image is not built; 1.85's is.
    let engine = FakeEngine::start(plan_like_engine(Some("o0"))).await;
    let dag = connect(&engine).await;
    let err = per_version::run(
        &dag,
        dag.host().directory("."),
        versions(),
        "debian:bookworm-slim".into(),
    )
    .await
    .expect_err("1.80's version cannot be read");
    assert_eq!(err.failures.len(), 1, "{err}");
    assert_eq!(err.failures[0].output, "reported");
    assert_eq!(err.failures[0].key.as_deref(), Some("\"1.80\""));
    assert_eq!(err.skipped, ["image_refs[\"1.80\"]"], "{err}");
    assert_eq!(err.partial.image_refs.keys().collect::<Vec<_>>(), ["1.85"]);
    let sent = engine.documents();
    assert_eq!(
        sent.iter().map(|d| d.matches("publish(").count()).sum::<usize>(),
        1,
        "{sent:#?}"
    );
}

#[test]
fn graphs_draw_every_shape_as_mermaid_and_dot() {
    // The quickstart: levels of `after`, a value feeding a step (a second wave).
    let quickstart = &examples::quickstart_dsl::quickstart::GRAPH;
    insta::assert_snapshot!("graph_quickstart_mermaid", quickstart.mermaid());
    insta::assert_snapshot!("graph_quickstart_dot", quickstart.dot());
    // Loops, an `if` on a loop variable inside a loop, a loop inside an `if`.
    insta::assert_snapshot!("graph_targets_mermaid", targets::GRAPH.mermaid());
    insta::assert_snapshot!("graph_targets_dot", targets::GRAPH.dot());
    // A value per element feeding that element's steps.
    insta::assert_snapshot!("graph_per_version_mermaid", per_version::GRAPH.mermaid());
    // A step returning a tuple, config values, a step in another module.
    insta::assert_snapshot!("graph_configured_build_mermaid", configured_build::GRAPH.mermaid());
    let fan = fan_out::GRAPH.mermaid();
    assert!(fan.contains(r#"b4["summary = steps::report(…)"]:::step"#), "{fan}");
}

#[test]
fn a_graph_names_what_the_macro_knows() {
    let g = &diamond::GRAPH;
    assert_eq!(g.name, "diamond");
    assert_eq!(g.inputs.len(), 2);
    assert_eq!(g.inputs[0].ty, "Directory");
    let image_ref = g.outputs.iter().find(|o| o.name == "image_ref").expect("image_ref");
    assert_eq!((image_ref.level, image_ref.wave), (3, 1));
    let after: Vec<(&str, &str)> = g
        .edges
        .iter()
        .filter(|e| e.kind == dagger::graph::EdgeKind::After)
        .map(|e| (e.from, e.to))
        .collect();
    assert!(after.contains(&("test_log", "image_ref")), "{after:?}");
    let t = &targets::GRAPH;
    // `for (target, publish) in targets`, `if publish` in it, `if nightly`, `for version in versions` in it.
    assert_eq!(t.blocks.len(), 4);
    assert!(matches!(
        t.blocks[1].kind,
        dagger::graph::GraphBlockKind::If { negated: false }
    ));
    assert_eq!((t.blocks[1].input, t.blocks[1].parent), ("publish", Some(0)));
    assert_eq!((t.blocks[2].input, t.blocks[2].parent), ("nightly", None));
    assert_eq!((t.blocks[3].input, t.blocks[3].parent), ("versions", Some(2)));
    assert_eq!(t.blocks[0].input, "targets");
    let v = &per_version::GRAPH;
    assert!(
        v.edges
            .iter()
            .any(|e| (e.from, e.to, e.kind) == ("reported", "img", dagger::graph::EdgeKind::Value))
    );
}
