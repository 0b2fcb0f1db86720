//! Running without root: the engine as root of a user namespace its user owns.
//!
//! What the engine does that the kernel reserves for root — mounting overlays and tmpfs, unpacking image layers
//! with their owners, creating network namespaces, running `runc` or `crun` — it may also do as root of a user
//! namespace (kernel 5.11 and later for overlayfs). So an ordinary user's engine runs inside one: a user
//! namespace whose root is the user, whose IDs 1 and up are the user's subordinate IDs (`/etc/subuid`,
//! `/etc/subgid`, mapped by the setuid helpers `newuidmap` and `newgidmap`), with a mount namespace of its own,
//! sharing the host's network namespace (so its session port on `127.0.0.1` is the host's). Without
//! subordinate IDs the namespace maps the user alone, to root: containers then run with that one ID.
//!
//! A process cannot move itself into a new user namespace once it runs threads, and the engine is a library
//! in a threaded program. So the program is started again inside one ([`reexec`]): the SDK does it when it
//! would start its embedded engine as a non-root user, the `dagger-rs` CLI at start-up. The namespaces are
//! made by `unshare` (util-linux 2.38 or later, which runs `newuidmap`/`newgidmap` itself); nothing here
//! needs `unsafe`.
//!
//! Inside, [`privilege`] reports [`Privilege::UserNamespace`] and the worker adapts: overlayfs markers live
//! in `user.overlay.*` extended attributes (`trusted.*` ones are the host root's), network namespaces are
//! kept under the cache directory and reach the outside through `slirp4netns` instead of the host's bridge,
//! and what is host-wide for a root engine (`/run/dagger-rs`) is not used.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

/// What the engine's process may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// Root of the host: effective uid 0 in the initial user namespace.
    Root,
    /// Root of a user namespace (rootless mode): `ids` user IDs are mapped (1 without subordinate IDs).
    UserNamespace {
        /// How many user IDs the namespace maps.
        ids: u64,
    },
    /// Neither: containers cannot run until the process is started inside a user namespace ([`reexec`]).
    Unprivileged {
        /// The effective user ID.
        uid: u32,
    },
}

impl Privilege {
    /// Whether this is rootless mode.
    pub fn is_rootless(self) -> bool {
        matches!(self, Privilege::UserNamespace { .. })
    }
}

/// The mapping a namespace's `uid_map` describes: how many IDs, and whether it is the initial namespace's.
fn read_map(text: &str) -> (u64, bool) {
    let mut total = 0u64;
    let mut identity = false;
    for line in text.lines() {
        let f: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        if let [inner, outer, count] = f[..] {
            total += count;
            identity |= inner == 0 && outer == 0 && count == u64::from(u32::MAX);
        }
    }
    (total, identity)
}

/// What this process may do (detected once).
pub fn privilege() -> Privilege {
    static DETECTED: OnceLock<Privilege> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let uid = rustix::process::geteuid().as_raw();
        if uid != 0 {
            return Privilege::Unprivileged { uid };
        }
        match std::fs::read_to_string("/proc/self/uid_map") {
            Ok(text) => match read_map(&text) {
                (_, true) => Privilege::Root,
                (ids, false) => Privilege::UserNamespace { ids },
            },
            Err(_) => Privilege::Root,
        }
    })
}

/// Whether the engine runs rootless (as root of a user namespace).
pub fn is_rootless() -> bool {
    privilege().is_rootless()
}

/// The extended attribute overlayfs reads to hide what lower layers hold below a directory: `trusted.*` as
/// root, `user.*` in a user namespace (where the overlay is mounted with `userxattr`).
pub(crate) fn opaque_xattr() -> &'static str {
    if is_rootless() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// The one-line note of rootless mode without subordinate IDs, when that is the mode.
pub fn single_id_note() -> Option<String> {
    match privilege() {
        Privilege::UserNamespace { ids: 1 } => Some(format!(
            "note: rootless with a single user ID (no subordinate IDs for this user): files of other users in \
             images belong to root, and a container cannot run as another user; {}",
            subid_fix()
        )),
        _ => None,
    }
}

/// How to give the current user subordinate IDs: the line to add and the command that adds it, with a range
/// after every range `/etc/subuid` and `/etc/subgid` hold already.
pub fn subid_fix() -> String {
    let files: Vec<String> = ["/etc/subuid", "/etc/subgid"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    let start = free_range_start(&files.join("\n"));
    let end = u64::from(start) + 65_535;
    let user = current_user_name();
    format!(
        "to give containers 65536 IDs, add the line `{user}:{start}:65536` to /etc/subuid and to /etc/subgid \
         (`sudo usermod --add-subuids {start}-{end} --add-subgids {start}-{end} {user}`)"
    )
}

/// The first ID after every range in `text` (subuid/subgid lines), and at least 100000.
fn free_range_start(text: &str) -> u32 {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':').skip(1);
            let start: u64 = f.next()?.trim().parse().ok()?;
            let count: u64 = f.next()?.trim().parse().ok()?;
            Some(start + count)
        })
        .fold(100_000u64, u64::max)
        .try_into()
        .unwrap_or(100_000)
}

/// Entering a user namespace is not possible, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// A program is missing.
    #[error(
        "running the engine without root needs `{program}`, which was not found on PATH: install it \
         (`sudo apt-get install {package}` on Debian/Ubuntu), or run as root"
    )]
    Missing {
        /// The program.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// `unshare` could not make the namespaces.
    #[error("cannot enter a user namespace (`{command}` failed: {stderr}){}",
        hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    Enter {
        /// The command line tried.
        command: String,
        /// What it printed.
        stderr: String,
        /// What most likely fixes it.
        hint: Option<String>,
    },
    /// Starting or waiting for the program failed.
    #[error("cannot run {what} in a user namespace: {source}")]
    Io {
        /// What was being run.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program was started in a user namespace already and still is not root there.
    #[error("the program was started in a user namespace (DAGGER_RS_ROOTLESS_CHILD is set) but is not root there")]
    Loop,
}

/// A user's subordinate ID range: `count` IDs from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubordinateRange {
    /// The first host ID.
    pub start: u32,
    /// How many.
    pub count: u32,
}

/// The first range of `/etc/subuid`- or `/etc/subgid`-formatted `text` (`NAME:START:COUNT` or
/// `UID:START:COUNT` lines) that belongs to the user `name` with ID `id`.
pub fn subordinate_range(text: &str, name: &str, id: u32) -> Option<SubordinateRange> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            let mine = who == name || who.parse::<u32>().is_ok_and(|u| u == id);
            let range = SubordinateRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            };
            (mine && range.count > 0).then_some(range)
        })
        .next()
}

/// The host's ID of this process's user: its effective uid, or in a user namespace the host uid its root is.
fn host_uid() -> u32 {
    let uid = rustix::process::geteuid().as_raw();
    std::fs::read_to_string("/proc/self/uid_map")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<u32> = l.split_whitespace().filter_map(|w| w.parse().ok()).collect();
                match f[..] {
                    [inner, outer, count] if inner <= uid && uid - inner < count => Some(outer + (uid - inner)),
                    _ => None,
                }
            })
        })
        .unwrap_or(uid)
}

/// The host's name of this process's user, from `/etc/passwd` (else `$USER`, else the number).
fn current_user_name() -> String {
    let uid = host_uid();
    if let Some(name) = std::fs::read_to_string("/etc/passwd").ok().and_then(|t| {
        t.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_owned())
        })
    }) {
        return name;
    }
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| uid.to_string())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How the namespace maps IDs: `unshare`'s options, and the note to give when it maps one ID only.
#[derive(Clone, Debug)]
struct Mapping {
    options: Vec<String>,
    note: Option<String>,
}

fn mapping() -> Result<Mapping, RootlessError> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let name = current_user_name();
    let read = |file: &str, id: u32| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| subordinate_range(&t, &name, id))
    };
    // A group's subordinate IDs are listed under the user's name (or uid), as newgidmap looks them up.
    let (Some(u), Some(g)) = (
        read("/etc/subuid", uid),
        read("/etc/subgid", uid).or_else(|| read("/etc/subgid", gid)),
    ) else {
        return Ok(Mapping {
            options: vec!["--map-root-user".into()],
            note: Some(format!(
                "note: no subordinate IDs for `{name}` in /etc/subuid and /etc/subgid: containers run with a \
                 single user ID; {}",
                subid_fix()
            )),
        });
    };
    for (program, package) in [("newuidmap", "uidmap"), ("newgidmap", "uidmap")] {
        if find_program(program).is_none() {
            return Err(RootlessError::Missing { program, package });
        }
    }
    Ok(Mapping {
        options: vec![
            "--map-user=0".into(),
            "--map-group=0".into(),
            format!("--map-users={},1,{}", u.start, u.count),
            format!("--map-groups={},1,{}", g.start, g.count),
        ],
        note: None,
    })
}

/// What most likely fixes a failed `unshare`, from what it printed.
fn enter_hint(stderr: &str) -> Option<String> {
    let sysctl = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    if stderr.contains("unrecognized option") {
        return Some("the `unshare` of util-linux 2.38 or later is needed (Debian 12, Ubuntu 23.04)".into());
    }
    if sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some(
            "user namespaces are disabled for unprivileged users: `sudo sysctl -w \
             kernel.unprivileged_userns_clone=1`"
                .into(),
        );
    }
    if sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some("user namespaces are disabled: `sudo sysctl -w user.max_user_namespaces=15000`".into());
    }
    if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some(
            "AppArmor restricts unprivileged user namespaces: `sudo sysctl -w \
             kernel.apparmor_restrict_unprivileged_userns=0`, or add an AppArmor profile for the program"
                .into(),
        );
    }
    if stderr.contains("newuidmap") || stderr.contains("newgidmap") {
        return Some(format!(
            "newuidmap/newgidmap refused the ranges of /etc/subuid and /etc/subgid: check that the lines for \
             `{}` are there and that the helpers are setuid root (`sudo apt-get install --reinstall uidmap`)",
            current_user_name()
        ));
    }
    None
}

/// `std::process::Command` running `program` with `args` inside a new user and mount namespace of the current
/// (non-root) user, made by `unshare`; with it, the note to report when the namespace maps a single ID (no
/// subordinate IDs). Such a namespace is made once first, so a failure is an error naming its cause and fix
/// (what to install or configure), never the program's exit status.
pub fn command_in_user_namespace(
    program: &Path,
    args: &[OsString],
) -> Result<(std::process::Command, Option<String>), RootlessError> {
    let unshare = find_program("unshare").ok_or(RootlessError::Missing {
        program: "unshare",
        package: "util-linux",
    })?;
    let mapping = mapping()?;
    let out = std::process::Command::new(&unshare)
        .args(["--user", "--mount"])
        .args(&mapping.options)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| RootlessError::Io {
            what: unshare.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(RootlessError::Enter {
            command: format!("unshare --user --mount {} true", mapping.options.join(" ")),
            hint: enter_hint(&stderr),
            stderr,
        });
    }
    let mut cmd = std::process::Command::new(&unshare);
    // `slave`: mounts the host makes later (a disk plugged in) still appear inside; none made inside leak out.
    cmd.args(["--user", "--mount", "--propagation", "slave"])
        .args(&mapping.options)
        .arg("--")
        .arg(program)
        .args(args)
        .env(CHILD_ENV, "1");
    Ok((cmd, mapping.note))
}

/// Set in the environment of a program [`reexec`] started, so it never starts itself again.
pub const CHILD_ENV: &str = "DAGGER_RS_ROOTLESS_CHILD";

/// Starts this program again inside a user namespace of its own when it runs as an ordinary user (and is not
/// such a restart already), passes it the same arguments, environment and standard streams, forwards
/// `SIGTERM`, `SIGINT` and `SIGHUP` to it, and exits with its exit status: it never returns then. Returns
/// `Ok(())` at once when nothing is to be done: as root, inside a user namespace already, or with
/// `DAGGER_RS_ROOTLESS=0`.
///
/// What the program did before this call it does again in the restart, so call it early.
pub async fn reexec() -> Result<(), RootlessError> {
    if !matches!(privilege(), Privilege::Unprivileged { .. })
        || std::env::var("DAGGER_RS_ROOTLESS").is_ok_and(|v| v == "0")
    {
        return Ok(());
    }
    if std::env::var_os(CHILD_ENV).is_some() {
        return Err(RootlessError::Loop);
    }
    let exe = std::env::current_exe().map_err(|source| RootlessError::Io {
        what: "this program".into(),
        source,
    })?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // The note of a single-ID namespace is the engine's to report (in its progress output), not this one's.
    let (cmd, _note) = command_in_user_namespace(&exe, &args)?;
    let io = |source| RootlessError::Io {
        what: exe.display().to_string(),
        source,
    };
    let mut child = tokio::process::Command::from(cmd).spawn().map_err(io)?;
    let pid = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32));
    use rustix::process::Signal;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    let status = loop {
        let sig = tokio::select! {
            status = child.wait() => break status.map_err(io)?,
            _ = term.recv() => Signal::TERM,
            _ = int.recv() => Signal::INT,
            _ = hup.recv() => Signal::HUP,
        };
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, sig);
        }
    };
    use std::os::unix::process::ExitStatusExt;
    std::process::exit(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespace_is_told_from_a_user_namespace() {
        assert_eq!(read_map("         0          0 4294967295\n"), (4_294_967_295, true));
        assert_eq!(
            read_map("         0       1001          1\n         1     100000      65536\n"),
            (65_537, false)
        );
        assert_eq!(read_map("         0       1001          1\n"), (1, false));
    }

    #[test]
    fn subordinate_ranges_are_found_by_name_or_id() {
        let text = "# comment\nalice:100000:65536\n1002:165536:65536\nbob:231072:0\nbob:300000:10\n";
        assert_eq!(
            subordinate_range(text, "alice", 1001),
            Some(SubordinateRange {
                start: 100_000,
                count: 65_536
            })
        );
        assert_eq!(
            subordinate_range(text, "carol", 1002),
            Some(SubordinateRange {
                start: 165_536,
                count: 65_536
            })
        );
        assert_eq!(
            subordinate_range(text, "bob", 1003),
            Some(SubordinateRange {
                start: 300_000,
                count: 10
            }),
            "an empty range is skipped"
        );
        assert_eq!(subordinate_range(text, "dave", 1004), None);
        assert_eq!(
            subordinate_range("alice:x:1\n", "alice", 1),
            None,
            "garbled lines are skipped"
        );
    }

    #[test]
    fn the_range_proposed_comes_after_every_range_held() {
        assert_eq!(free_range_start(""), 100_000);
        assert_eq!(free_range_start("a:100000:65536\nb:231072:65536\n"), 296_608);
        assert_eq!(free_range_start("a:1000:10\n# c\nbad\n"), 100_000);
    }

    #[test]
    fn failures_to_enter_name_their_fix() {
        let e = RootlessError::Missing {
            program: "newuidmap",
            package: "uidmap",
        };
        assert!(e.to_string().contains("sudo apt-get install uidmap"), "{e}");
        let hint = enter_hint("unshare: unrecognized option '--map-users=1,1,1'");
        assert!(hint.is_some_and(|h| h.contains("util-linux 2.38")));
    }
}
