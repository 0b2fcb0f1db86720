//! Ordinary users for the tests that run things without root (`tests/tests/rootless.rs`, the Python SDK's
//! client tests): created once with `useradd`, with or without subordinate ID ranges, so the engine runs
//! rootless as they would on a developer's machine.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// The size of the subordinate ID ranges given to a test user.
pub const RANGE: u32 = 65_536;

/// Whether this process is root of the host (not of a user namespace).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
        && std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// A test user: its uid, and the start of its subordinate uid range (0 without one).
#[derive(Clone, Copy, Debug)]
pub struct TestUser {
    /// Its uid.
    pub uid: u32,
    /// The start of its subordinate uid range (0 without one).
    pub subuid: u32,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first range of `file` for `name`: its start.
fn range_of(file: &str, name: &str) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() == 3 && f[0] == name && f[2].parse::<u32>().is_ok_and(|c| c >= RANGE)).then(|| f[1].parse().ok())?
    })
}

/// A start for a new range of `RANGE` IDs after every range `file` lists (100000 when it lists none).
fn free_start(file: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let (start, count) = (f.get(1)?.parse::<u64>().ok()?, f.get(2)?.parse::<u64>().ok()?);
            Some(start + count)
        })
        .max()
        .map_or(100_000, |end| u32::try_from(end.max(100_000)).unwrap_or(100_000))
}

/// Creates `name` when missing, with subordinate ID ranges when `ranges` (when not, its lines are removed:
/// Debian's `useradd` adds some by itself), once at a time across test processes; opens `/dev/net/tun` to
/// users as Debian does.
pub fn ensure(name: &str, ranges: bool) -> TestUser {
    let lock = std::fs::File::create("/tmp/drs-rootless-setup.lock").expect("setup lock");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().ok())
    };
    if id("-u").is_none() {
        run(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", name]));
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        if !ranges {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let kept: String = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{name}:")))
                .map(|l| format!("{l}\n"))
                .collect();
            if kept != text {
                std::fs::write(file, kept).expect("write the subordinate ID file");
            }
        } else if range_of(file, name).is_none() {
            let line = format!("{name}:{}:{RANGE}\n", free_start(file));
            eprintln!("adding `{}` to {file}", line.trim());
            let mut text = std::fs::read_to_string(file).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            std::fs::write(file, text).expect("write the subordinate ID file");
        }
    }
    let tun = Path::new("/dev/net/tun");
    if std::fs::metadata(tun).is_ok_and(|m| m.mode() & 0o006 != 0o006) {
        eprintln!("note: /dev/net/tun is not open to users; giving it Debian's default mode 0666");
        std::fs::set_permissions(tun, std::fs::Permissions::from_mode(0o666)).expect("chmod /dev/net/tun");
    }
    TestUser {
        uid: id("-u").expect("the user exists"),
        subuid: range_of("/etc/subuid", name).unwrap_or(0),
    }
}
