//! The Debian packages the README's commands install: `scripts/packages.txt` is the one list, and
//! `scripts/install-packages.sh` reads it for each command.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds dagger-engine")
        .join("scripts")
}

/// The packages `packages.txt` lists for `command`.
fn listed_for(command: &str) -> Vec<String> {
    let text = std::fs::read_to_string(scripts().join("packages.txt")).expect("scripts/packages.txt");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split('#').next()?.split_whitespace().collect();
            let (name, commands) = fields.split_first()?;
            commands.contains(&command).then(|| (*name).to_owned())
        })
        .collect()
}

#[test]
fn each_command_lists_the_packages_its_tools_come_from() {
    let test = listed_for("test");
    // What the test suites run: the runtimes, busybox for images and root filesystems, the registry, the
    // Debian image builder, independent image tools, networking, the Python SDK's venv, and the browser that
    // renders run reports.
    for p in [
        "runc",
        "crun",
        "busybox-static",
        "docker-registry",
        "mmdebstrap",
        "skopeo",
        "umoci",
        "iproute2",
        "iptables",
        "python3-venv",
        "chromium",
        // The rootless tests: the user namespace's ID maps, and the containers' network.
        "uidmap",
        "slirp4netns",
    ] {
        assert!(
            test.iter().any(|t| t == p),
            "`{p}` is missing for `test` in scripts/packages.txt"
        );
    }
    let quickstart = listed_for("quickstart");
    for p in ["runc", "busybox-static", "docker-registry", "mmdebstrap", "iptables"] {
        assert!(quickstart.iter().any(|t| t == p), "`{p}` is missing for `quickstart`");
    }
    // The engine makes network namespaces over netlink: only the tests run `ip`.
    assert!(
        !quickstart.iter().any(|t| t == "iproute2"),
        "the quickstart needs no `iproute2`"
    );
    for script in ["quickstart.sh", "test-all.sh"] {
        let text = std::fs::read_to_string(scripts().join(script)).expect("script");
        let command = if script == "quickstart.sh" {
            "quickstart"
        } else {
            "test"
        };
        assert!(
            text.contains(&format!("./scripts/install-packages.sh {command}")),
            "{script} installs its packages"
        );
        assert!(!text.contains("PACKAGES=("), "{script} keeps no list of its own");
    }
}

/// Runs the installer as `nobody` with `PATH` = `dirs`; returns its exit code, stdout and stderr.
fn install_as_nobody(dir: &std::path::Path, dirs: &str) -> (Option<i32>, String, String) {
    let out = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/bash"])
        .arg(dir.join("install-packages.sh"))
        .arg("test")
        .env("PATH", dirs)
        .output()
        .expect("setpriv");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_root_the_installer_runs_apt_get_through_sudo_or_names_the_command() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run the installer as another user");
        return;
    }
    // A copy anyone can read, a `dpkg-query` that reports `crun` and `umoci` as not installed, and the few
    // programs the script runs: a `PATH` of this directory alone has no `sudo`.
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["packages.txt", "install-packages.sh"] {
        std::fs::copy(scripts().join(f), dir.path().join(f)).expect("copy");
    }
    let shim = dir.path().join("bin");
    std::fs::create_dir(&shim).expect("mkdir");
    std::fs::write(
        shim.join("dpkg-query"),
        "#!/bin/sh\nfor a; do last=$a; done\ncase $last in crun|umoci) exit 1;; esac\nprintf installed\n",
    )
    .expect("shim");
    for tool in ["dirname", "id"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{tool}"), shim.join(tool)).expect("link");
    }
    // A `sudo` that records what it was asked to run.
    let with_sudo = dir.path().join("sudo-bin");
    std::fs::create_dir(&with_sudo).expect("mkdir");
    let record = dir.path().join("sudo.log");
    std::fs::write(
        with_sudo.join("sudo"),
        format!("#!/bin/sh\necho \"$*\" >> {}\n", record.display()),
    )
    .expect("sudo shim");
    std::fs::write(&record, "").expect("log");
    {
        use std::os::unix::fs::PermissionsExt;
        for (p, mode) in [
            (dir.path(), 0o755),
            (&shim, 0o755),
            (&shim.join("dpkg-query"), 0o755),
            (&with_sudo, 0o755),
            (&with_sudo.join("sudo"), 0o755),
            (&record, 0o666),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }

    // No sudo: the exact command, and exit code 1.
    let (code, _, stderr) = install_as_nobody(dir.path(), &shim.display().to_string());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("apt-get install -y --no-install-recommends crun umoci"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&record).expect("log"), "");

    // With sudo: apt-get, and only apt-get, runs through it.
    let (code, stdout, stderr) = install_as_nobody(dir.path(), &format!("{}:{}", shim.display(), with_sudo.display()));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("with sudo apt-get"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&record).expect("log"),
        "DEBIAN_FRONTEND=noninteractive apt-get update -q\n\
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends crun umoci\n"
    );

    // Everything installed: nothing to do, whoever runs it.
    let out = Command::new("bash")
        .arg(scripts().join("install-packages.sh"))
        .args(["quickstart", "--check"])
        .env(
            "PATH",
            format!("{}:{}", shim.display(), std::env::var("PATH").unwrap_or_default()),
        )
        .output()
        .expect("check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all installed"));
}
