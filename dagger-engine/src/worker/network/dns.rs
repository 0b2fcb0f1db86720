//! The name servers a container is given: the host's `/etc/resolv.conf`, except the servers on the host's
//! loopback (`127.0.0.53` of systemd-resolved, a local dnsmasq), which no container can reach — its loopback
//! is its own. Rootless, each exec's `slirp4netns` answers DNS at [`SLIRP_DNS`] by asking the host's resolver
//! as the user's own process would, so loopback servers are replaced by it. With the bridge, the upstream
//! servers systemd-resolved lists ([`SYSTEMD_UPSTREAM`]) are used instead; when there are none, the loopback
//! servers are left out and the engine says once that containers resolve no names, and how to fix it.

use std::net::IpAddr;

use crate::worker::network::Mode;

/// Where `slirp4netns` answers DNS queries inside a container's network.
pub(crate) const SLIRP_DNS: &str = "10.0.2.3";
/// The resolver configuration systemd-resolved writes with the upstream servers (not its loopback stub).
pub(crate) const SYSTEMD_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// A container's `/etc/resolv.conf`, and a note for the engine's log when containers will resolve no names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolv {
    /// The file's text.
    pub(crate) text: String,
    /// Why names will not resolve, with the fix.
    pub(crate) note: Option<String>,
}

/// The name server a `nameserver` line names, if `line` is one.
fn nameserver(line: &str) -> Option<IpAddr> {
    let mut words = line.split_whitespace();
    if words.next()? != "nameserver" {
        return None;
    }
    // A scoped IPv6 address (`fe80::1%eth0`) names an interface of the host: parse the address part.
    let addr = words.next()?;
    addr.split('%').next()?.parse().ok()
}

fn on_loopback(line: &str) -> bool {
    nameserver(line).is_some_and(|ip| ip.is_loopback())
}

/// The `/etc/resolv.conf` of containers networked by `mode`, from the host's (`host`) and systemd-resolved's
/// upstream file (`upstream`, when there is one).
pub(crate) fn for_containers(mode: Mode, host: &str, upstream: Option<&str>) -> Resolv {
    let unchanged = || Resolv {
        text: host.to_owned(),
        note: None,
    };
    let loopback: Vec<&str> = host.lines().filter(|l| on_loopback(l)).collect();
    if loopback.is_empty() {
        return unchanged();
    }
    match mode {
        // Nothing leaves the container's namespace anyway.
        Mode::None => unchanged(),
        Mode::Slirp => {
            let mut text = String::new();
            let mut replaced = false;
            for line in host.lines() {
                if on_loopback(line) {
                    if !replaced {
                        text.push_str(&format!("nameserver {SLIRP_DNS}\n"));
                        replaced = true;
                    }
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            Resolv { text, note: None }
        }
        Mode::Bridge => {
            if let Some(up) = upstream
                && up.lines().any(|l| nameserver(l).is_some_and(|ip| !ip.is_loopback()))
            {
                return Resolv {
                    text: up
                        .lines()
                        .filter(|l| !on_loopback(l))
                        .map(|l| format!("{l}\n"))
                        .collect(),
                    note: None,
                };
            }
            let text: String = host
                .lines()
                .filter(|l| !on_loopback(l))
                .map(|l| format!("{l}\n"))
                .collect();
            let note = (!text.lines().any(|l| nameserver(l).is_some())).then(|| {
                let servers: Vec<&str> = loopback.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
                format!(
                    "the host's name servers ({}) are on its loopback, which containers cannot reach, and {} \
                     lists no other: containers resolve no names. Name a reachable server in /etc/resolv.conf, or \
                     let systemd-resolved write its upstream servers there",
                    servers.join(", "),
                    SYSTEMD_UPSTREAM
                )
            });
            Resolv { text, note }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLVED: &str = "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";

    #[test]
    fn a_host_resolver_off_loopback_is_kept_as_it_is() {
        let host = "nameserver 10.255.255.53\nsearch example.org\n";
        for mode in [Mode::Bridge, Mode::Slirp, Mode::None] {
            assert_eq!(
                for_containers(mode, host, None),
                Resolv {
                    text: host.into(),
                    note: None
                }
            );
        }
    }

    #[test]
    fn rootless_containers_ask_slirp_instead_of_the_hosts_loopback() {
        let host = "nameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\noptions edns0\n";
        let r = for_containers(Mode::Slirp, host, None);
        assert_eq!(r.text, "nameserver 10.0.2.3\nnameserver 192.0.2.1\noptions edns0\n");
        assert_eq!(r.note, None);
    }

    #[test]
    fn bridged_containers_use_systemd_resolveds_upstream_servers() {
        let upstream = "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch lan\n";
        let r = for_containers(Mode::Bridge, RESOLVED, Some(upstream));
        assert_eq!(r.text, upstream);
        assert_eq!(r.note, None);
    }

    #[test]
    fn with_no_reachable_server_the_note_says_why_and_how_to_fix_it() {
        let r = for_containers(Mode::Bridge, RESOLVED, Some("nameserver 127.0.0.1\n"));
        assert_eq!(r.text, "# stub\noptions edns0 trust-ad\nsearch lan\n");
        let note = r.note.expect("a note");
        assert!(note.contains("127.0.0.53") && note.contains(SYSTEMD_UPSTREAM), "{note}");
        // Some servers left: no note.
        let mixed = "nameserver 127.0.0.53\nnameserver 192.0.2.1\n";
        assert_eq!(
            for_containers(Mode::Bridge, mixed, None),
            Resolv {
                text: "nameserver 192.0.2.1\n".into(),
                note: None
            }
        );
    }

    #[test]
    fn nameserver_lines_are_read_strictly() {
        assert_eq!(
            nameserver("nameserver 127.0.0.53"),
            Some("127.0.0.53".parse().expect("ip"))
        );
        assert_eq!(
            nameserver("nameserver fe80::1%eth0"),
            Some("fe80::1".parse().expect("ip"))
        );
        assert_eq!(nameserver("# nameserver 127.0.0.1"), None);
        assert_eq!(nameserver("nameserver"), None);
        assert_eq!(nameserver("nameserver not-an-ip"), None);
        assert!(!on_loopback("search 127.0.0.1"));
    }
}
