//! Running one process in a container: an OCI runtime bundle (`config.json` from [`oci_spec`] types) over
//! a prepared root filesystem, started with `runc` (default) or `crun`.
//!
//! The runtime is chosen with `DAGGER_RS_RUNTIME` (`runc`, `crun`, or a path to either). On hosts with hybrid
//! cgroups (a cgroup2 hierarchy mounted at `/sys/fs/cgroup/unified` beside the v1 controllers) crun refuses
//! to start, so it is run inside a private mount namespace (`unshare -m`) where that mount is removed (or, in
//! rootless mode, where it cannot be, covered by an empty tmpfs) first; the host's mounts are untouched.
//!
//! In rootless mode (see [`crate::worker::userns`]) the runtime runs as root of the engine's user namespace:
//! runc and crun detect that themselves and leave cgroups alone where they cannot write them (the engine sets
//! no resource limits). Containers share that user namespace, so container root is the engine's user on the
//! host and other container users are the user's subordinate IDs.
//!
//! Output is captured while the process runs and handed to a callback line by line (for progress events);
//! `DAGGER_RS_EXEC_TIMEOUT` (seconds) bounds how long one process may run before it is killed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Receives each line a process prints, with `true` for standard error.
pub type LineSink = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// The OCI runtimes the engine can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// `runc`, the reference runtime (Debian package `runc`).
    Runc,
    /// `crun`, a faster runtime written in C (Debian package `crun`).
    Crun,
}

impl RuntimeKind {
    fn package(self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
        }
    }
}

/// Starting or running a container failed (not: the process exited non-zero, which is a result).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime binary is not installed.
    #[error(
        "the container runtime `{name}` was not found on PATH: install it (`apt-get install {package}` on \
         Debian/Ubuntu) or choose another with DAGGER_RS_RUNTIME=runc|crun|/path/to/runtime"
    )]
    Missing {
        /// The binary looked for.
        name: String,
        /// The package that provides it.
        package: &'static str,
    },
    /// `DAGGER_RS_RUNTIME` names something unknown.
    #[error("DAGGER_RS_RUNTIME=`{0}` is not a runtime this engine knows: use `runc`, `crun`, or a path to one")]
    Unknown(String),
    /// Running containers needs root, of the host or of a user namespace.
    #[error(
        "running containers needs root, of the host or of a user namespace (the engine runs as uid {0}): \
         the SDK's embedded engine and the `dagger-rs` CLI start themselves in a user namespace when run as an \
         ordinary user (unless DAGGER_RS_ROOTLESS=0); a program that embeds the engine itself calls \
         `dagger_engine::rootless::reexec()` first; or run it as root"
    )]
    NotRoot(u32),
    /// Writing the bundle or spawning the runtime failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The OCI spec could not be built.
    #[error("cannot build the OCI runtime spec: {0}")]
    Spec(String),
    /// Rootless without subordinate IDs, the container's user has no ID in the engine's user namespace.
    #[error(
        "the container's user {uid}:{gid} has no ID in the engine's user namespace, which maps one ID only (the \
         engine runs rootless without subordinate IDs): run the command as root (`withUser(\"0\")`), or {fix}"
    )]
    UnmappedUser {
        /// The user ID asked for.
        uid: u32,
        /// The group ID asked for.
        gid: u32,
        /// How to give the user subordinate IDs.
        fix: String,
    },
    /// The engine is stopping: no new process is started.
    #[error("the engine is stopping (it was asked to by a signal or its client): no new process is started")]
    Stopping,
    /// The runtime itself failed before the process ran: the command never started, so there is no exit code
    /// of it to report.
    #[error("{runtime} could not start the container, so the command did not run ({runtime} reported: {message}){}",
        hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
    Start {
        /// The runtime's name.
        runtime: String,
        /// The runtime's own error messages (from its JSON log), joined with `; `.
        message: String,
        /// What it most likely means, when recognized (a command missing from the container's filesystem).
        hint: Option<String>,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

/// A mount inside the container.
#[derive(Clone, Debug)]
pub enum MountSpec {
    /// A host path bound at `target`.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Where in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Where in the container.
        target: String,
        /// Size limit in bytes, if any.
        size: Option<u64>,
    },
}

/// One process to run.
#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    /// The prepared root filesystem (an overlay mount or a plain directory).
    pub rootfs: PathBuf,
    /// A scratch directory for the bundle, owned by this run.
    pub bundle: PathBuf,
    /// The command line.
    pub args: Vec<String>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// The working directory inside the container.
    pub cwd: String,
    /// User and group IDs, and supplementary groups.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Mounts besides the standard ones (`/proc`, `/dev`, `/sys`, …).
    pub mounts: Vec<MountSpec>,
    /// Bytes written to the process's standard input (then closed).
    pub stdin: Vec<u8>,
    /// A network namespace to join (`None`: a new one with nothing but a loopback device).
    pub netns: Option<PathBuf>,
    /// Give the process every capability (`insecureRootCapabilities`).
    pub privileged: bool,
    /// Host files bound read-only over the container's (e.g. `/etc/resolv.conf`, `/etc/hosts`).
    pub etc_files: Vec<(PathBuf, String)>,
    /// The container's host name (empty: `dagger`); a service's is its own.
    pub hostname: String,
}

/// What a process did.
#[derive(Clone, Debug, Default)]
pub struct RunOutput {
    /// Its exit code (128 + signal number when killed by a signal, as shells report it).
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
    /// Both, interleaved in the order they arrived.
    pub combined: Vec<u8>,
    /// Set when the process was killed because it ran past the time limit.
    pub timed_out: Option<Duration>,
}

/// A configured OCI runtime.
#[derive(Clone, Debug)]
pub struct Runtime {
    kind: RuntimeKind,
    binary: PathBuf,
    state_dir: PathBuf,
    hybrid_cgroups: bool,
    timeout: Option<Duration>,
    /// The containers running now, by ID, and whether the engine is stopping; shared by clones.
    running: Arc<Mutex<std::collections::HashSet<String>>>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

/// Removes a container's ID from the running set when its run ends, however it ends.
struct RunningGuard<'a> {
    running: &'a Mutex<std::collections::HashSet<String>>,
    id: String,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.running.lock().remove(&self.id);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .or_else(|| {
            // Root's PATH on some systems lacks the sbin directories.
            ["/usr/sbin", "/sbin", "/usr/local/sbin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
}

impl Runtime {
    /// The runtime named by `preference` (or `DAGGER_RS_RUNTIME`, or `runc`), checked to exist.
    pub fn detect(preference: Option<&str>, timeout: Option<Duration>, state_dir: &Path) -> Result<Self, RuntimeError> {
        if let crate::worker::userns::Privilege::Unprivileged { uid } = crate::worker::userns::privilege() {
            return Err(RuntimeError::NotRoot(uid));
        }
        let env = std::env::var("DAGGER_RS_RUNTIME").ok().filter(|s| !s.is_empty());
        let choice = preference.map(str::to_owned).or(env).unwrap_or_else(|| "runc".into());
        let base = Path::new(&choice)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = match base.as_str() {
            "runc" => RuntimeKind::Runc,
            "crun" => RuntimeKind::Crun,
            _ => return Err(RuntimeError::Unknown(choice)),
        };
        let binary = if choice.contains('/') {
            let p = PathBuf::from(&choice);
            p.is_file().then_some(p)
        } else {
            find_on_path(&choice)
        }
        .ok_or_else(|| RuntimeError::Missing {
            name: choice.clone(),
            package: kind.package(),
        })?;
        let timeout = timeout.or_else(|| {
            std::env::var("DAGGER_RS_EXEC_TIMEOUT")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
        });
        Ok(Self {
            kind,
            binary,
            state_dir: state_dir.to_owned(),
            hybrid_cgroups: is_mountpoint(Path::new("/sys/fs/cgroup/unified")),
            timeout,
            running: Arc::default(),
            stopping: Arc::default(),
        })
    }

    /// Stops the engine's containers: every running one is killed (its run returns as a process killed by
    /// `SIGKILL`), and no new one starts from now on.
    pub async fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<String> = self.running.lock().iter().cloned().collect();
        for id in ids {
            self.kill(&id).await;
        }
    }

    /// [`stop`](Self::stop), synchronously: for a session that ends while its runtime may not run another
    /// task (the end of a program), and before what the runtime's state directory lives in may go.
    pub fn stop_now(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<String> = self.running.lock().iter().cloned().collect();
        for id in ids {
            self.kill_now(&id);
        }
    }

    /// Writes the bundle for `req` and runs it to completion, passing each output line to `on_line`
    /// (`true` for stderr).
    pub async fn run(&self, req: &RunRequest, on_line: LineSink) -> Result<RunOutput, RuntimeError> {
        self.run_with(req, on_line, None, self.timeout, new_container_id())
            .await
    }

    /// Runs `req` as the container `id` (from [`new_container_id`]) as [`run`](Self::run) does, but with no
    /// time limit (a service runs until it is stopped), sending the process each signal (`TERM`, `KILL`) that
    /// `signals` carries, as it comes.
    pub async fn run_signalled(
        &self,
        req: &RunRequest,
        on_line: LineSink,
        signals: tokio::sync::watch::Receiver<Option<&'static str>>,
        id: String,
    ) -> Result<RunOutput, RuntimeError> {
        self.run_with(req, on_line, Some(signals), None, id).await
    }

    /// Kills and deletes the container `id` now, waiting for the runtime to do it: for a drop that cannot
    /// leave it to a task (the process may be about to exit).
    pub fn kill_now(&self, id: &str) {
        for sub in [["kill", id, "KILL"].as_slice(), ["delete", "--force", id].as_slice()] {
            let args: Vec<String> = sub.iter().map(|s| (*s).to_owned()).collect();
            let _ = self
                .invoke_std(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    async fn run_with(
        &self,
        req: &RunRequest,
        on_line: LineSink,
        signals: Option<tokio::sync::watch::Receiver<Option<&'static str>>>,
        timeout: Option<Duration>,
        id: String,
    ) -> Result<RunOutput, RuntimeError> {
        std::fs::create_dir_all(&req.bundle).map_err(io(format!("cannot create {}", req.bundle.display())))?;
        std::fs::create_dir_all(&self.state_dir).map_err(io(format!("cannot create {}", self.state_dir.display())))?;
        let mut spec = spec_for(req)?;
        if crate::worker::userns::privilege() == (crate::worker::userns::Privilege::UserNamespace { ids: 1 }) {
            single_id(&mut spec, req)?;
        }
        spec.save(req.bundle.join("config.json"))
            .map_err(|e| RuntimeError::Spec(e.to_string()))?;
        // Registered before the runtime starts, so `stop` either sees the ID or has already refused the run.
        self.running.lock().insert(id.clone());
        let _running = RunningGuard {
            running: &self.running,
            id: id.clone(),
        };
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RuntimeError::Stopping);
        }
        let log = req.bundle.join("runtime.log");
        let mut cmd = self.command(&["run", "--bundle"], &req.bundle, &id, &log);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(io(format!("cannot start {}", self.binary.display())))?;
        // Should this run be abandoned (its request cancelled), killing the runtime process is not enough: the
        // container outlives it. The guard kills and deletes the container then.
        let mut abandoned = KillOnDrop(Some(self.kill_commands(&id)));
        let captured = Captured::default();
        let wait = feed_and_wait(&mut child, req.stdin.clone(), &captured, on_line);
        let forward = self.forward_signals(&id, signals);
        let wait = async {
            tokio::select! {
                status = wait => status,
                never = forward => match never {},
            }
        };
        let (result, timed_out) = match timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => (Some(r), None),
                Err(_) => (None, Some(t)),
            },
            None => (Some(wait.await), None),
        };
        abandoned.disarm();
        let Some(status) = result else {
            self.kill(&id).await;
            return Ok(captured.output(137, timed_out));
        };
        let status = status.map_err(io("cannot wait for the container"))?;
        let exit_code = {
            use std::os::unix::process::ExitStatusExt;
            status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
        };
        // The runtime logs its own failures (bad spec, a command missing from the image) to its log file,
        // apart from the process's output, and exits non-zero: that is the runtime's error, not an exit code
        // of the command, which never ran. Otherwise the process's exit code is passed through.
        if exit_code != 0
            && let Some(message) = runtime_errors(&log)
        {
            self.kill(&id).await;
            let hint = start_hint(&message, req.args.first().map(String::as_str).unwrap_or_default());
            return Err(RuntimeError::Start {
                runtime: self.kind.package().to_owned(),
                message,
                hint,
            });
        }
        Ok(captured.output(exit_code, timed_out))
    }

    fn command(&self, sub: &[&str], bundle: &Path, id: &str, log: &Path) -> tokio::process::Command {
        let mut args: Vec<String> = vec![format!("--log={}", log.display()), "--log-format=json".into()];
        args.extend(sub.iter().map(|s| (*s).to_owned()));
        if !bundle.as_os_str().is_empty() {
            args.push(bundle.to_string_lossy().into_owned());
        }
        args.push(id.to_owned());
        self.invoke(&args)
    }

    /// The runtime with `--root` and `args`, wrapped for crun on hybrid cgroup hosts.
    fn invoke(&self, args: &[String]) -> tokio::process::Command {
        self.invoke_std(args).into()
    }

    fn invoke_std(&self, args: &[String]) -> std::process::Command {
        let root = ["--root".to_owned(), self.state_dir.to_string_lossy().into_owned()];
        if self.kind == RuntimeKind::Crun && self.hybrid_cgroups {
            // crun insists on one cgroup mode; hide the v2 mount of a hybrid host in a private namespace. In a
            // user namespace the mount cannot be unmounted (it came locked from the host's namespace): an
            // empty tmpfs over it hides it as well.
            let script = "umount /sys/fs/cgroup/unified 2>/dev/null || mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k \
                          drs-hide /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"";
            let mut cmd = std::process::Command::new("unshare");
            cmd.args(["-m", "--propagation", "private", "sh", "-c", script]);
            cmd.arg(&self.binary).args(root).args(args);
            cmd
        } else {
            let mut cmd = std::process::Command::new(&self.binary);
            cmd.args(root).args(args);
            cmd
        }
    }

    /// Sends the container `id` each signal `signals` carries; never ends (without a receiver, it waits).
    async fn forward_signals(
        &self,
        id: &str,
        signals: Option<tokio::sync::watch::Receiver<Option<&'static str>>>,
    ) -> std::convert::Infallible {
        if let Some(mut rx) = signals {
            while rx.changed().await.is_ok() {
                let signal = *rx.borrow_and_update();
                if let Some(signal) = signal {
                    let args = ["kill".to_owned(), id.to_owned(), signal.to_owned()];
                    let mut cmd = self.invoke(&args);
                    cmd.stdout(Stdio::null()).stderr(Stdio::null());
                    let _ = cmd.status().await;
                }
            }
        }
        std::future::pending().await
    }

    async fn kill(&self, id: &str) {
        for mut cmd in self.kill_commands(id) {
            let _ = cmd.status().await;
        }
    }

    /// The commands that kill a container and delete it, in order.
    fn kill_commands(&self, id: &str) -> Vec<tokio::process::Command> {
        [["kill", id, "KILL"].as_slice(), ["delete", "--force", id].as_slice()]
            .into_iter()
            .map(|sub| {
                let args: Vec<String> = sub.iter().map(|s| (*s).to_owned()).collect();
                let mut cmd = self.invoke(&args);
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
                cmd
            })
            .collect()
    }
}

/// A new container ID: `drs-` and a name unique to this process (which [`collect_containers`] knows).
pub fn new_container_id() -> String {
    format!("drs-{}", crate::worker::snapshot::unique())
}

/// Kills and deletes a container when dropped armed: a run whose future is dropped (its request was
/// cancelled) leaves no container behind. The commands run in the background, on the current tokio runtime.
struct KillOnDrop(Option<Vec<tokio::process::Command>>);

impl KillOnDrop {
    /// The run ended on its own: nothing to kill.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(commands) = self.0.take() else { return };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for mut cmd in commands {
                    let _ = cmd.status().await;
                }
            });
        }
    }
}

/// Deletes (killing their processes first) the containers in the runtime state directory `state_dir` whose
/// ID `dead` accepts: containers of engines that are gone. Each is deleted with `runc` or `crun` (whichever
/// knows it); a state folder neither knows is removed. Returns how many were collected.
pub fn collect_containers(state_dir: &Path, dead: &mut dyn FnMut(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return 0;
    };
    let ids: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| id.starts_with("drs-") && dead(id))
        .collect();
    if ids.is_empty() {
        return 0;
    }
    let runtimes: Vec<Runtime> = [RuntimeKind::Runc, RuntimeKind::Crun]
        .into_iter()
        .filter_map(|k| Runtime::detect(Some(k.package()), None, state_dir).ok())
        .collect();
    for id in &ids {
        for rt in &runtimes {
            let deleted = rt
                .invoke_std(&["delete".to_owned(), "--force".to_owned(), id.clone()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if deleted {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(state_dir.join(id));
    }
    ids.len()
}

/// Fits a spec to a user namespace that maps one ID (rootless without subordinate IDs): the process must run
/// as root, and mount options naming other IDs (`gid=5` of `/dev/pts`) are dropped.
fn single_id(spec: &mut Spec, req: &RunRequest) -> Result<(), RuntimeError> {
    if req.uid != 0 || req.gid != 0 || req.additional_gids.iter().any(|g| *g != 0) {
        return Err(RuntimeError::UnmappedUser {
            uid: req.uid,
            gid: req.gid,
            fix: crate::worker::userns::subid_fix(),
        });
    }
    if let Some(mounts) = spec.mounts_mut() {
        for m in mounts.iter_mut() {
            if let Some(options) = m.options().clone() {
                let kept = options
                    .into_iter()
                    .filter(|o| !o.starts_with("uid=") && !o.starts_with("gid="))
                    .collect();
                m.set_options(Some(kept));
            }
        }
    }
    Ok(())
}

/// The error lines of a runtime's JSON log, if any.
fn runtime_errors(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let errors: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v.get("level").and_then(|l| l.as_str()), Some("error" | "fatal")))
        .filter_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_owned))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// What a runtime's start failure means, when it is about the command: missing from the container, or not
/// executable. runc says `exec: "CMD": stat CMD: no such file or directory` or `exec: "CMD": executable file
/// not found in $PATH`; crun says ``executable file `CMD` not found in $PATH``.
fn start_hint(message: &str, command: &str) -> Option<String> {
    if command.is_empty() || !message.contains(command) {
        return None;
    }
    let lower = message.to_ascii_lowercase();
    let where_ = if command.contains('/') {
        "check the path: the container's filesystem (its image and what was added to it) has no such file"
    } else {
        "a bare name is looked up on the container's PATH (`withEnvVariable(\"PATH\", …)`); check that the image \
         provides it, or give its full path"
    };
    if lower.contains("not found") || lower.contains("no such file or directory") {
        return Some(format!(
            "the command `{command}` was not found in the container: {where_}"
        ));
    }
    if lower.contains("permission denied") || lower.contains("exec format error") {
        return Some(format!(
            "the command `{command}` exists in the container but cannot be executed (a directory, a file \
             without execute permission, or a binary for another platform)"
        ));
    }
    None
}

/// What a process wrote: each stream, and both interleaved as they came.
#[derive(Default)]
struct Captured {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    combined: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    /// The output of a process that ended with `exit_code` (or was killed after `timed_out`).
    fn output(&self, exit_code: i32, timed_out: Option<Duration>) -> RunOutput {
        let taken = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock());
        RunOutput {
            exit_code,
            stdout: taken(&self.stdout),
            stderr: taken(&self.stderr),
            combined: taken(&self.combined),
            timed_out,
        }
    }
}

/// Feeds `input` to the child's standard input, captures its output (lines also go to `on_line`), and waits
/// for it to end.
async fn feed_and_wait(
    child: &mut tokio::process::Child,
    input: Vec<u8>,
    captured: &Captured,
    on_line: LineSink,
) -> std::io::Result<std::process::ExitStatus> {
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut s) = stdin {
            // A process that never reads its input closes the pipe: not an error.
            let _ = s.write_all(&input).await;
            let _ = s.shutdown().await;
        }
    };
    let out = pump(
        child.stdout.take(),
        captured.stdout.clone(),
        captured.combined.clone(),
        on_line.clone(),
        false,
    );
    let err = pump(
        child.stderr.take(),
        captured.stderr.clone(),
        captured.combined.clone(),
        on_line,
        true,
    );
    let ((), (), (), status) = tokio::join!(feed, out, err, child.wait());
    status
}

/// Reads one stream to its end into `own` and `combined` (shared, so what arrived survives a timeout), and
/// hands each line to `on_line`.
async fn pump<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<R>,
    own: Arc<Mutex<Vec<u8>>>,
    combined: Arc<Mutex<Vec<u8>>>,
    on_line: LineSink,
    is_err: bool,
) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut all = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut line_start = 0;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        all.extend_from_slice(&buf[..n]);
        for shared in [&own, &combined] {
            shared.lock().extend_from_slice(&buf[..n]);
        }
        while let Some(pos) = all[line_start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&all[line_start..line_start + pos]);
            on_line(&line, is_err);
            line_start += pos + 1;
        }
    }
    if line_start < all.len() {
        on_line(&String::from_utf8_lossy(&all[line_start..]), is_err);
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    me.is_dir() && me.dev() != parent.dev()
}

/// The capabilities a container process gets by default: what a non-privileged Docker container gets.
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

fn spec_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Spec(e.to_string())
}

/// The OCI runtime spec for one run.
pub fn spec_for(req: &RunRequest) -> Result<Spec, RuntimeError> {
    let process = process(req)?;
    let root = RootBuilder::default()
        .path(req.rootfs.clone())
        .readonly(false)
        .build()
        .map_err(spec_err)?;
    let mounts = mounts(req)?;
    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    let hostname = if req.hostname.is_empty() {
        "dagger"
    } else {
        &req.hostname
    };
    spec.set_hostname(Some(hostname.to_owned()));
    spec.set_mounts(Some(mounts));
    if let Some(linux) = spec.linux_mut() {
        let namespaces: Vec<LinuxNamespace> = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
        ]
        .into_iter()
        .map(|typ| {
            let b = LinuxNamespaceBuilder::default().typ(typ);
            let b = match &req.netns {
                Some(p) if typ == LinuxNamespaceType::Network => b.path(p.clone()),
                _ => b,
            };
            b.build().map_err(spec_err)
        })
        .collect::<Result<_, _>>()?;
        linux.set_namespaces(Some(namespaces));
        if req.privileged {
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
        }
    }
    Ok(spec)
}

/// The process of the spec: command, environment, user, capabilities, limits.
fn process(req: &RunRequest) -> Result<oci_spec::runtime::Process, RuntimeError> {
    let caps: std::collections::HashSet<Capability> = if req.privileged {
        all_caps()
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(spec_err)?;
    let user = UserBuilder::default()
        .uid(req.uid)
        .gid(req.gid)
        .additional_gids(req.additional_gids.clone())
        .build()
        .map_err(spec_err)?;
    // As many open files as the engine itself may have: asking for more than that is refused.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(1_048_576);
    ProcessBuilder::default()
        .terminal(false)
        .args(req.args.clone())
        .env(req.env.clone())
        .cwd(if req.cwd.is_empty() {
            "/".to_owned()
        } else {
            req.cwd.clone()
        })
        .user(user)
        .capabilities(capabilities)
        .no_new_privileges(!req.privileged)
        .rlimits(vec![
            oci_spec::runtime::PosixRlimitBuilder::default()
                .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
                .hard(nofile)
                .soft(nofile)
                .build()
                .map_err(spec_err)?,
        ])
        .build()
        .map_err(spec_err)
}

/// The mounts of the spec: the defaults, the `/etc` files, then the exec's own.
fn mounts(req: &RunRequest) -> Result<Vec<Mount>, RuntimeError> {
    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    // The default cgroup mount is read-only cgroupfs; keep it, it is what containers expect to see.
    for (host, target) in &req.etc_files {
        mounts.push(bind(host, target, true)?);
    }
    for m in &req.mounts {
        mounts.push(match m {
            MountSpec::Bind {
                source,
                target,
                read_only,
            } => bind(source, target, *read_only)?,
            MountSpec::Tmpfs { target, size } => {
                let mut options = vec!["nosuid".to_owned(), "nodev".to_owned(), "mode=1777".to_owned()];
                if let Some(s) = size {
                    options.push(format!("size={s}"));
                }
                MountBuilder::default()
                    .destination(target)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
                    .build()
                    .map_err(spec_err)?
            }
        });
    }
    Ok(mounts)
}

fn bind(source: &Path, target: &str, read_only: bool) -> Result<Mount, RuntimeError> {
    let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
    if read_only {
        options.push("ro".to_owned());
    }
    MountBuilder::default()
        .destination(target)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .map_err(spec_err)
}

fn all_caps() -> std::collections::HashSet<Capability> {
    use Capability::*;
    [
        AuditControl,
        AuditRead,
        AuditWrite,
        BlockSuspend,
        Bpf,
        CheckpointRestore,
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        IpcLock,
        IpcOwner,
        Kill,
        Lease,
        LinuxImmutable,
        MacAdmin,
        MacOverride,
        Mknod,
        NetAdmin,
        NetBindService,
        NetBroadcast,
        NetRaw,
        Perfmon,
        Setgid,
        Setfcap,
        Setpcap,
        Setuid,
        SysAdmin,
        SysBoot,
        SysChroot,
        SysModule,
        SysNice,
        SysPacct,
        SysPtrace,
        SysRawio,
        SysResource,
        SysTime,
        SysTtyConfig,
        Syslog,
        WakeAlarm,
    ]
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_about_the_command_are_explained() {
        let runc = r#"runc run failed: unable to start container process: exec: "/no/such/binary": stat /no/such/binary: no such file or directory"#;
        let hint = start_hint(runc, "/no/such/binary").expect("runc, absolute");
        assert!(
            hint.contains("`/no/such/binary` was not found in the container"),
            "{hint}"
        );
        let crun = "executable file `tool` not found in $PATH: No such file or directory";
        let hint = start_hint(crun, "tool").expect("crun, bare name");
        assert!(hint.contains("`tool` was not found") && hint.contains("PATH"), "{hint}");
        let denied = r#"runc run failed: unable to start container process: exec: "/etc": permission denied"#;
        assert!(start_hint(denied, "/etc").is_some_and(|h| h.contains("cannot be executed")));
        // Failures that are not about the command get no guess.
        assert_eq!(start_hint("cgroups in hybrid mode not supported", "sh"), None);
        assert_eq!(start_hint(runc, ""), None);

        let e = RuntimeError::Start {
            runtime: "runc".into(),
            message: runc.into(),
            hint: start_hint(runc, "/no/such/binary"),
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "runc could not start the container, so the command did not run (runc reported: runc run failed"
            ),
            "{text}"
        );
        assert!(!text.contains("exit code"), "{text}");
    }
}
