//! The exec's filesystem around the process, as Dagger handles it: redirected standard streams opened in
//! the container's filesystem *with its mounts* (so output redirected into a mounted directory becomes that
//! mount's content, and standard input can come from a mounted file or secret), and the mount stubs — the
//! empty files and directories the runtime makes only to mount something on — removed once the process is
//! done, so an exec that changes nothing leaves nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::worker::runtime::MountSpec;
use crate::worker::snapshot;

use crate::ops::error::OpError;

/// Where a container path is on the host for one exec, and whether it may be written there.
struct Location {
    host: PathBuf,
    read_only: bool,
}

/// Finds the host location of the container path `path` (absolute, normalized) for an exec whose root
/// filesystem is at `rootfs` with `mounts` (in the order the runtime mounts them, so the last one holding the
/// path wins): inside a bind mount, its source; else the root filesystem. Links are resolved inside what holds
/// the path, never outside it. A tmpfs exists only inside the container: it cannot be reached from here.
fn locate(rootfs: &Path, mounts: &[MountSpec], path: &str) -> Result<Location, OpError> {
    for m in mounts.iter().rev() {
        let (target, source, read_only) = match m {
            MountSpec::Bind {
                source,
                target,
                read_only,
            } => (target.as_str(), Some(source), *read_only),
            MountSpec::Tmpfs { target, .. } => (target.as_str(), None, false),
        };
        let rest = if path == target {
            ""
        } else if let Some(rest) = path.strip_prefix(target).and_then(|r| r.strip_prefix('/')) {
            rest
        } else {
            continue;
        };
        let Some(source) = source else {
            return Err(OpError::new(format!(
                "{path}: a redirected stream cannot be on a tmpfs mount (it exists only inside the container)"
            )));
        };
        let host = if rest.is_empty() {
            source.clone()
        } else {
            snapshot::resolve_in_root(source, &format!("/{rest}"), true).map_err(|e| OpError::new(e.to_string()))?
        };
        return Ok(Location { host, read_only });
    }
    let host = snapshot::resolve_in_root(rootfs, path, true).map_err(|e| OpError::new(e.to_string()))?;
    Ok(Location { host, read_only: false })
}

/// Reads the file a process's standard input is redirected from (`path`, absolute in the container).
pub(crate) fn read_stdin(rootfs: &Path, mounts: &[MountSpec], path: &str) -> Result<Vec<u8>, OpError> {
    let at = locate(rootfs, mounts, path)?;
    std::fs::read(&at.host).map_err(|e| OpError::new(format!("open redirect stdin file: {path}: {}", io_text(&e))))
}

/// The system's message for an I/O error, without Rust's `(os error N)`.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text,
    }
}

/// A file a process's standard output or error is redirected to, created (or truncated) before the process
/// starts, mode 0600 and owned by the process's user, as Dagger creates it.
#[derive(Debug)]
pub(crate) struct Redirect {
    file: std::fs::File,
}

impl Redirect {
    /// Opens the redirect of stream `what` (`stdout`, `stderr`) at the container path `path`.
    pub(crate) fn create(
        rootfs: &Path,
        mounts: &[MountSpec],
        what: &str,
        path: &str,
        (uid, gid): (u32, u32),
    ) -> Result<Self, OpError> {
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |e: String| OpError::new(format!("open redirect {what} file: {path}: {e}"));
        let at = locate(rootfs, mounts, path)?;
        if at.read_only {
            return Err(fail("read-only file system".into()));
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&at.host)
            .map_err(|e| fail(io_text(&e)))?;
        rustix::fs::fchown(
            &file,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| fail(io_text(&e.into())))?;
        Ok(Self { file })
    }

    /// Writes the stream's bytes.
    pub(crate) fn write(mut self, bytes: &[u8]) -> Result<(), OpError> {
        self.file
            .write_all(bytes)
            .map_err(|e| OpError::new(format!("cannot write redirected output: {e}")))
    }
}

/// The container paths the runtime may create only to mount something on: the name-resolution files, the
/// standard virtual filesystems, and every mount target.
pub(crate) fn stub_candidates<'a>(mount_targets: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = ["/etc/resolv.conf", "/etc/hosts", "/dev", "/proc", "/sys"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    names.extend(mount_targets.into_iter().map(str::to_owned));
    names
}

/// Which of `candidates` (container paths), and which of their parents, do not exist in the root filesystem
/// at `rootfs` before the exec: each is a stub the runtime would make. Deepest first.
pub(crate) fn missing_stubs(rootfs: &Path, candidates: &[String]) -> Vec<String> {
    let mut stubs = Vec::new();
    for c in candidates {
        let mut path = c.trim_end_matches('/').to_owned();
        while !path.is_empty() && path != "/" {
            let exists = snapshot::resolve_in_root(rootfs, &path, false)
                .is_ok_and(|host| std::fs::symlink_metadata(host).is_ok());
            if exists {
                break;
            }
            if !stubs.contains(&path) {
                stubs.push(path.clone());
            }
            path = match path.rsplit_once('/') {
                Some((parent, _)) => parent.to_owned(),
                None => String::new(),
            };
        }
    }
    stubs
}

/// Removes the stubs left after the exec (see [`missing_stubs`]): each one still an empty directory or an
/// empty file, deepest first, so one the process filled, or made into something else, stays.
pub(crate) fn remove_stubs(rootfs: &Path, stubs: &[String]) {
    let mut ordered: Vec<&String> = stubs.iter().collect();
    ordered.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for path in ordered {
        let Ok(host) = snapshot::resolve_in_root(rootfs, path, false) else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        if meta.is_dir() {
            // Fails, and so keeps it, unless it is empty.
            let _ = std::fs::remove_dir(&host);
        } else if meta.is_file() && meta.len() == 0 {
            let _ = std::fs::remove_file(&host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_land_in_the_last_mount_holding_them_or_the_root() {
        let tmp = tempfile::tempdir().expect("dir");
        let root = tmp.path().join("root");
        let m = tmp.path().join("m");
        let f = tmp.path().join("f");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::create_dir_all(m.join("sub")).expect("mkdir");
        std::fs::write(&f, "mounted file").expect("write");
        let mounts = vec![
            MountSpec::Bind {
                source: m.clone(),
                target: "/mnt".into(),
                read_only: false,
            },
            MountSpec::Bind {
                source: f.clone(),
                target: "/mnt/in".into(),
                read_only: true,
            },
            MountSpec::Tmpfs {
                target: "/tmp".into(),
                size: None,
            },
        ];
        assert_eq!(locate(&root, &mounts, "/mnt/sub/x").expect("x").host, m.join("sub/x"));
        let file = locate(&root, &mounts, "/mnt/in").expect("in");
        assert_eq!((file.host, file.read_only), (f.clone(), true));
        assert_eq!(locate(&root, &mounts, "/etc/x").expect("root").host, root.join("etc/x"));
        assert!(locate(&root, &mounts, "/tmp/x").is_err(), "a tmpfs is not reachable");
        assert_eq!(read_stdin(&root, &mounts, "/mnt/in").expect("stdin"), b"mounted file");
        let err = read_stdin(&root, &mounts, "/nope").expect_err("missing");
        assert_eq!(
            err.message,
            "open redirect stdin file: /nope: no such file or directory"
        );
        // Owned by whoever runs the test (only root may give a file away), so it also runs as an ordinary user.
        let me = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
        let out = Redirect::create(&root, &mounts, "stdout", "/mnt/out", me).expect("create");
        out.write(b"hi").expect("write");
        assert_eq!(std::fs::read(m.join("out")).expect("read"), b"hi");
        let err = Redirect::create(&root, &mounts, "stdout", "/mnt/in", me).expect_err("read-only");
        assert_eq!(err.message, "open redirect stdout file: /mnt/in: read-only file system");
        let err = Redirect::create(&root, &mounts, "stderr", "/no/dir/x", (0, 0)).expect_err("no parent");
        assert_eq!(
            err.message,
            "open redirect stderr file: /no/dir/x: no such file or directory"
        );
    }

    #[test]
    fn stubs_are_what_did_not_exist_and_only_empty_ones_go() {
        let tmp = tempfile::tempdir().expect("dir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::create_dir_all(root.join("data")).expect("mkdir");
        let stubs = missing_stubs(root, &stub_candidates(["/data", "/a/b/c", "/kept"]));
        assert_eq!(
            stubs,
            [
                "/etc/resolv.conf",
                "/etc/hosts",
                "/dev",
                "/proc",
                "/sys",
                "/a/b/c",
                "/a/b",
                "/a",
                "/kept"
            ]
        );
        // What the runtime made, and what the process did with some of them.
        for d in ["dev", "proc", "sys", "a/b/c", "kept"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(root.join("etc/hosts"), "").expect("stub");
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 1.1.1.1\n").expect("written by the process");
        std::fs::write(root.join("kept/file"), "x").expect("written by the process");
        remove_stubs(root, &stubs);
        let mut left: Vec<String> = std::fs::read_dir(root)
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["data", "etc", "kept"]);
        assert!(!root.join("etc/hosts").exists() && root.join("etc/resolv.conf").exists());
    }
}
