//! The official Python SDK (dagger-io 0.21.x) as a real client of `dagger-rs`: it introspects the schema,
//! builds directories, syncs and loads objects back by ID (`sync`, and the SDK's `load_directory_from_id` and
//! `load_container_from_id`, which send the legacy `loadFooFromID` fields), reads the host, exports, uses
//! secrets, and gets a clear error for a field the engine does not implement; and it drives container pipelines
//! (pull, exec, mounts, cache volumes, secrets, exec errors, export, publish) against a registry on loopback. Both
//! check the behaviours that follow the real engine (gitignore, modes, times, redirects, groups, `expand`, mounted
//! files and secrets, cache volume defaults, mount stubs, Dagger's error wording). It also drives services
//! (containers as services reached by alias and host name, started and stopped, tunnelled to and from the host). The
//! clients live in `tests/python/`; the SDK is installed in `target/python-sdk-venv` by
//! `scripts/python-sdk.sh --setup`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::registry::{LocalRegistry, push_busybox};

const BIN: &str = env!("CARGO_BIN_EXE_dagger-rs");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds dagger-engine")
        .to_owned()
}

/// The venv's interpreter, or a failure saying how to create it.
fn python() -> PathBuf {
    let python = workspace().join("target/python-sdk-venv/bin/python");
    assert!(
        python.exists(),
        "the Python SDK is not installed: run `scripts/python-sdk.sh --setup` (it creates {}), then rerun",
        python.display()
    );
    python
}

fn check(what: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("FAIL"), "{what}:\n{stdout}");
    assert!(stdout.contains("ok   "), "{what} ran no checks:\n{stdout}");
}

/// The clients' directory and environment: a fresh cache, plain progress, no session inherited.
fn in_clients_dir<'c>(cmd: &'c mut Command, cache: &tempfile::TempDir) -> &'c mut Command {
    cmd.current_dir(workspace().join("tests/python"))
        .env("DAGGER_RS_CACHE_DIR", cache.path())
        .env("DAGGER_RS_PROGRESS", "plain")
        .env_remove("DAGGER_SESSION_PORT")
        .env_remove("DAGGER_SESSION_TOKEN")
}

#[test]
fn the_sdk_starts_a_session_through_the_cli() {
    let cache = tempfile::tempdir().expect("cache");
    let out = in_clients_dir(&mut Command::new(python()), &cache)
        .arg("session_client.py")
        .env("_EXPERIMENTAL_DAGGER_CLI_BIN", BIN)
        .output()
        .expect("python runs");
    check("session_client.py", &out);
}

#[test]
fn the_sdk_runs_inside_dagger_rs_run() {
    let cache = tempfile::tempdir().expect("cache");
    let out = in_clients_dir(&mut Command::new(BIN), &cache)
        .arg("run")
        .arg(python())
        .arg("run_client.py")
        .env_remove("_EXPERIMENTAL_DAGGER_CLI_BIN")
        .output()
        .expect("dagger-rs runs");
    check("dagger-rs run python run_client.py", &out);
}

/// Runs `script` under `dagger-rs run` with a loopback registry holding `busybox:latest` (`DRS_TEST_REGISTRY`).
fn run_with_busybox(script: &str) -> Output {
    let python = python();
    let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(push_busybox(&registry, "busybox:latest"));
    let cache = tempfile::tempdir().expect("cache");
    let out = in_clients_dir(&mut Command::new(BIN), &cache)
        .arg("run")
        .arg(python)
        .arg(script)
        .env("DRS_TEST_REGISTRY", registry.host())
        .env_remove("_EXPERIMENTAL_DAGGER_CLI_BIN")
        .output()
        .expect("dagger-rs runs");
    check(&format!("dagger-rs run python {script}"), &out);
    out
}

#[test]
fn the_sdk_runs_container_pipelines() {
    run_with_busybox("containers.py");
}

/// Services through the SDK (`tests/python/services.py`): `as_service` (default command, entrypoint,
/// `expand`), `with_exposed_port`, `with_service_binding` by alias and by `hostname`, `endpoint`, `ports`,
/// `with_hostname`, concurrent dependents, a service binding a service, `start`/`stop`, a failed service's
/// output in its dependent's error, `host().tunnel`, `up`, and `host().service`.
#[test]
fn the_sdk_runs_service_pipelines() {
    let out = run_with_busybox("services.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Every check ran and passed (a check that is not reached would not print its line).
    for name in [
        "check_binding_hostname_endpoint_and_ports",
        "check_default_command_and_entrypoint",
        "check_with_hostname",
        "check_concurrent_dependents_and_a_service_binding_a_service",
        "check_start_keeps_one_instance_until_stop",
        "check_a_failed_service_fails_its_dependent",
        "check_the_host_reaches_a_service",
        "check_a_container_reaches_the_host",
    ] {
        assert!(
            stdout.contains(&format!("ok   [services] {name}\n")),
            "{name}:\n{stdout}"
        );
    }
}

/// The same container pipelines, as an ordinary user: `dagger-rs run` starts itself again in a user namespace
/// and the engine runs the containers rootless. Run as root, this creates the user `drs-rootless` (see
/// `testkit::users`) and runs the client as that user, with the system's `python3` and the SDK the venv holds
/// (the venv's own interpreter may live where the user cannot read); not root, it is skipped, saying so.
#[test]
fn the_sdk_runs_container_pipelines_as_an_ordinary_user() {
    use std::os::unix::fs::PermissionsExt;
    if !testkit::users::is_root() {
        eprintln!("skipped: needs root to create the test user; as an ordinary user the other tests are rootless");
        return;
    }
    let user = testkit::users::ensure("drs-rootless", true);
    let venv_lib = workspace().join("target/python-sdk-venv/lib");
    let site = std::fs::read_dir(&venv_lib)
        .unwrap_or_else(|e| panic!("the Python SDK is not installed ({e}): run `scripts/python-sdk.sh --setup`"))
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("the venv's site-packages");
    let venv_version = site
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let system = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .expect("/usr/bin/python3 (Debian's python3)");
    assert_eq!(
        String::from_utf8_lossy(&system.stdout).trim(),
        venv_version,
        "the system's python3 must be the venv's version to load its packages"
    );

    let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(push_busybox(&registry, "busybox:latest"));
    // The binary where the user can run it, and a cache directory the user owns.
    let staged = tempfile::Builder::new()
        .prefix("drs-python-rootless")
        .tempdir()
        .expect("staging dir");
    std::fs::set_permissions(staged.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = staged.path().join("dagger-rs");
    std::fs::copy(BIN, &bin).expect("copy dagger-rs");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cache = staged.path().join("cache");
    std::fs::create_dir(&cache).expect("cache dir");
    rustix::fs::chown(&cache, Some(rustix::fs::Uid::from_raw(user.uid)), None).expect("chown the cache");
    let out = Command::new("runuser")
        .args(["-u", "drs-rootless", "--", "env", "-i"])
        .arg("HOME=/home/drs-rootless")
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .arg("TMPDIR=/tmp")
        .arg(format!("PYTHONPATH={}", site.display()))
        .arg(format!("DAGGER_RS_CACHE_DIR={}", cache.display()))
        .arg("DAGGER_RS_PROGRESS=plain")
        .arg(format!("DRS_TEST_REGISTRY={}", registry.host()))
        .arg(&bin)
        .args(["run", "/usr/bin/python3", "containers.py"])
        .current_dir(workspace().join("tests/python"))
        .output()
        .expect("runuser");
    check("dagger-rs run python containers.py (as drs-rootless)", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("no subordinate IDs"),
        "the user's ranges are used: {stderr}"
    );
}
