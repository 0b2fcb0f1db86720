//! Container filesystems as stacks of layer directories, joined with overlayfs.
//!
//! A layer is a directory under the store's `layers/` in overlayfs "upper" format: files, directories and
//! symlinks as they are; a deleted path is a character device 0:0; a directory that hides everything below
//! it carries the `trusted.overlay.opaque=y` attribute. Image layers are unpacked into that format, and the
//! upper directory of an exec *is* a layer once the process exits, so an exec costs no copy.
//!
//! Paths inside a container are resolved with [`resolve_in_root`], which follows symlinks as the container
//! would (an absolute link target is relative to the container's root), so a hostile link in an image can
//! never make the engine read or write outside the root.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use crate::tree::{Entry, FileEntry, Tree};

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

/// How container filesystems are assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshotter {
    /// Layers stacked with overlayfs: no copies.
    Overlay,
    /// Layers copied into a plain directory, and changes found by comparing before and after. Slower, but
    /// works where overlayfs does not (an engine whose cache directory is itself on overlayfs, say).
    Copy,
}

/// The snapshotter in use: `DAGGER_RS_SNAPSHOTTER=overlay|copy`, else overlayfs when a test mount under
/// `scratch` works, else copies.
pub fn snapshotter(scratch: &Path) -> Snapshotter {
    static CHOSEN: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| match std::env::var("DAGGER_RS_SNAPSHOTTER").as_deref() {
        Ok("copy") => Snapshotter::Copy,
        Ok("overlay") => Snapshotter::Overlay,
        _ => {
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
                Ok(()) => Snapshotter::Overlay,
                Err(e) => {
                    let _ = PROBE_FAILURE.set(e.to_string());
                    Snapshotter::Copy
                }
            }
        }
    })
}

static PROBE_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why overlayfs was found unusable, when the automatic choice fell back to copies.
pub fn overlay_probe_failure() -> Option<&'static str> {
    PROBE_FAILURE.get().map(String::as_str)
}

/// Assembles `layers` at `target` with the chosen snapshotter; see [`mount_overlay`] for the arguments.
pub fn assemble(
    mode: Snapshotter,
    layers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    empty_layer: &Path,
) -> Result<Mounted, SnapshotError> {
    if mode == Snapshotter::Overlay {
        return mount_overlay(layers, upper, target, empty_layer);
    }
    std::fs::create_dir_all(target).map_err(io(format!("cannot create {}", target.display())))?;
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
        rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf),
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
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(resolved.iter().collect::<PathBuf>()).join(&c);
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !is_last) => {
                links += 1;
                if links > 40 {
                    return Err(SnapshotError::Loop(path.to_owned()));
                }
                let target =
                    std::fs::read_link(&candidate).map_err(io(format!("cannot read link {}", candidate.display())))?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved.push(c),
        }
    }
    Ok(root.join(resolved.iter().collect::<PathBuf>()))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_owned()),
            _ => None,
        })
        .collect()
}

/// Reads the directory `dir` (already resolved on the host) into a tree, storing file contents as blobs.
/// Symlinks are kept as links, never followed.
pub fn read_tree(store: &crate::store::Store, dir: &Path) -> Result<Tree, SnapshotError> {
    use std::os::unix::fs::PermissionsExt;
    let mut tree = Tree::default();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(io(format!("cannot read {}", d.display())))?;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel_path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            let mode = meta.permissions().mode() & 0o7777;
            if ft.is_symlink() {
                let target = std::fs::read_link(&path)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                tree.entries.insert(rel_path, Entry::Symlink { target });
            } else if ft.is_dir() {
                tree.entries.insert(rel_path.clone(), Entry::Dir { mode, mtime: None });
                stack.push((path, rel_path));
            } else if ft.is_file() {
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
                        mtime: None,
                    }),
                );
            }
            // Devices, fifos and sockets have no place in a snapshot.
        }
    }
    Ok(tree)
}

/// Writes `tree` under `dest/<at>` (creating `at`'s parents), with files owned by `owner` when given.
pub fn write_tree(
    store: &crate::store::Store,
    tree: &Tree,
    dest: &Path,
    at: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), SnapshotError> {
    use std::os::unix::fs::PermissionsExt;
    let base = dest.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(&base).map_err(io(format!("cannot create {}", base.display())))?;
    if let Some((u, g)) = owner {
        chown(&base, u, g)?;
    }
    for (rel, entry) in &tree.entries {
        // Tree keys are normalized (no `..`, no leading `/`), so every path stays under `base`.
        let path = base.join(rel);
        match entry {
            Entry::Dir { mode, .. } => {
                std::fs::create_dir_all(&path).map_err(io(format!("cannot create {}", path.display())))?;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode));
            }
            Entry::File(f) => write_file(store, f, &path)?,
            Entry::Symlink { target } => {
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(target, &path).map_err(io(format!("cannot link {}", path.display())))?;
            }
        }
        if let Some((u, g)) = owner {
            chown(&path, u, g)?;
        }
    }
    Ok(())
}

/// Writes one file from the blob store (replacing what is there), with its mode.
pub fn write_file(store: &crate::store::Store, f: &FileEntry, path: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
    }
    let _ = std::fs::remove_file(path);
    std::fs::copy(store.blob_path(&f.blob), path).map_err(io(format!("cannot write {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(f.mode))
        .map_err(io(format!("cannot set the mode of {}", path.display())))?;
    Ok(())
}

/// Changes a path's owner without following a final symlink.
pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), SnapshotError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io(format!("cannot chown {}", path.display())))
}

/// Marks `rel` as deleted in a layer directory (an overlayfs whiteout).
pub fn whiteout(layer: &Path, rel: &str) -> Result<(), SnapshotError> {
    let path = layer.join(rel.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
    }
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .map_err(|e| SnapshotError::Io {
        what: format!("cannot create a whiteout at {}", path.display()),
        source: e.into(),
    })
}

/// Marks a directory in a layer as opaque: nothing below it in lower layers shows through.
pub fn make_opaque(dir: &Path) -> Result<(), SnapshotError> {
    rustix::fs::lsetxattr(dir, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).map_err(|e| {
        SnapshotError::Io {
            what: format!("cannot mark {} opaque", dir.display()),
            source: e.into(),
        }
    })
}

/// Removes a directory tree that may hold read-only directories (an overlay work dir does).
pub fn remove_all(path: &Path) {
    if std::fs::remove_dir_all(path).is_err() {
        let _ = std::process::Command::new("rm").arg("-rf").arg(path).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlayfs_is_chosen_where_it_works_and_stacks_of_any_depth_mount() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            snapshotter(dir.path()),
            Snapshotter::Overlay,
            "the probe failed: {:?}",
            overlay_probe_failure()
        );
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
