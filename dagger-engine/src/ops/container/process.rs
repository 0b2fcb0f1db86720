//! The process of a container, as `withExec` and services run it: its filesystem assembled from the layers
//! and mounts ([`prepare`]), secrets in its environment and on a private tmpfs, its hosts file (naming the
//! services it binds), and the run request with a network namespace of its own; and the scrubbing of
//! secrets from what it prints.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::ids::Digest;
use crate::model::tree::Entry;
use crate::ops::container::exec_fs;
use crate::ops::container::fs::{empty_layer, snap};
use crate::ops::container::state::{ContainerState, MountSource, layers_dir};
use crate::ops::container::users::{ExecUser, resolve_exec_user};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
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

/// The secrets of one exec: the environment with secret variables set, every plaintext (to scrub from what
/// comes back), and the files of mounted secrets.
pub(crate) struct Secrets {
    pub(crate) env: Vec<String>,
    pub(crate) plaintexts: Vec<String>,
    pub(crate) files: Vec<SecretFile>,
}

pub(crate) async fn secrets(engine: &Arc<Engine>, st: &ContainerState) -> Result<Secrets, OpError> {
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

/// The cache volumes `st` mounts: key and sharing mode.
pub(crate) fn cache_mounts(st: &ContainerState) -> Vec<(&str, &str)> {
    st.mounts
        .iter()
        .filter_map(|(_, m)| match m {
            MountSource::Cache { key, sharing, .. } => Some((key.as_str(), sharing.as_str())),
            _ => None,
        })
        .collect()
}

/// The run request for a prepared filesystem, with the network namespace it joins (held until dropped):
/// `HOME` set from the user's, the workdir created when missing.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_request(
    engine: &Arc<Engine>,
    d: &Digest,
    st: &ContainerState,
    privileged: bool,
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
        privileged,
        etc_files: prepared.etc_files.clone(),
        hostname: String::new(),
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

/// A secret mounted as a file: container path, plaintext, mode, owner.
pub(crate) type SecretFile = (String, String, u32, Option<(u32, u32)>);

/// A filesystem ready for one exec.
pub(crate) struct Prepared {
    pub(crate) overlay: snapshot::Mounted,
    pub(crate) rootfs: PathBuf,
    pub(crate) mounts: Vec<MountSpec>,
    pub(crate) etc_files: Vec<(PathBuf, String)>,
    /// Writable snapshot mounts to read back after the exec: container path, host directory.
    pub(crate) read_back: Vec<(String, PathBuf)>,
    /// The tmpfs holding the mounted secrets' files, unmounted when the exec ends.
    pub(crate) secrets: Option<SecretStore>,
    /// Container paths the runtime may make only to mount on (they did not exist before): removed after the
    /// exec when still empty.
    pub(crate) stubs: Vec<String>,
}

pub(crate) fn prepare(
    engine: &Engine,
    st: &ContainerState,
    scratch: &Path,
    secret_files: &[SecretFile],
    fresh_caches: &std::collections::HashSet<String>,
    hosts: &[(String, Ipv4Addr)],
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
    let etc_files = etc_files(scratch, hosts, engine.network.resolv_conf())?;
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

/// Name resolution and a hosts file, as every container expects: host files written under `scratch`, with
/// the container path each is mounted at. `services` are the names of bound services and their addresses;
/// `resolv` is the text of the container's `/etc/resolv.conf`, when the host has one (see
/// [`crate::worker::network::Network::resolv_conf`]).
fn etc_files(
    scratch: &Path,
    services: &[(String, Ipv4Addr)],
    resolv: Option<String>,
) -> Result<Vec<(PathBuf, String)>, OpError> {
    let io = |what: String| move |e: std::io::Error| OpError::new(format!("{what}: {e}"));
    let hosts = scratch.join("hosts");
    std::fs::write(&hosts, hosts_file(services)).map_err(io(format!("cannot write {}", hosts.display())))?;
    let mut etc_files = vec![(hosts, "/etc/hosts".to_owned())];
    if let Some(text) = resolv {
        let file = scratch.join("resolv.conf");
        std::fs::write(&file, text).map_err(io(format!("cannot write {}", file.display())))?;
        etc_files.push((file, "/etc/resolv.conf".to_owned()));
    }
    Ok(etc_files)
}

/// The hosts file of a container: its own names, then each bound service's names (its alias, and the
/// hostname derived from its ID) at its address: on the session's bridge, or (rootless) the loopback
/// address its forwarders listen on in the container's namespace.
pub(crate) fn hosts_file(services: &[(String, Ipv4Addr)]) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost dagger\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, ip) in services {
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    text
}

/// What a service's process needs besides its command: the run request, and what must live as long as the
/// process (its network namespace, filesystem, cache volume leases and scratch folder, released in that
/// order when dropped).
pub(crate) struct ServiceProcess {
    /// The process to run.
    pub(crate) req: RunRequest,
    /// Its address on the session's bridge (`None` without bridge networking).
    pub(crate) address: Option<Ipv4Addr>,
    /// Its own address besides loopback, as seen inside its network namespace (rootless: slirp4netns's).
    pub(crate) own_address: Option<Ipv4Addr>,
    /// Where its network namespace is mounted.
    pub(crate) netns: PathBuf,
    /// Every secret plaintext it was given (to scrub from its output).
    pub(crate) secrets: Vec<String>,
    /// Dropped when the process has ended.
    pub(crate) keep: Box<dyn Send>,
}

/// Prepares the process of a container service: the container's filesystem, mounts and secrets as an exec
/// gets them, `hosts` (the services it binds) in its hosts file, and a network namespace of its own.
pub(crate) async fn service_process(
    engine: &Arc<Engine>,
    d: &Digest,
    st: &ContainerState,
    hostname: &str,
    argv: Vec<String>,
    privileged: bool,
    hosts: &[(String, Ipv4Addr)],
) -> Result<ServiceProcess, OpError> {
    let Secrets { env, plaintexts, files } = secrets(engine, st).await?;
    let scratch_guard = Scratch::new(&engine.store, "service");
    let scratch = scratch_guard.path().to_owned();
    let cache_lease = engine.volumes.acquire(&cache_mounts(st)).await?;
    let fresh_caches = cache_lease.fresh.clone();
    let (prep_engine, prep_st, prep_scratch, hosts) = (engine.clone(), st.clone(), scratch.clone(), hosts.to_vec());
    let prepared = tokio::task::spawn_blocking(move || {
        prepare(&prep_engine, &prep_st, &prep_scratch, &files, &fresh_caches, &hosts)
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))??;
    let user = resolve_exec_user(engine, st)?;
    let (mut req, netns) = run_request(
        engine,
        d,
        st,
        privileged,
        &prepared,
        &scratch,
        argv,
        env,
        user,
        Vec::new(),
    )
    .await?;
    req.hostname = hostname.to_owned();
    Ok(ServiceProcess {
        req,
        address: netns.address(),
        own_address: netns.own_address(),
        netns: netns.path(),
        secrets: plaintexts,
        keep: Box::new((netns, prepared, cache_lease, scratch_guard)),
    })
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
    //! The pure parts of a container's process: scrubbing, the hosts file, cache volume leases.

    use super::*;

    #[test]
    fn scrubbing_replaces_every_secret_and_nothing_else() {
        assert_eq!(
            scrub(b"a s1 b s2 s1", &["s1".into(), "s2".into(), String::new()]),
            b"a *** b *** ***"
        );
        assert_eq!(scrub(b"nothing to hide", &[]), b"nothing to hide");
    }

    #[test]
    fn the_hosts_file_names_each_bound_service_at_its_address() {
        let text = hosts_file(&[
            ("db".into(), Ipv4Addr::new(10, 87, 0, 5)),
            ("0abc123def456".into(), Ipv4Addr::new(10, 87, 0, 5)),
        ]);
        assert_eq!(
            text,
            "127.0.0.1\tlocalhost dagger\n::1\tlocalhost ip6-localhost ip6-loopback\n10.87.0.5\tdb\n10.87.0.5\t0abc123def456\n"
        );
        assert!(hosts_file(&[]).ends_with("ip6-loopback\n"));
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
