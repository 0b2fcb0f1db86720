//! Container filesystems as stacks of layer directories, joined with overlayfs.
//!
//! A layer is a directory under the store's `layers/` in overlayfs "upper" format: files, directories and
//! symlinks as they are; a deleted path is a character device 0:0; a directory that hides everything below
//! it carries the `trusted.overlay.opaque=y` attribute (`user.overlay.opaque=y` in rootless mode, where overlays
//! are mounted with `userxattr`, see [`crate::worker::userns`]). Image layers are unpacked into that format, and the
//! upper directory of an exec *is* a layer once the process exits, so an exec costs no copy.
//!
//! Paths inside a container are resolved with [`resolve_in_root`], which follows symlinks as the container
//! would (an absolute link target is relative to the container's root), so a hostile link in an image can
//! never make the engine read or write outside the root.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::model::tree::{Entry, FileEntry, Node, PathError, Tree, resolve_path};

/// A snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Too many layers to stack.
    #[error(
        "a container with {0} layers is deeper than overlayfs can stack; squash it (for example with \
         `withRootfs(ctr.rootfs())`)"
    )]
    TooDeep(usize),
    /// A path does not exist in the container.
    #[error("no such file or directory in the container: `{0}`")]
    NotFound(String),
    /// Symlinks loop.
    #[error("too many levels of symbolic links resolving `{0}`")]
    Loop(String),
    /// A path goes through something that is not a directory.
    #[error("`{0}` in the container is not a directory")]
    NotADirectory(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let what = what.into();
    move |source| SnapshotError::Io { what, source }
}

/// The deepest stack this engine mounts (the kernel allows 500 lower layers; the option string must also fit
/// in a page, which the short link names below ensure).
pub const MAX_LAYERS: usize = 400;

/// A container root filesystem assembled at a directory: an overlay mount, or (where overlayfs is not
/// available) a copy of the layers. Released on drop.
#[derive(Debug)]
pub struct Mounted {
    target: PathBuf,
    links: PathBuf,
    mounted: bool,
    /// For a writable copy: where the changes go, and what the copy held before.
    copy: Option<CopyState>,
}

#[derive(Debug)]
struct CopyState {
    upper: Option<PathBuf>,
    before: BTreeMap<String, Stamp>,
}

impl Mounted {
    /// Where the merged filesystem is.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Releases the filesystem, reporting failure (drop releases silently). For a writable copy this is
    /// when the changes are collected into the upper directory, in the same format overlayfs leaves.
    pub fn unmount(mut self) -> Result<(), SnapshotError> {
        if let Some(copy) = self.copy.take() {
            self.mounted = false;
            let result = match &copy.upper {
                Some(upper) => collect_changes(&self.target, &copy.before, upper),
                None => Ok(()),
            };
            remove_all(&self.target);
            return result;
        }
        self.mounted = false;
        let r = unmount(&self.target);
        let _ = std::fs::remove_dir_all(&self.links);
        r
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.copy.is_some() {
            remove_all(&self.target);
        } else if self.mounted {
            let _ = unmount(&self.target);
            let _ = std::fs::remove_dir_all(&self.links);
        }
    }
}

fn unmount(target: &Path) -> Result<(), SnapshotError> {
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).map_err(|e| SnapshotError::Io {
        what: format!("cannot unmount {}", target.display()),
        source: e.into(),
    })
}

/// Mounts `layers` (bottom first) at `target`. With `upper = Some((upper, work))` the mount is writable and
/// changes land in `upper`; otherwise it is read-only.
pub fn mount_overlay(
    layers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    empty_layer: &Path,
) -> Result<Mounted, SnapshotError> {
    if layers.len() > MAX_LAYERS {
        return Err(SnapshotError::TooDeep(layers.len()));
    }
    std::fs::create_dir_all(target).map_err(io(format!("cannot create {}", target.display())))?;
    // overlayfs wants a lower layer, and two when there is no upper one; empty layers fill in. They must be
    // distinct directories: the kernel refuses one directory twice in `lowerdir`.
    let mut lowers: Vec<PathBuf> = layers.to_vec();
    let min: usize = if upper.is_some() { 1 } else { 2 };
    for n in 0..min.saturating_sub(lowers.len()) {
        let pad = if n == 0 {
            empty_layer.to_owned()
        } else {
            empty_layer.with_file_name(format!(
                "{}-{n}",
                empty_layer.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()
            ))
        };
        std::fs::create_dir_all(&pad).map_err(io(format!("cannot create {}", pad.display())))?;
        lowers.insert(0, pad);
    }
    // Short symlinked names keep the mount options within one page however long the store path is.
    let links = std::env::temp_dir().join(format!("drs-l{}", unique()));
    std::fs::create_dir_all(&links).map_err(io(format!("cannot create {}", links.display())))?;
    let mut names = Vec::with_capacity(lowers.len());
    for (i, l) in lowers.iter().enumerate() {
        let link = links.join(i.to_string());
        std::os::unix::fs::symlink(l, &link).map_err(io(format!("cannot link {}", link.display())))?;
        names.push(link.to_string_lossy().into_owned());
    }
    // lowerdir lists the top layer first.
    names.reverse();
    let mut data = format!("lowerdir={}", names.join(":"));
    let mut flags = rustix::mount::MountFlags::empty();
    match upper {
        Some((u, w)) => {
            std::fs::create_dir_all(u).map_err(io(format!("cannot create {}", u.display())))?;
            std::fs::create_dir_all(w).map_err(io(format!("cannot create {}", w.display())))?;
            data.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
        }
        None => flags |= rustix::mount::MountFlags::RDONLY,
    }
    if crate::worker::userns::is_rootless() {
        // Markers in `user.overlay.*`: the `trusted.*` namespace is out of a user namespace's reach.
        data.push_str(",userxattr");
    }
    let data = CString::new(data).map_err(|_| SnapshotError::Io {
        what: "layer paths contain a NUL byte".into(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let result = rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str());
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&links);
        return Err(SnapshotError::Io {
            what: format!(
                "cannot mount an overlay filesystem at {} (the engine needs root and overlayfs)",
                target.display()
            ),
            source: e.into(),
        });
    }
    Ok(Mounted {
        target: target.to_owned(),
        links,
        mounted: true,
        copy: None,
    })
}

/// How container filesystems are assembled from layers: each engine holds one, chosen for its own cache
/// directory ([`choose`]).
pub trait Snapshotter: Send + Sync {
    /// Which one this is.
    fn kind(&self) -> SnapshotterKind;

    /// Assembles `layers` (bottom first) at `target`. With `upper = Some((upper, work))` the result is
    /// writable and its changes land in `upper` in overlayfs' format (whiteouts for removals); otherwise it
    /// is read-only. `empty_layer` is an empty directory to pad with.
    fn assemble(
        &self,
        layers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
        empty_layer: &Path,
    ) -> Result<Mounted, SnapshotError>;
}

/// The snapshotters there are, as a configuration names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotterKind {
    /// Layers stacked with overlayfs ([`OverlaySnapshotter`]): no copies.
    Overlay,
    /// Layers copied into a plain directory ([`CopySnapshotter`]).
    Copy,
}

impl SnapshotterKind {
    /// The snapshotter of this kind.
    pub fn snapshotter(self) -> &'static dyn Snapshotter {
        match self {
            SnapshotterKind::Overlay => &OverlaySnapshotter,
            SnapshotterKind::Copy => &CopySnapshotter,
        }
    }
}

/// Layers stacked with overlayfs: nothing is copied, and an exec's changes are the overlay's upper directory.
#[derive(Debug)]
pub struct OverlaySnapshotter;

impl Snapshotter for OverlaySnapshotter {
    fn kind(&self) -> SnapshotterKind {
        SnapshotterKind::Overlay
    }

    fn assemble(
        &self,
        layers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
        empty_layer: &Path,
    ) -> Result<Mounted, SnapshotError> {
        mount_overlay(layers, upper, target, empty_layer)
    }
}

/// Layers copied into a plain directory, and an exec's changes found by comparing every entry's state
/// before and after. Slower, but works where overlayfs does not (an engine whose cache directory is itself on
/// overlayfs, say).
#[derive(Debug)]
pub struct CopySnapshotter;

impl Snapshotter for CopySnapshotter {
    fn kind(&self) -> SnapshotterKind {
        SnapshotterKind::Copy
    }

    fn assemble(
        &self,
        layers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
        _empty_layer: &Path,
    ) -> Result<Mounted, SnapshotError> {
        std::fs::create_dir_all(target).map_err(io(format!("cannot create {}", target.display())))?;
        // Removed again on drop if a layer fails to apply.
        let mut m = Mounted {
            target: target.to_owned(),
            links: PathBuf::new(),
            mounted: false,
            copy: Some(CopyState {
                upper: None,
                before: BTreeMap::new(),
            }),
        };
        for l in layers {
            apply_layer(l, target)?;
        }
        if let Some((u, _)) = upper {
            std::fs::create_dir_all(u).map_err(io(format!("cannot create {}", u.display())))?;
            let before = stamps(target)?;
            m.copy = Some(CopyState {
                upper: Some(u.to_owned()),
                before,
            });
        }
        Ok(m)
    }
}

/// The snapshotter for an engine whose scratch directory is `scratch`: `DAGGER_RS_SNAPSHOTTER=overlay|copy`,
/// else overlayfs when a test mount under `scratch` works, else copies, with why overlayfs was not usable.
/// Each engine chooses for its own cache directory: two engines in one process may differ (one whose
/// cache directory is on overlayfs copies, another overlays).
pub fn choose(scratch: &Path) -> (SnapshotterKind, Option<String>) {
    match std::env::var("DAGGER_RS_SNAPSHOTTER").as_deref() {
        Ok("copy") => return (SnapshotterKind::Copy, None),
        Ok("overlay") => return (SnapshotterKind::Overlay, None),
        _ => {}
    }
    let probe = scratch.join(format!("probe-{}", unique()));
    let empty = probe.join("empty");
    let ok = std::fs::create_dir_all(&empty)
        .map_err(io(format!("cannot create {}", empty.display())))
        .and_then(|()| {
            mount_overlay(
                std::slice::from_ref(&empty),
                Some((&probe.join("upper"), &probe.join("work"))),
                &probe.join("root"),
                &empty,
            )
        })
        .and_then(Mounted::unmount);
    remove_all(&probe);
    match ok {
        Ok(()) => (SnapshotterKind::Overlay, None),
        Err(e) => (SnapshotterKind::Copy, Some(e.to_string())),
    }
}

/// What identifies a file's state: type, mode, owner, size, and change time (any write moves it).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    ctime: (i64, i64),
    ino: u64,
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        kind: meta.mode() & 0o170000,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
    }
}

fn stamps(root: &Path) -> Result<BTreeMap<String, Stamp>, SnapshotError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(io(format!("cannot read {}", dir.display())))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push((e.path(), r.clone()));
            }
            out.insert(r, stamp(&meta));
        }
    }
    Ok(out)
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(dir, crate::worker::userns::opaque_xattr(), &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

/// Applies one layer (overlayfs upper format) onto a plain directory.
fn apply_layer(layer: &Path, dest: &Path) -> Result<(), SnapshotError> {
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let src_dir = layer.join(&rel);
        let rd = std::fs::read_dir(&src_dir).map_err(io(format!("cannot read {}", src_dir.display())))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let src = e.path();
            let dst = dest.join(&r);
            let Ok(meta) = std::fs::symlink_metadata(&src) else {
                continue;
            };
            if is_whiteout(&meta) {
                remove_any(&dst);
                continue;
            }
            let existing = std::fs::symlink_metadata(&dst).ok();
            if meta.is_dir() {
                match existing {
                    Some(m) if m.is_dir() && !is_opaque(&src) => {}
                    Some(_) => {
                        remove_any(&dst);
                        std::fs::create_dir(&dst).map_err(io(format!("cannot create {}", dst.display())))?;
                    }
                    None => std::fs::create_dir(&dst).map_err(io(format!("cannot create {}", dst.display())))?,
                }
                copy_meta(&meta, &dst)?;
                stack.push(r);
            } else {
                if existing.is_some() {
                    remove_any(&dst);
                }
                copy_entry(&src, &meta, &dst)?;
            }
        }
    }
    Ok(())
}

fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_all(path),
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

fn copy_meta(meta: &std::fs::Metadata, dst: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    chown(dst, meta.uid(), meta.gid())?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io(format!("cannot set the mode of {}", dst.display())))?;
    }
    Ok(())
}

/// Copies a non-directory entry (file, symlink; devices and fifos are skipped).
fn copy_entry(src: &Path, meta: &std::fs::Metadata, dst: &Path) -> Result<(), SnapshotError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(io(format!("cannot read link {}", src.display())))?;
        std::os::unix::fs::symlink(target, dst).map_err(io(format!("cannot link {}", dst.display())))?;
    } else if ft.is_file() {
        std::fs::copy(src, dst).map_err(io(format!("cannot copy to {}", dst.display())))?;
    } else {
        return Ok(());
    }
    copy_meta(meta, dst)
}

/// Writes what changed under `root` since `before` into `upper`, in overlayfs upper format.
fn collect_changes(root: &Path, before: &BTreeMap<String, Stamp>, upper: &Path) -> Result<(), SnapshotError> {
    let after = stamps(root)?;
    for (rel, st) in &after {
        let changed = before.get(rel) != Some(st);
        if !changed {
            continue;
        }
        let src = root.join(rel);
        let dst = upper.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
        }
        let meta = std::fs::symlink_metadata(&src).map_err(io(format!("cannot read {}", src.display())))?;
        if meta.is_dir() {
            if !dst.is_dir() {
                std::fs::create_dir(&dst).map_err(io(format!("cannot create {}", dst.display())))?;
            }
            copy_meta(&meta, &dst)?;
            // A directory that replaced something else must hide what was below it.
            if before.get(rel).is_some_and(|b| b.kind != st.kind) {
                make_opaque(&dst)?;
            }
        } else {
            remove_any(&dst);
            copy_entry(&src, &meta, &dst)?;
        }
    }
    // Deleted paths: a whiteout for each topmost one.
    let mut deleted_dirs: Vec<&str> = Vec::new();
    for rel in before.keys() {
        if after.contains_key(rel) || deleted_dirs.iter().any(|d| rel.starts_with(&format!("{d}/"))) {
            continue;
        }
        whiteout(upper, rel)?;
        deleted_dirs.push(rel);
    }
    Ok(())
}

/// A process-unique suffix for scratch names.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{t:x}", std::process::id())
}

/// Resolves `path` (absolute inside the container) under `root`, following symlinks the way the container
/// would; `follow_last = false` leaves a final symlink unresolved. The result is always inside `root`.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, SnapshotError> {
    let resolved = resolve_path(path, follow_last, |comps| {
        let candidate: PathBuf = root.join(comps.iter().collect::<PathBuf>());
        match std::fs::symlink_metadata(&candidate) {
            Err(_) => Node::Missing,
            Ok(m) if m.is_dir() => Node::Dir,
            Ok(m) if m.file_type().is_symlink() => Node::Link(
                std::fs::read_link(&candidate)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            Ok(_) => Node::Other,
        }
    })
    .map_err(path_error)?;
    Ok(root.join(resolved.iter().collect::<PathBuf>()))
}

/// What a path is in a stack of layers.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Missing,
    Dir,
    Link(String),
    Other,
}

/// Finds `comps` in `layers` (bottom first, overlayfs upper format) the way the merged filesystem would
/// show it: the topmost layer that has the path wins, a whiteout hides it, an opaque directory or a
/// non-directory hides what lower layers hold below it. Returns the host path in the layer that shows it and
/// its metadata (`None`: the path does not exist). Never follows a link on the host: each layer is walked one
/// component at a time with `lstat`, and only through directories.
fn find_in_layers(layers: &[PathBuf], comps: &[String]) -> Option<(PathBuf, std::fs::Metadata)> {
    let last = comps.len().checked_sub(1)?;
    for layer in layers.iter().rev() {
        let mut path = layer.clone();
        let mut cut_below = false;
        for (i, c) in comps.iter().enumerate() {
            path.push(c);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                break;
            };
            if is_whiteout(&meta) {
                return None;
            }
            if i == last {
                return Some((path, meta));
            }
            if !meta.is_dir() {
                // A file or link above the path's end: nothing lower shows through below it.
                return None;
            }
            cut_below |= is_opaque(&path);
        }
        if cut_below {
            return None;
        }
    }
    None
}

/// What `comps` names in `layers` (see [`find_in_layers`]); the root is a directory.
fn lookup_in_layers(layers: &[PathBuf], comps: &[String]) -> Found {
    if comps.is_empty() {
        return Found::Dir;
    }
    match find_in_layers(layers, comps) {
        None => Found::Missing,
        Some((_, meta)) if meta.is_dir() => Found::Dir,
        Some((path, meta)) if meta.file_type().is_symlink() => Found::Link(
            std::fs::read_link(&path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        Some(_) => Found::Other,
    }
}

/// Copies up, into the new layer directory `layer`, every directory on the way to `rel` (a resolved path,
/// relative to the root) that the `lower` layers (bottom first) already have, `rel` itself included when it
/// is one: created with the same permission bits and owner, as overlayfs copies a directory up before it
/// changes what is inside. Without this, a layer that writes `/tmp/x` would give `/tmp` the mode and owner
/// of a fresh directory. Stops at the first component that is not a directory below; what is missing is
/// made by the write itself. A directory the layer already holds is left as it is.
pub fn copy_up_dirs(lower: &[PathBuf], layer: &Path, rel: &str) -> Result<(), SnapshotError> {
    use std::os::unix::fs::MetadataExt;
    let comps: Vec<String> = rel.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect();
    let mut cursor = Cursor::open(layer, "")?;
    for i in 0..comps.len() {
        let Some((_, meta)) = find_in_layers(lower, &comps[..=i]) else {
            break;
        };
        if !meta.is_dir() {
            break;
        }
        let rel = comps[..=i].join("/");
        let fd = cursor.copy_dir(&comps[i], &rel, meta.mode(), (meta.uid(), meta.gid()))?;
        cursor.stack.push((rel, fd));
    }
    Ok(())
}

/// Resolves `path` (absolute inside the container) against the container's layers (bottom first) without
/// mounting them, following symlinks as the container would: an absolute target restarts from the root,
/// `..` stops at the root, and the last component is followed only with `follow_last`. Returns the path
/// relative to the root; its ancestors are directories or missing.
pub fn resolve_in_layers(layers: &[PathBuf], path: &str, follow_last: bool) -> Result<String, SnapshotError> {
    let resolved = resolve_path(path, follow_last, |comps| match lookup_in_layers(layers, comps) {
        Found::Missing => Node::Missing,
        Found::Dir => Node::Dir,
        Found::Link(t) => Node::Link(t),
        Found::Other => Node::Other,
    })
    .map_err(path_error)?;
    Ok(resolved.join("/"))
}

/// The contents of the regular file at `path` (absolute inside the container, links followed as the
/// container would) in `layers` (bottom first), without mounting them; `None` when there is no such file.
pub fn read_file_in_layers(layers: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    let resolved = resolve_in_layers(layers, path, true).ok()?;
    let comps: Vec<String> = resolved
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let (host, meta) = find_in_layers(layers, &comps)?;
    if !meta.is_file() {
        return None;
    }
    std::fs::read(host).ok()
}

/// A resolution failure as a container path error.
fn path_error(e: PathError) -> SnapshotError {
    match e {
        PathError::Loop(p) => SnapshotError::Loop(p),
        PathError::Through(path) | PathError::NotADirectory(path) => SnapshotError::NotADirectory(format!("/{path}")),
        other => SnapshotError::NotFound(other.to_string()),
    }
}

/// Reads the directory `dir` (already resolved on the host) into a tree, storing file contents as blobs.
/// Symlinks are kept as links, never followed.
pub fn read_tree(store: &crate::store::Store, dir: &Path) -> Result<Tree, SnapshotError> {
    read_tree_with(store, dir, &mut KeepAll, false)
}

/// What a filtered read of a directory (see [`read_tree_with`]) asks while it walks.
pub trait WalkFilter {
    /// Called with each directory the walk enters (relative path, `""` for the root, and its host path)
    /// before any entry in it is asked about.
    fn enter(&mut self, rel: &str, host: &Path);
    /// Whether the entry at `rel` is read; a directory that is not is not walked into, and a file that is not
    /// is never stored.
    fn keep(&mut self, rel: &str, is_dir: bool) -> bool;
}

/// The filter of a plain read: everything.
struct KeepAll;

impl WalkFilter for KeepAll {
    fn enter(&mut self, _: &str, _: &Path) {}
    fn keep(&mut self, _: &str, _: bool) -> bool {
        true
    }
}

/// Reads the directory `dir` into a tree like [`read_tree`], reading only what `filter` keeps, and with
/// `mtimes` recording each file's modification time (whole seconds).
pub fn read_tree_with(
    store: &crate::store::Store,
    dir: &Path,
    filter: &mut dyn WalkFilter,
    mtimes: bool,
) -> Result<Tree, SnapshotError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut tree = Tree::default();
    let root = std::fs::metadata(dir).map_err(io(format!("cannot read {}", dir.display())))?;
    tree.set_root_mode(root.permissions().mode());
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        filter.enter(&rel, &d);
        let rd = std::fs::read_dir(&d).map_err(io(format!("cannot read {}", d.display())))?;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel_path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if !(ft.is_symlink() || ft.is_dir() || ft.is_file()) || !filter.keep(&rel_path, ft.is_dir()) {
                // Devices, fifos and sockets have no place in a snapshot.
                continue;
            }
            let mode = meta.permissions().mode() & 0o7777;
            if ft.is_symlink() {
                let target = std::fs::read_link(&path)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                tree.entries.insert(rel_path, Entry::Symlink { target });
            } else if ft.is_dir() {
                tree.entries.insert(rel_path.clone(), Entry::Dir { mode, mtime: None });
                stack.push((path, rel_path));
            } else {
                let (blob, size) = store.put_blob_from_file(&path).map_err(|e| SnapshotError::Io {
                    what: format!("cannot store {}", path.display()),
                    source: std::io::Error::other(e.to_string()),
                })?;
                tree.entries.insert(
                    rel_path,
                    Entry::File(FileEntry {
                        mode,
                        blob,
                        size,
                        mtime: mtimes.then(|| meta.mtime()),
                    }),
                );
            }
        }
    }
    Ok(tree)
}

/// Writes `tree` under `dest/<at>` (creating `at`'s parents), with files owned by `owner` when given.
///
/// `dest` is trusted (a directory of the engine, or the host path a client asked to export to); nothing
/// below it is: every directory is opened relative to its parent's handle with `O_NOFOLLOW`, files are
/// created with `O_EXCL | O_NOFOLLOW`, and a symlink (or file) standing where a directory is needed is
/// replaced, never followed. So whatever the tree holds, and whatever is already on disk below `dest`,
/// nothing is written outside `dest`.
///
/// The tree's root is `dest/<at>`: a directory already there keeps its own mode, one this call makes gets the
/// tree's root mode (as a copy into a new path, or a mount, shows the directory's own permissions).
pub fn write_tree(
    store: &crate::store::Store,
    tree: &Tree,
    dest: &Path,
    at: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), SnapshotError> {
    let base = dest.join(at.trim_matches('/'));
    let existed = std::fs::symlink_metadata(&base).is_ok_and(|m| m.is_dir());
    let mut cursor = Cursor::open(dest, at)?;
    if let Some((u, g)) = owner {
        fchown(&cursor.base_fd(), u, g, &cursor.describe(""))?;
    }
    if !existed {
        // After the chown, which clears set-group-ID bits.
        rustix::fs::fchmod(
            cursor.base_fd(),
            rustix::fs::Mode::from_raw_mode(tree.root_mode() & 0o7777),
        )
        .map_err(sys(|| format!("cannot set the mode of {}", base.display())))?;
    }
    for (rel, entry) in &tree.entries {
        cursor.write_entry(store, rel, entry, owner)?;
    }
    cursor.finish()
}

/// Writes one entry at `dest/<rel>` (`rel` relative, its missing parents created as 0755 directories), with
/// the same no-follow guarantees as [`write_tree`].
pub fn write_entry_at(
    store: &crate::store::Store,
    dest: &Path,
    rel: &str,
    entry: &Entry,
    owner: Option<(u32, u32)>,
) -> Result<(), SnapshotError> {
    let mut cursor = Cursor::open(dest, "")?;
    cursor.write_entry(store, rel, entry, owner)?;
    cursor.finish()
}

/// The open directory handles from a trusted base down to the directory being written, so sorted entries
/// are written with one `openat` per new directory.
struct Cursor {
    dest: PathBuf,
    /// `(relative path, handle)`, the base (`""`) first.
    stack: Vec<(String, rustix::fd::OwnedFd)>,
    /// Directories written with a modification time, set once everything below them is written.
    dir_times: Vec<(String, i64)>,
}

/// A modification (and access) time, in whole seconds.
fn timestamps(secs: i64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn sys(what: impl FnOnce() -> String) -> impl FnOnce(rustix::io::Errno) -> SnapshotError {
    move |e| SnapshotError::Io {
        what: what(),
        source: e.into(),
    }
}

/// One component of a tree path, refused unless it is a plain name.
fn plain_name<'a>(rel: &str, name: &'a str) -> Result<&'a str, SnapshotError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('\0') {
        return Err(SnapshotError::Io {
            what: format!("cannot write `{rel}`: `{name}` is not a plain file name"),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    }
    Ok(name)
}

fn fchown(fd: &impl rustix::fd::AsFd, uid: u32, gid: u32, what: &str) -> Result<(), SnapshotError> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(sys(|| format!("cannot chown {what}")))
}

impl Cursor {
    fn open(dest: &Path, at: &str) -> Result<Self, SnapshotError> {
        use rustix::fs::{Mode, OFlags};
        std::fs::create_dir_all(dest).map_err(io(format!("cannot create {}", dest.display())))?;
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(|| format!("cannot open {}", dest.display())))?;
        let mut cursor = Cursor {
            dest: dest.to_owned(),
            stack: vec![(String::new(), fd)],
            dir_times: Vec::new(),
        };
        // `at` becomes the new base: its components are made like any other directory, never followed.
        let at = at.trim_matches('/');
        if !at.is_empty() {
            cursor.enter(at)?;
            let (_, fd) = cursor
                .stack
                .pop()
                .ok_or_else(|| SnapshotError::NotFound(at.to_owned()))?;
            cursor.stack = vec![(String::new(), fd)];
            cursor.dest = dest.join(at);
        }
        Ok(cursor)
    }

    /// Sets the modification times of the directories written with one, deepest first (writing inside a
    /// directory changes its time).
    fn finish(mut self) -> Result<(), SnapshotError> {
        let base = self.stack.swap_remove(0).1;
        for (rel, secs) in self.dir_times.iter().rev() {
            rustix::fs::utimensat(
                &base,
                rel.as_str(),
                &timestamps(*secs),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(sys(|| {
                format!("cannot set the time of {}", self.dest.join(rel).display())
            }))?;
        }
        Ok(())
    }

    fn base_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        use rustix::fd::AsFd;
        self.stack[0].1.as_fd()
    }

    fn describe(&self, rel: &str) -> String {
        self.dest.join(rel).display().to_string()
    }

    /// Makes `dir` (relative to the base) the top of the stack, creating missing directories.
    fn enter(&mut self, dir: &str) -> Result<(), SnapshotError> {
        while let Some((top, _)) = self.stack.last() {
            if top.is_empty() || dir == top || dir.starts_with(&format!("{top}/")) {
                break;
            }
            self.stack.pop();
        }
        let top = self.stack.last().map(|(t, _)| t.clone()).unwrap_or_default();
        let rest = if top.is_empty() { dir } else { &dir[top.len()..] };
        let mut cur = top;
        for name in rest.split('/').filter(|n| !n.is_empty()) {
            let name = plain_name(dir, name)?;
            cur = if cur.is_empty() {
                name.to_owned()
            } else {
                format!("{cur}/{name}")
            };
            let fd = self.make_dir(name, 0o755, &cur, false)?;
            self.stack.push((cur.clone(), fd));
        }
        Ok(())
    }

    fn top(&self) -> rustix::fd::BorrowedFd<'_> {
        use rustix::fd::AsFd;
        self.stack.last().map_or_else(|| self.base_fd(), |(_, fd)| fd.as_fd())
    }

    /// Opens (creating it when missing) the directory `name` in the top directory. Anything else standing
    /// there is removed first; with `set_mode` an existing directory gets `mode` too.
    fn make_dir(&self, name: &str, mode: u32, rel: &str, set_mode: bool) -> Result<rustix::fd::OwnedFd, SnapshotError> {
        use rustix::fs::{Mode, OFlags};
        let parent = self.top();
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode & 0o7777)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(sys(|| format!("cannot inspect {}", self.describe(rel))))?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
                    remove_at(parent, name).map_err(sys(|| format!("cannot replace {}", self.describe(rel))))?;
                    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode & 0o7777))
                        .map_err(sys(|| format!("cannot create {}", self.describe(rel))))?;
                }
            }
            Err(e) => return Err(sys(|| format!("cannot create {}", self.describe(rel)))(e)),
        }
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(|| {
            format!("cannot open {} (it changed while being written)", self.describe(rel))
        }))?;
        if set_mode {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))
                .map_err(sys(|| format!("cannot set the mode of {}", self.describe(rel))))?;
        }
        Ok(fd)
    }

    /// Opens the directory `name` in the top directory, creating it with `mode` and `owner` when missing (an
    /// existing one is kept as it is). Anything else standing there is an error.
    fn copy_dir(
        &self,
        name: &str,
        rel: &str,
        mode: u32,
        (uid, gid): (u32, u32),
    ) -> Result<rustix::fd::OwnedFd, SnapshotError> {
        use rustix::fs::{Mode, OFlags};
        let name = plain_name(rel, name)?;
        let parent = self.top();
        let created = match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => return Err(sys(|| format!("cannot create {}", self.describe(rel)))(e)),
        };
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(|| format!("cannot open {}", self.describe(rel))))?;
        if created {
            // Owner first, then mode (a chown clears set-group-ID bits).
            fchown(&fd, uid, gid, &self.describe(rel))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))
                .map_err(sys(|| format!("cannot set the mode of {}", self.describe(rel))))?;
        }
        Ok(fd)
    }

    fn write_entry(
        &mut self,
        store: &crate::store::Store,
        rel: &str,
        entry: &Entry,
        owner: Option<(u32, u32)>,
    ) -> Result<(), SnapshotError> {
        use rustix::fs::{Mode, OFlags};
        let (parent, name) = match rel.rfind('/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => ("", rel),
        };
        let name = plain_name(rel, name)?;
        self.enter(parent)?;
        match entry {
            Entry::Dir { mode, mtime } => {
                let fd = self.make_dir(name, *mode, rel, true)?;
                if let Some((u, g)) = owner {
                    fchown(&fd, u, g, &self.describe(rel))?;
                }
                if let Some(secs) = mtime {
                    self.dir_times.push((rel.to_owned(), *secs));
                }
                self.stack.push((rel.to_owned(), fd));
            }
            Entry::File(f) => {
                let dir = self.top();
                remove_at(dir, name).map_err(sys(|| format!("cannot replace {}", self.describe(rel))))?;
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(sys(|| format!("cannot create {}", self.describe(rel))))?;
                let mut out = std::fs::File::from(fd);
                let mut src = std::fs::File::open(store.blob_path(&f.blob))
                    .map_err(io(format!("cannot read the contents of {}", self.describe(rel))))?;
                std::io::copy(&mut src, &mut out).map_err(io(format!("cannot write {}", self.describe(rel))))?;
                if let Some((u, g)) = owner {
                    fchown(&out, u, g, &self.describe(rel))?;
                }
                // After the chown, which clears set-user-ID bits.
                rustix::fs::fchmod(&out, Mode::from_raw_mode(f.mode & 0o7777))
                    .map_err(sys(|| format!("cannot set the mode of {}", self.describe(rel))))?;
                if let Some(secs) = f.mtime {
                    rustix::fs::futimens(&out, &timestamps(secs))
                        .map_err(sys(|| format!("cannot set the time of {}", self.describe(rel))))?;
                }
            }
            Entry::Symlink { target } => {
                let dir = self.top();
                remove_at(dir, name).map_err(sys(|| format!("cannot replace {}", self.describe(rel))))?;
                rustix::fs::symlinkat(target.as_str(), dir, name)
                    .map_err(sys(|| format!("cannot link {}", self.describe(rel))))?;
                if let Some((u, g)) = owner {
                    rustix::fs::chownat(
                        dir,
                        name,
                        Some(rustix::fs::Uid::from_raw(u)),
                        Some(rustix::fs::Gid::from_raw(g)),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(sys(|| format!("cannot chown {}", self.describe(rel))))?;
                }
            }
        }
        Ok(())
    }
}

/// Removes `name` in `dir` whatever it is (a directory with everything below it), without following links.
/// Nothing there is fine.
fn remove_at(dir: rustix::fd::BorrowedFd<'_>, name: &str) -> Result<(), rustix::io::Errno> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // Read-only directories (an overlay work dir, a 0555 tree) must become writable to be emptied.
    let _ = rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700));
    let names: Vec<String> = rustix::fs::Dir::read_from(&sub)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    for n in names {
        remove_at(rustix::fd::AsFd::as_fd(&sub), &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Writes one file from the blob store at a host path a client chose (replacing what is there), with its
/// mode. The path's own directories are the client's; the file itself is never written through a symlink.
pub fn write_file(store: &crate::store::Store, f: &FileEntry, path: &Path) -> Result<(), SnapshotError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SnapshotError::Io {
            what: format!("cannot write a file at {}", path.display()),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    };
    write_entry_at(store, parent, &name.to_string_lossy(), &Entry::File(f.clone()), None)
}

/// Changes a path's owner without following a final symlink.
pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), SnapshotError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io(format!("cannot chown {}", path.display())))
}

/// Marks `rel` as deleted in a layer directory (an overlayfs whiteout), its parents created as directories
/// and nothing below `layer` followed.
pub fn whiteout(layer: &Path, rel: &str) -> Result<(), SnapshotError> {
    let rel = rel.trim_matches('/');
    let (parent, name) = match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    };
    let name = plain_name(rel, name)?;
    let mut cursor = Cursor::open(layer, "")?;
    cursor.enter(parent)?;
    let dir = cursor.top();
    remove_at(dir, name).map_err(sys(|| format!("cannot replace {}", cursor.describe(rel))))?;
    rustix::fs::mknodat(
        dir,
        name,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .map_err(sys(|| format!("cannot create a whiteout at {}", cursor.describe(rel))))
}

/// Marks a directory in a layer as opaque: nothing below it in lower layers shows through.
pub fn make_opaque(dir: &Path) -> Result<(), SnapshotError> {
    rustix::fs::lsetxattr(
        dir,
        crate::worker::userns::opaque_xattr(),
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| SnapshotError::Io {
        what: format!("cannot mark {} opaque", dir.display()),
        source: e.into(),
    })
}

/// Removes a directory tree that may hold read-only directories (an overlay work dir does).
pub fn remove_all(path: &Path) {
    if std::fs::remove_dir_all(path).is_err() {
        let _ = std::process::Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(path)
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(root: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read").flatten() {
                let path = e.path();
                let rel = path.strip_prefix(root).expect("inside").to_string_lossy().into_owned();
                let meta = std::fs::symlink_metadata(&path).expect("meta");
                if meta.is_dir() {
                    stack.push(path);
                    out.push((rel, "/".to_owned()));
                } else if meta.is_file() {
                    out.push((rel, std::fs::read_to_string(&path).expect("text")));
                } else {
                    out.push((rel, "?".to_owned()));
                }
            }
        }
        out.sort();
        out
    }

    fn layer(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let l = dir.join(name);
        for (p, text) in files {
            let f = l.join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(f, text).expect("write");
        }
        std::fs::create_dir_all(&l).expect("layer");
        l
    }

    #[test]
    fn copies_stack_layers_in_order_and_are_removed_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let low = layer(dir.path(), "low", &[("a", "1"), ("d/b", "2")]);
        let high = layer(dir.path(), "high", &[("a", "3"), ("d/c", "4")]);
        let target = dir.path().join("root");
        let copy = SnapshotterKind::Copy.snapshotter();
        assert_eq!(copy.kind(), SnapshotterKind::Copy);
        let m = copy
            .assemble(&[low, high], None, &target, &dir.path().join("empty"))
            .expect("assemble");
        assert_eq!(m.path(), target);
        assert_eq!(
            files_under(&target),
            [
                ("a".into(), "3".into()),
                ("d".into(), "/".into()),
                ("d/b".into(), "2".into()),
                ("d/c".into(), "4".into())
            ],
            "the upper layer wins"
        );
        drop(m);
        assert!(!target.exists(), "a dropped copy is removed");
    }

    #[test]
    fn a_writable_copy_collects_only_what_changed_into_the_upper_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = layer(dir.path(), "base", &[("same", "s"), ("edit", "old"), ("d/keep", "k")]);
        let (upper, work, target) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("root"),
        );
        let copy = SnapshotterKind::Copy.snapshotter();
        let m = copy
            .assemble(&[base], Some((&upper, &work)), &target, &dir.path().join("empty"))
            .expect("assemble");
        std::fs::write(target.join("edit"), "new").expect("edit");
        std::fs::write(target.join("d/added"), "a").expect("add");
        std::fs::create_dir(target.join("e")).expect("mkdir");
        m.unmount().expect("collect");
        assert!(!target.exists(), "the copy is gone once collected");
        assert_eq!(
            files_under(&upper),
            [
                ("d".into(), "/".into()),
                ("d/added".into(), "a".into()),
                ("e".into(), "/".into()),
                ("edit".into(), "new".into())
            ],
            "unchanged entries stay out of the new layer"
        );
    }

    #[test]
    fn a_removed_entry_becomes_one_whiteout_for_its_topmost_path() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: whiteouts are device nodes, which need root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let base = layer(dir.path(), "base", &[("gone/a", "1"), ("gone/b/c", "2"), ("file", "f")]);
        let (upper, work, target) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("root"),
        );
        let m = SnapshotterKind::Copy
            .snapshotter()
            .assemble(&[base], Some((&upper, &work)), &target, &dir.path().join("empty"))
            .expect("assemble");
        std::fs::remove_dir_all(target.join("gone")).expect("rm");
        std::fs::remove_file(target.join("file")).expect("rm");
        m.unmount().expect("collect");
        assert_eq!(
            files_under(&upper),
            [("file".into(), "?".into()), ("gone".into(), "?".into())],
            "whiteouts for the removed directory and file, nothing for what was below the directory"
        );
    }

    #[test]
    fn overlayfs_is_chosen_where_it_works_and_stacks_of_any_depth_mount() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (chosen, why) = choose(dir.path());
        if !rustix::process::geteuid().is_root() {
            // Without root no overlay mounts: copies, and the reason says what is missing.
            assert_eq!(chosen, SnapshotterKind::Copy);
            assert!(why.is_some_and(|w| w.contains("needs root")), "the reason names root");
            return;
        }
        assert_eq!(chosen, SnapshotterKind::Overlay, "the probe failed: {why:?}");
        let empty = dir.path().join("empty");
        let layer = dir.path().join("layer");
        std::fs::create_dir_all(&layer).expect("layer");
        std::fs::write(layer.join("f"), "x").expect("file");
        // Read-only with one layer, read-only with none, writable with none: each needs distinct padding.
        for (layers, upper) in [(vec![layer.clone()], false), (vec![], false), (vec![], true)] {
            let target = dir.path().join(format!("m-{}", unique()));
            let (u, w) = (
                dir.path().join(format!("u-{}", unique())),
                dir.path().join(format!("w-{}", unique())),
            );
            let m = mount_overlay(&layers, upper.then_some((u.as_path(), w.as_path())), &target, &empty)
                .unwrap_or_else(|e| panic!("{} layers, upper {upper}: {e}", layers.len()));
            assert_eq!(m.path().join("f").exists(), !layers.is_empty());
            m.unmount().expect("unmount");
        }
    }
}

#[cfg(test)]
mod path_safety {
    //! Path resolution and the tree writer against random trees of directories, files and symlinks: whatever
    //! the tree holds, resolution stays inside it and writing it never touches anything outside its
    //! destination.
    use super::*;
    use crate::model::tree::{Entry, PathError};
    use proptest::prelude::*;

    const NAMES: &[&str] = &["a", "b", "c"];

    fn file(store: &crate::store::Store, text: &str) -> Entry {
        let blob = store.put_blob(text.as_bytes()).expect("blob");
        Entry::File(FileEntry {
            mode: 0o644,
            blob,
            size: text.len() as u64,
            mtime: None,
        })
    }

    fn rel_path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(NAMES), 1..4).prop_map(|v| v.join("/"))
    }

    /// Link targets: inside names, absolute paths, climbs far above the root, the root, and a host path.
    fn target() -> impl Strategy<Value = String> {
        prop_oneof![
            rel_path(),
            rel_path().prop_map(|p| format!("/{p}")),
            (1usize..8, rel_path()).prop_map(|(n, p)| format!("{}{p}", "../".repeat(n))),
            Just("/".to_owned()),
            Just("..".to_owned()),
            Just("/CANARY".to_owned()),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        File(String),
        Dir(String),
        Link(String, String),
        Remove(String),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            rel_path().prop_map(Op::File),
            rel_path().prop_map(Op::Dir),
            (rel_path(), target()).prop_map(|(p, t)| Op::Link(p, t)),
            rel_path().prop_map(Op::Remove),
        ]
    }

    fn ancestors_are_dirs_or_missing(tree: &Tree, path: &str) -> bool {
        let mut cur = path;
        while let Some(i) = cur.rfind('/') {
            cur = &cur[..i];
            if !matches!(tree.entries.get(cur), None | Some(Entry::Dir { .. })) {
                return false;
            }
        }
        true
    }

    /// Everything below `dir`, as relative paths.
    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![(dir.to_owned(), String::new())];
        while let Some((d, rel)) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                if e.file_type().expect("type").is_dir() {
                    stack.push((e.path(), r.clone()));
                }
                out.push(r);
            }
        }
        out.sort();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn resolution_stays_inside_and_writing_never_leaves_the_destination(
            ops in prop::collection::vec(op(), 1..24),
            probes in prop::collection::vec((rel_path(), any::<bool>()), 1..8),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = crate::store::Store::open(dir.path().join("store")).expect("store");
            let canary = dir.path().join("canary");
            std::fs::create_dir(&canary).expect("canary");
            let canary_str = canary.to_string_lossy().into_owned();
            let mut tree = Tree::default();
            for op in &ops {
                let r = match op {
                    Op::File(p) => tree.put(p, file(&store, p), true).map(|_| ()),
                    Op::Dir(p) => tree.mkdir_all(p, 0o755).map(|_| ()),
                    Op::Link(p, t) => {
                        let t = t.replace("/CANARY", &canary_str);
                        tree.put(p, Entry::Symlink { target: t }, false).map(|_| ())
                    }
                    Op::Remove(p) => tree.remove_path(p).map(|_| ()),
                };
                // A refused operation (a file used as a directory, a loop) leaves a usable tree behind.
                if let Err(e) = r {
                    prop_assert!(
                        matches!(
                            e,
                            PathError::Through(_) | PathError::NotAFile(_) | PathError::Loop(_)
                        ),
                        "unexpected error {e:?}"
                    );
                }
                prop_assert!(tree.is_well_formed(), "{op:?} broke the tree: {:?}", tree.entries.keys());
            }
            let root = dir.path().join("root");
            write_tree(&store, &tree, &root, "", None).expect("write");
            prop_assert!(listing(&canary).is_empty(), "the canary was written to");
            let mut top: Vec<String> = std::fs::read_dir(dir.path())
                .expect("read")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            top.sort();
            prop_assert_eq!(top, vec!["canary", "root", "store"]);
            // What is on disk is the tree.
            let back = read_tree(&store, &root).expect("read back");
            prop_assert_eq!(
                back.entries.keys().collect::<Vec<_>>(),
                tree.entries.keys().collect::<Vec<_>>()
            );
            // Resolving in the tree agrees with resolving on disk the way a container does.
            for (p, follow) in &probes {
                if let Ok(r) = tree.resolve(p, *follow) {
                    prop_assert!(!r.split('/').any(|s| s == ".."), "{r}");
                    prop_assert!(ancestors_are_dirs_or_missing(&tree, &r), "{p} -> {r}");
                    let on_disk = resolve_in_root(&root, p, *follow).expect("resolve on disk");
                    prop_assert_eq!(on_disk, root.join(&r), "{} (follow {})", p, follow);
                }
            }
        }

        #[test]
        fn a_tree_with_entries_below_links_is_written_without_following_them(
            link in prop_oneof![Just(0usize), Just(1), Just(2)],
            names in prop::collection::vec(prop::sample::select(NAMES), 1..3),
        ) {
            // Such a tree cannot be built through the API; one read from an old cache could hold it.
            let dir = tempfile::tempdir().expect("tempdir");
            let store = crate::store::Store::open(dir.path().join("store")).expect("store");
            let canary = dir.path().join("canary");
            std::fs::create_dir(&canary).expect("canary");
            let target = match link {
                0 => canary.to_string_lossy().into_owned(),
                1 => format!("{}canary", "../".repeat(1 + names.len())),
                _ => "t".to_owned(),
            };
            let mut tree = Tree::default();
            tree.entries.insert("s".into(), Entry::Symlink { target });
            tree.entries.insert(
                "t".into(),
                Entry::Symlink { target: canary.to_string_lossy().into_owned() },
            );
            tree.entries.insert(format!("s/{}", names.join("/")), file(&store, "x"));
            write_tree(&store, &tree, &dir.path().join("root"), "", None).expect("write");
            prop_assert!(listing(&canary).is_empty(), "the canary was written to");
        }
    }

    #[test]
    fn writing_replaces_links_already_on_disk_instead_of_following_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path().join("store")).expect("store");
        let canary = dir.path().join("canary");
        std::fs::create_dir(&canary).expect("canary");
        std::fs::write(canary.join("f"), "keep").expect("canary file");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root");
        // A destination that already holds links: to a directory, and to a file outside.
        std::os::unix::fs::symlink(&canary, root.join("d")).expect("link");
        std::os::unix::fs::symlink(canary.join("f"), root.join("f")).expect("link");
        let mut tree = Tree::default();
        tree.insert("d/new", file(&store, "x"));
        tree.insert("f", file(&store, "y"));
        write_tree(&store, &tree, &root, "", None).expect("write");
        assert_eq!(listing(&canary), ["f"]);
        assert_eq!(std::fs::read_to_string(canary.join("f")).expect("read"), "keep");
        assert!(root.join("d").symlink_metadata().expect("d").is_dir());
        assert_eq!(std::fs::read_to_string(root.join("f")).expect("read"), "y");
        // `at` below the destination is never followed either.
        std::os::unix::fs::symlink(&canary, root.join("at")).expect("link");
        write_tree(&store, &tree, &root, "at/deeper", None).expect("write at");
        assert_eq!(listing(&canary), ["f"]);
        whiteout(&root, "d/gone").expect("whiteout");
        write_entry_at(&store, &root, "f", &Entry::Symlink { target: "/etc".into() }, None).expect("link");
        assert_eq!(std::fs::read_to_string(canary.join("f")).expect("read"), "keep");
    }
}
