//! What engines leave behind when they stop uncleanly, and who owns what.
//!
//! An engine that is killed mid-exec leaves an overlay mount and a scratch folder under its cache directory's
//! `tmp/`, the tmpfs of the exec's secrets, a container (still running) in the OCI runtime's state directory
//! `runtime/`, and on the host a network namespace, the host side of its veth and an address lease. Every one
//! of these is named after the engine's process ID (`exec-<pid>-…`, `drs-<pid>-…`, see
//! [`crate::worker::snapshot::unique`]), so each has an owner.
//!
//! Every engine process holds an exclusive `flock` on `<cache>/engines/<pid>.lock` for each cache directory it
//! uses, and (as root) on `/run/dagger-rs/engines/<pid>.lock` for the host-wide items; the kernel drops the
//! lock when the process dies, however it dies. When an engine starts ([`start`]) it collects exactly the
//! items whose owner is dead: a lock file nobody holds, or (for engines that predate the lock files) no lock
//! file and no such process. Several engines may share one cache directory at the same time: none ever
//! touches what a live one owns. The collector holds a dead owner's lock while it collects, so two engines
//! starting together do not collect the same items twice, and removes the lock file after.
//!
//! Collection order matters: containers first (`runc`/`crun delete --force` kills their processes, which
//! keep mounts and namespaces busy), then mounts under `tmp/` (found in `/proc/self/mountinfo`, unmounted
//! lazily, deepest first), then the scratch entries (only once no mount is left under them, so nothing is ever
//! deleted through a mount), then network namespaces, veths and leases.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::store::Store;

pub use crate::worker::collected::{Collected, owner_pid};

/// Where the host-wide lock files live (network namespaces, veths and leases are host-wide).
const HOST_LOCKS: &str = "/run/dagger-rs/engines";

/// The lock directories this process holds its lock in, with the open lock files.
static HELD: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());
/// Held while this process collects: an engine starting on another thread waits, so the first collection in
/// a process (which takes this process's own ID for a dead one's) never sees the items of a newer engine.
static COLLECTING: Mutex<()> = Mutex::new(());

fn lock_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.lock"))
}

/// Takes this process's lock in `dir` (creating the directory, private) unless it holds it already. Returns
/// whether it was taken now: the first engine of a process is the one that collects what an earlier process
/// with the same ID left.
fn claim(dir: &Path) -> std::io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    let mut held = HELD.lock();
    if held.iter().any(|(d, _)| d == dir) {
        return Ok(false);
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = lock_path(dir, std::process::id());
    loop {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        // Waits while another engine collects what an earlier process with this ID left. A process with the
        // same ID in another PID namespace may hold it for good: then this one goes on without (its items
        // still count as live to others, since the lock is held).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            if std::time::Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // That engine removes the file once done: a lock on a removed file protects nothing.
        let same = std::fs::metadata(&path).is_ok_and(|m| {
            f.metadata()
                .is_ok_and(|mine| mine.ino() == m.ino() && mine.dev() == m.dev())
        });
        if same {
            held.push((dir.to_owned(), f));
            return Ok(true);
        }
    }
}

/// Releases this process's lock in `dir` and removes its lock file (when the process stops cleanly).
fn release(dir: &Path) {
    let mut held = HELD.lock();
    if let Some(i) = held.iter().position(|(d, _)| d == dir) {
        let (_, f) = held.remove(i);
        let _ = std::fs::remove_file(lock_path(dir, std::process::id()));
        drop(f);
    }
}

/// Decides which owners are dead, holding the lock of each dead one until dropped (then removing its file).
struct Judge {
    dir: PathBuf,
    me: u32,
    /// Whether this process's own items count as dead: at the first start in a process (they were left by an
    /// earlier process with the same ID), and when the process stops.
    mine_dead: bool,
    /// Only this process's items (when it stops): others are never judged dead.
    only_mine: bool,
    seen: HashMap<u32, bool>,
    locks: Vec<(PathBuf, File)>,
}

impl Judge {
    fn new(dir: &Path, mine_dead: bool, only_mine: bool) -> Self {
        Self {
            dir: dir.to_owned(),
            me: std::process::id(),
            mine_dead,
            only_mine,
            seen: HashMap::new(),
            locks: Vec::new(),
        }
    }

    fn dead(&mut self, pid: u32) -> bool {
        if pid == self.me {
            return self.mine_dead;
        }
        if self.only_mine || pid == 0 {
            return false;
        }
        if let Some(d) = self.seen.get(&pid) {
            return *d;
        }
        let path = lock_path(&self.dir, pid);
        let dead = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    self.locks.push((path, f));
                    true
                }
                Err(_) => false,
            },
            // No lock file: an engine from before lock files, alive as long as its process is.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => !Path::new("/proc").join(pid.to_string()).exists(),
            Err(_) => false,
        };
        self.seen.insert(pid, dead);
        dead
    }

    /// Judges the owner of every lock file, so the files of dead engines (which may have left nothing else)
    /// are removed with the judge.
    fn sweep(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let pids: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".lock")?.parse().ok())
            .collect();
        for pid in pids {
            self.dead(pid);
        }
    }

    fn dead_name(&mut self, name: &str) -> bool {
        owner_pid(name).is_some_and(|p| self.dead(p))
    }
}

impl Drop for Judge {
    fn drop(&mut self) {
        for (path, f) in self.locks.drain(..) {
            let _ = std::fs::remove_file(&path);
            drop(f);
        }
    }
}

/// Whether this process is the host's root: only then does it own host-wide items (a rootless engine's
/// namespaces live under its cache directory and its mount namespace).
fn is_root() -> bool {
    crate::worker::userns::privilege() == crate::worker::userns::Privilege::Root
}

/// At engine start-up: takes this process's locks (in the cache directory, and host-wide as root) and
/// collects everything engines that are no longer running left, in the cache directory and on the host.
pub fn start(store: &Store) -> Collected {
    let _one_at_a_time = COLLECTING.lock();
    let engines = engines_dir(store);
    let first = claim(&engines).unwrap_or(false);
    let host_first = is_root() && claim(Path::new(HOST_LOCKS)).unwrap_or(false);
    let mut judge = Judge::new(&engines, first, false);
    let mut host = Judge::new(Path::new(HOST_LOCKS), host_first, false);
    collect(store, &mut judge, is_root().then_some(&mut host))
}

/// When an engine process stops: collects what this process still has (containers, mounts, scratch,
/// namespaces) and releases its locks. Only for a process about to exit, with no other engine of its own on
/// the same cache directory (the CLI).
pub fn stop(store: &Store) -> Collected {
    let _one_at_a_time = COLLECTING.lock();
    let engines = engines_dir(store);
    let mut judge = Judge::new(&engines, true, true);
    let mut host = Judge::new(Path::new(HOST_LOCKS), true, true);
    let collected = collect(store, &mut judge, is_root().then_some(&mut host));
    release(&engines);
    release(Path::new(HOST_LOCKS));
    collected
}

/// `<cache>/engines`, spelled canonically: one directory reached by two paths is still one directory.
fn engines_dir(store: &Store) -> PathBuf {
    std::fs::canonicalize(store.root())
        .unwrap_or_else(|_| store.root().to_owned())
        .join("engines")
}

fn collect(store: &Store, judge: &mut Judge, host: Option<&mut Judge>) -> Collected {
    let mut c = Collected::default();
    let root = std::fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_owned());
    c.containers = crate::worker::runtime::collect_containers(&root.join("runtime"), &mut |id| judge.dead_name(id));
    let tmp = root.join("tmp");
    c.mounts = unmount_under(&tmp, judge);
    let busy = mounts_under(&tmp);
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if !judge.dead_name(&name) || busy.iter().any(|m| m.starts_with(&path)) {
                continue;
            }
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                crate::worker::snapshot::remove_all(&path);
                if !path.exists() {
                    c.scratch_folders += 1;
                }
            } else if std::fs::remove_file(&path).is_ok() {
                c.temporary_files += 1;
            }
        }
    }
    match host {
        Some(host) => {
            host.sweep();
            c.add(&crate::worker::network::collect_dead(&mut |pid| host.dead(pid)));
            remove_link_folders(&mut |pid| host.dead(pid));
        }
        None if crate::worker::userns::is_rootless() => {
            // A rootless engine's namespaces: files under `tmp/netns/` (their mounts died with its mount
            // namespace), and its link folders in the temporary directory, judged by this cache's locks.
            let netns = tmp.join(crate::worker::network::ROOTLESS_NETNS);
            c.add(&crate::worker::network::collect_dead_namespaces(&netns, &mut |pid| {
                judge.dead(pid)
            }));
            remove_link_folders(&mut |pid| judge.dead(pid));
        }
        None => {}
    }
    judge.sweep();
    c
}

/// Removes the short symbolic-link folders overlay mounts name their layers through (see `snapshot`) that
/// belong to dead engines (and to this process's user: others' are not ours to judge).
fn remove_link_folders(dead: &mut dyn FnMut(u32) -> bool) {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("drs-l")
                && e.metadata().is_ok_and(|m| m.uid() == me)
                && owner_pid(rest).is_some_and(&mut *dead)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The mount points in `/proc/self/mountinfo`, in order.
fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect()
}

/// Mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points strictly below `dir`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect()
}

/// Unmounts (lazily, deepest first) the mounts below `tmp` whose `tmp/` entry belongs to a dead engine;
/// returns how many.
fn unmount_under(tmp: &Path, judge: &mut Judge) -> usize {
    let mut doomed: Vec<PathBuf> = mounts_under(tmp)
        .into_iter()
        .filter(|m| {
            m.strip_prefix(tmp)
                .ok()
                .and_then(|rest| rest.components().next())
                .is_some_and(|first| judge.dead_name(&first.as_os_str().to_string_lossy()))
        })
        .collect();
    doomed.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    doomed.dedup();
    let mut n = 0;
    for m in doomed {
        // One path may be mounted over more than once: unmount until it is not a mount point.
        while mount_points().contains(&m) {
            if rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH).is_err() {
                break;
            }
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_every_naming_scheme() {
        assert_eq!(owner_pid("exec-1234-5-abc"), Some(1234));
        assert_eq!(owner_pid("blob.77.0"), Some(77));
        assert_eq!(owner_pid("secret-key.42.3"), Some(42));
        assert_eq!(
            owner_pid("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.55.1"),
            Some(55)
        );
        assert_eq!(
            owner_pid("1111111111111111111111111111111111111111111111111111111111111111.55.1"),
            Some(55),
            "an all-digit digest is not a process ID"
        );
        assert_eq!(owner_pid("drs-12-0-ff"), Some(12));
        assert_eq!(owner_pid("image-9-1-a.tar"), Some(9));
        assert_eq!(owner_pid("empty"), None);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b/c\134d"), r"/a b/c\d");
        assert_eq!(unescape_mountinfo(r"/plain\04"), r"/plain\04");
    }

    #[test]
    fn the_report_names_what_was_collected_in_one_line() {
        let c = Collected {
            mounts: 2,
            scratch_folders: 3,
            containers: 1,
            namespaces: 1,
            ..Collected::default()
        };
        assert_eq!(
            c.to_string(),
            "collected after an unclean stop: 2 mounts, 3 scratch folders, 1 container, 1 network namespace"
        );
        assert!(Collected::default().is_empty());
    }

    #[test]
    fn only_dead_owners_items_are_collected_and_live_ones_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("cache")).expect("open");
        start(&store);
        let tmp = store.root().join("tmp");
        let engines = store.root().join("engines");
        // A live engine (another process holding its lock) and a dead one (a lock file nobody holds).
        let mut live = std::process::Command::new("sleep").arg("60").spawn().expect("sleep");
        let live_pid = live.id();
        let live_lock = File::create(lock_path(&engines, live_pid)).expect("lock file");
        rustix::fs::flock(&live_lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
        let dead_pid = live_pid + 1_000_000;
        File::create(lock_path(&engines, dead_pid)).expect("dead lock file");
        for pid in [live_pid, dead_pid] {
            std::fs::create_dir_all(tmp.join(format!("exec-{pid}-0-a/upper"))).expect("scratch");
            std::fs::write(tmp.join(format!("blob.{pid}.1")), "partial").expect("file");
        }
        let c = start(&store);
        assert_eq!((c.scratch_folders, c.temporary_files), (1, 1), "{c:?}");
        assert!(
            tmp.join(format!("exec-{live_pid}-0-a")).is_dir(),
            "a live engine's scratch is kept"
        );
        assert!(tmp.join(format!("blob.{live_pid}.1")).is_file());
        assert!(!tmp.join(format!("exec-{dead_pid}-0-a")).exists());
        assert!(
            !lock_path(&engines, dead_pid).exists(),
            "the dead engine's lock file is removed"
        );
        assert!(
            lock_path(&engines, std::process::id()).exists(),
            "this engine holds its own"
        );
        // Once the live engine has gone (its lock released), its leftovers are collected too.
        drop(live_lock);
        let _ = live.kill();
        let _ = live.wait();
        let c = start(&store);
        assert_eq!((c.scratch_folders, c.temporary_files), (1, 1), "{c:?}");
        assert!(std::fs::read_dir(&tmp).expect("tmp").next().is_none());
    }
}
