//! Containers: their state (layers, image config, mounts, last exec), how each `Container` builder field
//! changes it, and how `withExec` runs a process.
//!
//! A container's filesystem is a stack of layer directories (see [`crate::snapshot`]). File operations
//! (`withNewFile`, `withDirectory`, `withoutFile`, …) each add a small layer; `withExec` mounts the stack with
//! overlayfs, runs the process with the OCI runtime (see [`crate::runtime`]), and keeps the overlay's upper
//! directory as the next layer. Mounts (`withMounted*`) are not part of the layers: they are set up for each
//! exec, and what an exec writes into a mounted directory is read back, so `directory(path)` of a mounted path
//! sees it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::engine::{Engine, Evaluated};
use crate::exec::FieldError;
use crate::ids::{Call, Digest};
use crate::runtime::{MountSpec, RunRequest};
use crate::snapshot::{self, SnapshotError};
use crate::tree::{Entry, FileEntry, Tree, normalize};

/// The image configuration a container carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `NAME=value` pairs, in order.
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory (empty: `/`).
    #[serde(default)]
    pub workdir: String,
    /// The user (`name`, `uid`, `name:group`, `uid:gid`; empty: root).
    #[serde(default)]
    pub user: String,
    /// The entrypoint.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// The default arguments.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Exposed ports: port, protocol (`TCP`/`UDP`), description.
    #[serde(default)]
    pub ports: Vec<(i64, String, Option<String>)>,
}

/// What is mounted at a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "m")]
pub enum MountSource {
    /// A directory snapshot (writable unless `read_only`).
    Dir {
        /// Its contents.
        tree: Tree,
        /// Mounted read-only.
        read_only: bool,
        /// Owner, when given.
        owner: Option<(u32, u32)>,
    },
    /// A single file.
    File {
        /// Its contents.
        entry: FileEntry,
        /// Owner, when given.
        owner: Option<(u32, u32)>,
    },
    /// A cache volume.
    Cache {
        /// The volume's key.
        key: String,
        /// `SHARED`, `PRIVATE` or `LOCKED`.
        sharing: String,
        /// What a new volume starts with.
        seed: Option<Tree>,
        /// Owner of a new volume's root.
        owner: Option<(u32, u32)>,
    },
    /// A secret, as a file.
    Secret {
        /// The secret object.
        secret: Digest,
        /// Permission bits.
        mode: u32,
        /// Owner, when given.
        owner: Option<(u32, u32)>,
    },
    /// A fresh tmpfs.
    Temp {
        /// Size limit in bytes.
        size: Option<u64>,
    },
}

/// The result of the last `withExec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit code.
    pub exit_code: i32,
    /// Standard output (a blob).
    pub stdout: Digest,
    /// Standard error (a blob).
    pub stderr: Digest,
    /// Both, interleaved (a blob).
    pub combined: Digest,
}

/// Everything a container is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Layer directory names under the store's `layers/`, bottom first.
    #[serde(default)]
    pub layers: Vec<String>,
    /// The image configuration.
    #[serde(default)]
    pub config: ImageConfig,
    /// Mounts by absolute path, in the order they were added.
    #[serde(default)]
    pub mounts: Vec<(String, MountSource)>,
    /// The platform (`linux/amd64`).
    #[serde(default)]
    pub platform: String,
    /// The image it came from (`imageRef`).
    #[serde(default)]
    pub image_ref: String,
    /// The last exec's result.
    #[serde(default)]
    pub exec: Option<ExecResult>,
    /// Environment variables whose value is a secret.
    #[serde(default)]
    pub secret_env: Vec<(String, Digest)>,
    /// Registry credentials: address, user name, secret.
    #[serde(default)]
    pub registry_auth: Vec<(String, String, Digest)>,
}

impl ContainerState {
    /// Whether every layer is still on disk (a pruned cache may have removed some).
    pub fn intact(&self, store: &crate::store::Store) -> bool {
        self.layers.iter().all(|l| layers_dir(store).join(l).is_dir())
    }

    fn env_value(&self, name: &str) -> Option<String> {
        self.config
            .env
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned))
    }

    fn set_env(&mut self, name: &str, value: &str) {
        self.config
            .env
            .retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(name));
        self.config.env.push(format!("{name}={value}"));
    }

    /// An absolute, normalized container path for `path` (relative ones resolve against the workdir).
    fn abs(&self, path: &str) -> Result<String, FieldError> {
        let joined = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{}/{path}", self.workdir())
        };
        Ok(format!("/{}", normalize(&joined)?))
    }

    fn workdir(&self) -> &str {
        if self.config.workdir.is_empty() {
            "/"
        } else {
            &self.config.workdir
        }
    }

    /// The mount holding `path`, and the rest of the path inside it.
    fn mount_at(&self, path: &str) -> Option<(&str, &MountSource, String)> {
        self.mounts.iter().rev().find_map(|(m, src)| {
            let rest = if path == m {
                ""
            } else {
                path.strip_prefix(m.as_str())?.strip_prefix('/')?
            };
            Some((m.as_str(), src, rest.to_owned()))
        })
    }

    fn add_mount(&mut self, path: String, src: MountSource) {
        // A mount replaces any mount at or below its path.
        self.mounts
            .retain(|(m, _)| m != &path && !m.starts_with(&format!("{}/", path.trim_end_matches('/'))));
        self.mounts.push((path, src));
    }
}

/// Where layers live.
pub fn layers_dir(store: &crate::store::Store) -> PathBuf {
    store.root().join("layers")
}

fn empty_layer(store: &crate::store::Store) -> Result<PathBuf, FieldError> {
    let p = layers_dir(store).join("empty");
    std::fs::create_dir_all(&p).map_err(|e| FieldError::new(format!("cannot create {}: {e}", p.display())))?;
    Ok(p)
}

fn snap(e: SnapshotError) -> FieldError {
    FieldError::new(e.to_string())
}

use crate::core::{b, digest_arg, i, s, secret_plaintext, strings};

/// Expands `$NAME` and `${NAME}` from the container's environment (unset variables expand to nothing).
pub fn expand(text: &str, state: &ContainerState) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let name: String = if chars.peek() == Some(&'{') {
            chars.next();
            let mut n = String::new();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                n.push(c);
            }
            n
        } else {
            let mut n = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    n.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if n.is_empty() {
                out.push('$');
                continue;
            }
            n
        };
        out.push_str(&state.env_value(&name).unwrap_or_default());
    }
    out
}

/// A path argument, expanded when `expand: true`, made absolute against the workdir.
fn path_arg(state: &ContainerState, args: &Map<String, Value>, k: &str) -> Result<String, FieldError> {
    let raw = s(args, k);
    let p = if b(args, "expand") {
        expand(raw, state)
    } else {
        raw.to_owned()
    };
    state.abs(&p)
}

/// Numeric owner from `owner` (`uid`, `uid:gid`, `name`, `name:group`), resolved in the container's files.
fn owner_arg(
    engine: &Engine,
    state: &ContainerState,
    args: &Map<String, Value>,
) -> Result<Option<(u32, u32)>, FieldError> {
    let owner = s(args, "owner");
    if owner.is_empty() {
        return Ok(None);
    }
    let (u, g, _) = resolve_user(engine, state, owner)?;
    Ok(Some((u, g)))
}

/// Evaluates a required object argument.
async fn obj(engine: &Arc<Engine>, args: &Map<String, Value>, k: &str) -> Result<Arc<Evaluated>, FieldError> {
    let d = digest_arg(args, k).ok_or_else(|| FieldError::new(format!("missing argument `{k}`")))?;
    engine.eval(&d).await
}

/// Creates a new layer (named after the call that makes it) with `fill` writing into it.
fn new_layer(
    engine: &Engine,
    name: &Digest,
    fill: impl FnOnce(&Path) -> Result<(), SnapshotError>,
) -> Result<String, FieldError> {
    let dir = layers_dir(&engine.store);
    let target = dir.join(name.as_str());
    if target.is_dir() {
        return Ok(name.to_string());
    }
    let tmp = engine
        .store
        .root()
        .join("tmp")
        .join(format!("layer-{}", snapshot::unique()));
    std::fs::create_dir_all(&tmp).map_err(|e| FieldError::new(format!("cannot create {}: {e}", tmp.display())))?;
    if let Err(e) = fill(&tmp) {
        snapshot::remove_all(&tmp);
        return Err(snap(e));
    }
    std::fs::create_dir_all(&dir).map_err(|e| FieldError::new(format!("cannot create {}: {e}", dir.display())))?;
    if std::fs::rename(&tmp, &target).is_err() {
        // Another evaluation made it first: same call, same content.
        snapshot::remove_all(&tmp);
    }
    Ok(name.to_string())
}

/// Computes a `Container` builder field.
pub async fn compute(
    engine: &Arc<Engine>,
    call: &Call,
    d: &Digest,
    parent: Option<&ContainerState>,
) -> Result<Evaluated, FieldError> {
    let args: Map<String, Value> = call.args.clone().into_iter().collect();
    if call.field == "container" {
        let mut st = ContainerState {
            platform: s(&args, "platform").to_owned(),
            ..ContainerState::default()
        };
        if st.platform.is_empty() {
            st.platform = crate::core::default_platform().to_owned();
        }
        return Ok(Evaluated::Container(Box::new(st)));
    }
    let Some(parent) = parent else {
        return Err(FieldError::new("internal error: a container field without a container"));
    };
    let mut st = parent.clone();
    let field = call.field.as_str();
    match field {
        "withRootfs" => {
            let dir = obj(engine, &args, "directory").await?;
            let Evaluated::Dir { tree, .. } = &*dir else {
                return Err(FieldError::new("`directory` is not a directory"));
            };
            let layer = new_layer(engine, d, |l| snapshot::write_tree(&engine.store, tree, l, "", None))?;
            st.layers = vec![layer];
            st.exec = None;
        }
        "withDirectory" => {
            let path = path_arg(&st, &args, "path")?;
            let dir = obj(engine, &args, "source").await?;
            let Evaluated::Dir { tree, .. } = &*dir else {
                return Err(FieldError::new("`source` is not a directory"));
            };
            let mut tree = tree.filter(&strings(&args, "include"), &strings(&args, "exclude"));
            if let Some(p) = i(&args, "permissions") {
                tree.set_permissions(p as u32);
            }
            let owner = owner_arg(engine, &st, &args)?;
            write_into(engine, &mut st, d, &path, true, |l, at| {
                snapshot::write_tree(&engine.store, &tree, l, at, owner)
            })?;
        }
        "withFile" | "withNewFile" | "withFiles" | "withSymlink" => {
            let owner = owner_arg(engine, &st, &args)?;
            let mut files: Vec<(String, FileEntry)> = Vec::new();
            match field {
                "withFile" => {
                    let path = path_arg(&st, &args, "path")?;
                    let f = obj(engine, &args, "source").await?;
                    let Evaluated::File { entry, .. } = &*f else {
                        return Err(FieldError::new("`source` is not a file"));
                    };
                    let mut entry = entry.clone();
                    if let Some(p) = i(&args, "permissions") {
                        entry.mode = p as u32;
                    }
                    files.push((path, entry));
                }
                "withNewFile" => {
                    let path = path_arg(&st, &args, "path")?;
                    let contents = s(&args, "contents");
                    let blob = engine.store.put_blob(contents.as_bytes())?;
                    files.push((
                        path,
                        FileEntry {
                            mode: i(&args, "permissions").unwrap_or(0o644) as u32,
                            blob,
                            size: contents.len() as u64,
                            mtime: None,
                        },
                    ));
                }
                "withFiles" => {
                    let dir = path_arg(&st, &args, "path")?;
                    for (name, entry) in crate::core::source_files(engine, &args).await? {
                        files.push((format!("{}/{name}", dir.trim_end_matches('/')), entry));
                    }
                }
                _ => {
                    let link = path_arg(&st, &args, "linkName")?;
                    let target = s(&args, "target").to_owned();
                    write_into(engine, &mut st, d, &link, false, |l, at| {
                        snapshot::write_entry_at(&engine.store, l, at, &Entry::Symlink { target }, None)
                    })?;
                    return Ok(Evaluated::Container(Box::new(st)));
                }
            }
            for (path, entry) in files {
                let store = engine.store.clone();
                write_into(engine, &mut st, d, &path, true, move |l, at| {
                    snapshot::write_entry_at(&store, l, at, &Entry::File(entry), owner)
                })?;
            }
        }
        "withoutFile" | "withoutDirectory" | "withoutFiles" => {
            let paths = if field == "withoutFiles" {
                strings(&args, "paths")
                    .iter()
                    .map(|p| {
                        let p = if b(&args, "expand") { expand(p, &st) } else { p.clone() };
                        st.abs(&p)
                    })
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                vec![path_arg(&st, &args, "path")?]
            };
            // Parents resolve through the container's symlinks; a final link is removed itself.
            let lower = layer_paths(engine, &st);
            let paths = paths
                .iter()
                .map(|p| snapshot::resolve_in_layers(&lower, p, false).map_err(snap))
                .collect::<Result<Vec<_>, _>>()?;
            let layer = new_layer(engine, d, |l| {
                for p in paths.iter().filter(|p| !p.is_empty()) {
                    snapshot::whiteout(l, p)?;
                }
                Ok(())
            })?;
            st.layers.push(layer);
        }
        "withMountedDirectory" => {
            let path = path_arg(&st, &args, "path")?;
            let dir = obj(engine, &args, "source").await?;
            let Evaluated::Dir { tree, .. } = &*dir else {
                return Err(FieldError::new("`source` is not a directory"));
            };
            let owner = owner_arg(engine, &st, &args)?;
            st.add_mount(
                path,
                MountSource::Dir {
                    tree: tree.clone(),
                    read_only: b(&args, "readOnly"),
                    owner,
                },
            );
        }
        "withMountedFile" => {
            let path = path_arg(&st, &args, "path")?;
            let f = obj(engine, &args, "source").await?;
            let Evaluated::File { entry, .. } = &*f else {
                return Err(FieldError::new("`source` is not a file"));
            };
            let owner = owner_arg(engine, &st, &args)?;
            st.add_mount(
                path,
                MountSource::File {
                    entry: entry.clone(),
                    owner,
                },
            );
        }
        "withMountedCache" => {
            let path = path_arg(&st, &args, "path")?;
            let cache = obj(engine, &args, "cache").await?;
            let Evaluated::Cache { key } = &*cache else {
                return Err(FieldError::new("`cache` is not a cache volume"));
            };
            let seed = match digest_arg(&args, "source") {
                Some(sd) => match &*engine.eval(&sd).await? {
                    Evaluated::Dir { tree, .. } => Some(tree.clone()),
                    _ => return Err(FieldError::new("`source` is not a directory")),
                },
                None => None,
            };
            let sharing = match s(&args, "sharing") {
                "" => "SHARED".to_owned(),
                other => other.to_owned(),
            };
            let owner = owner_arg(engine, &st, &args)?;
            st.add_mount(
                path,
                MountSource::Cache {
                    key: key.clone(),
                    sharing,
                    seed,
                    owner,
                },
            );
        }
        "withMountedSecret" => {
            let path = path_arg(&st, &args, "path")?;
            let secret = digest_arg(&args, "source").ok_or_else(|| FieldError::new("missing argument `source`"))?;
            let owner = owner_arg(engine, &st, &args)?;
            st.add_mount(
                path,
                MountSource::Secret {
                    secret,
                    mode: i(&args, "mode").unwrap_or(0o400) as u32,
                    owner,
                },
            );
        }
        "withMountedTemp" => {
            let path = path_arg(&st, &args, "path")?;
            st.add_mount(
                path,
                MountSource::Temp {
                    size: i(&args, "size").filter(|s| *s > 0).map(|s| s as u64),
                },
            );
        }
        "withoutMount" => {
            let path = path_arg(&st, &args, "path")?;
            st.mounts.retain(|(m, _)| *m != path);
        }
        "withEnvVariable" => {
            let value = if b(&args, "expand") {
                expand(s(&args, "value"), &st)
            } else {
                s(&args, "value").to_owned()
            };
            st.set_env(s(&args, "name"), &value);
        }
        "withoutEnvVariable" => {
            let name = s(&args, "name");
            st.config
                .env
                .retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(name));
        }
        "withSecretVariable" => {
            let name = s(&args, "name").to_owned();
            let secret = digest_arg(&args, "secret").ok_or_else(|| FieldError::new("missing argument `secret`"))?;
            st.secret_env.retain(|(n, _)| *n != name);
            st.secret_env.push((name, secret));
        }
        "withoutSecretVariable" => {
            let name = s(&args, "name");
            st.secret_env.retain(|(n, _)| n != name);
        }
        "withWorkdir" => st.config.workdir = path_arg(&st, &args, "path")?,
        "withoutWorkdir" => st.config.workdir.clear(),
        "withUser" => st.config.user = s(&args, "name").to_owned(),
        "withoutUser" => st.config.user.clear(),
        "withEntrypoint" => {
            st.config.entrypoint = strings(&args, "args");
            if !b(&args, "keepDefaultArgs") {
                st.config.cmd.clear();
            }
        }
        "withoutEntrypoint" => {
            st.config.entrypoint.clear();
            if !b(&args, "keepDefaultArgs") {
                st.config.cmd.clear();
            }
        }
        "withDefaultArgs" => st.config.cmd = strings(&args, "args"),
        "withoutDefaultArgs" => st.config.cmd.clear(),
        "withLabel" => {
            st.config
                .labels
                .insert(s(&args, "name").to_owned(), s(&args, "value").to_owned());
        }
        "withoutLabel" => {
            st.config.labels.remove(s(&args, "name"));
        }
        "withExposedPort" => {
            let port = i(&args, "port").unwrap_or(0);
            if !(1..=65535).contains(&port) {
                return Err(FieldError::new(format!("port {port} is out of range (1-65535)")));
            }
            let protocol = match s(&args, "protocol") {
                "" => "TCP".to_owned(),
                p => p.to_owned(),
            };
            st.config
                .ports
                .retain(|(p, proto, _)| !(*p == port && *proto == protocol));
            st.config.ports.push((
                port,
                protocol,
                args.get("description").and_then(Value::as_str).map(str::to_owned),
            ));
        }
        "withRegistryAuth" => {
            let secret = digest_arg(&args, "secret").ok_or_else(|| FieldError::new("missing argument `secret`"))?;
            let address = s(&args, "address").to_owned();
            st.registry_auth.retain(|(a, _, _)| *a != address);
            st.registry_auth
                .push((address, s(&args, "username").to_owned(), secret));
        }
        "withExec" => {
            return exec(engine, d, st, &args)
                .await
                .map(|s| Evaluated::Container(Box::new(s)));
        }
        "from" => from(engine, d, &mut st, &args).await?,
        "import" => import(engine, d, &mut st, &args).await?,
        "asTarball" => return as_tarball(engine, &st, &args).await,
        "file" | "directory" | "rootfs" | "stat" => return read(engine, &st, field, &args).await,
        other => return Err(crate::core::unsupported("Container", other)),
    }
    Ok(Evaluated::Container(Box::new(st)))
}

/// The host directories of a container's layers, bottom first.
fn layer_paths(engine: &Engine, st: &ContainerState) -> Vec<PathBuf> {
    st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect()
}

/// Writes into the container at `path`: into the mount that holds it when there is one (a snapshot mount
/// gets a new tree), else into a new layer. The path is first resolved through the container's symlinks
/// (the last component only with `follow_last`), inside the container's root; `fill` gets the directory to
/// write under and the resolved path relative to it.
fn write_into(
    engine: &Engine,
    st: &mut ContainerState,
    d: &Digest,
    path: &str,
    follow_last: bool,
    fill: impl FnOnce(&Path, &str) -> Result<(), SnapshotError>,
) -> Result<(), FieldError> {
    if let Some((m, MountSource::Dir { tree, .. }, rest)) = st.mount_at(path) {
        let rest = tree.resolve(&normalize(&rest)?, follow_last)?;
        let m = m.to_owned();
        // Apply the write to the mounted snapshot through a scratch directory.
        let scratch = engine
            .store
            .root()
            .join("tmp")
            .join(format!("mnt-{}", snapshot::unique()));
        let result = (|| {
            let Some((_, MountSource::Dir { tree, .. }, _)) = st.mount_at(path) else {
                return Ok(());
            };
            snapshot::write_tree(&engine.store, tree, &scratch, "", None).map_err(snap)?;
            fill(&scratch, &rest).map_err(snap)?;
            let new_tree = snapshot::read_tree(&engine.store, &scratch).map_err(snap)?;
            for (mp, src) in st.mounts.iter_mut() {
                if *mp == m
                    && let MountSource::Dir { tree, .. } = src
                {
                    *tree = new_tree.clone();
                }
            }
            Ok(())
        })();
        snapshot::remove_all(&scratch);
        return result;
    }
    if st.mount_at(path).is_some() {
        return Err(FieldError::new(format!(
            "cannot write `{path}`: it is inside a cache, secret or temporary mount"
        )));
    }
    let path = snapshot::resolve_in_layers(&layer_paths(engine, st), path, follow_last).map_err(snap)?;
    let path = path.as_str();
    // Several writes of one call (withFiles) share the call's layer.
    let name = d.to_string();
    let dir = layers_dir(&engine.store).join(&name);
    if st.layers.last() == Some(&name) {
        fill(&dir, path).map_err(snap)?;
    } else {
        // Each call's layer is built once; an existing one is the same content.
        let layer = new_layer(engine, d, |l| fill(l, path))?;
        st.layers.push(layer);
    }
    Ok(())
}

/// Reads `file`, `directory`, `rootfs` or `stat` out of a container.
async fn read(
    engine: &Arc<Engine>,
    st: &ContainerState,
    field: &str,
    args: &Map<String, Value>,
) -> Result<Evaluated, FieldError> {
    let path = if field == "rootfs" {
        "/".to_owned()
    } else {
        path_arg(st, args, "path")?
    };
    // A path under a mount reads the mount's content.
    if let Some((_, src, rest)) = st.mount_at(&path) {
        let rest = normalize(&rest)?;
        return match src {
            MountSource::Dir { tree, .. } => read_tree_path(tree, &rest, field, &path),
            MountSource::File { entry, .. } if rest.is_empty() => read_file_entry(entry, field, &path),
            _ => Err(FieldError::new(format!(
                "cannot read `{path}`: paths inside cache, secret and temporary mounts cannot be read back"
            ))),
        };
    }
    let engine2 = engine.clone();
    let st2 = st.clone();
    let follow = !(field == "stat" && b(args, "doNotFollowSymlinks"));
    let field = field.to_owned();
    tokio::task::spawn_blocking(move || {
        let mounted = mount_readonly(&engine2, &st2)?;
        let root = mounted.path().to_owned();
        let host = snapshot::resolve_in_root(&root, &path, follow).map_err(snap)?;
        let meta = std::fs::symlink_metadata(&host)
            .map_err(|_| FieldError::new(format!("no such file or directory in the container: `{path}`")))?;
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        let out = match field.as_str() {
            "file" => {
                if !meta.is_file() {
                    return Err(FieldError::new(format!(
                        "`{path}` is not a regular file in the container"
                    )));
                }
                let (blob, size) = engine2.store.put_blob_from_file(&host)?;
                use std::os::unix::fs::PermissionsExt;
                Evaluated::File {
                    name,
                    entry: FileEntry {
                        mode: meta.permissions().mode() & 0o7777,
                        blob,
                        size,
                        mtime: None,
                    },
                }
            }
            "stat" => {
                use std::os::unix::fs::PermissionsExt;
                let ft = meta.file_type();
                Evaluated::Stat {
                    file_type: if ft.is_dir() {
                        "DIRECTORY"
                    } else if ft.is_symlink() {
                        "SYMLINK"
                    } else {
                        "REGULAR"
                    }
                    .into(),
                    name: if path == "/" { "/".into() } else { name },
                    permissions: meta.permissions().mode() & 0o7777,
                    size: meta.len(),
                }
            }
            _ => {
                if !meta.is_dir() {
                    return Err(FieldError::new(format!("`{path}` is not a directory in the container")));
                }
                let tree = snapshot::read_tree(&engine2.store, &host).map_err(snap)?;
                Evaluated::Dir {
                    tree,
                    name: if path == "/" { "/".into() } else { format!("{name}/") },
                }
            }
        };
        mounted.unmount().map_err(snap)?;
        Ok(out)
    })
    .await
    .map_err(|e| FieldError::new(format!("internal error: {e}")))?
}

fn read_tree_path(tree: &Tree, rest: &str, field: &str, path: &str) -> Result<Evaluated, FieldError> {
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    match field {
        "file" => Ok(Evaluated::File {
            name,
            entry: tree.file(rest)?.clone(),
        }),
        "stat" => crate::core::stat_named(tree, rest, name)
            .map_err(|_| FieldError::new(format!("no such file or directory: `{path}`"))),
        _ => Ok(Evaluated::Dir {
            tree: tree.subtree(rest)?,
            name: format!("{name}/"),
        }),
    }
}

fn read_file_entry(entry: &FileEntry, field: &str, path: &str) -> Result<Evaluated, FieldError> {
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    match field {
        "file" => Ok(Evaluated::File {
            name,
            entry: entry.clone(),
        }),
        "stat" => Ok(Evaluated::Stat {
            file_type: "REGULAR".into(),
            name,
            permissions: entry.mode,
            size: entry.size,
        }),
        _ => Err(FieldError::new(format!("`{path}` is a mounted file, not a directory"))),
    }
}

/// Mounts the container's layers read-only at a scratch directory.
fn mount_readonly(engine: &Engine, st: &ContainerState) -> Result<snapshot::Mounted, FieldError> {
    let layers: Vec<PathBuf> = st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect();
    let target = engine
        .store
        .root()
        .join("tmp")
        .join(format!("ro-{}", snapshot::unique()));
    let mode = engine.snapshotter();
    snapshot::assemble(mode, &layers, None, &target, &empty_layer(&engine.store)?).map_err(snap)
}

/// `exists(path, expectedType, doNotFollowSymlinks)`.
pub async fn exists(engine: &Arc<Engine>, st: &ContainerState, args: &Map<String, Value>) -> Result<bool, FieldError> {
    let follow = !b(args, "doNotFollowSymlinks");
    let path = path_arg(st, args, "path")?;
    let expected = s(args, "expectedType").to_owned();
    if let Some((_, src, rest)) = st.mount_at(&path) {
        let rest = normalize(&rest)?;
        return Ok(match src {
            MountSource::Dir { tree, .. } => crate::core::tree_has(tree, &rest, &expected),
            MountSource::File { .. } => rest.is_empty() && matches!(expected.as_str(), "" | "REGULAR_TYPE"),
            _ => rest.is_empty() && matches!(expected.as_str(), "" | "DIRECTORY_TYPE"),
        });
    }
    let engine = engine.clone();
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        let mounted = mount_readonly(&engine, &st)?;
        let host = snapshot::resolve_in_root(mounted.path(), &path, follow).map_err(snap)?;
        let found = match std::fs::symlink_metadata(&host) {
            Err(_) => false,
            Ok(m) => match expected.as_str() {
                "" => true,
                "REGULAR_TYPE" => m.is_file(),
                "DIRECTORY_TYPE" => m.is_dir(),
                "SYMLINK_TYPE" => m.file_type().is_symlink(),
                _ => false,
            },
        };
        mounted.unmount().map_err(snap)?;
        Ok(found)
    })
    .await
    .map_err(|e| FieldError::new(format!("internal error: {e}")))?
}

/// A user resolved to IDs, with the home directory from `/etc/passwd`.
fn resolve_user(engine: &Engine, st: &ContainerState, user: &str) -> Result<(u32, u32, String), FieldError> {
    if user.is_empty() {
        return Ok((0, 0, "/root".into()));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // Numeric IDs need no lookup, but the home directory does.
    let lookup = |file: &str| -> Vec<Vec<String>> {
        let Ok(m) = mount_readonly(engine, st) else {
            return Vec::new();
        };
        let text = snapshot::resolve_in_root(m.path(), file, true)
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_owned).collect())
            .collect()
    };
    let passwd = lookup("/etc/passwd");
    let entry = passwd
        .iter()
        .find(|f| f.first().map(String::as_str) == Some(u) || f.get(2).map(String::as_str) == Some(u));
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry
            .and_then(|f| f.get(2)?.parse().ok())
            .ok_or_else(|| FieldError::new(format!("user `{u}` is not in the container's /etc/passwd")))?,
    };
    let home = entry
        .and_then(|f| f.get(5).cloned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    let gid = match g {
        None => entry.and_then(|f| f.get(3)?.parse().ok()).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("/etc/group")
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| FieldError::new(format!("group `{g}` is not in the container's /etc/group")))?,
        },
    };
    Ok((uid, gid, home))
}

/// A scratch folder removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.0.exists() {
            snapshot::remove_all(&self.0);
        }
    }
}

/// Replaces every secret plaintext by `***`.
fn scrub(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    if secrets.is_empty() {
        return bytes.to_vec();
    }
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), "***");
    }
    text.into_bytes()
}

/// Runs `withExec` on `st`, returning the container after it.
async fn exec(
    engine: &Arc<Engine>,
    d: &Digest,
    mut st: ContainerState,
    args: &Map<String, Value>,
) -> Result<ContainerState, FieldError> {
    let runtime = engine.runtime()?;
    let mut argv = strings(args, "args");
    if b(args, "expand") {
        argv = argv.iter().map(|a| expand(a, &st)).collect();
    }
    if argv.is_empty() {
        argv = st.config.cmd.clone();
    }
    if b(args, "useEntrypoint") || (strings(args, "args").is_empty() && !st.config.entrypoint.is_empty()) {
        let mut full = st.config.entrypoint.clone();
        full.extend(argv);
        argv = full;
    }
    if argv.is_empty() {
        return Err(FieldError::new(
            "`withExec` needs a command: pass `args`, or set default args with `withDefaultArgs`",
        ));
    }
    let cmd_for_error = argv.clone();

    // Secrets: their plaintext goes to the process and is scrubbed from everything that comes back.
    let mut secrets = Vec::new();
    let mut env = st.config.env.clone();
    for (name, sd) in &st.secret_env {
        let p = secret_plaintext(engine, sd).await?;
        env.retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(name.as_str()));
        env.push(format!("{name}={p}"));
        secrets.push(p);
    }
    let mut secret_files = Vec::new();
    for (path, src) in &st.mounts {
        if let MountSource::Secret { secret, mode, owner } = src {
            let p = secret_plaintext(engine, secret).await?;
            secret_files.push((path.clone(), p.clone(), *mode, *owner));
            secrets.push(p);
        }
    }
    if !env.iter().any(|kv| kv.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }

    let stdin = s(args, "stdin").to_owned();
    let redirect_stdin = s(args, "redirectStdin").to_owned();
    let redirect_stdout = s(args, "redirectStdout").to_owned();
    let redirect_stderr = s(args, "redirectStderr").to_owned();
    let expect = match s(args, "expect") {
        "" => "SUCCESS".to_owned(),
        e => e.to_owned(),
    };
    let privileged = b(args, "insecureRootCapabilities");
    if b(args, "experimentalPrivilegedNesting") {
        return Err(FieldError::new(
            "`Container.withExec(experimentalPrivilegedNesting: true)` is not supported by this engine yet",
        ));
    }

    let scratch = engine
        .store
        .root()
        .join("tmp")
        .join(format!("exec-{}", snapshot::unique()));
    // Removed however this function ends, a cancelled request included.
    let _scratch_guard = ScratchDir(scratch.clone());
    let layer_name = d.to_string();
    // Held until the exec is over.
    let (_guards, cache_use) = engine.cache_locks(&st.mounts).await;
    let fresh_caches = cache_use.fresh.clone();
    let engine2 = engine.clone();
    let events = engine.clone();
    let call_name = d.clone();
    let secrets2 = secrets.clone();
    let on_line: crate::runtime::LineSink = Arc::new(move |line: &str, _is_err: bool| {
        let line = String::from_utf8_lossy(&scrub(line.as_bytes(), &secrets2)).into_owned();
        events.emit_log("Container.withExec", &call_name, line);
    });

    // Prepare the filesystem (blocking work) and run.
    let prep_scratch = scratch.clone();
    let prep_st = st.clone();
    let prepared =
        tokio::task::spawn_blocking(move || prepare(&engine2, &prep_st, &prep_scratch, &secret_files, &fresh_caches))
            .await
            .map_err(|e| FieldError::new(format!("internal error: {e}")))?;
    let mut prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            snapshot::remove_all(&scratch);
            return Err(e);
        }
    };
    let (uid, gid, home) = match resolve_user(engine, &st, &st.config.user) {
        Ok(u) => u,
        Err(e) => {
            drop(prepared);
            snapshot::remove_all(&scratch);
            return Err(e);
        }
    };
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    let mut stdin_bytes = stdin.into_bytes();
    if !redirect_stdin.is_empty() {
        let p = st.abs(&redirect_stdin)?;
        let host = snapshot::resolve_in_root(&prepared.rootfs, &p, true).map_err(snap)?;
        stdin_bytes =
            std::fs::read(&host).map_err(|e| FieldError::new(format!("cannot read `{p}` for redirectStdin: {e}")))?;
    }
    // The workdir is created when missing, as image builders do.
    let cwd = st.workdir().to_owned();
    if let Ok(host) = snapshot::resolve_in_root(&prepared.rootfs, &cwd, true) {
        let _ = std::fs::create_dir_all(host);
    }
    let netns = engine.network.take().await;
    if engine.snapshotter() == snapshot::Snapshotter::Copy
        && let Some(why) = snapshot::overlay_probe_failure()
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
    let netns = match netns {
        Ok(ns) => Some(ns),
        Err(e) => {
            drop(prepared);
            snapshot::remove_all(&scratch);
            return Err(FieldError::new(format!("cannot set up the container's network: {e}")));
        }
    };
    let req = RunRequest {
        rootfs: prepared.rootfs.clone(),
        bundle: scratch.join("bundle"),
        args: argv,
        env,
        cwd,
        uid,
        gid,
        additional_gids: Vec::new(),
        mounts: prepared.mounts.clone(),
        stdin: stdin_bytes,
        netns: netns.as_ref().map(|n| n.path()),
        privileged,
        etc_files: prepared.etc_files.clone(),
    };
    let result = runtime.run(&req, on_line).await;
    // The secrets' files go as soon as the process is done.
    drop(prepared.secrets.take());
    if let Some(ns) = netns {
        engine.network.release(ns);
    }
    // Tear down: unmount, then keep the upper directory as the new layer.
    let engine3 = engine.clone();
    let mounts_back: Vec<(String, PathBuf)> = prepared.read_back.clone();
    let finished = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Tree)>, FieldError> {
        prepared.overlay.unmount().map_err(snap)?;
        let mut trees = Vec::new();
        for (path, host) in &mounts_back {
            trees.push((path.clone(), snapshot::read_tree(&engine3.store, host).map_err(snap)?));
        }
        Ok(trees)
    })
    .await
    .map_err(|e| FieldError::new(format!("internal error: {e}")))?;
    let output = match (result, finished) {
        (Err(e), _) => {
            snapshot::remove_all(&scratch);
            return Err(FieldError::new(e.to_string()));
        }
        (_, Err(e)) => {
            snapshot::remove_all(&scratch);
            return Err(e);
        }
        (Ok(out), Ok(trees)) => {
            for (path, tree) in trees {
                for (mp, src) in st.mounts.iter_mut() {
                    if *mp == path
                        && let MountSource::Dir { tree: t, .. } = src
                    {
                        *t = tree.clone();
                    }
                }
            }
            out
        }
    };
    let stdout = scrub(&output.stdout, &secrets);
    let stderr = scrub(&output.stderr, &secrets);
    let combined = scrub(&output.combined, &secrets);
    let failed = match expect.as_str() {
        "ANY" => false,
        "FAILURE" => output.exit_code == 0,
        _ => output.exit_code != 0,
    } || output.timed_out.is_some();
    if failed {
        snapshot::remove_all(&scratch);
        let cmd_text = cmd_for_error.join(" ");
        let message = match (output.timed_out, expect.as_str()) {
            (Some(t), _) => format!(
                "process \"{cmd_text}\" was killed after running for {}s (DAGGER_RS_EXEC_TIMEOUT)",
                t.as_secs()
            ),
            (None, "FAILURE") => format!("process \"{cmd_text}\" succeeded but was expected to fail"),
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
        let mut ext = Map::new();
        ext.insert("_type".into(), json!("EXEC_ERROR"));
        ext.insert("cmd".into(), json!(cmd_for_error));
        ext.insert("exitCode".into(), json!(output.exit_code));
        ext.insert("stdout".into(), json!(String::from_utf8_lossy(&stdout)));
        ext.insert("stderr".into(), json!(String::from_utf8_lossy(&stderr)));
        return Err(FieldError {
            message: String::from_utf8_lossy(&scrub(message.as_bytes(), &secrets)).into_owned(),
            extensions: Some(ext),
        });
    }
    // Redirected output lands in the new layer, at the path resolved through the container's links (the
    // process may have made some), and is written without following any.
    let upper = scratch.join("upper");
    for (target, bytes) in [(&redirect_stdout, &stdout), (&redirect_stderr, &stderr)] {
        if target.is_empty() {
            continue;
        }
        let p = st.abs(target)?;
        let mut stack = layer_paths(engine, &st);
        stack.push(upper.clone());
        let rel = snapshot::resolve_in_layers(&stack, &p, true).map_err(snap)?;
        let entry = Entry::File(FileEntry {
            mode: 0o644,
            blob: engine.store.put_blob(bytes)?,
            size: bytes.len() as u64,
            mtime: None,
        });
        snapshot::write_entry_at(&engine.store, &upper, &rel, &entry, None)
            .map_err(|e| FieldError::new(format!("cannot write `{p}`: {e}")))?;
    }
    let layers = layers_dir(&engine.store);
    std::fs::create_dir_all(&layers)
        .map_err(|e| FieldError::new(format!("cannot create {}: {e}", layers.display())))?;
    let target = layers.join(&layer_name);
    if target.exists() {
        snapshot::remove_all(&target);
    }
    std::fs::rename(&upper, &target)
        .map_err(|e| FieldError::new(format!("cannot keep the exec's layer at {}: {e}", target.display())))?;
    snapshot::remove_all(&scratch);
    st.layers.push(layer_name);
    st.exec = Some(ExecResult {
        exit_code: output.exit_code,
        stdout: engine.store.put_blob(&stdout)?,
        stderr: engine.store.put_blob(&stderr)?,
        combined: engine.store.put_blob(&combined)?,
    });
    Ok(st)
}

/// A secret mounted as a file: container path, plaintext, mode, owner.
type SecretFile = (String, String, u32, Option<(u32, u32)>);

/// A filesystem ready for one exec.
struct Prepared {
    overlay: snapshot::Mounted,
    rootfs: PathBuf,
    mounts: Vec<MountSpec>,
    etc_files: Vec<(PathBuf, String)>,
    /// Writable snapshot mounts to read back after the exec: container path, host directory.
    read_back: Vec<(String, PathBuf)>,
    /// The tmpfs holding the mounted secrets' files, unmounted when the exec ends.
    secrets: Option<SecretStore>,
}

fn prepare(
    engine: &Engine,
    st: &ContainerState,
    scratch: &Path,
    secret_files: &[SecretFile],
    fresh_caches: &std::collections::HashSet<String>,
) -> Result<Prepared, FieldError> {
    let io = |what: String| move |e: std::io::Error| FieldError::new(format!("{what}: {e}"));
    std::fs::create_dir_all(scratch).map_err(io(format!("cannot create {}", scratch.display())))?;
    let layers: Vec<PathBuf> = st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect();
    for l in &layers {
        if !l.is_dir() {
            return Err(FieldError::new(format!(
                "layer {} is missing from the cache directory (pruned while in use?); run the pipeline again",
                l.display()
            )));
        }
    }
    let rootfs = scratch.join("rootfs");
    let mode = engine.snapshotter();
    let overlay = snapshot::assemble(
        mode,
        &layers,
        Some((&scratch.join("upper"), &scratch.join("work"))),
        &rootfs,
        &empty_layer(&engine.store)?,
    )
    .map_err(snap)?;
    let mut mounts = Vec::new();
    let mut read_back = Vec::new();
    for (n, (path, src)) in st.mounts.iter().enumerate() {
        match src {
            MountSource::Dir { tree, read_only, owner } => {
                let host = scratch.join(format!("m{n}"));
                snapshot::write_tree(&engine.store, tree, &host, "", *owner).map_err(snap)?;
                if !read_only {
                    read_back.push((path.clone(), host.clone()));
                }
                mounts.push(MountSpec::Bind {
                    source: host,
                    target: path.clone(),
                    read_only: *read_only,
                });
            }
            MountSource::File { entry, owner } => {
                let host = scratch.join(format!("f{n}"));
                snapshot::write_file(&engine.store, entry, &host).map_err(snap)?;
                if let Some((u, g)) = owner {
                    snapshot::chown(&host, *u, *g).map_err(snap)?;
                }
                mounts.push(MountSpec::Bind {
                    source: host,
                    target: path.clone(),
                    read_only: false,
                });
            }
            MountSource::Cache {
                key,
                sharing,
                seed,
                owner,
            } => {
                let (host, fresh) =
                    engine.cache_volume_dir(key, sharing == "PRIVATE" && fresh_caches.contains(key), scratch, n)?;
                if fresh {
                    if let Some(seed) = seed {
                        snapshot::write_tree(&engine.store, seed, &host, "", *owner).map_err(snap)?;
                    } else if let Some((u, g)) = owner {
                        snapshot::chown(&host, *u, *g).map_err(snap)?;
                    }
                }
                mounts.push(MountSpec::Bind {
                    source: host,
                    target: path.clone(),
                    read_only: false,
                });
            }
            MountSource::Secret { .. } => {}
            MountSource::Temp { size } => mounts.push(MountSpec::Tmpfs {
                target: path.clone(),
                size: *size,
            }),
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
    // Name resolution and a hosts file, as every container expects.
    let hosts = scratch.join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1\tlocalhost dagger\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .map_err(io(format!("cannot write {}", hosts.display())))?;
    let mut etc_files = vec![(hosts, "/etc/hosts".to_owned())];
    let resolv = Path::new("/etc/resolv.conf");
    if resolv.is_file() {
        let copy = scratch.join("resolv.conf");
        std::fs::copy(resolv, &copy).map_err(io("cannot copy /etc/resolv.conf".into()))?;
        etc_files.push((copy, "/etc/resolv.conf".to_owned()));
    }
    Ok(Prepared {
        overlay,
        rootfs,
        mounts,
        etc_files,
        read_back,
        secrets,
    })
}

/// The files of the secrets one exec mounts: on a tmpfs of their own (memory, never the cache's disk), mounted
/// private to the engine's user (mode 0700) with `nosuid,nodev,noexec`, and unmounted when dropped, which is
/// when the exec ends. An engine that dies first leaves the mount under `tmp/`, where the next engine to start
/// on the cache directory unmounts it (see [`crate::cleanup`]).
struct SecretStore {
    dir: PathBuf,
}

impl SecretStore {
    /// Mounts a tmpfs at `dir`, sized for `files`.
    fn mount(dir: &Path, files: &[SecretFile]) -> Result<Self, FieldError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| FieldError::new(format!("cannot create {}: {e}", dir.display())))?;
        // A page per file at least, and room for the directory itself.
        let size: usize = files
            .iter()
            .map(|f| f.1.len().div_ceil(4096).max(1) * 4096)
            .sum::<usize>()
            + 64 * 1024;
        let data = std::ffi::CString::new(format!("mode=0700,size={size}"))
            .map_err(|_| FieldError::new("internal error: tmpfs options contain a NUL byte"))?;
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
            FieldError::new(format!(
                "cannot mount a tmpfs for the exec's secrets at {} (the engine needs root): {e}",
                dir.display()
            ))
        })?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Writes one secret file, created with its final mode and owner before the plaintext goes in.
    fn write(&self, name: &str, plaintext: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<PathBuf, FieldError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // `create_new` never follows a symbolic link and never opens an existing file.
        let path = self.dir.join(name);
        let fail = |e: std::io::Error| FieldError::new(format!("cannot write the secret file {}: {e}", path.display()));
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

/// Leaves of a container.
pub async fn leaf(
    engine: &Arc<Engine>,
    name: &str,
    args: &Map<String, Value>,
    st: &ContainerState,
) -> Result<Option<Value>, FieldError> {
    let exec_blob = |pick: fn(&ExecResult) -> &Digest| -> Result<Value, FieldError> {
        let e = st.exec.as_ref().ok_or_else(|| {
            FieldError::new(format!(
                "`{name}` needs a command to have run: call `withExec` before reading its output"
            ))
        })?;
        let bytes = engine.store.get_blob(pick(e))?;
        Ok(json!(String::from_utf8_lossy(&bytes)))
    };
    Ok(Some(match name {
        "stdout" => exec_blob(|e| &e.stdout)?,
        "stderr" => exec_blob(|e| &e.stderr)?,
        "combinedOutput" => exec_blob(|e| &e.combined)?,
        "exitCode" => json!(
            st.exec
                .as_ref()
                .ok_or_else(|| FieldError::new("`exitCode` needs a command to have run: call `withExec` first"))?
                .exit_code
        ),
        "envVariable" => json!(st.env_value(s(args, "name"))),
        "workdir" => json!(st.workdir()),
        "user" => json!(st.config.user),
        "entrypoint" => json!(st.config.entrypoint),
        "defaultArgs" => json!(st.config.cmd),
        "label" => json!(st.config.labels.get(s(args, "name"))),
        "mounts" => json!(st.mounts.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()),
        "platform" => json!(st.platform),
        "imageRef" => json!(st.image_ref),
        "exists" => json!(exists(engine, st, args).await?),
        "export" | "publish" => {
            // Image output can take a while (packing layers, uploading): it gets progress events of its own.
            let op = format!("Container.{name}");
            let key = Digest::of(format!("{op}{}", json!(args)).as_bytes());
            engine.emit_event(&op, &key, crate::engine::EventKind::Started);
            let started = std::time::Instant::now();
            let result = if name == "export" {
                export(engine, st, args).await
            } else {
                publish(engine, st, args).await
            };
            let kind = match &result {
                Ok(v) => {
                    engine.emit_event(
                        &op,
                        &key,
                        crate::engine::EventKind::Log(v.as_str().unwrap_or("").to_owned()),
                    );
                    crate::engine::EventKind::Done(started.elapsed().as_millis())
                }
                Err(e) => crate::engine::EventKind::Failed(e.message.clone()),
            };
            engine.emit_event(&op, &key, kind);
            result?
        }
        _ => return Ok(None),
    }))
}

/// The records behind `envVariables`, `labels` and `exposedPorts`.
pub fn records(st: &ContainerState, field: &str) -> Option<Vec<Map<String, Value>>> {
    let pair = |n: &str, v: &str| {
        let mut m = Map::new();
        m.insert("name".into(), json!(n));
        m.insert("value".into(), json!(v));
        m
    };
    Some(match field {
        "envVariables" => st
            .config
            .env
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                pair(k, v)
            })
            .collect(),
        "labels" => st.config.labels.iter().map(|(k, v)| pair(k, v)).collect(),
        "exposedPorts" => st
            .config
            .ports
            .iter()
            .map(|(port, protocol, description)| {
                let mut m = Map::new();
                m.insert("port".into(), json!(port));
                m.insert("protocol".into(), json!(protocol));
                m.insert("description".into(), json!(description));
                m.insert("experimentalSkipHealthcheck".into(), json!(false));
                m
            })
            .collect(),
        _ => return None,
    })
}

// ----- images in and out -----------------------------------------------------------------------------------

fn oci(e: crate::oci::OciError) -> FieldError {
    FieldError::new(e.to_string())
}

/// The image configuration as a container state's config.
fn config_from_image(img: &oci_spec::image::ImageConfiguration) -> ImageConfig {
    let Some(c) = img.config() else {
        return ImageConfig::default();
    };
    let ports = c
        .exposed_ports()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            Some((port.parse().ok()?, proto.to_ascii_uppercase(), None))
        })
        .collect();
    ImageConfig {
        env: c.env().clone().unwrap_or_default(),
        workdir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        ports,
    }
}

/// The container's config as an OCI image configuration.
fn image_config(st: &ContainerState) -> Result<oci_spec::image::ImageConfiguration, FieldError> {
    let c = &st.config;
    let mut b = oci_spec::image::ConfigBuilder::default();
    if !c.env.is_empty() {
        b = b.env(c.env.clone());
    }
    if !c.workdir.is_empty() {
        b = b.working_dir(c.workdir.clone());
    }
    if !c.user.is_empty() {
        b = b.user(c.user.clone());
    }
    if !c.entrypoint.is_empty() {
        b = b.entrypoint(c.entrypoint.clone());
    }
    if !c.cmd.is_empty() {
        b = b.cmd(c.cmd.clone());
    }
    if !c.labels.is_empty() {
        b = b.labels(
            c.labels
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    if !c.ports.is_empty() {
        b = b.exposed_ports(
            c.ports
                .iter()
                .map(|(p, proto, _)| format!("{p}/{}", proto.to_ascii_lowercase()))
                .collect::<Vec<_>>(),
        );
    }
    let config = b
        .build()
        .map_err(|e| FieldError::new(format!("cannot build the image config: {e}")))?;
    let mut img = oci_spec::image::ImageConfiguration::default();
    img.set_config(Some(config));
    Ok(img)
}

fn platform_of(st: &ContainerState) -> Result<crate::oci::Platform, FieldError> {
    if st.platform.is_empty() {
        return Ok(crate::oci::Platform::host());
    }
    crate::oci::Platform::parse(&st.platform).map_err(oci)
}

/// Credentials `withRegistryAuth` gave for the reference's registry.
async fn registry_auth(
    engine: &Arc<Engine>,
    auths: Vec<(String, String, Digest)>,
    reference: &crate::oci::Reference,
) -> Result<Option<crate::oci::registry::Auth>, FieldError> {
    let found: Option<(String, String, Digest)> = {
        let wanted = reference.registry().to_owned();
        let mut found = None;
        for (address, username, secret) in auths.into_iter().rev() {
            if address == wanted || crate::oci::Reference::parse(&address).is_ok_and(|r| r.registry() == wanted) {
                found = Some((address, username, secret));
                break;
            }
        }
        found
    };
    let Some((_, username, secret)) = found else {
        return Ok(None);
    };
    Ok(Some(crate::oci::registry::Auth {
        username,
        secret: secret_plaintext(engine, &secret).await?,
    }))
}

/// The manifest digest `address` names now (for `from`, so a moved tag is a new object, and the image used
/// is the one resolved here). Any failure — a bad reference, an unreachable registry, a missing tag, refused
/// credentials — is an error naming the reference: `from` never goes on with an unpinned tag. Credentials
/// given by `withRegistryAuth` earlier in the chain (`parent`) are used.
pub async fn resolve_address(
    engine: &Arc<Engine>,
    parent: Option<&Digest>,
    address: &str,
) -> Result<String, FieldError> {
    let failed = |cause: String| FieldError::new(format!("cannot resolve image `{address}` to a digest: {cause}"));
    let reference = crate::oci::Reference::parse(address).map_err(|e| failed(e.to_string()))?;
    if let Some(d) = reference.digest() {
        return Ok(d.to_owned());
    }
    // The credentials are found in the recorded calls: nothing needs to run for them.
    let mut auths = Vec::new();
    let mut cursor = parent.cloned();
    while let Some(d) = cursor {
        let call = engine.call(&d).ok_or_else(|| {
            failed(format!(
                "internal error: the container `{d}` it is called on is unknown"
            ))
        })?;
        if call.field == "withRegistryAuth" {
            let arg = |k: &str| call.args.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let secret = call
                .args
                .get("secret")
                .and_then(|v| v.get("$id"))
                .and_then(Value::as_str)
                .and_then(Digest::parse);
            if let Some(secret) = secret {
                auths.insert(0, (arg("address"), arg("username"), secret));
            }
        }
        if call.field == "from" || call.field == "container" {
            break;
        }
        cursor = call.parent;
    }
    let auth = registry_auth(engine, auths, &reference)
        .await
        .map_err(|e| failed(e.message))?;
    let registry = engine.registry().map_err(|e| failed(e.message))?;
    registry
        .resolve(&reference, auth.as_ref())
        .await
        .map_err(|e| failed(e.to_string()))
}

/// `from(address)`: pulls the image (layers already in the store are not fetched again), unpacks its layers
/// once, and applies its configuration.
async fn from(
    engine: &Arc<Engine>,
    d: &Digest,
    st: &mut ContainerState,
    args: &Map<String, Value>,
) -> Result<(), FieldError> {
    let address = s(args, "address");
    let mut reference = crate::oci::Reference::parse(address).map_err(oci)?;
    if let Some(d) = args.get("$digest").and_then(Value::as_str) {
        reference = reference.with_digest(d);
    }
    // `resolve_address` pins every `from` when it is selected; a record without the pin is not pulled by tag.
    if reference.digest().is_none() {
        return Err(FieldError::new(format!(
            "image `{address}` was not resolved to a digest: select `from` again to resolve it"
        )));
    }
    let platform = platform_of(st)?;
    let auth = registry_auth(engine, st.registry_auth.clone(), &reference).await?;
    let registry = engine.registry()?;
    let pull: futures_util::future::BoxFuture<'_, _> =
        Box::pin(registry.pull(&engine.store, &reference, &platform, auth.as_ref()));
    let image = pull.await.map_err(oci)?;
    apply_image(engine, ("Container.from", d), st, &image).await?;
    let mut shown = reference.clone();
    if shown.digest().is_none() {
        shown = shown.with_digest(&image.manifest_digest);
    }
    st.image_ref = shown.to_string();
    Ok(())
}

/// Makes `st` the pulled or imported image: its layers (unpacked once) and configuration. What unpacking a
/// layer left out (device nodes, fifos) is reported as a log line of the operation `op`, one per layer.
async fn apply_image(
    engine: &Arc<Engine>,
    (op, d): (&str, &Digest),
    st: &mut ContainerState,
    image: &crate::oci::registry::PulledImage,
) -> Result<(), FieldError> {
    let store = engine.store.clone();
    let blobs: Vec<Digest> = image
        .layers
        .iter()
        .map(|l| {
            l.store_digest()
                .ok_or_else(|| FieldError::new(format!("layer digest `{}` is not a sha256 digest", l.digest)))
        })
        .collect::<Result<_, _>>()?;
    let (names, skipped) = tokio::task::spawn_blocking(move || -> Result<(Vec<String>, Vec<String>), FieldError> {
        let (mut names, mut skipped) = (Vec::new(), Vec::new());
        for b in &blobs {
            let (_, extracted) = store.extract_layer(b).map_err(oci)?;
            skipped.extend(extracted.summary(&format!("sha256:{b}")));
            names.push(b.to_string());
        }
        Ok((names, skipped))
    })
    .await
    .map_err(|e| FieldError::new(format!("internal error: {e}")))??;
    for line in skipped {
        engine.emit_log(op, d, line);
    }
    st.layers = names;
    st.config = config_from_image(&image.config);
    st.exec = None;
    st.mounts.clear();
    Ok(())
}

/// `import(source, tag)`: an OCI-layout or docker-archive tarball.
async fn import(
    engine: &Arc<Engine>,
    d: &Digest,
    st: &mut ContainerState,
    args: &Map<String, Value>,
) -> Result<(), FieldError> {
    let file = obj(engine, args, "source").await?;
    let Evaluated::File { entry, .. } = &*file else {
        return Err(FieldError::new("`source` is not a file"));
    };
    let path = engine.store.blob_path(&entry.blob);
    let store = engine.store.clone();
    let platform = platform_of(st)?;
    let image = tokio::task::spawn_blocking(move || {
        crate::oci::image::read_image_tarball_for(&path, &store, &platform).map_err(oci)
    })
    .await
    .map_err(|e| FieldError::new(format!("internal error: {e}")))??;
    apply_image(engine, ("Container.import", d), st, &image).await?;
    st.image_ref = image.reference.map(|r| r.to_string()).unwrap_or_default();
    Ok(())
}

/// Refuses image-output options this engine does not implement yet, naming them.
fn check_image_options(args: &Map<String, Value>, field: &str) -> Result<(), FieldError> {
    if args
        .get("platformVariants")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(FieldError::new(format!(
            "`Container.{field}(platformVariants:)` is not supported by this engine yet: publish one platform at a time"
        )));
    }
    match s(args, "mediaTypes") {
        "" | "OCI" | "OCIMediaTypes" => {}
        other => {
            return Err(FieldError::new(format!(
                "`Container.{field}(mediaTypes: {other})` is not supported by this engine yet: it writes OCI media types"
            )));
        }
    }
    match s(args, "forcedCompression") {
        "" | "Gzip" => Ok(()),
        other => Err(FieldError::new(format!(
            "`Container.{field}(forcedCompression: {other})` is not supported by this engine yet: layers are gzip-compressed"
        ))),
    }
}

/// Builds the container's image (layers packed once each, config, manifest) in the store.
async fn built_image(engine: &Arc<Engine>, st: &ContainerState) -> Result<crate::oci::image::BuiltImage, FieldError> {
    let layers: Vec<PathBuf> = st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect();
    let config = image_config(st)?;
    let platform = platform_of(st)?;
    let store = engine.store.clone();
    tokio::task::spawn_blocking(move || {
        crate::oci::image::build_image(&store, &layers, &config, &platform).map_err(oci)
    })
    .await
    .map_err(|e| FieldError::new(format!("internal error: {e}")))?
}

/// Writes the container's image as an OCI tarball at `target` (atomically).
async fn write_tarball(engine: &Arc<Engine>, st: &ContainerState, target: &Path) -> Result<(), FieldError> {
    let image = built_image(engine, st).await?;
    let target = target.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(), FieldError> {
        let io = |e: std::io::Error| FieldError::new(format!("cannot write {}: {e}", target.display()));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = target.with_extension(format!("partial-{}", snapshot::unique()));
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let result = crate::oci::image::write_oci_tarball(&image, &mut out)
            .map_err(oci)
            .and_then(|()| std::io::Write::flush(&mut out).map_err(io));
        drop(out);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &target).map_err(io)
    })
    .await
    .map_err(|e| FieldError::new(format!("internal error: {e}")))?
}

/// `asTarball`: the image as an OCI tarball file.
async fn as_tarball(
    engine: &Arc<Engine>,
    st: &ContainerState,
    args: &Map<String, Value>,
) -> Result<Evaluated, FieldError> {
    check_image_options(args, "asTarball")?;
    let tmp = engine
        .store
        .root()
        .join("tmp")
        .join(format!("image-{}.tar", snapshot::unique()));
    write_tarball(engine, st, &tmp).await?;
    let stored = engine.store.put_blob_from_file(&tmp);
    let _ = std::fs::remove_file(&tmp);
    let (blob, size) = stored?;
    Ok(Evaluated::File {
        name: "image.tar".into(),
        entry: FileEntry {
            mode: 0o644,
            blob,
            size,
            mtime: None,
        },
    })
}

/// `export(path)`: the image as an OCI tarball on the host; returns the absolute path written.
pub async fn export(engine: &Arc<Engine>, st: &ContainerState, args: &Map<String, Value>) -> Result<Value, FieldError> {
    check_image_options(args, "export")?;
    let raw = s(args, "path");
    let path = if b(args, "expand") {
        expand(raw, st)
    } else {
        raw.to_owned()
    };
    let target = crate::core::host_path(engine, &path);
    if target.is_dir() {
        return Err(FieldError::new(format!(
            "{} is a directory; `export` writes a tarball: give a file path",
            target.display()
        )));
    }
    write_tarball(engine, st, &target).await?;
    Ok(json!(target.to_string_lossy()))
}

/// `publish(address)`: pushes the image; returns `address@sha256:…`.
pub async fn publish(
    engine: &Arc<Engine>,
    st: &ContainerState,
    args: &Map<String, Value>,
) -> Result<Value, FieldError> {
    check_image_options(args, "publish")?;
    let reference = crate::oci::Reference::parse(s(args, "address")).map_err(oci)?;
    let auth = registry_auth(engine, st.registry_auth.clone(), &reference).await?;
    let image = built_image(engine, st).await?;
    let pinned = engine
        .registry()?
        .push(&image, &reference, auth.as_ref())
        .await
        .map_err(oci)?;
    Ok(json!(pinned))
}
