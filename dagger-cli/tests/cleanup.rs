//! What an exec leaves on the host, whatever way the engine stops: mounted secrets live on a tmpfs of their
//! own and never reach the disk; an engine killed mid-exec leaves mounts, scratch folders, a running container
//! and a network namespace that the next engine on the cache directory collects (and says so); `serve` and
//! `session` stopped by SIGTERM or SIGINT mid-exec exit 0 and leave nothing.
//!
//! Containers run from a busybox root filesystem built from the host's `/bin/busybox`, so no registry is
//! needed. Cache directories live under the target directory, on disk (not on a tmpfs such as `/tmp` may be).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::process::{free_port, processes_with, wait_for_exit};

const BIN: &str = env!("CARGO_BIN_EXE_dagger-rs");
const TMPFS_MAGIC: u64 = 0x0102_1994;

fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a directory under the target directory")
}

/// A busybox root filesystem: `/bin/busybox` and one link per applet.
fn busybox_rootfs() -> tempfile::TempDir {
    let dir = disk_dir();
    let root = dir.path();
    for d in ["bin", "etc", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox is missing: install the Debian package busybox-static");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
    dir
}

/// Posts a query with the token; returns the response's JSON.
async fn gql(port: u16, token: &str, query: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/query"))
        .basic_auth(token, Some(""))
        .header("content-type", "application/json")
        .body(json!({ "query": query }).to_string())
        .send()
        .await
        .expect("request");
    let body = resp.text().await.expect("body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn id_at(v: &Value, path: &[&str]) -> String {
    let mut cur = &v["data"];
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("no id at {path:?}: {v}"))
        .to_owned()
}

/// Starts, in the background, an exec that mounts a secret and sleeps; its shell carries `marker` in its
/// arguments. Returns the task (it ends when the exec does).
async fn start_sleeping_exec(
    port: u16,
    token: &str,
    rootfs: &Path,
    marker: &str,
    plaintext: &str,
) -> tokio::task::JoinHandle<Option<Value>> {
    let dir = id_at(
        &gql(
            port,
            token,
            &format!(r#"{{host{{directory(path:"{}"){{id}}}}}}"#, rootfs.display()),
        )
        .await,
        &["host", "directory", "id"],
    );
    let secret = id_at(
        &gql(
            port,
            token,
            &format!(r#"{{setSecret(name:"tok",plaintext:"{plaintext}"){{id}}}}"#),
        )
        .await,
        &["setSecret", "id"],
    );
    let query = format!(
        r#"{{container{{withRootfs(directory:"{dir}"){{withMountedSecret(path:"/run/secrets/tok",source:"{secret}"){{withExec(args:["sh","-c","cat /run/secrets/tok >/dev/null; sleep 600; echo {marker}"]){{stdout}}}}}}}}}}"#
    );
    let token = token.to_owned();
    // The engine may be stopped or killed under the request: then there is no answer, which is no failure.
    tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/query"))
            .basic_auth(&token, Some(""))
            .body(json!({ "query": query }).to_string())
            .send()
            .await
            .ok()?;
        serde_json::from_str(&resp.text().await.ok()?).ok()
    })
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points under `dir`, with their filesystem types, from the host's mount table.
fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let dir = std::fs::canonicalize(dir).expect("canonical");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| {
            let point = PathBuf::from(l.split(' ').nth(4)?);
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?.to_owned();
            point.starts_with(&dir).then_some((point, fstype))
        })
        .collect()
}

/// Entries of `dir` (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The network namespaces of engine process `pid`.
fn namespaces_of(pid: u32) -> Vec<String> {
    entries(Path::new("/var/run/netns"))
        .into_iter()
        .filter(|n| n.starts_with(&format!("drs-{pid}-")))
        .collect()
}

/// Files under `dir` whose content holds `needle` (not following links, not crossing into mounts).
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let out = Command::new("grep")
        .args(["-r", "-l", "-s", "--no-messages", "-F", needle])
        .arg(dir)
        .output()
        .expect("grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("a pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

/// `dagger-rs serve` on a free port with token `t`; returns the child and the port once it answers.
async fn serve(cache: &Path) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache)
        .args([
            "--progress",
            "plain",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token",
            "t",
        ])
        .env_remove("DAGGER_SESSION_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let start = Instant::now();
    while reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/query"))
        .basic_auth("t", Some(""))
        .body(json!({"query": "{version}"}).to_string())
        .send()
        .await
        .is_err()
    {
        assert!(start.elapsed() < Duration::from_secs(30), "serve never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, port)
}

/// `dagger-rs session` (stdin kept open); returns the child, the port and the token from the handshake.
fn session(cache: &Path) -> (Child, u16, String) {
    let mut child = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--progress", "plain", "session"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn session");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("handshake");
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("handshake {line:?}: {e}"));
    let port = u16::try_from(v["port"].as_u64().expect("port")).expect("port");
    (child, port, v["session_token"].as_str().expect("token").to_owned())
}

fn unique_marker(what: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("drs-test-{what}-{}-{t}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_secrets_live_on_a_tmpfs_of_their_own_and_never_on_disk() {
    let cache = disk_dir();
    let rootfs = busybox_rootfs();
    let session = dagger_engine::Session::start(dagger_engine::Config::for_dir(cache.path()))
        .await
        .expect("engine");
    let (port, token) = (session.port, session.token.clone());
    let plaintext = unique_marker("plaintext");
    let marker = unique_marker("secret-exec");
    let exec = start_sleeping_exec(port, &token, rootfs.path(), &marker, &plaintext).await;
    wait_until(Duration::from_secs(60), "the exec never started", || {
        !processes_with(&marker).is_empty()
    });

    // While the exec runs, the secret's file is on a tmpfs mounted for it, private to the engine's user.
    let tmpfs: Vec<PathBuf> = mounts_under(cache.path())
        .into_iter()
        .filter(|(_, t)| t == "tmpfs")
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        tmpfs.len(),
        1,
        "one tmpfs for the exec's secrets: {:?}",
        mounts_under(cache.path())
    );
    let file = tmpfs[0].join("s0");
    assert_eq!(std::fs::read_to_string(&file).expect("the secret's file"), plaintext);
    let fs = rustix::fs::statfs(&file).expect("statfs");
    assert_eq!(fs.f_type as u64, TMPFS_MAGIC, "the secret's file is in memory");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode(&tmpfs[0]), 0o700, "the tmpfs is private");
        assert_eq!(
            mode(&file),
            0o400,
            "the file has the mode asked for (the default, 0o400)"
        );
    }
    let options = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(tmpfs[0].to_str().expect("utf-8")))
        .expect("the mount's line")
        .to_owned();
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(options.contains(flag), "{flag} in {options}");
    }
    // Nothing with the plaintext on the cache's disk, even while the exec runs.
    let on_disk: Vec<PathBuf> = files_containing(cache.path(), &plaintext)
        .into_iter()
        .filter(|p| !p.starts_with(&tmpfs[0]))
        .collect();
    assert!(on_disk.is_empty(), "the plaintext is on disk: {on_disk:?}");

    session.engine.stop_containers().await;
    let _ = tokio::time::timeout(Duration::from_secs(30), exec)
        .await
        .expect("the exec ends");
    wait_until(
        Duration::from_secs(10),
        "the secrets' tmpfs is unmounted when the exec ends",
        || mounts_under(cache.path()).is_empty(),
    );
    assert!(files_containing(cache.path(), &plaintext).is_empty());
    assert!(!tmpfs[0].exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_leaves_state_that_the_next_engine_collects_and_reports() {
    let cache = disk_dir();
    let rootfs = busybox_rootfs();
    let (mut engine, port) = serve(cache.path()).await;
    let engine_pid = engine.id();
    let marker = unique_marker("killed");
    let plaintext = unique_marker("plaintext");
    let _exec = start_sleeping_exec(port, "t", rootfs.path(), &marker, &plaintext).await;
    wait_until(Duration::from_secs(60), "the exec never started", || {
        !processes_with(&marker).is_empty()
    });

    signal(&engine, rustix::process::Signal::KILL);
    let _ = engine.wait();
    // What the dead engine left: its mounts (the container's filesystem, the secrets' tmpfs), the exec's
    // scratch folder, the container (still running) and its network namespace.
    let tmp = cache.path().join("tmp");
    let mounts = mounts_under(cache.path());
    assert!(mounts.iter().any(|(_, t)| t == "overlay"), "{mounts:?}");
    assert!(mounts.iter().any(|(_, t)| t == "tmpfs"), "{mounts:?}");
    assert!(
        entries(&tmp)
            .iter()
            .any(|e| e.starts_with(&format!("exec-{engine_pid}-"))),
        "{:?}",
        entries(&tmp)
    );
    let runtime = cache.path().join("runtime");
    assert!(!entries(&runtime).is_empty(), "the container's state is left");
    assert!(!processes_with(&marker).is_empty(), "the container's process runs on");
    assert!(!namespaces_of(engine_pid).is_empty(), "its network namespace is left");

    // The next engine on the cache directory collects all of it, and says what it collected in one line.
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["--progress", "plain", "query", "{version}"])
        .output()
        .expect("query");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("collected after an unclean stop:"))
        .collect();
    assert_eq!(report.len(), 1, "one line: {stderr}");
    // Network namespaces are host-wide: an engine of another test may collect them first, so they are only
    // checked to be gone.
    for what in ["mounts", "1 scratch folder", "1 container"] {
        assert!(report[0].contains(what), "{what} in {}", report[0]);
    }
    eprintln!(
        "start-up with leftovers: {took:?} for `dagger-rs query {{version}}`: {}",
        report[0]
    );
    assert!(
        mounts_under(cache.path()).is_empty(),
        "{:?}",
        mounts_under(cache.path())
    );
    assert!(entries(&tmp).is_empty(), "{:?}", entries(&tmp));
    assert!(entries(&runtime).is_empty(), "{:?}", entries(&runtime));
    assert!(namespaces_of(engine_pid).is_empty(), "{:?}", namespaces_of(engine_pid));
    wait_until(
        Duration::from_secs(10),
        "the orphaned container process was not killed",
        || processes_with(&marker).is_empty(),
    );
    assert!(files_containing(cache.path(), &plaintext).is_empty());
    assert!(!cache.path().join(format!("engines/{engine_pid}.lock")).exists());

    // Nothing left, nothing reported.
    let out = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["--progress", "plain", "query", "{version}"])
        .output()
        .expect("query");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("collected"), "{stderr}");
}

#[test]
fn a_service_started_by_a_query_ends_with_the_query() {
    let cache = disk_dir();
    let rootfs = busybox_rootfs();
    let marker = unique_marker("query-service");
    let dir = |cache: &Path| {
        let out = Command::new(BIN)
            .arg("--cache-dir")
            .arg(cache)
            .args([
                "--quiet",
                "query",
                &format!(r#"{{host{{directory(path:"{}"){{id}}}}}}"#, rootfs.path().display()),
            ])
            .output()
            .expect("query");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["host"]["directory"]["id"].as_str().expect("id").to_owned()
    };
    let dir = dir(cache.path());
    let out = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache.path())
        .args([
            "--quiet",
            "query",
            &format!(
                r#"{{container{{withRootfs(directory:"{dir}"){{withExposedPort(port:8080){{asService(args:["sh","-c","httpd -f -p 8080 -h /; : {marker}"]){{start}}}}}}}}}}"#
            ),
        ])
        .output()
        .expect("query");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Service:"), "it started");
    // Once the command has exited, nothing of the service is left.
    assert!(
        processes_with(&marker).is_empty(),
        "the service's process outlived the query"
    );
    assert!(entries(&cache.path().join("runtime")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engines_running_service_is_collected_by_the_next_engine() {
    let cache = disk_dir();
    let rootfs = busybox_rootfs();
    let (mut engine, port) = serve(cache.path()).await;
    let engine_pid = engine.id();
    let marker = unique_marker("service");
    let dir = id_at(
        &gql(
            port,
            "t",
            &format!(r#"{{host{{directory(path:"{}"){{id}}}}}}"#, rootfs.path().display()),
        )
        .await,
        &["host", "directory", "id"],
    );
    // `start` answers once the service accepts connections; it runs on until the engine is gone.
    let started = gql(
        port,
        "t",
        &format!(
            r#"{{container{{withRootfs(directory:"{dir}"){{withExposedPort(port:8080){{asService(args:["sh","-c","httpd -f -p 8080 -h /; : {marker}"]){{start}}}}}}}}}}"#
        ),
    )
    .await;
    assert!(started.get("errors").is_none(), "{started}");
    assert!(!processes_with(&marker).is_empty(), "the service runs");

    signal(&engine, rustix::process::Signal::KILL);
    let _ = engine.wait();
    let runtime = cache.path().join("runtime");
    assert!(!entries(&runtime).is_empty(), "the service's container is left");
    assert!(!namespaces_of(engine_pid).is_empty(), "its network namespace is left");
    assert!(
        entries(&cache.path().join("tmp"))
            .iter()
            .any(|e| e.starts_with(&format!("service-{engine_pid}-"))),
        "its scratch folder is left"
    );

    // The next engine collects the service as it collects an exec.
    let out = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["--progress", "plain", "query", "{version}"])
        .output()
        .expect("query");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 container"), "{stderr}");
    assert!(entries(&runtime).is_empty(), "{:?}", entries(&runtime));
    assert!(entries(&cache.path().join("tmp")).is_empty());
    assert!(
        mounts_under(cache.path()).is_empty(),
        "{:?}",
        mounts_under(cache.path())
    );
    assert!(namespaces_of(engine_pid).is_empty(), "{:?}", namespaces_of(engine_pid));
    wait_until(Duration::from_secs(10), "the service's process was not killed", || {
        processes_with(&marker).is_empty()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_stop_serve_and_session_mid_exec_with_exit_code_0_and_nothing_left() {
    use rustix::process::Signal;
    for (cmd, sig) in [
        ("serve", Signal::TERM),
        ("serve", Signal::INT),
        ("session", Signal::TERM),
        ("session", Signal::INT),
    ] {
        let what = format!("{cmd} stopped by {sig:?}");
        let cache = disk_dir();
        let rootfs = busybox_rootfs();
        let (mut engine, port, token) = if cmd == "serve" {
            let (child, port) = serve(cache.path()).await;
            (child, port, "t".to_owned())
        } else {
            session(cache.path())
        };
        let engine_pid = engine.id();
        let marker = unique_marker(cmd);
        let plaintext = unique_marker("plaintext");
        let exec = start_sleeping_exec(port, &token, rootfs.path(), &marker, &plaintext).await;
        wait_until(Duration::from_secs(60), "the exec never started", || {
            !processes_with(&marker).is_empty()
        });

        signal(&engine, sig);
        let status = wait_for_exit(&mut engine, Duration::from_secs(30), &what);
        assert_eq!(status.code(), Some(0), "{what}: {status}");
        assert!(processes_with(&marker).is_empty(), "{what}: the container was killed");
        // The request in flight got an answer (an error: its exec was killed) or a closed connection.
        let _ = tokio::time::timeout(Duration::from_secs(10), exec).await;
        assert!(
            mounts_under(cache.path()).is_empty(),
            "{what}: {:?}",
            mounts_under(cache.path())
        );
        let tmp = entries(&cache.path().join("tmp"));
        assert!(tmp.is_empty(), "{what}: {tmp:?}");
        let runtime = entries(&cache.path().join("runtime"));
        assert!(runtime.is_empty(), "{what}: {runtime:?}");
        assert!(
            namespaces_of(engine_pid).is_empty(),
            "{what}: {:?}",
            namespaces_of(engine_pid)
        );
        assert!(files_containing(cache.path(), &plaintext).is_empty(), "{what}");
        assert!(
            entries(&cache.path().join("engines")).is_empty(),
            "{what}: the engine's lock file is removed"
        );
    }
}

#[test]
fn sigterm_stops_run_and_its_command_with_exit_code_0() {
    let cache = disk_dir();
    let marker = unique_marker("run");
    let mut run = Command::new(BIN)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["-q", "run", "sh", "-c"])
        .arg(format!("sleep 600; echo {marker}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn run");
    // The marker is in dagger-rs's own arguments too: wait for the command (a process besides it).
    let cli = run.id();
    wait_until(Duration::from_secs(30), "the command never started", || {
        processes_with(&marker).iter().any(|p| *p != cli)
    });
    signal(&run, rustix::process::Signal::TERM);
    let status = wait_for_exit(&mut run, Duration::from_secs(30), "run");
    assert_eq!(status.code(), Some(0), "{status}");
    wait_until(Duration::from_secs(10), "the command was not stopped", || {
        processes_with(&marker).is_empty()
    });
    assert!(entries(&cache.path().join("engines")).is_empty());
}
