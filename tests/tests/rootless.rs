//! The engine without root: container tests run again as an ordinary user, the engine root of a user
//! namespace of that user's (see `dagger_engine::rootless`).
//!
//! Each `rootless_*` test runs one `inner_*` test of this file as the user `drs-rootless`: as root it creates
//! that user (with `useradd`) and its subordinate ID ranges in `/etc/subuid` and `/etc/subgid` when missing,
//! copies this test binary where the user can run it, and runs `runuser -u drs-rootless -- <copy> --exact
//! inner_… --ignored`. The inner test first starts itself again inside a user namespace
//! (`dagger_engine::rootless::reexec`), as the SDK does for its embedded engine, then runs containers with
//! runc (and crun) over overlayfs, networked through slirp4netns.
//!
//! Not root: the `rootless_*` tests are skipped, saying so; the `inner_*` tests can be run directly as an
//! ordinary user (`cargo test -p tests --test rootless -- --ignored inner_`).
//!
//! Needs the Debian packages `uidmap` and `slirp4netns` (`scripts/install-packages.sh test`), and
//! `/dev/net/tun` open to users (mode 0666, Debian's default: set here when it is not).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use dagger::prelude::*;
use dagger::{ContainerAsServiceOpts, ContainerWithExecOpts, Error, PortForward, ServiceStopOpts};
use dagger_engine::Config;

/// The ordinary user the tests run as.
const USER: &str = "drs-rootless";
/// A second one, without subordinate IDs: its namespace maps a single ID.
const SINGLE_ID_USER: &str = "drs-rootless1";
/// Set for the inner tests: a directory the user owns, which the outer test reads afterwards.
const SHARE_ENV: &str = "DRS_ROOTLESS_SHARE";

// ---------------------------------------------------------------------------------------------------------
// The outer tests: as root, run an inner test as the user.
// ---------------------------------------------------------------------------------------------------------

/// A copy of this test binary the user can run, and a directory the user owns, removed when dropped.
struct Staged {
    dir: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the inner test `name` as the user; returns the staging directory (its `share/` holds what the test
/// left for the caller to check) and the user.
fn as_user(name: &str) -> Option<(Staged, testkit::users::TestUser)> {
    as_user_named(USER, true, name)
}

fn as_user_named(user_name: &str, ranges: bool, name: &str) -> Option<(Staged, testkit::users::TestUser)> {
    if !testkit::users::is_root() {
        eprintln!(
            "skipped: needs root to create the test user `{USER}`; as an ordinary user, run the inner tests as \
             yourself: cargo test -p tests --test rootless -- --ignored inner_"
        );
        return None;
    }
    let user = testkit::users::ensure(user_name, ranges);
    let dir = PathBuf::from(format!("/tmp/drs-rootless-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("staging dir");
    let staged = Staged { dir: dir.clone() };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let exe = dir.join("tests");
    std::fs::copy(std::env::current_exe().expect("this test binary"), &exe).expect("copy the test binary");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let share = dir.join("share");
    std::fs::create_dir(&share).expect("share dir");
    rustix::fs::chown(&share, Some(rustix::fs::Uid::from_raw(user.uid)), None).expect("chown share");
    let home = format!("/home/{user_name}");
    let out = Command::new("runuser")
        .args(["-u", user_name, "--", "env", "-i"])
        .arg(format!("HOME={home}"))
        .arg(format!("USER={user_name}"))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin")
        .arg("TMPDIR=/tmp")
        .arg("RUST_BACKTRACE=1")
        .arg(format!("{SHARE_ENV}={}", share.display()))
        .arg(&exe)
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .current_dir(&dir)
        .output()
        .expect("runuser");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{name} failed as {user_name}: {}", out.status);
    assert!(text.contains("1 passed"), "{name} ran: {text}");
    Some((staged, user))
}

#[test]
fn rootless_without_subordinate_ids_runs_as_root_only_and_says_how_to_add_them() {
    as_user_named(SINGLE_ID_USER, false, "inner_single_id");
}

/// The SDK's embedded engine, started by an ordinary user's program that does nothing else about it: the
/// program is started again in a user namespace, and the cache directory is the user's default one, private.
#[test]
fn rootless_the_sdk_starts_its_embedded_engine_in_a_user_namespace() {
    if testkit::users::is_root() {
        let _ = std::fs::remove_dir_all(format!("/home/{USER}/.cache/dagger-rs"));
    }
    let Some((_staged, user)) = as_user("inner_sdk_embedded_engine") else {
        return;
    };
    let cache = std::fs::metadata(format!("/home/{USER}/.cache/dagger-rs")).expect("the default cache directory");
    assert_eq!(cache.uid(), user.uid, "the user's own");
    assert_eq!(cache.mode() & 0o777, 0o700, "private to the user");
}

#[test]
fn rootless_execs_run_as_root_and_as_other_users() {
    as_user("inner_execs_run_as_root_and_as_other_users");
}

#[test]
fn rootless_layers_whiteouts_and_opaque_directories_work_over_overlayfs() {
    as_user("inner_layers_whiteouts_and_opaque_directories");
}

#[test]
fn rootless_mounts_cache_volumes_and_secrets_work() {
    as_user("inner_mounts_cache_volumes_and_secrets");
}

#[test]
fn rootless_crun_runs_containers_too() {
    as_user("inner_crun_runs_containers_too");
}

#[test]
fn rootless_containers_reach_the_host_but_not_its_loopback() {
    as_user("inner_network_reaches_the_host_but_not_its_loopback");
}

#[test]
fn rootless_a_container_cannot_write_the_users_files() {
    as_user("inner_a_container_cannot_write_the_users_files");
}

#[test]
fn rootless_an_image_with_several_users_keeps_its_owners() {
    if testkit::users::is_root()
        && let Err(e) = testkit::images::ensure()
    {
        panic!("the offline registry: {e}");
    }
    as_user("inner_an_image_with_several_users_keeps_its_owners");
}

/// What containers write belongs, on the host, to the user (container root) and to its subordinate IDs
/// (other container users): checked from outside the user namespace, on the cache volume the inner test left.
#[test]
fn rootless_container_users_are_the_users_subordinate_ids_on_the_host() {
    let Some((staged, user)) = as_user("inner_files_of_container_users") else {
        return;
    };
    let volumes = staged.dir.join("share/cache/cache-volumes");
    let find = |name: &str| -> std::fs::Metadata {
        let found = walk(&volumes)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|f| f == name));
        let path = found.unwrap_or_else(|| panic!("{name} is in a cache volume under {}", volumes.display()));
        std::fs::symlink_metadata(path).expect("stat")
    };
    let by_root = find("by-root");
    assert_eq!(by_root.uid(), user.uid, "container root is the user");
    let by_1000 = find("by-1000");
    assert_eq!(
        by_1000.uid(),
        user.subuid + 999,
        "container uid 1000 is the user's subordinate uid 1000"
    );
}

#[test]
fn rootless_services_are_reached_by_alias_and_hostname_and_shared() {
    as_user("inner_services_reached_by_alias_and_hostname");
}

#[test]
fn rootless_a_service_that_exits_before_it_is_ready_fails_its_dependent() {
    as_user("inner_service_exits_before_it_is_ready");
}

#[test]
fn rootless_services_meet_the_host_through_tunnels_and_host_services_only() {
    as_user("inner_services_and_the_hosts_loopback");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// The inner tests: as the ordinary user, inside a user namespace.
// ---------------------------------------------------------------------------------------------------------

/// Starts this test again inside a user namespace (when not in one yet) and checks that it is rootless there.
async fn enter() {
    if let Err(e) = dagger_engine::rootless::reexec().await {
        panic!("cannot enter a user namespace: {e}");
    }
    assert!(
        dagger_engine::rootless::is_rootless(),
        "the inner tests run as an ordinary user (the `rootless_*` tests run them so, as root): {:?}",
        dagger_engine::rootless::privilege()
    );
}

struct Env {
    _session: dagger_engine::Session,
    dag: Query,
    _dirs: Vec<tempfile::TempDir>,
    rootfs: String,
}

async fn start_with(config: impl FnOnce(&Path) -> Config) -> Env {
    enter().await;
    let cache = tempfile::tempdir().expect("cache dir");
    let rootfs = busybox_rootfs();
    let (session, dag) = testkit::start_engine(config(cache.path())).await;
    Env {
        _session: session,
        dag,
        rootfs: rootfs.path().to_string_lossy().into_owned(),
        _dirs: vec![cache, rootfs],
    }
}

async fn start() -> Env {
    start_with(|dir| Config::for_dir(dir)).await
}

impl Env {
    fn busybox(&self) -> Container {
        self.dag
            .container()
            .with_rootfs(self.dag.host().directory(self.rootfs.clone()))
    }
}

/// A busybox root filesystem: `/bin/busybox`, one link per applet, users `root` and `user` (1000).
fn busybox_rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("rootfs dir");
    let root = dir.path();
    for d in ["bin", "etc", "tmp", "root", "home/user"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).expect("chmod /tmp");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (Debian package busybox-static)");
    let list = Command::new("/bin/busybox")
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
    std::fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n").expect("group");
    dir
}

fn exec_error(e: Error) -> dagger::ExecError {
    match e {
        Error::Exec(e) => e,
        other => panic!("expected an exec error, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_execs_run_as_root_and_as_other_users"]
async fn inner_execs_run_as_root_and_as_other_users() {
    let env = start().await;
    let c = env
        .busybox()
        .with_env_variable("GREETING", "hello")
        .with_workdir("/work")
        .with_exec(["sh", "-c", "echo $GREETING from $(pwd) as $(id -u); echo oops >&2"]);
    assert_eq!(c.stdout().await.expect("stdout"), "hello from /work as 0\n");
    assert_eq!(c.stderr().await.expect("stderr"), "oops\n");
    let err = env
        .busybox()
        .with_exec(["sh", "-c", "echo out; exit 3"])
        .sync()
        .await
        .expect_err("exit 3 fails");
    assert_eq!(exec_error(err).exit_code, 3);
    // Another user of the image: its own ID, and what it writes is its own.
    let as_user = env.busybox().with_user("user").with_exec([
        "sh",
        "-c",
        "id -u; id -g; touch /tmp/mine; stat -c %u:%g /tmp/mine",
    ]);
    assert_eq!(as_user.stdout().await.expect("as user"), "1000\n1000\n1000:1000\n");
    // Root owns what it writes; the next layer still sees each owner.
    let owners =
        as_user
            .with_user("root")
            .with_exec(["sh", "-c", "touch /tmp/root-made; stat -c %u /tmp/mine /tmp/root-made"]);
    assert_eq!(owners.stdout().await.expect("owners"), "1000\n0\n");
    // Processes see a user namespace: root there, not the host's.
    let map = env.busybox().with_exec(["cat", "/proc/self/uid_map"]);
    let map = map.stdout().await.expect("uid_map");
    assert!(!map.contains("4294967295"), "not the host's namespace: {map}");
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_layers_whiteouts_and_opaque_directories_work_over_overlayfs"]
async fn inner_layers_whiteouts_and_opaque_directories() {
    let env = start().await;
    let base = env
        .busybox()
        .with_new_file("/data/keep", "k")
        .with_new_file("/data/drop", "d")
        .with_new_file("/tree/old/a", "a")
        .with_exec(["sh", "-c", "mkdir -p /tree/old/b && echo b > /tree/old/b/f"]);
    // A removed file (a whiteout), and a directory removed and made again (an opaque directory).
    let changed = base.with_exec([
        "sh",
        "-c",
        "rm /data/drop && rm -rf /tree/old && mkdir /tree/old && echo new > /tree/old/n",
    ]);
    assert_eq!(changed.directory("/data").entries().await.expect("data"), ["keep"]);
    assert_eq!(changed.directory("/tree/old").entries().await.expect("old"), ["n"]);
    // Over overlayfs (not copies), with its markers in `user.*` attributes.
    let root_mount = changed.with_exec(["sh", "-c", "grep ' / / ' /proc/self/mountinfo"]);
    let root_mount = root_mount.stdout().await.expect("mountinfo");
    assert!(
        root_mount.contains(" - overlay ") && root_mount.contains("userxattr"),
        "{root_mount}"
    );
    let listed = changed.with_exec(["sh", "-c", "ls -R /tree /data"]);
    assert_eq!(
        listed.stdout().await.expect("ls"),
        "/data:\nkeep\n\n/tree:\nold\n\n/tree/old:\nn\n"
    );
    // Removals by the engine itself (not by a process) too.
    let without = changed.without_file("/data/keep").with_exec(["ls", "-a", "/data"]);
    assert_eq!(without.stdout().await.expect("ls"), ".\n..\n");
    // An exported layer stack reads back the same.
    let out = tempfile::tempdir().expect("export dir");
    changed
        .directory("/tree")
        .export(out.path().to_string_lossy().into_owned())
        .await
        .expect("export");
    assert_eq!(
        std::fs::read_to_string(out.path().join("old/n")).expect("exported"),
        "new\n"
    );
    assert!(!out.path().join("old/a").exists() && !out.path().join("old/b").exists());
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_mounts_cache_volumes_and_secrets_work"]
async fn inner_mounts_cache_volumes_and_secrets() {
    let env = start().await;
    let cache = env.dag.cache_volume("counter");
    for expected in ["1\n", "2\n"] {
        let c = env
            .busybox()
            .with_mounted_cache("/cache", cache.clone())
            .with_env_variable("ROUND", expected)
            .with_exec(["sh", "-c", "echo x >> /cache/n; wc -l < /cache/n"]);
        assert_eq!(c.stdout().await.expect("count"), expected);
    }
    let secret = env.dag.set_secret("token", "s3cr3t-value");
    let c = env
        .busybox()
        .with_secret_variable("TOKEN", secret.clone())
        .with_mounted_secret("/run/secrets/token", secret)
        .with_mounted_temp("/scratch")
        .with_mounted_directory("/src", env.dag.directory().with_new_file("in.txt", "in"))
        .with_exec([
            "sh",
            "-c",
            "test \"$(cat /run/secrets/token)\" = \"$TOKEN\" && echo match; echo t > /scratch/t; cat /src/in.txt \
             > /src/out.txt; echo $TOKEN",
        ]);
    assert_eq!(c.stdout().await.expect("stdout"), "match\n***\n");
    assert_eq!(
        c.file("/src/out.txt").contents().await.expect("written to the mount"),
        "in"
    );
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_crun_runs_containers_too"]
async fn inner_crun_runs_containers_too() {
    let env = start_with(|dir| Config {
        runtime: Some("crun".into()),
        ..Config::for_dir(dir)
    })
    .await;
    let c = env
        .busybox()
        .with_user("user")
        .with_exec(["sh", "-c", "id -u; echo crun > /tmp/x; cat /tmp/x"]);
    assert_eq!(c.stdout().await.expect("crun runs"), "1000\ncrun\n");
    let c = env
        .busybox()
        .with_exec(["sh", "-c", "rm -rf /home && echo gone"])
        .with_exec(["ls", "/"]);
    assert!(!c.stdout().await.expect("ls").contains("home"));
}

/// An IPv4 address of this host other than loopback (the source address of a route out), if it has one.
fn host_address() -> Option<std::net::Ipv4Addr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_loopback() && !a.is_unspecified() => Some(a),
        _ => None,
    }
}

/// Answers every HTTP request on `listener` with `body`.
fn serve(listener: std::net::TcpListener, body: &'static str) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_containers_reach_the_host_but_not_its_loopback"]
async fn inner_network_reaches_the_host_but_not_its_loopback() {
    let env = start().await;
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let loopback_port = loopback.local_addr().expect("addr").port();
    serve(loopback, "loopback");
    let c = env.busybox().with_exec(["sh", "-c", "ip addr show dev tap0; ip route"]);
    let out = c.stdout().await.expect("addresses");
    assert!(out.contains("inet 10.0.2.100/24"), "a slirp4netns tap device: {out}");
    assert!(out.contains("default via 10.0.2.2"), "{out}");
    // The host's loopback: neither as 127.0.0.1 (the container's own) nor through the gateway. (busybox's
    // `wget` crashes on a refused connection; `nc` says so.)
    let get = |host: String, port: u16| {
        env.busybox().with_exec_opts(
            [
                "sh",
                "-c",
                &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {host} {port}"),
            ],
            ContainerWithExecOpts::default().expect(dagger::ReturnType::Any),
        )
    };
    for host in ["127.0.0.1", "10.0.2.2"] {
        let c = get(host.to_owned(), loopback_port);
        let out = c.stdout().await.expect("nc");
        assert!(
            !out.contains("loopback"),
            "{host}:{loopback_port} must be out of reach: {out}"
        );
        assert_ne!(c.exit_code().await.expect("nc"), 0, "{host}");
    }
    // slirp4netns answers DNS at 10.0.2.3 as the user's own process would: what a container's resolv.conf
    // names instead of a resolver on the host's loopback (systemd-resolved's 127.0.0.53).
    use std::net::ToSocketAddrs;
    if ("deb.debian.org", 80).to_socket_addrs().is_ok() {
        let c = env
            .busybox()
            .with_exec(["sh", "-c", "nslookup deb.debian.org 10.0.2.3 && cat /etc/resolv.conf"]);
        let out = c.stdout().await.expect("nslookup through slirp4netns");
        assert!(out.contains("Address:") && out.contains("deb.debian.org"), "{out}");
        assert!(
            !out.lines().any(|l| l.starts_with("nameserver 127.")),
            "no loopback name server in a container: {out}"
        );
    } else {
        eprintln!("note: this host resolves no names; DNS through slirp4netns is not checked");
    }
    // The host on another address: reachable, through slirp4netns.
    let Some(addr) = host_address() else {
        eprintln!("note: this host has no address besides loopback; the reachable case is not checked");
        return;
    };
    let outside = std::net::TcpListener::bind((addr, 0)).expect("listen on the host's address");
    let port = outside.local_addr().expect("addr").port();
    serve(outside, "reached");
    let c = get(addr.to_string(), port);
    let out = c.stdout().await.expect("nc");
    assert!(out.ends_with("\r\n\r\nreached"), "the host is reachable: {out:?}");
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_a_container_cannot_write_the_users_files"]
async fn inner_a_container_cannot_write_the_users_files() {
    let env = start().await;
    let home = PathBuf::from(std::env::var("HOME").expect("HOME"));
    let name = format!("drs-marker-{}", std::process::id());
    let marker = home.join(&name);
    std::fs::write(&marker, "original\n").expect("marker");
    let before = listing(&home);
    // The home directory mounted (a snapshot of it), and commands that look for the user's files everywhere
    // they could be reached, with the default capabilities and with all of them.
    let hunt = format!(
        "echo changed > /mnt/home/{name}; for p in /proc/1/root /proc/*/cwd /sys /dev; do find $p -xdev -name \
         '{name}' -exec sh -c 'echo changed > \"$1\"' _ {{}} \\; 2>/dev/null; done; mount -t tmpfs t /tmp \
         2>/dev/null; mkdir -p /tmp/h && mount --bind / /tmp/h 2>/dev/null; find / -name '{name}' 2>/dev/null; true"
    );
    for privileged in [false, true] {
        let c = env
            .busybox()
            .with_mounted_directory(
                "/mnt/home",
                env.dag.host().directory(home.to_string_lossy().into_owned()),
            )
            .with_exec_opts(
                ["sh", "-c", &hunt],
                ContainerWithExecOpts::default().insecure_root_capabilities(privileged),
            );
        let found = c.stdout().await.expect("the hunt runs");
        // Inside, the mounted snapshot changed...
        assert!(found.contains(&format!("/mnt/home/{name}")), "{found}");
        let inside = c.file(format!("/mnt/home/{name}")).contents().await.expect("inside");
        assert_eq!(inside, "changed\n");
        // ...and on the host nothing did.
        assert_eq!(
            std::fs::read_to_string(&marker).expect("marker"),
            "original\n",
            "privileged: {privileged}"
        );
        assert_eq!(listing(&home), before, "the home directory is as it was");
    }
    std::fs::remove_file(&marker).expect("remove the marker");
}

/// The entries of `dir` with their sizes and modification times, sorted.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, i64)> {
    let mut all: Vec<(PathBuf, u64, i64)> = std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.len(), m.mtime()))
        })
        .collect();
    all.sort();
    all
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_an_image_with_several_users_keeps_its_owners"]
async fn inner_an_image_with_several_users_keeps_its_owners() {
    let env = start().await;
    let debian = env
        .dag
        .container()
        .from(format!("{}/library/debian:bookworm-slim", testkit::images::ADDR));
    let c = debian.with_exec([
        "sh",
        "-c",
        "stat -c '%U:%G' /etc/shadow /var/mail; id -u nobody; touch /tmp/n",
    ]);
    assert_eq!(c.stdout().await.expect("owners"), "root:shadow\nroot:mail\n65534\n");
    let nobody =
        debian
            .with_user("nobody")
            .with_exec(["sh", "-c", "id -u; touch /tmp/by-nobody; stat -c %U /tmp/by-nobody"]);
    assert_eq!(nobody.stdout().await.expect("nobody"), "65534\nnobody\n");
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_container_users_are_the_users_subordinate_ids_on_the_host"]
async fn inner_files_of_container_users() {
    let share = PathBuf::from(std::env::var(SHARE_ENV).expect("run by the outer test"));
    let env = start_with(|_| Config::for_dir(share.join("cache"))).await;
    let c = env
        .busybox()
        .with_mounted_cache("/cache", env.dag.cache_volume("owners"))
        .with_exec([
            "sh",
            "-c",
            "touch /cache/by-root; touch /cache/by-1000; chown 1000:1000 /cache/by-1000; ls -n /cache",
        ]);
    let out = c.stdout().await.expect("written");
    assert!(out.contains(" 1000 ") && out.contains("by-1000"), "{out}");
}

#[tokio::test]
#[ignore = "run by rootless_without_subordinate_ids_runs_as_root_only_and_says_how_to_add_them"]
async fn inner_single_id() {
    let env = start().await;
    assert_eq!(
        dagger_engine::rootless::privilege(),
        dagger_engine::rootless::Privilege::UserNamespace { ids: 1 }
    );
    let note = dagger_engine::rootless::single_id_note().expect("a note");
    assert!(
        note.contains(&format!("`{SINGLE_ID_USER}:")) && note.contains(":65536` to /etc/subuid"),
        "{note}"
    );
    // Root runs, and files keep working.
    let c = env
        .busybox()
        .with_exec(["sh", "-c", "id -u; echo x > /tmp/x; rm -rf /home; ls /"]);
    let out = c.stdout().await.expect("root runs");
    assert!(out.starts_with("0\n") && !out.contains("home"), "{out}");
    // Another user cannot: the error says why and how to fix it.
    let err = env
        .busybox()
        .with_user("user")
        .with_exec(["id"])
        .sync()
        .await
        .expect_err("no ID for user 1000");
    let text = err.to_string();
    assert!(
        text.contains("has no ID in the engine's user namespace") && text.contains("/etc/subuid"),
        "{text}"
    );
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_the_sdk_starts_its_embedded_engine_in_a_user_namespace"]
async fn inner_sdk_embedded_engine() {
    // No `enter()`: connecting does it (this test runs twice, the second time inside the namespace).
    let rootfs = busybox_rootfs();
    let conn = dagger::Connection::builder()
        .quiet()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("the embedded engine starts: {e}"));
    assert!(
        dagger_engine::rootless::is_rootless(),
        "{:?}",
        dagger_engine::rootless::privilege()
    );
    let dag = conn.query();
    let c = dag
        .container()
        .with_rootfs(dag.host().directory(rootfs.path().to_string_lossy().into_owned()))
        .with_exec(["sh", "-c", "echo hello from $(id -u)"]);
    assert_eq!(c.stdout().await.expect("runs"), "hello from 0\n");
}

/// The quickstart pipeline (README command 1's work) as an ordinary user: `cargo test` and a release build
/// in `rust:1-slim`, the binary copied into `debian:bookworm-slim`, published to a registry the user started,
/// pulled back, run for its self-test, and run as a service that a second container reaches by alias.
#[test]
fn rootless_the_quickstart_pipeline_runs_as_an_ordinary_user() {
    if testkit::users::is_root()
        && let Err(e) = testkit::images::ensure()
    {
        panic!("the offline registry: {e}");
    }
    as_user("inner_quickstart");
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_the_quickstart_pipeline_runs_as_an_ordinary_user"]
async fn inner_quickstart() {
    use examples::quickstart::{self, CHECK_PASSED, Settings};
    enter().await;
    let registry = testkit::registry::LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    let cache = tempfile::tempdir().expect("cache dir");
    let registries = dagger_engine::oci::RegistryConfig::parse(testkit::images::MIRRORS, "").expect("mirrors");
    let (_session, dag) = testkit::start_engine(Config {
        registries: Some(registries),
        ..Config::for_dir(cache.path())
    })
    .await;
    let settings = Settings {
        address: format!("{}/quickstart-app:rootless", registry.host()),
        ..Settings::default()
    };
    let report = quickstart::run(&dag, &settings)
        .await
        .unwrap_or_else(|e| panic!("the quickstart failed rootless: {e}"));
    assert!(
        quickstart::test_summary(&report.test_log)
            .first()
            .is_some_and(|l| l.starts_with("test result: ok.")),
        "{}",
        report.test_log
    );
    assert!(report.published.contains("@sha256:"), "{}", report.published);
    report.check().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.output.ends_with(&format!("{CHECK_PASSED}\n")) || report.output.ends_with(CHECK_PASSED));
    // The published image answered, as a service, a client container that bound it by alias.
    assert!(
        report.served.as_ref().is_some_and(|s| !s.is_empty()),
        "the service step ran"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Services without root: each container is networked by a slirp4netns of its own, and the engine forwards
// bound services' ports inside the namespaces.
// ---------------------------------------------------------------------------------------------------------

impl Env {
    /// An HTTP server on port 8080 serving a page that says hello.
    fn web(&self) -> Service {
        self.busybox()
            .with_new_file("/srv/index.html", "hello from the service\n")
            .with_exposed_port(8080)
            .as_service_opts(ContainerAsServiceOpts::default().args(["httpd", "-f", "-p", "8080", "-h", "/srv"]))
    }

    /// Counts the service instances started, from now on.
    fn count_starts(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        let starts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = starts.clone();
        self._session.engine.listen(move |e| {
            if e.op == "Service" && matches!(e.kind, dagger_engine::EventKind::Started) {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        starts
    }
}

/// Fetches `url` in a container bound to `svc` as `alias`; `tag` makes the exec a call of its own.
fn fetch(client: Container, alias: &str, svc: &Service, url: &str, tag: &str) -> Container {
    client
        .with_service_binding(alias, svc.clone())
        .with_exec(["sh", "-c", &format!("wget -q -O- {url} && : {tag}")])
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_services_are_reached_by_alias_and_hostname_and_shared"]
async fn inner_services_reached_by_alias_and_hostname() {
    let env = start().await;
    let starts = env.count_starts();
    let svc = env.web();
    let host = svc.hostname().await.expect("hostname");
    let by_alias = fetch(env.busybox(), "www", &svc, "http://www:8080/index.html", "alias");
    assert_eq!(by_alias.stdout().await.expect("by alias"), "hello from the service\n");
    let by_name = fetch(
        env.busybox(),
        "www",
        &svc,
        &format!("http://{host}:8080/index.html"),
        "name",
    );
    assert_eq!(by_name.stdout().await.expect("by hostname"), "hello from the service\n");
    // The names are the container's own: loopback addresses of its namespace, not 127.0.0.1.
    let hosts = env
        .busybox()
        .with_service_binding("www", svc.clone())
        .with_exec(["cat", "/etc/hosts"])
        .stdout()
        .await
        .expect("hosts");
    assert!(hosts.contains("127.0.0.2\twww\n"), "{hosts}");
    assert!(hosts.contains(&format!("127.0.0.2\t{host}\n")), "{hosts}");

    // Two dependents at once share one instance; each binds it under its own alias.
    let before = starts.load(std::sync::atomic::Ordering::SeqCst);
    let fresh = env.web().with_hostname("shared-web");
    let a = fetch(env.busybox(), "one", &fresh, "http://one:8080/index.html", "a");
    let b = fetch(env.busybox(), "two", &fresh, "http://shared-web:8080/index.html", "b");
    let (a, b) = tokio::join!(a.stdout(), b.stdout());
    assert_eq!(a.expect("a"), "hello from the service\n");
    assert_eq!(b.expect("b"), "hello from the service\n");
    assert_eq!(
        starts.load(std::sync::atomic::Ordering::SeqCst) - before,
        1,
        "one instance for both dependents"
    );

    // A service reaches the services it binds, and its dependents reach it: a chain of two.
    let mirror = env
        .busybox()
        .with_service_binding("origin", svc.clone())
        .with_exposed_port(8081)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            "mkdir -p /srv && wget -q -O /srv/copy.html http://origin:8080/index.html && exec httpd -f -p 8081 -h /srv",
        ]));
    let c = fetch(
        env.busybox(),
        "mirror",
        &mirror,
        "http://mirror:8081/copy.html",
        "chain",
    );
    assert_eq!(c.stdout().await.expect("through the chain"), "hello from the service\n");

    // Two services bound to one container: each its own address.
    let both = env
        .busybox()
        .with_service_binding("www", svc.clone())
        .with_service_binding("mirror", mirror)
        .with_exec([
            "sh",
            "-c",
            "wget -q -O- http://www:8080/index.html && wget -q -O- http://mirror:8081/copy.html",
        ]);
    assert_eq!(
        both.stdout().await.expect("both"),
        "hello from the service\nhello from the service\n"
    );

    // A service without exposed ports cannot be reached here: said by name.
    let portless = env
        .busybox()
        .as_service_opts(ContainerAsServiceOpts::default().args(["sleep", "60"]));
    let err = env
        .busybox()
        .with_service_binding("quiet", portless)
        .with_exec(["true"])
        .sync()
        .await
        .expect_err("nothing to reach");
    let message = err.to_string();
    assert!(message.contains("withServiceBinding(alias: \"quiet\")"), "{message}");
    assert!(message.contains("withExposedPort"), "{message}");
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_a_service_that_exits_before_it_is_ready_fails_its_dependent"]
async fn inner_service_exits_before_it_is_ready() {
    let env = start().await;
    let svc = env
        .busybox()
        .with_exposed_port(5432)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            "echo starting up; echo config is missing >&2; exit 3",
        ]));
    let err = env
        .busybox()
        .with_service_binding("db", svc)
        .with_exec(["echo", "never runs"])
        .stdout()
        .await
        .expect_err("the service failed");
    let message = err.to_string();
    assert!(message.contains("exited with code 3 before it was ready"), "{message}");
    assert!(
        message.contains("config is missing") && message.contains("starting up"),
        "{message}"
    );
    assert!(message.contains("(bound as `db`)"), "{message}");
    // A service whose port never opens is not ready either, while it runs: its health check connects inside
    // its namespace, not to anything of the host's.
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = loopback.local_addr().expect("addr").port();
    serve(loopback, "loopback");
    let silent = env
        .busybox()
        .with_exposed_port(i64::from(port))
        .as_service_opts(ContainerAsServiceOpts::default().args(["sh", "-c", "sleep 2; echo gave up; exit 4"]));
    let err = env
        .busybox()
        .with_service_binding("silent", silent)
        .with_exec(["echo", "never runs"])
        .sync()
        .await
        .expect_err("never ready");
    assert!(
        err.to_string().contains("exited with code 4 before it was ready"),
        "{err}"
    );
}

/// What an HTTP GET of `/index.html` at `host_port` answers, from the host (retried for up to 30 s).
async fn get_from_host(host_port: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let attempt = tokio::task::spawn_blocking({
            let host_port = host_port.to_owned();
            move || -> std::io::Result<String> {
                use std::io::{Read, Write};
                let mut c = std::net::TcpStream::connect(&host_port)?;
                c.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
                c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
                let mut out = String::new();
                c.read_to_string(&mut out)?;
                Ok(out)
            }
        })
        .await
        .expect("the GET");
        match attempt {
            Ok(out) if !out.is_empty() => return out,
            _ => {
                assert!(std::time::Instant::now() < deadline, "{host_port} did not answer");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
#[ignore = "run as an ordinary user by rootless_services_meet_the_host_through_tunnels_and_host_services_only"]
async fn inner_services_and_the_hosts_loopback() {
    let env = start().await;
    let svc = env.web();
    // Host.tunnel: the service on the host's loopback.
    let tunnel = env.dag.host().tunnel(svc.clone());
    let endpoint = tunnel.endpoint().await.expect("endpoint");
    assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    let answer = get_from_host(&endpoint).await;
    assert!(answer.ends_with("hello from the service\n"), "{answer}");

    // Service.up: on the port asked for, until the service stops.
    let port = testkit::process::free_port();
    let up_svc = svc.clone();
    let up = tokio::spawn(async move {
        up_svc
            .up_opts(dagger::ServiceUpOpts::default().ports([PortForward {
                frontend: Some(i64::from(port)),
                backend: 8080,
                protocol: None,
            }]))
            .await
    });
    let answer = get_from_host(&format!("127.0.0.1:{port}")).await;
    assert!(answer.ends_with("hello from the service\n"), "{answer}");
    svc.stop_opts(ServiceStopOpts::default().kill(true))
        .await
        .expect("stop");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), up).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "`up` returns when the service stops: {ended:?}"
    );

    // Host.service: a container that binds it reaches a port of the host's loopback, and only that one.
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let loopback_port = loopback.local_addr().expect("addr").port();
    serve(loopback, "host loopback says hi");
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let other_port = other.local_addr().expect("addr").port();
    serve(other, "not forwarded");
    let host_svc = env.dag.host().service([PortForward {
        frontend: Some(80),
        backend: i64::from(loopback_port),
        protocol: None,
    }]);
    let nc = |c: Container, host: &str, port: u16, tag: &str| {
        c.with_exec_opts(
            [
                "sh",
                "-c",
                &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {host} {port}; : {tag}"),
            ],
            ContainerWithExecOpts::default().expect(dagger::ReturnType::Any),
        )
    };
    let bound = env.busybox().with_service_binding("hostsvc", host_svc.clone());
    let out = nc(bound.clone(), "hostsvc", 80, "bound").stdout().await.expect("nc");
    assert!(out.contains("host loopback says hi"), "{out}");
    // Its own loopback, the gateway, and the host's other ports stay out of reach, bound or not.
    for (host, port) in [
        ("127.0.0.1", loopback_port),
        ("10.0.2.2", loopback_port),
        ("hostsvc", other_port),
        ("10.0.2.2", other_port),
    ] {
        let out = nc(bound.clone(), host, port, "probe").stdout().await.expect("nc");
        assert!(
            !out.contains("says hi") && !out.contains("not forwarded"),
            "{host}:{port} must be out of reach: {out}"
        );
    }
    let unbound = nc(env.busybox(), "10.0.2.2", loopback_port, "unbound")
        .stdout()
        .await
        .expect("nc");
    assert!(!unbound.contains("says hi"), "{unbound}");
    // A service that binds the host service reaches it too (and its dependent reaches that service).
    let relay = env
        .busybox()
        .with_service_binding("hostsvc", host_svc)
        .with_exposed_port(8082)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            "mkdir -p /srv && wget -q -O /srv/index.html http://hostsvc:80/ && exec httpd -f -p 8082 -h /srv",
        ]));
    let c = fetch(env.busybox(), "relay", &relay, "http://relay:8082/index.html", "relay");
    assert_eq!(c.stdout().await.expect("relayed"), "host loopback says hi");
    assert!(
        threads_inside() > 0,
        "the relay's instance is still in its grace period"
    );

    // Once the session ends nothing is left: no thread of the engine's inside a namespace, no slirp4netns.
    let Env {
        _session: session,
        _dirs: dirs,
        ..
    } = env;
    session.shutdown(std::time::Duration::from_secs(5)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while threads_inside() > 0 || slirps() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "left: {} threads inside namespaces, {} slirp4netns",
            threads_inside(),
            slirps()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(dirs);
}

/// The engine's threads inside containers' network namespaces (named `drs-inside`).
fn threads_inside() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "drs-inside"))
                .count()
        })
        .unwrap_or(0)
}

/// The `slirp4netns` processes this process started (and that are not yet reaped).
fn slirps() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|p| {
                    let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
                    // `pid (comm) state ppid …`
                    let Some((comm, rest)) = stat.split_once(") ") else {
                        return false;
                    };
                    comm.ends_with("(slirp4netns") && rest.split(' ').nth(1) == Some(me.as_str())
                })
                .count()
        })
        .unwrap_or(0)
}
