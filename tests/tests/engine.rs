//! The embedded engine, driven through the SDK and through raw HTTP: directories, files, host access,
//! secrets, IDs, caching across restarts, deduplication, and bad input.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dagger::prelude::*;
use dagger::{DirectoryExportOpts, DirectoryWithDirectoryOpts, Error, HostDirectoryOpts};
use dagger_engine::{Config, EventKind, Session};

struct Env {
    session: Session,
    dag: Query,
    _cache: tempfile::TempDir,
    work: tempfile::TempDir,
}

async fn start_in_dir(cache: &std::path::Path) -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    start_with(cache.to_owned(), tmp).await
}

async fn start_in(cache: tempfile::TempDir) -> Env {
    let path = cache.path().to_owned();
    start_with(path, cache).await
}

async fn start_with(cache_dir: std::path::PathBuf, cache: tempfile::TempDir) -> Env {
    let work = tempfile::tempdir().expect("workdir");
    let (session, dag) = testkit::start_engine(Config {
        cache_dir,
        ..Config::for_dir(work.path())
    })
    .await;
    Env {
        session,
        dag,
        _cache: cache,
        work,
    }
}

async fn start() -> Env {
    start_in(tempfile::tempdir().expect("cache dir")).await
}

#[tokio::test]
async fn version_and_platform() {
    let env = start().await;
    assert!(
        env.dag
            .version()
            .await
            .expect("version")
            .starts_with("dagger-rs-engine v")
    );
    assert_eq!(env.dag.default_platform().await.expect("platform").0, "linux/amd64");
}

#[tokio::test]
async fn directory_and_file_fields() {
    let env = start().await;
    let dag = &env.dag;
    let dir = dag
        .directory()
        .with_new_file("src/main.rs", "fn main() {}\n")
        .with_new_file("src/lib.rs", "// lib\nline 2\nline 3\n")
        .with_new_file("README.md", "# hi\n")
        .with_new_directory("empty");
    assert_eq!(
        dir.entries().await.expect("entries"),
        vec!["README.md", "empty/", "src/"]
    );
    assert_eq!(
        dir.glob("**/*.rs").await.expect("glob"),
        vec!["src/lib.rs", "src/main.rs"]
    );
    assert_eq!(dir.directory("src").name().await.expect("name"), "src/");
    assert_eq!(dir.name().await.expect("root name"), "/");
    let lib = dir.file("src/lib.rs");
    assert_eq!(lib.name().await.expect("file name"), "lib.rs");
    assert_eq!(lib.size().await.expect("size"), 21);
    assert_eq!(
        lib.contents_opts(dagger::FileContentsOpts::default().offset_lines(1).limit_lines(1))
            .await
            .expect("lines"),
        "line 2\n"
    );
    assert!(dir.exists("src/main.rs").await.expect("exists"));
    assert!(!dir.exists("nope").await.expect("missing"));
    assert_eq!(
        dir.stat("src").file_type().await.expect("stat"),
        Some(dagger::FileType::Directory)
    );

    let without = dir.without_file("README.md").without_directory("empty");
    assert_eq!(without.entries().await.expect("entries"), vec!["src/"]);
    let diff = dir.diff(dir.with_new_file("NEW", "x"));
    assert_eq!(diff.entries().await.expect("diff"), vec!["NEW"]);
    let filtered = dir.filter_opts(
        dagger::DirectoryFilterOpts::default()
            .include(["src"])
            .exclude(["**/lib.rs"]),
    );
    assert_eq!(
        filtered.glob("**").await.expect("filtered"),
        vec!["src/", "src/main.rs"]
    );
    let merged = dag
        .directory()
        .with_directory_opts(
            "vendor",
            dir.clone(),
            DirectoryWithDirectoryOpts::default().exclude(["src"]),
        )
        .with_file("copied.rs", lib.clone());
    assert_eq!(
        merged.glob("**").await.expect("merged"),
        vec!["copied.rs", "vendor/", "vendor/README.md", "vendor/empty/"]
    );
    assert_eq!(
        dag.file("x.txt", "same").digest().await.expect("digest"),
        dag.file("x.txt", "same").digest().await.expect("digest again")
    );
}

#[tokio::test]
async fn paths_that_escape_are_errors() {
    let env = start().await;
    let err = env
        .dag
        .directory()
        .with_new_file("../evil", "x")
        .entries()
        .await
        .expect_err("escape");
    assert!(err.to_string().contains("escapes its directory"), "{err}");
    let err = env
        .dag
        .directory()
        .file("missing.txt")
        .contents()
        .await
        .expect_err("missing");
    assert!(
        err.to_string().contains("missing.txt: no such file or directory"),
        "{err}"
    );
}

#[tokio::test]
async fn host_reads_and_exports() {
    let env = start().await;
    let w = env.work.path();
    std::fs::create_dir_all(w.join("proj/target")).expect("mkdir");
    std::fs::write(w.join("proj/a.txt"), "A").expect("write");
    std::fs::write(w.join("proj/target/junk"), "J").expect("write");
    std::fs::write(w.join("proj/.gitignore"), "target/\n").expect("write");
    std::fs::write(w.join("proj/skip.log"), "L").expect("write");
    let dag = &env.dag;

    // Without a `.git` at or above it, a directory is no repository: no gitignore rules apply (as in Dagger).
    let src = dag
        .host()
        .directory_opts("proj", HostDirectoryOpts::default().gitignore(true).exclude(["*.log"]));
    assert_eq!(
        src.entries().await.expect("entries"),
        vec![".gitignore", "a.txt", "target/"]
    );
    std::fs::create_dir_all(w.join("proj/.git")).expect("mkdir");
    let src = dag
        .host()
        .directory_opts("proj", HostDirectoryOpts::default().gitignore(true).exclude(["*.log"]));
    assert_eq!(
        src.entries().await.expect("entries"),
        vec![".git/", ".gitignore", "a.txt"]
    );
    assert_eq!(dag.host().file("proj/a.txt").contents().await.expect("host file"), "A");

    let out = dag
        .directory()
        .with_new_file("x/y.txt", "Y")
        .export_opts("out", DirectoryExportOpts::default().wipe(true))
        .await
        .expect("export");
    assert_eq!(out, w.join("out").to_string_lossy());
    assert_eq!(std::fs::read_to_string(w.join("out/x/y.txt")).expect("exported"), "Y");

    let path = dag
        .file("f.txt", "F")
        .export("single/f.txt")
        .await
        .expect("file export");
    assert_eq!(std::fs::read_to_string(&path).expect("exported file"), "F");
    let err = dag.file("f.txt", "F").export("single").await.expect_err("a directory");
    assert!(err.to_string().contains("allowParentDirPath"), "{err}");

    let err = dag
        .host()
        .directory("does-not-exist")
        .entries()
        .await
        .expect_err("missing host dir");
    assert!(
        err.to_string().contains("does-not-exist: no such file or directory"),
        "{err}"
    );

    // Host content is read when the object is made: a change makes a new object (and a new ID).
    let before = dag.host().file("proj/a.txt").id().await.expect("id");
    std::fs::write(w.join("proj/a.txt"), "B").expect("rewrite");
    let after = dag.host().file("proj/a.txt");
    assert_ne!(after.id().await.expect("id"), before);
    assert_eq!(after.contents().await.expect("new contents"), "B");
}

#[tokio::test]
async fn secrets_stay_out_of_ids() {
    let env = start().await;
    let secret = env.dag.set_secret("token", "hunter2-plaintext");
    let id = secret.id().await.expect("id");
    assert!(!id.as_str().contains("hunter2"));
    assert_eq!(secret.plaintext().await.expect("plaintext"), "hunter2-plaintext");
    assert_eq!(secret.name().await.expect("name"), "token");
    let calls = std::fs::read_dir(env.session.engine.store.root().join("calls")).expect("calls dir");
    for entry in calls.flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("read call");
        assert!(!text.contains("hunter2"), "plaintext on disk: {text}");
    }
    let from_file = env.work.path().join("token.txt");
    std::fs::write(&from_file, "from-file").expect("write");
    let uri = format!("file://{}", from_file.display());
    assert_eq!(env.dag.secret(uri).plaintext().await.expect("file secret"), "from-file");
    let err = env
        .dag
        .secret("vault://x")
        .plaintext()
        .await
        .expect_err("unsupported uri");
    assert!(err.to_string().contains("use `env://NAME` or `file://PATH`"), "{err}");
}

#[tokio::test]
async fn sync_and_node_loading() {
    let env = start().await;
    let dir = env.dag.directory().with_new_file("a", "1").sync().await.expect("sync");
    let id = dir.id().await.expect("id");
    let again = env.dag.load_directory_from_id(id.clone());
    assert_eq!(again.entries().await.expect("entries"), vec!["a"]);
    assert_eq!(again.file("a").contents().await.expect("contents"), "1");

    let err = env
        .dag
        .load_directory_from_id("garbage")
        .entries()
        .await
        .expect_err("garbled");
    assert!(err.to_string().contains("is not an ID of this engine"), "{err}");
    let file_id = env.dag.file("f", "x").id().await.expect("file id");
    let err = env
        .dag
        .directory()
        .with_directory("x", env.dag.load_directory_from_id(file_id.as_str()))
        .entries()
        .await;
    // Loading a File ID as a Directory fails where the ID is used as a Directory.
    assert!(err.is_err());
}

#[tokio::test]
async fn results_are_cached_across_restarts_and_deduplicated() {
    let keep = tempfile::tempdir().expect("cache");
    let cache_path = keep.path().join("cache");
    let env = start_in_dir(&cache_path).await;
    let build = |dag: &Query| {
        dag.directory()
            .with_new_file("a", "1")
            .with_new_file("b", "2")
            .with_new_directory("c")
    };
    assert_eq!(build(&env.dag).entries().await.expect("cold"), vec!["a", "b", "c/"]);
    let cold = env.session.engine.computed.load(Ordering::SeqCst);
    assert!(cold >= 4, "directory, two files and a directory were computed: {cold}");
    assert_eq!(build(&env.dag).entries().await.expect("warm"), vec!["a", "b", "c/"]);
    assert_eq!(
        env.session.engine.computed.load(Ordering::SeqCst),
        cold,
        "the second run is a cache hit"
    );

    // Two identical requests in flight at once compute once.
    let fresh = |dag: &Query| dag.directory().with_new_file("dedup", "x".repeat(1 << 20));
    let (a, b) = tokio::join!(fresh(&env.dag).entries(), fresh(&env.dag).entries());
    assert_eq!(a.expect("a"), b.expect("b"));
    assert_eq!(env.session.engine.computed.load(Ordering::SeqCst), cold + 1);

    // A new engine on the same cache directory finds the results on disk.
    drop(env);
    let env2 = Session::start(Config {
        cache_dir: cache_path.clone(),
        ..Config::for_dir(std::env::temp_dir())
    })
    .await
    .expect("restart");
    let mut events = env2.engine.subscribe();
    let dag = testkit::connect_to(&env2).await;
    assert_eq!(
        build(&dag).entries().await.expect("after restart"),
        vec!["a", "b", "c/"]
    );
    assert_eq!(
        env2.engine.computed.load(Ordering::SeqCst),
        0,
        "nothing recomputed after a restart"
    );
    let ev = events.try_recv().expect("an event");
    assert_eq!(ev.kind, EventKind::Cached);
    assert_eq!(ev.op, "Directory.withNewDirectory");
}

#[tokio::test]
async fn unsupported_fields_say_so() {
    let env = start().await;
    let err = env
        .dag
        .directory()
        .docker_build()
        .with_exec(["true"])
        .stdout()
        .await
        .expect_err("unsupported");
    assert_eq!(
        err.to_string(),
        "`Directory.dockerBuild` is not supported by this engine yet (at `directory.dockerBuild`)"
    );
}

pipeline! {
    /// Files made by two steps, gathered by a third.
    pub gather(name: String) {
        let a = note(name, "a");
        let b = note(name, "b");
        let both = pair(a, b);
        out listing = both.entries();
        out first = a.contents();
        out exported = both.export("gathered") after listing;
    }
}

#[step]
fn note(dag: &Query, name: String, tag: &str) -> File {
    dag.file(format!("{name}-{tag}.txt"), format!("{tag} for {name}"))
}

#[step]
fn pair(dag: &Query, a: File, b: File) -> Directory {
    dag.directory().with_file("one", a).with_file("two", b)
}

#[tokio::test]
async fn a_pipeline_runs_end_to_end_on_the_engine() {
    let env = start().await;
    let out = gather::run(&env.dag, "ci".into()).await.expect("pipeline runs");
    assert_eq!(out.listing, vec!["one", "two"]);
    assert_eq!(out.first, "a for ci");
    assert!(out.exported.ends_with("gathered"));
    assert_eq!(
        std::fs::read_to_string(env.work.path().join("gathered/two")).expect("exported"),
        "b for ci"
    );
}

async fn raw(url: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut req = client.post(format!("{url}/query")).body(body);
    if let Some(t) = token {
        req = req.basic_auth(t, Some(""));
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test]
async fn bad_requests_get_clear_answers_and_the_engine_keeps_serving() {
    let env = start().await;
    let url = env.session.url();
    let token = env.session.token.as_str();
    let ok = r#"{"query":"{version}"}"#;

    let (status, body) = raw(&url, None, ok).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = raw(&url, Some("wrong"), ok).await;
    assert_eq!(status, 401);

    let (status, body) = raw(&url, Some(token), "{not json").await;
    assert_eq!(status, 400);
    assert!(body.contains("not a GraphQL JSON request"), "{body}");

    let (status, body) = raw(&url, Some(token), r#"{"query":"{version"}"#).await;
    assert_eq!(status, 200);
    assert!(body.contains("errors"), "{body}");

    let (_, body) = raw(&url, Some(token), r#"{"query":"{nope}"}"#).await;
    assert!(body.contains("nope"), "an unknown field is named: {body}");

    let big = format!(
        r#"{{"query":"{{version}}","pad":"{}"}}"#,
        "x".repeat(dagger_engine::server::MAX_BODY + 1)
    );
    let (status, _) = raw(&url, Some(token), big).await;
    assert_eq!(status, 413);

    let (status, body) = raw(&url, Some(token), ok).await;
    assert_eq!(status, 200);
    assert!(body.contains("dagger-rs-engine"), "{body}");
}

#[tokio::test]
async fn a_thousand_call_chain_parses_and_runs() {
    let env = start().await;
    let mut dir = env.dag.directory();
    for i in 0..1000 {
        dir = dir.with_new_file(format!("f{i}"), "x");
    }
    assert_eq!(dir.entries().await.expect("deep chain").len(), 1000);
}

#[tokio::test]
async fn the_introspection_schema_is_the_contract() {
    let env = start().await;
    let q = r#"{"query":"{ __schema { types { name kind fields(includeDeprecated: true) { name args { name defaultValue } } } } }"}"#;
    let (status, body) = raw(&env.session.url(), Some(env.session.token.as_str()), q).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let types = v["data"]["__schema"]["types"].as_array().expect("types");
    let container = types.iter().find(|t| t["name"] == "Container").expect("Container");
    let with_exec = container["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == "withExec")
        .expect("withExec");
    let expect = with_exec["args"]
        .as_array()
        .expect("args")
        .iter()
        .find(|a| a["name"] == "expect")
        .expect("expect");
    assert_eq!(expect["defaultValue"], "SUCCESS");
    let _ = Arc::new(());
    let _ = Error::NotConnected;
}
