//! `withExec`: the exec's filesystem assembled from the layers and mounts, secrets on a private tmpfs, the
//! process run by the OCI runtime in its own network namespace, its output captured (secrets scrubbed), and
//! the overlay's upper directory kept as the container's next layer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::ids::Digest;
use crate::model::tree::{Entry, Tree};
use crate::ops::container::exec_fs::{self, Redirect};
use crate::ops::container::fs::{empty_layer, snap};
use crate::ops::container::state::{ContainerState, ExecResult, MountSource, expand, layer_name, layers_dir, path_in};
use crate::ops::container::users::{ExecUser, resolve_exec_user};
use crate::ops::engine::Engine;
use crate::ops::error::{ExecFailure, OpError};
use crate::ops::fields::{ContainerWithExec, ReturnType};
use crate::ops::secret::secret_plaintext;
use crate::worker::runtime::{MountSpec, RunRequest};
use crate::worker::scratch::Scratch;
use crate::worker::snapshot::{self};

/// Replaces every secret plaintext by `***`.
pub(crate) fn scrub(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    if secrets.is_empty() {
        return bytes.to_vec();
    }
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), "***");
    }
    text.into_bytes()
}

/// Dagger's error for an exec without a command, and for reading the output of a container that ran none.
pub(crate) const NO_COMMAND: &str = "no command has been set";

/// Refuses what `withExec` cannot do here, and what Dagger refuses.
fn check_options(a: &ContainerWithExec) -> Result<(), OpError> {
    if !a.stdin.is_empty() && !a.redirect_stdin.is_empty() {
        return Err(OpError::new("cannot set both stdin and redirectStdin"));
    }
    if a.experimental_privileged_nesting {
        return Err(OpError::new(
            "`Container.withExec(experimentalPrivilegedNesting: true)` is not supported by this engine yet",
        ));
    }
    Ok(())
}

/// The command line, as Dagger makes it: `args` (expanded when asked), else the default args, behind the
/// entrypoint only when `useEntrypoint` asks for it.
pub(crate) fn command(st: &ContainerState, a: &ContainerWithExec) -> Result<Vec<String>, OpError> {
    let mut argv = a.args.clone();
    if a.expand {
        argv = argv.iter().map(|arg| expand(arg, st)).collect::<Result<_, _>>()?;
    }
    if argv.is_empty() {
        argv = st.config.cmd.clone();
    }
    if a.use_entrypoint {
        let mut full = st.config.entrypoint.clone();
        full.extend(argv);
        argv = full;
    }
    if argv.is_empty() {
        return Err(OpError::new(NO_COMMAND));
    }
    Ok(argv)
}

/// The secrets of one exec: the environment with secret variables set, every plaintext (to scrub from what
/// comes back), and the files of mounted secrets.
struct Secrets {
    env: Vec<String>,
    plaintexts: Vec<String>,
    files: Vec<SecretFile>,
}

async fn secrets(engine: &Arc<Engine>, st: &ContainerState) -> Result<Secrets, OpError> {
    let mut plaintexts = Vec::new();
    let mut env = st.config.env.clone();
    for (name, sd) in &st.secret_env {
        let p = secret_plaintext(engine, sd).await?;
        env.retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(name.as_str()));
        env.push(format!("{name}={p}"));
        plaintexts.push(p);
    }
    let mut files = Vec::new();
    for m in &st.secret_mounts {
        let p = secret_plaintext(engine, &m.secret).await?;
        files.push((m.path.clone(), p.clone(), m.mode, m.owner));
        plaintexts.push(p);
    }
    if !env.iter().any(|kv| kv.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    Ok(Secrets { env, plaintexts, files })
}

/// Runs `withExec` on `st`, returning the container after it.
///
/// Every resource it takes is a guard released on every path, a cancelled request included: the scratch
/// folder, the cache volume locks, the prepared filesystem (mounts, secrets' tmpfs) and the network
/// namespace.
pub(crate) async fn exec(
    engine: &Arc<Engine>,
    d: &Digest,
    mut st: ContainerState,
    opts: ContainerWithExec,
) -> Result<ContainerState, OpError> {
    check_options(&opts)?;
    let runtime = engine.runtime()?;
    let argv = command(&st, &opts)?;
    let Secrets { env, plaintexts, files } = secrets(engine, &st).await?;

    let scratch_guard = Scratch::new(&engine.store, "exec");
    let scratch = scratch_guard.path().to_owned();
    // Held until the exec is over.
    let cache_lease = engine.volumes.acquire(&cache_mounts(&st)).await?;
    let fresh_caches = cache_lease.fresh.clone();

    // Prepare the filesystem (blocking work) and run.
    let (prep_engine, prep_st, prep_scratch) = (engine.clone(), st.clone(), scratch.clone());
    let mut prepared =
        tokio::task::spawn_blocking(move || prepare(&prep_engine, &prep_st, &prep_scratch, &files, &fresh_caches))
            .await
            .map_err(|e| OpError::new(format!("internal error: {e}")))??;
    let user = resolve_exec_user(engine, &st)?;
    // Redirected streams are opened in the container's filesystem with its mounts, before the process starts.
    let mut stdin = opts.stdin.clone().into_bytes();
    if !opts.redirect_stdin.is_empty() {
        let path = path_in(&st, &opts.redirect_stdin, opts.expand)?;
        stdin = exec_fs::read_stdin(&prepared.rootfs, &prepared.mounts, &path)?;
    }
    let redirect = |what: &str, raw: &str| -> Result<Option<Redirect>, OpError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let path = path_in(&st, raw, opts.expand)?;
        Redirect::create(&prepared.rootfs, &prepared.mounts, what, &path, (user.uid, user.gid)).map(Some)
    };
    let redirect_stdout = redirect("stdout", &opts.redirect_stdout)?;
    let redirect_stderr = redirect("stderr", &opts.redirect_stderr)?;
    let req = run_request(
        engine,
        d,
        &st,
        &opts,
        &prepared,
        &scratch,
        argv.clone(),
        env,
        user,
        stdin,
    )
    .await?;
    let on_line = log_sink(engine, d, &plaintexts);
    let result = runtime.run(&req.0, on_line).await;
    // The secrets' files and the namespace go as soon as the process is done.
    drop(prepared.secrets.take());
    drop(req);
    // What the process printed goes to its redirects while the filesystem is still mounted.
    if let Ok(output) = &result {
        for (r, bytes) in [(redirect_stdout, &output.stdout), (redirect_stderr, &output.stderr)] {
            if let Some(r) = r {
                r.write(&scrub(bytes, &plaintexts))?;
            }
        }
    }
    // Tear down: remove the mount stubs, unmount, then read back what the process wrote into writable
    // snapshot mounts.
    let store = engine.store.clone();
    let read_back = prepared.read_back.clone();
    let trees = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Tree)>, OpError> {
        exec_fs::remove_stubs(&prepared.rootfs, &prepared.stubs);
        prepared.overlay.unmount().map_err(snap)?;
        read_back
            .iter()
            .map(|(path, host)| Ok((path.clone(), snapshot::read_tree(&store, host).map_err(snap)?)))
            .collect()
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))?;
    let output = result.map_err(|e| OpError::new(e.to_string()))?;
    for (path, tree) in trees? {
        for (mp, src) in st.mounts.iter_mut() {
            if *mp == path
                && let MountSource::Dir { tree: t, .. } = src
            {
                *t = tree.clone();
            }
        }
    }
    let stdout = scrub(&output.stdout, &plaintexts);
    let stderr = scrub(&output.stderr, &plaintexts);
    let combined = scrub(&output.combined, &plaintexts);
    check_exit(&output, opts.expect, &argv, &stdout, &stderr, &plaintexts)?;
    let layer = layer_name(d);
    keep_layer(engine, &scratch.join("upper"), &layer)?;
    st.layers.push(layer);
    st.exec = Some(ExecResult {
        exit_code: output.exit_code,
        stdout: engine.store.put_blob(&stdout)?,
        stderr: engine.store.put_blob(&stderr)?,
        combined: engine.store.put_blob(&combined)?,
    });
    Ok(st)
}

/// The cache volumes `st` mounts: key and sharing mode.
fn cache_mounts(st: &ContainerState) -> Vec<(&str, &str)> {
    st.mounts
        .iter()
        .filter_map(|(_, m)| match m {
            MountSource::Cache { key, sharing, .. } => Some((key.as_str(), sharing.as_str())),
            _ => None,
        })
        .collect()
}

/// Output lines as log events of `d`, secrets scrubbed.
fn log_sink(engine: &Arc<Engine>, d: &Digest, secrets: &[String]) -> crate::worker::runtime::LineSink {
    let (events, call_name, secrets) = (engine.clone(), d.clone(), secrets.to_vec());
    Arc::new(move |line: &str, _is_err: bool| {
        let line = String::from_utf8_lossy(&scrub(line.as_bytes(), &secrets)).into_owned();
        events.emit_log("Container.withExec", &call_name, line);
    })
}

/// The run request for a prepared filesystem, with the network namespace it joins (held until dropped):
/// `HOME` set from the user's, the workdir created when missing.
#[allow(clippy::too_many_arguments)]
async fn run_request(
    engine: &Arc<Engine>,
    d: &Digest,
    st: &ContainerState,
    opts: &ContainerWithExec,
    prepared: &Prepared,
    scratch: &Path,
    argv: Vec<String>,
    mut env: Vec<String>,
    user: ExecUser,
    stdin_bytes: Vec<u8>,
) -> Result<(RunRequest, crate::worker::network::NetnsLease), OpError> {
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    // The workdir is created when missing, as Dagger does: each directory it makes owned by the user.
    let cwd = st.workdir().to_owned();
    if let Ok(host) = snapshot::resolve_in_root(&prepared.rootfs, &cwd, true) {
        let missing: Vec<&Path> = host
            .ancestors()
            .take_while(|p| p.starts_with(&prepared.rootfs) && std::fs::symlink_metadata(p).is_err())
            .collect();
        for dir in missing.into_iter().rev() {
            if std::fs::create_dir(dir).is_ok() {
                let _ = std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid));
            }
        }
    }
    let netns = engine.network.take().await;
    warn_once(engine, d);
    let netns = netns.map_err(|e| OpError::new(format!("cannot set up the container's network: {e}")))?;
    let req = RunRequest {
        rootfs: prepared.rootfs.clone(),
        bundle: scratch.join("bundle"),
        args: argv,
        env,
        cwd,
        uid: user.uid,
        gid: user.gid,
        additional_gids: user.additional_gids,
        mounts: prepared.mounts.clone(),
        stdin: stdin_bytes,
        netns: Some(netns.path()),
        privileged: opts.insecure_root_capabilities,
        etc_files: prepared.etc_files.clone(),
    };
    Ok((req, netns))
}

/// Reports, once per engine, that filesystems are copied, that containers get no network, or that they
/// resolve no names.
fn warn_once(engine: &Arc<Engine>, d: &Digest) {
    if engine.snapshotter().kind() == snapshot::SnapshotterKind::Copy
        && let Some(why) = engine.overlay_unusable()
        && !engine.warned_snapshot.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        engine.emit_log(
            "Container.withExec",
            d,
            format!("warning: overlayfs is not usable ({why}); container filesystems are copied, which is slower"),
        );
    }
    if let Some(why) = engine.network.take_setup_warning() {
        engine.emit_log(
            "Container.withExec",
            d,
            format!("warning: containers get no network beyond loopback: {why}"),
        );
    }
    if let Some(why) = engine.network.take_dns_warning() {
        engine.emit_log("Container.withExec", d, format!("warning: {why}"));
    }
}

/// The `EXEC_ERROR` of a process that did not end as `expect` says (or ran out of time).
fn check_exit(
    output: &crate::worker::runtime::RunOutput,
    expect: ReturnType,
    argv: &[String],
    stdout: &[u8],
    stderr: &[u8],
    secrets: &[String],
) -> Result<(), OpError> {
    let failed = match expect {
        ReturnType::Any => false,
        ReturnType::Failure => output.exit_code == 0,
        ReturnType::Success => output.exit_code != 0,
    } || output.timed_out.is_some();
    if !failed {
        return Ok(());
    }
    let cmd_text = argv.join(" ");
    let message = match (output.timed_out, expect) {
        (Some(t), _) => format!(
            "process \"{cmd_text}\" was killed after running for {}s (DAGGER_RS_EXEC_TIMEOUT)",
            t.as_secs()
        ),
        // An exit code of 0 where a failure was expected is reported like any other unexpected code.
        (None, _) if output.exit_code > 128 && output.exit_code < 128 + 65 => format!(
            "process \"{cmd_text}\" did not complete successfully: exit code: {} (killed by signal {})",
            output.exit_code,
            output.exit_code - 128
        ),
        (None, _) => format!(
            "process \"{cmd_text}\" did not complete successfully: exit code: {}",
            output.exit_code
        ),
    };
    Err(OpError::exec(
        String::from_utf8_lossy(&scrub(message.as_bytes(), secrets)),
        ExecFailure {
            cmd: argv.to_vec(),
            exit_code: output.exit_code,
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
        },
    ))
}

/// Keeps the exec's upper directory as the layer `name`.
fn keep_layer(engine: &Engine, upper: &Path, name: &str) -> Result<(), OpError> {
    let layers = layers_dir(&engine.store);
    std::fs::create_dir_all(&layers).map_err(|e| OpError::new(format!("cannot create {}: {e}", layers.display())))?;
    let target = layers.join(name);
    if target.exists() {
        snapshot::remove_all(&target);
    }
    std::fs::rename(upper, &target)
        .map_err(|e| OpError::new(format!("cannot keep the exec's layer at {}: {e}", target.display())))
}

/// A secret mounted as a file: container path, plaintext, mode, owner.
pub(crate) type SecretFile = (String, String, u32, Option<(u32, u32)>);

/// A filesystem ready for one exec.
pub(crate) struct Prepared {
    overlay: snapshot::Mounted,
    rootfs: PathBuf,
    mounts: Vec<MountSpec>,
    etc_files: Vec<(PathBuf, String)>,
    /// Writable snapshot mounts to read back after the exec: container path, host directory.
    read_back: Vec<(String, PathBuf)>,
    /// The tmpfs holding the mounted secrets' files, unmounted when the exec ends.
    secrets: Option<SecretStore>,
    /// Container paths the runtime may make only to mount on (they did not exist before): removed after the
    /// exec when still empty.
    stubs: Vec<String>,
}

pub(crate) fn prepare(
    engine: &Engine,
    st: &ContainerState,
    scratch: &Path,
    secret_files: &[SecretFile],
    fresh_caches: &std::collections::HashSet<String>,
) -> Result<Prepared, OpError> {
    let io = |what: String| move |e: std::io::Error| OpError::new(format!("{what}: {e}"));
    std::fs::create_dir_all(scratch).map_err(io(format!("cannot create {}", scratch.display())))?;
    let layers: Vec<PathBuf> = st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect();
    for l in &layers {
        if !l.is_dir() {
            return Err(OpError::new(format!(
                "layer {} is missing from the cache directory (pruned while in use?); run the pipeline again",
                l.display()
            )));
        }
    }
    let rootfs = scratch.join("rootfs");
    let overlay = engine
        .snapshotter()
        .assemble(
            &layers,
            Some((&scratch.join("upper"), &scratch.join("work"))),
            &rootfs,
            &empty_layer(&engine.store)?,
        )
        .map_err(snap)?;
    let targets = st.mounts.iter().map(|(p, _)| p.as_str());
    let targets = targets.chain(st.secret_mounts.iter().map(|m| m.path.as_str()));
    let stubs = exec_fs::missing_stubs(&rootfs, &exec_fs::stub_candidates(targets));
    let mut mounts = Vec::new();
    let mut read_back = Vec::new();
    for (n, (path, src)) in st.mounts.iter().enumerate() {
        let fresh = matches!(src, MountSource::Cache { key, sharing, .. } if sharing == "PRIVATE" && fresh_caches.contains(key));
        if let Some((spec, writable)) = mount_spec(engine, scratch, n, path, src, fresh)? {
            if let (true, MountSpec::Bind { source, .. }) = (writable, &spec) {
                read_back.push((path.clone(), source.clone()));
            }
            mounts.push(spec);
        }
    }
    let secrets = if secret_files.is_empty() {
        None
    } else {
        let store = SecretStore::mount(&scratch.join("secrets"), secret_files)?;
        for (n, (path, plaintext, mode, owner)) in secret_files.iter().enumerate() {
            let host = store.write(&format!("s{n}"), plaintext.as_bytes(), *mode, *owner)?;
            mounts.push(MountSpec::Bind {
                source: host,
                target: path.clone(),
                read_only: true,
            });
        }
        Some(store)
    };
    let etc_files = etc_files(scratch, engine.network.resolv_conf())?;
    Ok(Prepared {
        overlay,
        rootfs,
        mounts,
        etc_files,
        read_back,
        secrets,
        stubs,
    })
}

/// The mount of `src` at `path` for one exec (the `n`th mount), its host side made under `scratch`; with
/// whether what the exec writes there is read back (writable snapshot mounts). `None` for secrets, which are
/// mounted from their own tmpfs. `fresh` gives a `PRIVATE` cache volume in use elsewhere a throwaway
/// directory.
fn mount_spec(
    engine: &Engine,
    scratch: &Path,
    n: usize,
    path: &str,
    src: &MountSource,
    fresh: bool,
) -> Result<Option<(MountSpec, bool)>, OpError> {
    let bind = |source: PathBuf, read_only: bool| MountSpec::Bind {
        source,
        target: path.to_owned(),
        read_only,
    };
    Ok(Some(match src {
        MountSource::Dir { tree, read_only, owner } => {
            let host = scratch.join(format!("m{n}"));
            snapshot::write_tree(&engine.store, tree, &host, "", *owner).map_err(snap)?;
            (bind(host, *read_only), !read_only)
        }
        MountSource::File { entry, owner } => {
            let name = format!("f{n}");
            // Owner first, then mode (a chown after would clear set-user-ID bits).
            snapshot::write_entry_at(&engine.store, scratch, &name, &Entry::File(entry.clone()), *owner)
                .map_err(snap)?;
            (bind(scratch.join(name), false), false)
        }
        MountSource::Cache { key, seed, owner, .. } => {
            let (host, created) = crate::worker::cache_volume::volume_dir(&engine.store, key, fresh, scratch, n)?;
            if created {
                if let Some(seed) = seed {
                    snapshot::write_tree(&engine.store, seed, &host, "", *owner).map_err(snap)?;
                } else if let Some((u, g)) = owner {
                    snapshot::chown(&host, *u, *g).map_err(snap)?;
                }
            }
            (bind(host, false), false)
        }
        MountSource::Temp { size } => (
            MountSpec::Tmpfs {
                target: path.to_owned(),
                size: *size,
            },
            false,
        ),
    }))
}

/// Name resolution (`resolv`, the text of the container's `/etc/resolv.conf`, when the host has one) and a
/// hosts file, as every container expects: host files written under `scratch`, with the container path each
/// is mounted at.
fn etc_files(scratch: &Path, resolv: Option<String>) -> Result<Vec<(PathBuf, String)>, OpError> {
    let io = |what: String| move |e: std::io::Error| OpError::new(format!("{what}: {e}"));
    // Name resolution and a hosts file, as every container expects.
    let hosts = scratch.join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1\tlocalhost dagger\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .map_err(io(format!("cannot write {}", hosts.display())))?;
    let mut etc_files = vec![(hosts, "/etc/hosts".to_owned())];
    if let Some(text) = resolv {
        let file = scratch.join("resolv.conf");
        std::fs::write(&file, text).map_err(io(format!("cannot write {}", file.display())))?;
        etc_files.push((file, "/etc/resolv.conf".to_owned()));
    }
    Ok(etc_files)
}

/// The files of the secrets one exec mounts: on a tmpfs of their own (memory, never the cache's disk), mounted
/// private to the engine's user (mode 0700) with `nosuid,nodev,noexec`, and unmounted when dropped, which is
/// when the exec ends. An engine that dies first leaves the mount under `tmp/`, where the next engine to start
/// on the cache directory unmounts it (see [`crate::worker::cleanup`]).
pub(crate) struct SecretStore {
    dir: PathBuf,
}

impl SecretStore {
    /// Mounts a tmpfs at `dir`, sized for `files`.
    fn mount(dir: &Path, files: &[SecretFile]) -> Result<Self, OpError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| OpError::new(format!("cannot create {}: {e}", dir.display())))?;
        // A page per file at least, and room for the directory itself.
        let size: usize = files
            .iter()
            .map(|f| f.1.len().div_ceil(4096).max(1) * 4096)
            .sum::<usize>()
            + 64 * 1024;
        let data = std::ffi::CString::new(format!("mode=0700,size={size}"))
            .map_err(|_| OpError::new("internal error: tmpfs options contain a NUL byte"))?;
        use rustix::mount::MountFlags;
        rustix::mount::mount(
            "drs-secrets",
            dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            data.as_c_str(),
        )
        .map_err(|e| {
            let _ = std::fs::remove_dir(dir);
            OpError::new(format!(
                "cannot mount a tmpfs for the exec's secrets at {} (the engine needs root): {e}",
                dir.display()
            ))
        })?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Writes one secret file, created with its final mode and owner before the plaintext goes in.
    fn write(&self, name: &str, plaintext: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<PathBuf, OpError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // `create_new` never follows a symbolic link and never opens an existing file.
        let path = self.dir.join(name);
        let fail = |e: std::io::Error| OpError::new(format!("cannot write the secret file {}: {e}", path.display()));
        let mode = mode & 0o7777;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(fail)?;
        if let Some((u, g)) = owner {
            rustix::fs::fchown(
                &f,
                Some(rustix::fs::Uid::from_raw(u)),
                Some(rustix::fs::Gid::from_raw(g)),
            )
            .map_err(|e| fail(e.into()))?;
        }
        // The umask may have narrowed the mode asked for; the file gets exactly that mode, never more.
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(fail)?;
        f.write_all(plaintext).map_err(fail)?;
        Ok(path)
    }
}

impl Drop for SecretStore {
    fn drop(&mut self) {
        // Unmounting frees the files' memory; nothing was ever written to disk.
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    //! The pure parts of `withExec`: the command line, the exit check, scrubbing. No runtime, no root.

    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::worker::runtime::RunOutput;

    fn args(v: serde_json::Value) -> ContainerWithExec {
        ContainerWithExec::parse(v.as_object().expect("object")).expect("arguments")
    }

    fn with_image(entrypoint: &[&str], cmd: &[&str]) -> ContainerState {
        let mut st = ContainerState::default();
        st.config.entrypoint = entrypoint.iter().map(|s| s.to_string()).collect();
        st.config.cmd = cmd.iter().map(|s| s.to_string()).collect();
        st
    }

    #[test]
    fn the_command_line_follows_args_default_args_and_the_entrypoint() {
        let st = with_image(&["/init"], &["serve", "--port=80"]);
        let cases = [
            (json!({ "args": ["ls", "-l"] }), vec!["ls", "-l"]),
            (json!({ "args": ["ls"], "useEntrypoint": true }), vec!["/init", "ls"]),
            (json!({ "args": [] }), vec!["serve", "--port=80"]),
            (
                json!({ "args": [], "useEntrypoint": true }),
                vec!["/init", "serve", "--port=80"],
            ),
        ];
        for (a, want) in cases {
            assert_eq!(
                command(&st, &args(a.clone())).map_err(|e| e.message),
                Ok(want.iter().map(|s| s.to_string()).collect()),
                "{a}"
            );
        }
        let plain = with_image(&[], &["sh"]);
        assert_eq!(
            command(&plain, &args(json!({ "args": [] }))).map_err(|e| e.message),
            Ok(vec!["sh".to_owned()])
        );
        let none = with_image(&[], &[]);
        let err = command(&none, &args(json!({ "args": [] }))).expect_err("no command");
        assert_eq!(err.message, "no command has been set");
    }

    #[test]
    fn arguments_expand_from_the_environment_only_when_asked() {
        let mut st = with_image(&[], &[]);
        st.config.env.push("NAME=world".into());
        let a = args(json!({ "args": ["echo", "$NAME", "${NAME}!"], "expand": true }));
        assert_eq!(
            command(&st, &a).map_err(|e| e.message),
            Ok(vec!["echo".into(), "world".into(), "world!".into()])
        );
        let a = args(json!({ "args": ["echo", "$NAME"] }));
        assert_eq!(
            command(&st, &a).map_err(|e| e.message),
            Ok(vec!["echo".into(), "$NAME".into()])
        );
    }

    #[test]
    fn an_argument_naming_a_secret_variable_is_not_expanded() {
        let mut st = with_image(&[], &[]);
        st.secret_env.push(("TOKEN".into(), Digest::of(b"s")));
        let a = args(json!({ "args": ["echo", "${TOKEN}"], "expand": true }));
        assert_eq!(
            command(&st, &a).map_err(|e| e.message),
            Err("expand cannot be used with secret env variable \"TOKEN\"".to_owned())
        );
    }

    #[test]
    fn privileged_nesting_is_refused_by_name() {
        let a = args(json!({ "args": ["true"], "experimentalPrivilegedNesting": true }));
        let err = check_options(&a).expect_err("refused");
        assert!(err.message.contains("experimentalPrivilegedNesting"), "{}", err.message);
        assert!(check_options(&args(json!({ "args": ["true"] }))).is_ok());
    }

    fn output(exit_code: i32, timed_out: Option<Duration>) -> RunOutput {
        RunOutput {
            exit_code,
            stdout: b"out".to_vec(),
            stderr: b"err hunter2".to_vec(),
            combined: Vec::new(),
            timed_out,
        }
    }

    #[test]
    fn a_failed_exec_is_an_exec_error_with_its_code_output_and_no_secret() {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "echo hunter2; exit 3".to_owned()];
        let secrets = vec!["hunter2".to_owned()];
        let stderr = scrub(b"err hunter2", &secrets);
        let err =
            check_exit(&output(3, None), ReturnType::Success, &argv, b"out", &stderr, &secrets).expect_err("fails");
        assert_eq!(
            err.message,
            "process \"sh -c echo ***; exit 3\" did not complete successfully: exit code: 3"
        );
        let failure = err.exec.expect("the process's details");
        assert_eq!(
            *failure,
            ExecFailure {
                cmd: argv,
                exit_code: 3,
                stdout: "out".into(),
                stderr: "err ***".into(),
            },
            "the command as given (IDs hold it already), the output scrubbed"
        );
    }

    #[test]
    fn expect_signals_and_timeouts_decide_what_failed() {
        let argv = vec!["x".to_owned()];
        let check = |code: i32, expect: ReturnType, t: Option<Duration>| {
            check_exit(&output(code, t), expect, &argv, b"", b"", &[]).map_err(|e| e.message)
        };
        assert_eq!(check(0, ReturnType::Success, None), Ok(()));
        assert_eq!(check(1, ReturnType::Any, None), Ok(()));
        assert_eq!(check(2, ReturnType::Failure, None), Ok(()));
        assert_eq!(
            check(0, ReturnType::Failure, None),
            Err("process \"x\" did not complete successfully: exit code: 0".into()),
            "Dagger's wording for every unexpected exit code"
        );
        assert_eq!(
            check(137, ReturnType::Success, None),
            Err("process \"x\" did not complete successfully: exit code: 137 (killed by signal 9)".into())
        );
        let timed_out = check(137, ReturnType::Any, Some(Duration::from_secs(2))).expect_err("timed out");
        assert!(timed_out.contains("killed after running for 2s"), "{timed_out}");
    }

    #[test]
    fn scrubbing_replaces_every_secret_and_nothing_else() {
        assert_eq!(
            scrub(b"a s1 b s2 s1", &["s1".into(), "s2".into(), String::new()]),
            b"a *** b *** ***"
        );
        assert_eq!(scrub(b"nothing to hide", &[]), b"nothing to hide");
    }

    #[test]
    fn only_cache_mounts_take_volume_leases() {
        let mut st = ContainerState::default();
        st.add_mount("/tmp".into(), MountSource::Temp { size: None });
        st.add_mount(
            "/cache".into(),
            MountSource::Cache {
                key: "k".into(),
                sharing: "LOCKED".into(),
                seed: None,
                owner: None,
            },
        );
        assert_eq!(cache_mounts(&st), [("k", "LOCKED")]);
    }
}
