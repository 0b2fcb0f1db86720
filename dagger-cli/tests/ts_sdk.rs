//! The official TypeScript SDK (@dagger.io/dagger 0.21.9) as a real client of `dagger-rs session`: a plain
//! JavaScript program (`tests/ts/session_client.mjs`, run by `node`) lets the SDK start the CLI through
//! `_EXPERIMENTAL_DAGGER_CLI_BIN`, builds and reads directories, passes objects by ID, loads them back with the
//! SDK's `loadDirectoryFromID`/`loadContainerFromID`, reads the host, exports, and runs a container pipeline
//! against a registry on loopback. That SDK ends the session by sending SIGTERM to the CLI and turns a CLI
//! killed by the signal into an unhandled error (Node.js exit code 1); so these tests check the program exits 0,
//! and that the engine is gone afterwards with nothing left in its cache directory. The SDK is installed in
//! `target/ts-sdk` by `scripts/ts-sdk.sh --setup`; without Node.js the tests are skipped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::registry::{LocalRegistry, push_busybox};

const BIN: &str = env!("CARGO_BIN_EXE_dagger-rs");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds dagger-engine")
        .to_owned()
}

/// Whether `node` runs; when it does not, the caller skips with the reason printed.
fn node_available() -> bool {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => panic!("`node --version` failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "skipped: Node.js is not installed (`node` is not on PATH); install Node.js 20 or later with npm, \
                 then run scripts/ts-sdk.sh --setup"
            );
            false
        }
        Err(e) => panic!("cannot run `node`: {e}"),
    }
}

/// Fails, saying how to install it, when the SDK is not in `target/ts-sdk`.
fn require_sdk() {
    let sdk = workspace().join("target/ts-sdk/node_modules/@dagger.io/dagger/package.json");
    assert!(
        sdk.exists(),
        "the TypeScript SDK is not installed: run `scripts/ts-sdk.sh --setup` (it installs {}), then rerun",
        workspace().join("target/ts-sdk").display()
    );
}

/// Runs the client with the SDK starting `dagger-rs session` on the cache directory `cache`; kills it and fails
/// if it has not ended within `limit` (the SDK itself would wait up to 300 s for a CLI that does not stop).
fn run_client(cache: &Path, registry: Option<&str>, limit: Duration) -> Output {
    let mut cmd = Command::new("node");
    cmd.arg("tests/ts/session_client.mjs")
        .current_dir(workspace())
        .env("_EXPERIMENTAL_DAGGER_CLI_BIN", BIN)
        .env("DAGGER_RS_CACHE_DIR", cache)
        .env("DAGGER_RS_PROGRESS", "plain")
        .env_remove("DAGGER_SESSION_PORT")
        .env_remove("DAGGER_SESSION_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match registry {
        Some(host) => cmd.env("DRS_TEST_REGISTRY", host),
        None => cmd.env_remove("DRS_TEST_REGISTRY"),
    };
    let mut child = cmd.spawn().expect("node starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the client did not end within {limit:?}:\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The processes whose environment names `cache` as their cache directory (the engine inherits it from node).
fn processes_using(cache: &Path) -> Vec<u32> {
    let marker = format!("DAGGER_RS_CACHE_DIR={}\0", cache.display());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(environ) = std::fs::read(e.path().join("environ"))
            && String::from_utf8_lossy(&environ).contains(&marker)
        {
            found.push(pid);
        }
    }
    found
}

/// Checks the program exited 0 with every check passed, then that the engine it started is gone and left
/// nothing behind in `cache`. Returns the program's stdout and the engine's process ID.
fn ended_cleanly(out: &Output, cache: &Path) -> (String, u32) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        !stderr.contains("killed with SIGTERM"),
        "the CLI died from the SDK's SIGTERM instead of stopping cleanly:\n{report}"
    );
    assert_eq!(out.status.code(), Some(0), "node exited with {}:\n{report}", out.status);
    assert!(!stdout.contains("FAIL"), "{report}");
    assert!(stdout.contains("ok   "), "the client ran no checks:\n{report}");
    assert!(stdout.contains("connection closed\n"), "{report}");
    assert!(stdout.contains("node exits with code 0\n"), "{report}");
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("engine pid: "))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the client printed no engine pid:\n{report}"));

    // Node.js waits for the CLI it started, so the engine is gone by now; allow a moment all the same.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_using(cache).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        processes_using(cache).is_empty(),
        "processes still use the cache directory: {:?} (engine pid {pid})",
        processes_using(cache)
    );
    let tmp = cache.join("tmp");
    assert!(tmp.is_dir(), "the engine never made {}", tmp.display());
    assert!(entries(&tmp).is_empty(), "left in tmp/: {:?}", entries(&tmp));
    let engines = entries(&cache.join("engines"));
    assert!(engines.is_empty(), "engine locks left: {engines:?}");
    let runtime = entries(&cache.join("runtime"));
    assert!(runtime.is_empty(), "container state left: {runtime:?}");
    (stdout, pid)
}

#[test]
fn the_sdk_ends_its_session_with_sigterm_and_exits_0() {
    if !node_available() {
        return;
    }
    require_sdk();
    let cache = tempfile::tempdir().expect("cache");
    let out = run_client(cache.path(), None, Duration::from_secs(240));
    let (stdout, _) = ended_cleanly(&out, cache.path());
    for check in [
        "ok   directory().withNewFile().file().contents()",
        "ok   a directory passed by ID",
        "ok   a synced file passed by ID",
        "ok   relative host paths resolve against --workdir",
        "ok   export to the host",
        "ok   entries of a loaded directory",
        "ok   building on a loaded directory",
        "ok   contents of a loaded file",
        "ok   loading a File ID as a Directory names both types",
        "ok   withoutFile b/*.txt",
        "ok   withoutDirectory a*",
        "ok   withoutFiles with patterns",
        "ok   glob marks directories",
        "ok   withFile(\"\")",
        "ok   withFile(\".\")",
        "ok   withFile(\"/\")",
        "ok   exists follows a link",
        "ok   the symlink check sees the link",
        "ok   doNotFollowSymlinks looks at the link",
        "ok   a file name with a directory is an error",
        "ok   gitignore: root entries",
        "ok   gitignore: a negation re-includes",
        "ok   gitignore: a nested .gitignore",
        "ok   gitignore: a parent's rules apply below it",
        "ok   gitignore: an excluded .gitignore still applies",
        "ok   gitignore: an ignored path is not found",
        "ok   gitignore: no .git, no rules",
        "ok   Directory.filter(gitignore)",
        "ok   directory(path) keeps its mode",
        "ok   a copy to a new path keeps its mode",
        "ok   host files keep their times",
        "ok   wording: a missing directory",
        "ok   wording: a missing file, the path as given",
        "ok   wording: a directory as a file",
        "ok   wording: a file as a directory",
        "ok   wording: outside its parent",
        "ok   wording: a removal pattern in a missing directory",
    ] {
        assert!(stdout.contains(check), "missing `{check}`:\n{stdout}");
    }
}

#[test]
fn the_sdk_runs_a_container_pipeline_and_exits_0() {
    if !node_available() {
        return;
    }
    require_sdk();
    let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(push_busybox(&registry, "busybox:latest"));
    let cache = tempfile::tempdir().expect("cache");
    let out = run_client(cache.path(), Some(&registry.host()), Duration::from_secs(240));
    let (stdout, pid) = ended_cleanly(&out, cache.path());
    for check in [
        "ok   container stdout",
        "ok   container exitCode",
        "ok   a file the exec made",
        "ok   dag.loadContainerFromID: workdir",
        "ok   dag.loadContainerFromID: exec on the loaded container",
        "ok   groups: the user's",
        "ok   groups: an explicit group only",
        "ok   redirect: stdout into a mounted directory",
        "ok   redirect: stdin from a mounted directory",
        "ok   redirect: against the workdir",
        "ok   redirect: expanded",
        "ok   redirect: stdin from a mounted secret",
        "ok   expand: withSymlink expands both",
        "ok   expand: a secret variable is refused",
        "ok   mounts: withFile onto a mounted file",
        "ok   mounts: a file mount hides the secret on read-back",
        "ok   mounts: the exec sees the secret",
        "ok   cache: the volume's source and owner",
        "ok   cache: LOCKED from the volume",
        "ok   stubs: an exec that changes nothing",
        "ok   modes: mounted, copied, written below",
        "ok   withNewFile onto a directory",
        "ok   wording: stdout before any exec",
        "ok   wording: expect failure, exit 0",
        "ok   wording: tmpfs",
        "ok   wording: cache",
        "ok   publish returns the tag and the digest",
    ] {
        assert!(stdout.contains(check), "missing `{check}`:\n{stdout}");
    }
    // The containers' network namespaces went with the engine.
    let namespaces: Vec<String> = entries(Path::new("/var/run/netns"))
        .into_iter()
        .filter(|n| n.starts_with(&format!("drs-{pid}-")))
        .collect();
    assert!(namespaces.is_empty(), "network namespaces left: {namespaces:?}");
}
