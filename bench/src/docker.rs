//! The BuildKit peer: Debian's `dockerd` (20.10) on a private socket, data root and exec root, with the loopback
//! registry allowed over plain HTTP; builds go through Debian's `/usr/bin/docker` with `DOCKER_BUILDKIT=1`.
//!
//! Nothing of the host's Docker setup is touched: no iptables rules (`--iptables=false`), and the `docker0`
//! bridge it creates is removed on stop when it was not there before.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

pub(crate) const DOCKERD: &str = "/usr/sbin/dockerd";
pub(crate) const DOCKER: &str = "/usr/bin/docker";

/// A private `dockerd`, stopped by [`Dockerd::stop`] (or killed on drop).
pub(crate) struct Dockerd {
    child: tokio::process::Child,
    pid: u32,
    dir: PathBuf,
    host: String,
    had_docker0: bool,
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Dockerd {
    /// Starts dockerd under `dir` (keep it short: socket paths are limited to 108 bytes).
    pub(crate) async fn start(dir: &Path, insecure_registry: &str) -> Result<Self, String> {
        if !Path::new(DOCKERD).is_file() || !Path::new(DOCKER).is_file() {
            return Err("Debian's docker.io is not installed (apt-get install docker.io)".into());
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let had_docker0 = link_exists("docker0");
        let sock = dir.join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let log_path = dir.join("dockerd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(DOCKERD)
            .arg("--host")
            .arg(&host)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args([
                "--insecure-registry",
                insecure_registry,
                "--iptables=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        let pid = child.id().ok_or("dockerd exited at once")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = tokio::process::Command::new(DOCKER)
                .args(["-H", &host, "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "dockerd exited ({status}):\n{}",
                    tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 15)
                ));
            }
            if Instant::now() > deadline {
                return Err("dockerd did not answer within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Self {
            child,
            pid,
            dir: dir.to_owned(),
            host,
            had_docker0,
        })
    }

    /// `docker build` of `dockerfile` (no context) with `--build-arg NONCE=nonce`; the wall time.
    pub(crate) async fn build(&self, dockerfile: &str, nonce: &str, tag: &str) -> Result<Duration, String> {
        let start = Instant::now();
        let mut child = tokio::process::Command::new(DOCKER)
            .args([
                "-H",
                &self.host,
                "build",
                "-q",
                "--build-arg",
                &format!("NONCE={nonce}"),
                "-t",
                tag,
                "-",
            ])
            .env("DOCKER_BUILDKIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("docker build: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(dockerfile.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "docker build failed: {}",
                tail(&String::from_utf8_lossy(&out.stderr), 15)
            ));
        }
        Ok(took)
    }

    /// `docker build --progress=plain` of `dockerfile` (given on stdin) with `context` as the build context and
    /// `--build-arg`s; the wall time and BuildKit's progress log (its standard error), for
    /// [`crate::steplog::buildkit_steps`].
    pub(crate) async fn build_in(
        &self,
        context: &Path,
        dockerfile: &str,
        args: &[(&str, &str)],
        tag: &str,
    ) -> Result<(Duration, String), String> {
        let mut cmd = tokio::process::Command::new(DOCKER);
        cmd.args(["-H", &self.host, "build", "--progress=plain", "-t", tag, "-f", "-"]);
        for (k, v) in args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        cmd.arg(context)
            .env("DOCKER_BUILDKIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("docker build: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(dockerfile.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        let took = start.elapsed();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!("docker build failed: {}", tail(&log, 25)));
        }
        Ok((took, log))
    }

    /// SIGTERM (dockerd stops its containerd too), SIGKILL after 30 s; removes `docker0` if it made it and
    /// the data directory.
    pub(crate) async fn stop(mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        if !self.had_docker0 && link_exists("docker0") {
            let _ = tokio::process::Command::new("ip")
                .args(["link", "delete", "docker0"])
                .status()
                .await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
