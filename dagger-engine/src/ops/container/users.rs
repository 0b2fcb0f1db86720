//! Users and groups as a container's `/etc/passwd` and `/etc/group` name them: the identity an exec runs with
//! (user, primary group, supplementary groups, home) and the owner an `owner` argument gives files. Resolved
//! the way Dagger resolves them (which follows runc's user lookup), so `id` in a container shows the same.

use crate::ops::container::state::{ContainerState, layers_dir};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::worker::snapshot;

/// The identity an exec runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExecUser {
    /// The user ID.
    pub uid: u32,
    /// The primary group ID.
    pub gid: u32,
    /// Every group the process is in: the primary group first, then the user's supplementary groups.
    pub additional_gids: Vec<u32>,
    /// The home directory (`HOME` when the container sets none).
    pub home: String,
}

/// One line of `/etc/passwd`: name, user ID, group ID, home.
struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// One line of `/etc/group`: name, group ID, members.
struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_lines(text: &str) -> impl Iterator<Item = Passwd<'_>> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some(Passwd {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_lines(text: &str) -> impl Iterator<Item = Group<'_>> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some(Group {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves a container's user (`name`, `uid`, `name:group`, `uid:gid`; empty for root) against the
/// container's `/etc/passwd` and `/etc/group` contents (`None`: the file is missing). A user given by name
/// gets its primary group from `/etc/passwd` and, as supplementary groups, every `/etc/group` entry that lists
/// it as a member; an explicit group (`user:group`) is the only group; numeric `uid:gid` needs no lookup.
pub(crate) fn exec_user(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ExecUser, OpError> {
    let root = spec.is_empty();
    let spec = if root { "0" } else { spec };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry =
        passwd.and_then(|text| passwd_lines(text).find(|e| e.name == u || u.parse::<u32>().is_ok_and(|n| n == e.uid)));
    let home = |default: &str| {
        entry
            .as_ref()
            .map(|e| e.home)
            .filter(|h| !h.is_empty())
            .unwrap_or(default)
            .to_owned()
    };
    let default_home = if root { "/root" } else { "/" };
    // Both numeric: taken as they are.
    if let (Ok(uid), Some(Ok(gid))) = (u.parse::<u32>(), g.map(str::parse::<u32>)) {
        return Ok(ExecUser {
            uid,
            gid,
            additional_gids: vec![gid],
            home: home(default_home),
        });
    }
    let (uid, mut gid, name) = match (&entry, u.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.name),
        (None, Ok(n)) => (n, 0, ""),
        (None, Err(_)) if root => (0, 0, ""),
        (None, Err(_)) => {
            return Err(OpError::new(format!(
                "unable to find user {u}: no matching entries in passwd file"
            )));
        }
    };
    let groups: Vec<Group> = group.map(|t| group_lines(t).collect()).unwrap_or_default();
    let mut supplementary = Vec::new();
    match g {
        Some(g) => {
            gid = match groups.iter().find(|gr| gr.name == g || gr.gid.to_string() == g) {
                Some(gr) => gr.gid,
                None => g.parse().map_err(|_| {
                    OpError::new(format!("unable to find group {g}: no matching entries in group file"))
                })?,
            };
        }
        None if !name.is_empty() => {
            supplementary = groups
                .iter()
                .filter(|gr| gr.members.contains(&name))
                .map(|gr| gr.gid)
                .collect();
        }
        None => {}
    }
    let mut additional_gids = Vec::with_capacity(supplementary.len() + 1);
    if !supplementary.contains(&gid) {
        additional_gids.push(gid);
    }
    additional_gids.extend(supplementary);
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
        home: home(default_home),
    })
}

/// The numeric owner an `owner` argument (`uid`, `uid:gid`, `name`, `name:group`) names, as Dagger resolves
/// it: names through the container's files, and without a group, the group ID is the user ID.
pub(crate) fn owner_ids(owner: &str, passwd: Option<&str>, group: Option<&str>) -> Result<(u32, u32), OpError> {
    let (u, g) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => passwd
            .and_then(|t| passwd_lines(t).find(|e| e.name == u))
            .map(|e| e.uid)
            .ok_or_else(|| OpError::new(format!("find uid: no such user: {u}")))?,
    };
    let gid = match g {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .and_then(|t| group_lines(t).find(|gr| gr.name == g))
                .map(|gr| gr.gid)
                .ok_or_else(|| OpError::new(format!("find gid: no such group: {g}")))?,
        },
    };
    Ok((uid, gid))
}

/// The container's `/etc/passwd` and `/etc/group`, read from its layers.
fn user_files(engine: &Engine, st: &ContainerState) -> (Option<String>, Option<String>) {
    let layers: Vec<_> = st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect();
    let read =
        |path: &str| snapshot::read_file_in_layers(&layers, path).map(|b| String::from_utf8_lossy(&b).into_owned());
    (read("/etc/passwd"), read("/etc/group"))
}

/// The identity the container's user (`withUser`) runs an exec with.
pub(crate) fn resolve_exec_user(engine: &Engine, st: &ContainerState) -> Result<ExecUser, OpError> {
    let (passwd, group) = user_files(engine, st);
    exec_user(&st.config.user, passwd.as_deref(), group.as_deref())
}

/// The numeric owner of an `owner` argument (empty for none), resolved in the container's files.
pub(crate) fn owner_of(engine: &Engine, st: &ContainerState, owner: &str) -> Result<Option<(u32, u32)>, OpError> {
    if owner.is_empty() {
        return Ok(None);
    }
    if let (Ok(u), Some(Ok(g))) = owner.split_once(':').map_or((owner.parse::<u32>(), None), |(u, g)| {
        (u.parse(), Some(g.parse::<u32>()))
    }) {
        return Ok(Some((u, g)));
    }
    let (passwd, group) = user_files(engine, st);
    owner_ids(owner, passwd.as_deref(), group.as_deref()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alpine's files, trimmed.
    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\n\
        daemon:x:2:2:daemon:/sbin:/sbin/nologin\n# a comment\nguest:x:405:100:guest:/dev/null:/sbin/nologin\n";
    const GROUP: &str = "root:x:0:root\nbin:x:1:root,bin,daemon\ndaemon:x:2:root,bin,daemon\nsys:x:3:root,bin\n\
        floppy:x:11:root\nusers:x:100:games\nwheel:x:10:root\n";

    fn user(spec: &str) -> Result<ExecUser, String> {
        exec_user(spec, Some(PASSWD), Some(GROUP)).map_err(|e| e.message)
    }

    #[test]
    fn a_named_user_gets_its_primary_group_and_the_groups_listing_it() {
        // Dagger's `TestExecWithUser` and `TestExecFromImage…` (`id` as root in alpine lists every group that
        // names root).
        let root = user("").expect("root");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(
            root.additional_gids,
            [0, 1, 2, 3, 11, 10],
            "the primary group, then root's groups"
        );
        assert_eq!(root.home, "/root");
        let daemon = user("daemon").expect("daemon");
        assert_eq!((daemon.uid, daemon.gid, daemon.home.as_str()), (2, 2, "/sbin"));
        assert_eq!(
            daemon.additional_gids,
            [1, 2],
            "the primary group is among daemon's groups already"
        );
        assert_eq!(
            user("2").expect("by id").additional_gids,
            [1, 2],
            "a uid finds its name"
        );
        let guest = user("guest").expect("guest");
        assert_eq!(
            guest.additional_gids,
            [100],
            "no group lists guest: its primary group alone"
        );
    }

    #[test]
    fn an_explicit_group_is_the_only_group() {
        let d = user("daemon:floppy").expect("daemon:floppy");
        assert_eq!((d.uid, d.gid, d.additional_gids.as_slice()), (2, 11, &[11][..]));
        let d = user("2:11").expect("2:11");
        assert_eq!((d.uid, d.gid, d.additional_gids.as_slice()), (2, 11, &[11][..]));
        let d = user("daemon:77").expect("a numeric group without an entry");
        assert_eq!(d.gid, 77);
        assert_eq!(
            user("daemon:nogroup").expect_err("unknown group"),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert_eq!(
            user("nobody").expect_err("unknown user"),
            "unable to find user nobody: no matching entries in passwd file"
        );
        let n = user("1234").expect("a numeric user without an entry");
        assert_eq!(
            (n.uid, n.gid, n.additional_gids.as_slice(), n.home.as_str()),
            (1234, 0, &[0][..], "/")
        );
        let bare = exec_user("", None, None).expect("no files");
        assert_eq!((bare.uid, bare.gid, bare.additional_gids.as_slice()), (0, 0, &[0][..]));
    }

    #[test]
    fn owners_default_their_group_to_the_user_id() {
        let ids = |o: &str| owner_ids(o, Some(PASSWD), Some(GROUP)).map_err(|e| e.message);
        assert_eq!(ids("daemon"), Ok((2, 2)));
        assert_eq!(ids("guest"), Ok((405, 405)), "not the primary group: the user ID");
        assert_eq!(ids("guest:floppy"), Ok((405, 11)));
        assert_eq!(ids("1000"), Ok((1000, 1000)));
        assert_eq!(ids("nobody"), Err("find uid: no such user: nobody".into()));
        assert_eq!(ids("root:none"), Err("find gid: no such group: none".into()));
    }
}
