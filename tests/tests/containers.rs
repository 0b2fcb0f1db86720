//! Real containers on the embedded engine: processes run by runc (and crun) over overlayfs, container state,
//! files in and out, mounts, secrets, errors, and caching.
//!
//! The base image is built from the host's `busybox-static` (`/bin/busybox`), so no registry or network is
//! needed here; pulling images is covered in `images.rs`.

use std::sync::atomic::Ordering;

use dagger::prelude::*;
use dagger::{
    ContainerWithExecOpts, ContainerWithMountedCacheOpts, ContainerWithMountedDirectoryOpts, Error, ReturnType,
};
use dagger_engine::{Config, Session};

struct Env {
    session: Session,
    dag: Query,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start_on(cache: &std::path::Path, runtime: Option<&str>) -> (Session, Query) {
    start_with(Config {
        runtime: runtime.map(str::to_owned),
        ..Config::for_dir(cache)
    })
    .await
}

async fn start_with(config: Config) -> (Session, Query) {
    testkit::start_engine(config).await
}

async fn start() -> Env {
    let cache = tempfile::tempdir().expect("cache dir");
    let (session, dag) = start_on(cache.path(), None).await;
    Env {
        session,
        dag,
        _dirs: vec![cache],
    }
}

/// A busybox root filesystem on the host: `/bin/busybox`, one link per applet, `/etc/passwd` and `/tmp`.
fn busybox_rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("rootfs dir");
    let root = dir.path();
    for d in ["bin", "etc", "tmp", "root", "home/user"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox is missing: install the Debian package busybox-static");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:\nuser:x:1000:\n").expect("group");
    dir
}

impl Env {
    fn busybox(&mut self) -> Container {
        let root = busybox_rootfs();
        let path = root.path().to_string_lossy().into_owned();
        self._dirs.push(root);
        self.dag.container().with_rootfs(self.dag.host().directory(path))
    }
}

fn exec_error(e: Error) -> dagger::ExecError {
    match e {
        Error::Exec(e) => e,
        other => panic!("expected an exec error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_runs_and_its_output_comes_back() {
    let mut env = start().await;
    let c = env
        .busybox()
        .with_env_variable("GREETING", "hello")
        .with_workdir("/work/here")
        .with_exec(["sh", "-c", "echo $GREETING from $(pwd) as $(id -u); echo oops >&2"]);
    assert_eq!(c.stdout().await.expect("stdout"), "hello from /work/here as 0\n");
    assert_eq!(c.stderr().await.expect("stderr"), "oops\n");
    assert_eq!(c.exit_code().await.expect("exit code"), 0);
    // Two pipes give no order between the streams; both lines are there, whole.
    let combined = c.combined_output().await.expect("combined");
    let mut lines: Vec<&str> = combined.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["hello from /work/here as 0", "oops"]);
}

#[tokio::test]
async fn a_failing_command_is_an_exec_error_with_its_output() {
    let mut env = start().await;
    let err = env
        .busybox()
        .with_exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        .stdout()
        .await
        .expect_err("exit 3 fails");
    let e = exec_error(err);
    assert_eq!(e.exit_code, 3);
    assert_eq!(e.cmd, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(e.stdout, "out\n");
    assert_eq!(e.stderr, "err\n");
    assert!(e.message.contains("exit code: 3"), "{}", e.message);

    // With `expect: ANY` the same command succeeds and reports its code.
    let c = env.busybox().with_exec_opts(
        ["sh", "-c", "exit 5"],
        ContainerWithExecOpts::default().expect(ReturnType::Any),
    );
    assert_eq!(c.exit_code().await.expect("exit code"), 5);
    // With `expect: FAILURE`, success is the error, worded as Dagger words any unexpected exit code.
    let err = env
        .busybox()
        .with_exec_opts(["true"], ContainerWithExecOpts::default().expect(ReturnType::Failure))
        .sync()
        .await
        .expect_err("success is a failure here");
    assert!(
        err.to_string()
            .contains("process \"true\" did not complete successfully: exit code: 0"),
        "{err}"
    );
}

#[tokio::test]
async fn files_go_in_and_come_out() {
    let mut env = start().await;
    let dir = env
        .dag
        .directory()
        .with_new_file("a.txt", "A")
        .with_new_file("sub/b.txt", "B");
    let c = env
        .busybox()
        .with_directory("/src", dir)
        .with_new_file("/etc/motd", "welcome\n")
        .with_file("/copy.txt", env.dag.directory().with_new_file("x", "X").file("x"))
        .with_exec([
            "sh",
            "-c",
            "cat /src/a.txt /src/sub/b.txt /etc/motd /copy.txt > /out.txt; mkdir -p /dist; echo built > /dist/app",
        ]);
    assert_eq!(c.file("/out.txt").contents().await.expect("out.txt"), "ABwelcome\nX");
    assert_eq!(c.directory("/dist").entries().await.expect("entries"), ["app"]);
    assert!(c.exists("/dist/app").await.expect("exists"));
    let removed = c.without_file("/dist/app").without_directory("/src");
    assert!(!removed.exists("/dist/app").await.expect("exists"));
    assert!(!removed.exists("/src/a.txt").await.expect("exists"));
    // The deletion is real inside the next process too.
    let ls = removed.with_exec(["sh", "-c", "ls /dist; test -e /src || echo gone"]);
    assert_eq!(ls.stdout().await.expect("ls"), "gone\n");
}

#[tokio::test]
async fn a_mounted_directory_sees_writes_and_a_read_only_one_refuses_them() {
    let mut env = start().await;
    let src = env.dag.directory().with_new_file("in.txt", "in");
    let c = env.busybox().with_mounted_directory("/mnt", src.clone()).with_exec([
        "sh",
        "-c",
        "cat /mnt/in.txt > /mnt/out.txt",
    ]);
    assert_eq!(
        c.directory("/mnt").entries().await.expect("entries"),
        ["in.txt", "out.txt"]
    );
    assert_eq!(c.file("/mnt/out.txt").contents().await.expect("out"), "in");
    // The mount is not part of the image.
    let without = c
        .without_mount("/mnt")
        .with_exec(["sh", "-c", "ls /mnt 2>/dev/null | wc -l"]);
    assert_eq!(without.stdout().await.expect("ls").trim(), "0");

    let err = env
        .busybox()
        .with_mounted_directory_opts("/ro", src, ContainerWithMountedDirectoryOpts::default().read_only(true))
        .with_exec(["sh", "-c", "echo x > /ro/new"])
        .sync()
        .await
        .expect_err("read-only");
    assert!(
        exec_error(err).stderr.contains("Read-only"),
        "read-only mount refused the write"
    );
}

#[tokio::test]
async fn cache_volumes_persist_across_execs_and_sessions() {
    let cache = tempfile::tempdir().expect("cache");
    let rootfs = busybox_rootfs();
    let root = rootfs.path().to_string_lossy().into_owned();
    for (round, expected) in [(1, "1\n"), (2, "2\n")] {
        let (_session, dag) = start_on(cache.path(), None).await;
        let c = dag
            .container()
            .with_rootfs(dag.host().directory(root.clone()))
            .with_mounted_cache("/cache", dag.cache_volume("counter"))
            .with_env_variable("ROUND", round.to_string())
            .with_exec(["sh", "-c", "echo x >> /cache/n; wc -l < /cache/n"]);
        assert_eq!(c.stdout().await.expect("count"), expected, "round {round}");
    }
    // A seeded volume starts with the seed's content.
    let (_session, dag) = start_on(cache.path(), None).await;
    let c = dag
        .container()
        .with_rootfs(dag.host().directory(root))
        .with_mounted_cache_opts(
            "/seeded",
            dag.cache_volume("seeded"),
            ContainerWithMountedCacheOpts::default().source(dag.directory().with_new_file("seed.txt", "s")),
        )
        .with_exec(["cat", "/seeded/seed.txt"]);
    assert_eq!(c.stdout().await.expect("seed"), "s");
}

#[tokio::test]
async fn secrets_reach_the_process_and_never_its_output() {
    let mut env = start().await;
    let secret = env.dag.set_secret("token", "s3cr3t-value");
    let c = env
        .busybox()
        .with_secret_variable("TOKEN", secret.clone())
        .with_mounted_secret("/run/secrets/token", secret)
        .with_exec([
            "sh",
            "-c",
            "echo env=$TOKEN; echo file=$(cat /run/secrets/token); test \"$TOKEN\" = s3cr3t-value && echo match",
        ]);
    assert_eq!(c.stdout().await.expect("stdout"), "env=***\nfile=***\nmatch\n");
    // Not in an exec error either.
    let err = c
        .with_exec(["sh", "-c", "echo $TOKEN >&2; exit 1"])
        .sync()
        .await
        .expect_err("fails");
    let e = exec_error(err);
    assert!(!e.stderr.contains("s3cr3t"), "{}", e.stderr);
    assert_eq!(e.stderr, "***\n");
}

#[tokio::test]
async fn stdin_redirects_users_entrypoints_and_state() {
    let mut env = start().await;
    let base = env.busybox();
    let c = base.with_exec_opts(
        ["sh", "-c", "tr a-z A-Z; echo to-stderr >&2"],
        ContainerWithExecOpts::default()
            .stdin("piped in\n")
            .redirect_stdout("/out.txt")
            .redirect_stderr("/err.txt"),
    );
    assert_eq!(c.file("/out.txt").contents().await.expect("out"), "PIPED IN\n");
    assert_eq!(c.file("/err.txt").contents().await.expect("err"), "to-stderr\n");

    let as_user = base
        .with_user("user")
        .with_exec(["sh", "-c", "echo $(id -u):$(id -g) $HOME"]);
    assert_eq!(as_user.stdout().await.expect("id"), "1000:1000 /home/user\n");
    let as_ids = base
        .with_user("1000:50")
        .with_exec(["sh", "-c", "echo $(id -u):$(id -g)"]);
    assert_eq!(as_ids.stdout().await.expect("id"), "1000:50\n");
    let unknown = base
        .with_user("nobody-here")
        .with_exec(["true"])
        .sync()
        .await
        .expect_err("unknown user");
    assert!(unknown.to_string().contains("nobody-here"), "{unknown}");

    let ep = base.with_entrypoint(["echo", "entry"]).with_default_args(["default"]);
    assert_eq!(ep.entrypoint().await.expect("entrypoint"), ["echo", "entry"]);
    assert_eq!(ep.default_args().await.expect("args"), ["default"]);
    let used = ep.with_exec_opts(["arg"], ContainerWithExecOpts::default().use_entrypoint(true));
    assert_eq!(used.stdout().await.expect("stdout"), "entry arg\n");
    let ignored = ep.with_exec(["echo", "plain"]);
    assert_eq!(ignored.stdout().await.expect("stdout"), "plain\n");

    let labelled = base
        .with_label("org.example.a", "1")
        .with_label("org.example.b", "2")
        .without_label("org.example.a")
        .with_env_variable("A", "1")
        .with_env_variable("B", "${A}-x")
        .with_env_variable_opts(
            "C",
            "${A}-y",
            dagger::ContainerWithEnvVariableOpts::default().expand(true),
        );
    assert_eq!(
        labelled.label("org.example.b").await.expect("label"),
        Some("2".to_owned())
    );
    assert_eq!(labelled.label("org.example.a").await.expect("label"), None);
    let labels = labelled.labels().await.expect("labels");
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0].name().await.expect("name"), "org.example.b");
    assert_eq!(labelled.env_variable("B").await.expect("B"), Some("${A}-x".to_owned()));
    assert_eq!(labelled.env_variable("C").await.expect("C"), Some("1-y".to_owned()));
    let vars = labelled.env_variables().await.expect("vars");
    let mut names = Vec::new();
    for v in &vars {
        names.push(v.name().await.expect("name"));
    }
    assert_eq!(names, ["A", "B", "C"]);
}

#[tokio::test]
async fn an_exec_runs_once_and_is_cached_after() {
    let mut env = start().await;
    let c = env.busybox().with_exec(["sh", "-c", "date +%s%N"]);
    let first = c.stdout().await.expect("first");
    let computed = env.session.engine.computed.load(Ordering::Relaxed);
    let again = c.stdout().await.expect("again");
    assert_eq!(first, again);
    assert_eq!(env.session.engine.computed.load(Ordering::Relaxed), computed);
}

#[tokio::test]
async fn container_symlinks_never_reach_the_host() {
    let mut env = start().await;
    let c = env.busybox().with_exec([
        "sh",
        "-c",
        "ln -s /../../../../etc/hostname-of-container /escape; echo inside > /etc/hostname-of-container; \
         ln -s ../../../../../../ /up",
    ]);
    assert_eq!(c.file("/escape").contents().await.expect("read"), "inside\n");
    // `/up` resolves to the container's root, not the host's.
    let entries = c.directory("/up").entries().await.expect("entries");
    assert!(entries.contains(&"escape".to_owned()), "{entries:?}");
}

#[tokio::test]
async fn a_missing_runtime_names_the_package_to_install() {
    let cache = tempfile::tempdir().expect("cache");
    let (_session, dag) = start_on(cache.path(), Some("/nonexistent/crun")).await;
    let rootfs = busybox_rootfs();
    let err = dag
        .container()
        .with_rootfs(dag.host().directory(rootfs.path().to_string_lossy().into_owned()))
        .with_exec(["true"])
        .sync()
        .await
        .expect_err("no runtime");
    let msg = err.to_string();
    assert!(msg.contains("apt-get install crun"), "{msg}");
}

#[tokio::test]
async fn crun_runs_containers_too() {
    let cache = tempfile::tempdir().expect("cache");
    let (_session, dag) = start_on(cache.path(), Some("crun")).await;
    let rootfs = busybox_rootfs();
    let out = dag
        .container()
        .with_rootfs(dag.host().directory(rootfs.path().to_string_lossy().into_owned()))
        .with_exec(["sh", "-c", "echo from crun"])
        .stdout()
        .await
        .expect("crun runs");
    assert_eq!(out, "from crun\n");
}

#[tokio::test]
async fn each_exec_has_its_own_network_and_cannot_reach_the_hosts_loopback() {
    let mut env = start().await;
    // The engine's own port is on the host's loopback: unreachable from inside.
    let port = env.session.port;
    let c = env.busybox().with_exec([
        "sh".to_owned(),
        "-c".to_owned(),
        format!(
            "ip -o addr show eth0 | grep -o '10\\.87\\.[0-9.]*' | head -1; \
             if nc -w 2 127.0.0.1 {port} </dev/null; then echo reached; else echo unreachable; fi; \
             if nc -w 2 10.87.0.1 {port} </dev/null; then echo reached; else echo unreachable; fi"
        ),
    ]);
    let out = c.stdout().await.expect("network probe");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("10.87."), "{out}");
    assert_eq!(&lines[1..], ["unreachable", "unreachable"], "{out}");
}

#[tokio::test]
async fn containers_reach_the_network_the_host_reaches() {
    let mut env = start().await;
    // A server on the host's own external address stands in for "the network": the container gets there
    // through the bridge and NAT, as it would get to any other host.
    let route = std::process::Command::new("ip")
        .args(["-4", "route", "get", "192.0.2.1"])
        .output()
        .expect("ip route");
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    let host_ip = route
        .split_whitespace()
        .skip_while(|w| *w != "src")
        .nth(1)
        .expect("the host has an outbound address")
        .to_owned();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"hello from outside\n").await;
        }
    });
    let out = env
        .busybox()
        .with_exec([
            "sh".to_owned(),
            "-c".to_owned(),
            format!("nc -w 5 {host_ip} {port} </dev/null"),
        ])
        .stdout()
        .await
        .expect("outbound connection");
    assert_eq!(out, "hello from outside\n");
}

#[tokio::test]
async fn a_process_past_the_time_limit_is_killed_and_reported() {
    let cache = tempfile::tempdir().expect("cache");
    let (_session, dag) = start_with(Config {
        exec_timeout: Some(std::time::Duration::from_secs(1)),
        ..Config::for_dir(cache.path())
    })
    .await;
    let rootfs = busybox_rootfs();
    let err = dag
        .container()
        .with_rootfs(dag.host().directory(rootfs.path().to_string_lossy().into_owned()))
        .with_exec(["sh", "-c", "echo started; sleep 60"])
        .sync()
        .await
        .expect_err("killed");
    let e = exec_error(err);
    assert!(e.message.contains("killed after running for 1s"), "{}", e.message);
    // A process killed by a signal from inside says which.
    let err = dag
        .container()
        .with_rootfs(dag.host().directory(rootfs.path().to_string_lossy().into_owned()))
        .with_exec(["sh", "-c", "sh -c 'kill -9 $$'; exit $?"])
        .sync()
        .await
        .expect_err("killed");
    let killed = exec_error(err);
    assert_eq!(killed.exit_code, 137);
    assert!(killed.message.contains("killed by signal 9"), "{}", killed.message);
    assert_eq!(e.exit_code, 137);
    assert_eq!(e.stdout, "started\n", "what it printed before the limit is kept");
}

#[tokio::test]
async fn independent_execs_of_one_request_run_concurrently() {
    let mut env = start().await;
    // Each side waits for the other's mark in a shared cache volume: run one after the other, both would
    // give up; run together, both finish.
    let base = env
        .busybox()
        .with_mounted_cache("/sync", env.dag.cache_volume("rendezvous"))
        .with_env_variable("RUN", format!("{:?}", std::time::SystemTime::now()));
    let side = |me: &str, other: &str| {
        base.with_exec([
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "touch /sync/{me}; i=0; while [ ! -e /sync/{other} ]; do i=$((i+1)); \
                 [ $i -gt 200 ] && exit 9; sleep 0.05; done; echo {me} saw {other}"
            ),
        ])
    };
    let a = side("a", "b").id().await.expect("id a");
    let b = side("b", "a").id().await.expect("id b");
    let query = format!(
        r#"{{ a: node(id: "{a}") {{ ... on Container {{ stdout }} }} b: node(id: "{b}") {{ ... on Container {{ stdout }} }} }}"#,
        a = a.as_str(),
        b = b.as_str()
    );
    let body = serde_json::json!({ "query": query }).to_string();
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("{}/query", env.session.url()))
        .basic_auth(&env.session.token, Some(""))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("body");
    let res: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(res["data"]["a"]["stdout"], "a saw b\n", "{res}");
    assert_eq!(res["data"]["b"]["stdout"], "b saw a\n", "{res}");
}

#[tokio::test]
async fn without_overlayfs_layers_are_copied_with_the_same_results() {
    let cache = tempfile::tempdir().expect("cache");
    let (_session, dag) = start_with(Config {
        snapshotter: Some(dagger_engine::snapshot::SnapshotterKind::Copy),
        ..Config::for_dir(cache.path())
    })
    .await;
    let rootfs = busybox_rootfs();
    let base = dag
        .container()
        .with_rootfs(dag.host().directory(rootfs.path().to_string_lossy().into_owned()))
        .with_new_file("/data/keep.txt", "keep")
        .with_new_file("/data/drop.txt", "drop");
    let c = base
        .with_exec([
            "sh",
            "-c",
            "rm /data/drop.txt; echo new > /data/new.txt; echo more >> /data/keep.txt",
        ])
        .with_exec(["sh", "-c", "rm -r /data; mkdir /data; echo fresh > /data/only.txt"])
        .with_exec(["sh", "-c", "ls /data; cat /data/only.txt"]);
    assert_eq!(c.stdout().await.expect("stdout"), "only.txt\nfresh\n");
    assert_eq!(c.directory("/data").entries().await.expect("entries"), ["only.txt"]);
    let first = base.with_exec(["sh", "-c", "rm /data/drop.txt; echo more >> /data/keep.txt"]);
    assert_eq!(first.directory("/data").entries().await.expect("entries"), ["keep.txt"]);
    assert_eq!(
        first.file("/data/keep.txt").contents().await.expect("keep"),
        "keepmore\n"
    );
}

#[tokio::test]
async fn every_state_field_reads_back() {
    let mut env = start().await;
    let secret = env.dag.set_secret("pw", "hunter2");
    let file = env.dag.directory().with_new_file("f.txt", "F").file("f.txt");
    let base = env.busybox();
    let c = base
        .with_exposed_port(8080)
        .with_exposed_port_opts(
            53,
            dagger::ContainerWithExposedPortOpts::default()
                .protocol(dagger::NetworkProtocol::Udp)
                .description("dns"),
        )
        .with_mounted_file("/etc/app.conf", file.clone())
        .with_mounted_temp("/scratch")
        .with_files("/opt", vec![file.clone()])
        .with_symlink("/opt/f.txt", "/opt/link")
        .with_env_variable("GONE", "x")
        .without_env_variable("GONE")
        .with_secret_variable("PW", secret.clone())
        .without_secret_variable("PW")
        .with_workdir("/opt")
        .without_workdir()
        .with_user("user")
        .without_user()
        .with_entrypoint(["sh"])
        .without_entrypoint()
        .with_default_args(["x"])
        .without_default_args();
    let ports = c.exposed_ports().await.expect("ports");
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].port().await.expect("port"), 8080);
    assert_eq!(
        ports[1].protocol().await.expect("protocol"),
        dagger::NetworkProtocol::Udp
    );
    assert_eq!(
        ports[1].description().await.expect("description"),
        Some("dns".to_owned())
    );
    assert_eq!(c.mounts().await.expect("mounts"), ["/etc/app.conf", "/scratch"]);
    assert_eq!(c.workdir().await.expect("workdir"), "/");
    assert_eq!(c.user().await.expect("user"), "");
    assert!(c.entrypoint().await.expect("entrypoint").is_empty());
    assert!(c.default_args().await.expect("args").is_empty());
    assert_eq!(c.env_variable("GONE").await.expect("env"), None);
    assert!(c.platform().await.expect("platform").0.starts_with("linux/"));
    let out = c
        .with_exec([
            "sh",
            "-c",
            "cat /etc/app.conf /opt/link; echo; echo ${PW:-no-secret}; \
             mount | grep -c ' /scratch type tmpfs'",
        ])
        .stdout()
        .await
        .expect("runs");
    assert_eq!(out, "FF\nno-secret\n1\n");
    let stat = c.stat("/opt/link");
    assert_eq!(stat.file_type().await.expect("type"), Some(dagger::FileType::Regular));
    let rootfs = c.rootfs();
    assert!(rootfs.entries().await.expect("entries").contains(&"bin/".to_owned()));
    assert_eq!(rootfs.file("opt/f.txt").contents().await.expect("file"), "F");
    // `sync` gives an ID that loads the same container back.
    let id = c.sync().await.expect("sync").id().await.expect("id");
    let again = env.dag.load_container_from_id(id);
    assert_eq!(again.mounts().await.expect("mounts"), ["/etc/app.conf", "/scratch"]);
    // A mount is not readable through `file` when it is a temp mount (Dagger's wording).
    let err = c
        .file("/scratch/x")
        .contents()
        .await
        .expect_err("temp mounts cannot be read back");
    assert!(
        err.to_string().contains("/scratch/x: cannot retrieve path from tmpfs"),
        "{err}"
    );
    let gone = c.without_mount("/scratch");
    assert_eq!(gone.mounts().await.expect("mounts"), ["/etc/app.conf"]);
}

#[tokio::test]
async fn locked_cache_volumes_admit_one_exec_at_a_time() {
    let mut env = start().await;
    let base = env
        .busybox()
        .with_env_variable("RUN", format!("{:?}", std::time::SystemTime::now()));
    // Two execs on a LOCKED volume: each holds a marker while it runs; the other must never see it.
    let locked = |me: &str| {
        base.with_mounted_cache_opts(
            "/c",
            env.dag.cache_volume("locked"),
            ContainerWithMountedCacheOpts::default().sharing(dagger::CacheSharingMode::Locked),
        )
        .with_exec([
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "if [ -e /c/busy ]; then echo overlap; exit 1; fi; touch /c/busy; sleep 0.5; rm /c/busy; echo {me}"
            ),
        ])
    };
    let (a, b) = (locked("a"), locked("b"));
    let (ra, rb) = tokio::join!(a.stdout(), b.stdout());
    assert_eq!(ra.expect("a"), "a\n");
    assert_eq!(rb.expect("b"), "b\n");
}

#[tokio::test]
async fn two_values_of_one_secret_name_are_two_secrets() {
    let mut env = start().await;
    let one = env.dag.set_secret("token", "first-value");
    let two = env.dag.set_secret("token", "second-value");
    let a = one.id().await.expect("id");
    let b = two.id().await.expect("id");
    assert_ne!(a, b);
    assert!(!a.as_str().contains("first-value"));
    let c = env.busybox();
    let out = |s: dagger::Secret| {
        c.with_secret_variable("T", s)
            .with_exec(["sh", "-c", "test \"$T\" = first-value && echo first || echo second"])
            .stdout()
    };
    assert_eq!(out(one).await.expect("first"), "first\n");
    assert_eq!(out(two).await.expect("second"), "second\n");
}

#[tokio::test]
async fn a_private_cache_volume_in_use_gives_the_second_exec_a_fresh_one() {
    let mut env = start().await;
    let run = format!("{:?}", std::time::SystemTime::now());
    let base = env
        .busybox()
        .with_env_variable("RUN", run)
        .with_mounted_cache("/rv", env.dag.cache_volume("rendezvous-private"))
        .with_mounted_cache_opts(
            "/p",
            env.dag.cache_volume("private"),
            ContainerWithMountedCacheOpts::default().sharing(dagger::CacheSharingMode::Private),
        );
    // Both execs run at once (each waits for the other's mark on a shared volume), so one of them finds the
    // private volume taken and works on a fresh one: neither sees the other's file.
    let side = |me: &str, other: &str| {
        base.with_exec([
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "touch /p/{me}; touch /rv/{me}; i=0; while [ ! -e /rv/{other} ]; do i=$((i+1)); \
                 [ $i -gt 200 ] && exit 9; sleep 0.05; done; ls /p"
            ),
        ])
    };
    let (a, b) = (side("a", "b"), side("b", "a"));
    let (ra, rb) = tokio::join!(a.stdout(), b.stdout());
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert_eq!((ra.as_str(), rb.as_str()), ("a\n", "b\n"), "each saw only its own file");
    // The volume itself kept what its holder wrote, and only that.
    let after = base
        .with_env_variable("AFTER", "1")
        .with_exec(["ls", "/p"])
        .stdout()
        .await
        .expect("ls");
    assert!(after == "a\n" || after == "b\n", "{after:?}");
}

#[tokio::test]
async fn redirects_resolve_against_the_workdir_and_through_mounts() {
    // Dagger opens redirected streams in the container's filesystem with its mounts, before the process starts.
    let mut env = start().await;
    let input = env.dag.directory().with_new_file("in.txt", "from a mount\n");
    let c = env
        .busybox()
        .with_mounted_directory("/out", env.dag.directory())
        .with_mounted_directory("/in", input)
        .with_mounted_file("/f", env.dag.file("f", "a mounted file\n"))
        .with_mounted_secret("/run/s", env.dag.set_secret("s", "hunter2"))
        .with_env_variable("D", "/tmp")
        .with_workdir("/tmp");
    let opts = ContainerWithExecOpts::default()
        .redirect_stdin("/in/in.txt")
        .redirect_stdout("/out/o.txt")
        .redirect_stderr("e.txt");
    let r = c.with_exec_opts(["sh", "-c", "cat; echo oops >&2"], opts);
    assert_eq!(r.directory("/out").entries().await.expect("entries"), ["o.txt"]);
    assert_eq!(r.file("/out/o.txt").contents().await.expect("o"), "from a mount\n");
    assert_eq!(r.file("/tmp/e.txt").contents().await.expect("e"), "oops\n");
    let expanded = c.with_exec_opts(
        ["echo", "hi"],
        ContainerWithExecOpts::default().redirect_stdout("${D}/x").expand(true),
    );
    assert_eq!(expanded.file("/tmp/x").contents().await.expect("x"), "hi\n");
    let from_file = c.with_exec_opts(["cat"], ContainerWithExecOpts::default().redirect_stdin("/f"));
    assert_eq!(from_file.stdout().await.expect("stdout"), "a mounted file\n");
    let from_secret = c.with_exec_opts(["wc", "-c"], ContainerWithExecOpts::default().redirect_stdin("/run/s"));
    assert_eq!(from_secret.stdout().await.expect("stdout").trim(), "7");
}

#[tokio::test]
async fn an_exec_that_changes_nothing_leaves_an_empty_diff() {
    // The stubs the runtime makes to mount on (/etc/hosts, /etc/resolv.conf, /dev, /proc, /sys and each mount
    // target, with their missing parents) are removed after the exec, as Dagger removes them.
    let mut env = start().await;
    let before = env.busybox();
    let after = before
        .with_mounted_directory("/src", env.dag.directory().with_new_file("a", "a"))
        .with_mounted_cache("/deep/cache", env.dag.cache_volume("stubs"))
        .with_mounted_file("/opt/f", env.dag.file("f", "f"))
        .with_mounted_secret("/run/secrets/s", env.dag.set_secret("s", "s"))
        .with_mounted_temp("/scratch")
        .with_exec(["true"]);
    let diff = before.rootfs().diff(after.rootfs());
    assert_eq!(diff.glob("**").await.expect("glob"), Vec::<String>::new());
    // What the process made at a mount point's parent stays.
    let made = before
        .with_mounted_directory("/m/src", env.dag.directory())
        .with_exec(["touch", "/m/kept"]);
    assert_eq!(
        before.rootfs().diff(made.rootfs()).glob("**").await.expect("glob"),
        ["m/", "m/kept"]
    );
}

#[tokio::test]
async fn exec_users_get_their_supplementary_groups() {
    let mut env = start().await;
    let c = env.busybox().with_new_file(
        "/etc/group",
        "root:x:0:\nstaff:x:50:user\nwheel:x:10:root\nuser:x:1000:\n",
    );
    let groups = |user: &str| c.with_user(user).with_exec(["id", "-G"]).stdout();
    assert_eq!(groups("user").await.expect("user"), "1000 50\n");
    assert_eq!(
        groups("user:staff").await.expect("user:staff"),
        "50\n",
        "an explicit group is the only one"
    );
    assert_eq!(groups("1000:1000").await.expect("ids"), "1000\n");
    assert_eq!(
        c.with_exec(["id", "-G"]).stdout().await.expect("root"),
        "0 10\n",
        "root too"
    );
}

#[tokio::test]
async fn a_directory_mounted_or_copied_keeps_its_own_mode() {
    let mut env = start().await;
    let private = env
        .dag
        .directory()
        .with_new_directory_opts("p", dagger::DirectoryWithNewDirectoryOpts::default().permissions(0o700))
        .with_new_file("p/f", "x")
        .directory("p");
    let out = env
        .busybox()
        .with_mounted_directory("/m", private.clone())
        .with_directory("/copied", private)
        .with_exec(["stat", "-c", "%a %n", "/m", "/copied", "/tmp"])
        .stdout()
        .await
        .expect("stat");
    assert_eq!(out, "700 /m\n700 /copied\n755 /tmp\n");
}

#[tokio::test]
async fn a_cache_volumes_own_sharing_mode_applies_to_its_mounts() {
    let mut env = start().await;
    let base = env
        .busybox()
        .with_env_variable("RUN", format!("{:?}", std::time::SystemTime::now()));
    let volume = env.dag.cache_volume_opts(
        "locked-by-default",
        dagger::QueryCacheVolumeOpts::default().sharing(dagger::CacheSharingMode::Locked),
    );
    // The mounts set no sharing mode: the volume's LOCKED applies, so the two execs take turns.
    let locked = |me: &str| {
        base.with_mounted_cache("/c", volume.clone()).with_exec([
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "if [ -e /c/busy ]; then echo overlap; exit 1; fi; touch /c/busy; sleep 0.5; rm /c/busy; echo {me}"
            ),
        ])
    };
    let (a, b) = (locked("a"), locked("b"));
    let (ra, rb) = tokio::join!(a.stdout(), b.stdout());
    assert_eq!(ra.expect("a"), "a\n");
    assert_eq!(rb.expect("b"), "b\n");
}
