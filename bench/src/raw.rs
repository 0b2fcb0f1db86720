//! The peers without an engine: `runc run` / `crun run` of a bundle whose `config.json` comes from the
//! engine's own [`spec_for`], over a plain busybox root filesystem.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dagger_engine::runtime::{RunRequest, spec_for};

/// A raw OCI runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Raw {
    Runc,
    Crun,
}

impl Raw {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Raw::Runc => "runc",
            Raw::Crun => "crun",
        }
    }
}

/// A bundle directory (with `config.json`) for one command line, and the runtime state directory.
pub(crate) struct Bundle {
    dir: PathBuf,
    state: PathBuf,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A container ID never used before by this process.
fn next_id() -> String {
    format!(
        "bench-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::SeqCst)
    )
}

/// A container started by [`Bundle::start_runc`], still running.
pub(crate) struct Started {
    child: tokio::process::Child,
    id: String,
    root: PathBuf,
}

impl Started {
    /// Kills the container (SIGKILL), waits for `runc run` to return and deletes the container.
    pub(crate) async fn stop(mut self) {
        let runc = |args: &[&str]| {
            let mut c = tokio::process::Command::new("runc");
            c.arg("--root")
                .arg(&self.root)
                .args(args)
                .arg(&self.id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        };
        let _ = runc(&["kill"]).arg("KILL").status().await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = runc(&["delete", "--force"]).status().await;
    }
}

impl Bundle {
    pub(crate) fn write(work: &Path, name: &str, rootfs: &Path, args: &[&str]) -> Result<Self, String> {
        Self::write_in(work, name, rootfs, args, None)
    }

    /// [`Bundle::write`], the container joining the network namespace at `netns` when given (a new one with
    /// loopback only when not).
    pub(crate) fn write_in(
        work: &Path,
        name: &str,
        rootfs: &Path,
        args: &[&str],
        netns: Option<PathBuf>,
    ) -> Result<Self, String> {
        let dir = work.join("bundles").join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let req = RunRequest {
            rootfs: rootfs.to_owned(),
            bundle: dir.clone(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            netns,
            ..RunRequest::default()
        };
        let spec = spec_for(&req).map_err(|e| e.to_string())?;
        spec.save(dir.join("config.json")).map_err(|e| e.to_string())?;
        Ok(Self {
            dir,
            state: work.join("raw-state"),
        })
    }

    /// Starts the bundle with `runc run` (in the foreground of a child process) and leaves it running; stop it
    /// with [`Started::stop`].
    pub(crate) fn start_runc(&self) -> Result<Started, String> {
        let id = next_id();
        let root = self.state.join("runc");
        let child = tokio::process::Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "--bundle"])
            .arg(&self.dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("runc: {e}"))?;
        Ok(Started { child, id, root })
    }

    /// Runs the bundle once to completion; fails unless the process exits 0.
    pub(crate) async fn run(&self, raw: Raw) -> Result<Duration, String> {
        let id = next_id();
        let root = self.state.join(raw.name());
        let rt_args: Vec<String> = vec![
            "--root".into(),
            root.to_string_lossy().into_owned(),
            "run".into(),
            "--bundle".into(),
            self.dir.to_string_lossy().into_owned(),
            id,
        ];
        let mut cmd = match raw {
            Raw::Runc => {
                let mut c = tokio::process::Command::new("runc");
                c.args(&rt_args);
                c
            }
            // crun refuses hybrid cgroups: hide the v2 mount in a private mount namespace, as the engine does.
            Raw::Crun => {
                let mut c = tokio::process::Command::new("unshare");
                c.args([
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"",
                    "crun",
                ])
                .args(&rt_args);
                c
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let out = cmd.output().await.map_err(|e| format!("{}: {e}", raw.name()))?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "raw {} failed ({}): {}",
                raw.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(took)
    }

    /// Runs `n` copies at once; the wall time until the last one exits.
    pub(crate) async fn run_parallel(&self, raw: Raw, n: usize) -> Result<Duration, String> {
        let start = Instant::now();
        futures_util::future::try_join_all((0..n).map(|_| self.run(raw))).await?;
        Ok(start.elapsed())
    }
}
