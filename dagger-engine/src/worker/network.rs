//! Container networking: every exec gets its own network namespace.
//!
//! With the default `bridge` mode a namespace holds a loopback device and an `eth0` veth whose peer sits on
//! the engine's bridge `drs0` (10.87.0.1/16); outbound traffic leaves through NAT (an iptables `MASQUERADE`
//! rule for the subnet), so containers reach the network the host reaches, as Docker containers do. The host's
//! loopback stays out of reach: `127.0.0.1` inside a container is the container's own, and packets to the
//! host's loopback addresses from another interface are dropped by the kernel. That is what keeps the engine's
//! session port (bound to 127.0.0.1) private to the host.
//!
//! `DAGGER_RS_NETWORK=none` gives every exec a namespace with nothing but loopback. If the bridge cannot be
//! set up (no `iptables`, no privileges) the engine says why once in its log and falls back to `none`.
//!
//! Links, addresses and routes are made over rtnetlink ([`netlink`]), not by running `ip`. A namespace is
//! made the way `ip netns add` makes one, on a thread of its own that is then discarded: the thread unshares
//! its network namespace and bind-mounts it at `/var/run/netns/<name>` (a shared mount, so runtimes in other
//! mount namespaces see it too). A netlink socket opened before the unshare still speaks for the host, one
//! opened after speaks for the new namespace. The NAT rule stays an `iptables` command: it is made once per
//! engine, and `iptables` writes to whichever backend (legacy or nftables) the host's other rules use, which a
//! netfilter library would have to guess.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;

mod netlink;

use netlink::Rtnl;

/// The bridge's name on the host.
pub const BRIDGE: &str = "drs0";
/// The bridge's subnet; the host side is `.0.1`.
pub const SUBNET: &str = "10.87.0.0/16";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 87, 0, 1);
/// The subnet's prefix length.
const PREFIX: u8 = 16;
/// Where named network namespaces are mounted (as `ip netns` does).
const NETNS_DIR: &str = "/var/run/netns";

/// How execs are networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A veth on the engine's bridge with NAT to the outside.
    Bridge,
    /// Loopback only.
    None,
}

/// The addresses this process has leased (the low 16 bits of `10.87.x.y`).
type InUse = Arc<Mutex<BTreeSet<u32>>>;

/// Per-engine network state: the mode, and the addresses in use.
#[derive(Debug)]
pub struct Network {
    mode: Mutex<Option<Mode>>,
    /// Namespaces made ahead of time, so an exec does not wait for one.
    pool: Mutex<Vec<Namespace>>,
    filling: std::sync::atomic::AtomicUsize,
    warned: std::sync::atomic::AtomicBool,
    in_use: InUse,
    setup_error: Mutex<Option<String>>,
}

/// A namespace for one exec; deleted by [`Network::remove`].
#[derive(Debug)]
pub struct Namespace {
    name: String,
    address: Option<u32>,
}

impl Namespace {
    /// The path runtimes join (`/var/run/netns/<name>`).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }
}

/// A namespace taken for one exec ([`Network::take`]): deleted in the background when dropped, so an exec
/// whose future is dropped part-way (its request was cancelled) leaves no namespace, veth or address behind.
#[derive(Debug)]
pub struct NetnsLease {
    ns: Option<Namespace>,
    network: Arc<Network>,
}

impl NetnsLease {
    /// The path runtimes join (`/var/run/netns/<name>`).
    pub fn path(&self) -> PathBuf {
        self.ns.as_ref().map(Namespace::path).unwrap_or_default()
    }
}

impl Drop for NetnsLease {
    fn drop(&mut self) {
        let Some(ns) = self.ns.take() else { return };
        let doomed = Doomed {
            ns: Some(ns),
            in_use: self.network.in_use.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            // Deleting a veth waits for the kernel: not on a runtime thread.
            Ok(handle) => drop(handle.spawn_blocking(move || drop(doomed))),
            // No runtime: delete it here, synchronously.
            Err(_) => drop(doomed),
        }
    }
}

/// A namespace to delete: deleted when dropped, so one whose deletion task never ran (its runtime shut down
/// first) is deleted all the same.
struct Doomed {
    ns: Option<Namespace>,
    in_use: InUse,
}

impl Drop for Doomed {
    fn drop(&mut self) {
        if let Some(ns) = self.ns.take() {
            remove_now(ns, &self.in_use, None);
        }
    }
}

/// `10.87.x.y` for the low 16 bits `n`.
fn ip_of(n: u32) -> Ipv4Addr {
    let [_, _, x, y] = n.to_be_bytes();
    Ipv4Addr::new(10, 87, x, y)
}

/// The host end of the veth of address `n`.
fn host_veth(n: u32) -> String {
    format!("drsv{n:x}")
}

/// Deletes namespace `name` (unmounts it and removes its file, as `ip netns delete` does); whether its file
/// was removed.
fn delete_namespace(name: &str) -> bool {
    let path = Path::new(NETNS_DIR).join(name);
    let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
    std::fs::remove_file(&path).is_ok()
}

/// Deletes a namespace's veth, then the namespace, then frees its address, synchronously. `host` is a netlink
/// socket of the host's network namespace; without one, one is opened (so the calling thread must be in the
/// host's).
fn remove_now(ns: Namespace, in_use: &Mutex<BTreeSet<u32>>, host: Option<&mut Rtnl>) {
    // The host side of the veth goes first, and synchronously: deleting only the namespace leaves the kernel
    // to remove the pair later, and the address (and with it the link's name) may be taken again before that.
    // A link that cannot be deleted is deleted by whoever leases its address next (see `build`), or by the
    // next engine's start-up collection.
    if let Some(n) = ns.address {
        let name = host_veth(n);
        match host {
            Some(r) => drop(r.delete_link(&name)),
            None => drop(Rtnl::open().map(|mut r| r.delete_link(&name))),
        }
    }
    delete_namespace(&ns.name);
    if let Some(n) = ns.address {
        in_use.lock().remove(&n);
        let _ = std::fs::remove_file(lease_path(n));
    }
}

/// Whether [`prepare_netns_dir`] has succeeded in this process.
static NETNS_DIR_READY: Mutex<bool> = Mutex::new(false);

/// Makes `/var/run/netns` a shared mount point, once per process, as `ip netns add` does: a namespace
/// mounted there later is then seen in every mount namespace that shares it (a runtime's among them).
fn prepare_netns_dir() -> Result<(), String> {
    use rustix::mount::{MountPropagationFlags as P, mount_bind_recursive, mount_change};
    let mut ready = NETNS_DIR_READY.lock();
    if *ready {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    let fail = |e: &dyn std::fmt::Display| format!("cannot prepare {NETNS_DIR}: {e} (the engine needs root)");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_DIR)
        .map_err(|e| fail(&e))?;
    if let Err(e) = mount_change(NETNS_DIR, P::SHARED | P::REC) {
        // Not a mount point yet: make it one (bound onto itself), then shared.
        if e != rustix::io::Errno::INVAL {
            return Err(fail(&e));
        }
        mount_bind_recursive(NETNS_DIR, NETNS_DIR).map_err(|e| fail(&e))?;
        mount_change(NETNS_DIR, P::SHARED | P::REC).map_err(|e| fail(&e))?;
    }
    *ready = true;
    Ok(())
}

/// Makes namespace `ns` on the calling thread, which is left in it (so the thread must be one of its own,
/// discarded after). `host` is a netlink socket opened in the host's network namespace.
fn build(ns: &Namespace, host: &mut Rtnl) -> Result<(), String> {
    let path = ns.path();
    // What the host side needs, while this thread is still in the host's namespace.
    let bridge = match ns.address {
        Some(n) => {
            // The address is ours now, so a link of that name is left from an engine that died mid-way.
            host.delete_link(&host_veth(n))?;
            let index = host.link_index(BRIDGE)?;
            Some(index.ok_or_else(|| format!("the bridge {BRIDGE} is gone; restart the engine to make it again"))?)
        }
        None => None,
    };
    prepare_netns_dir()?;
    rustix::fs::open(
        &path,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::CREATE
            | rustix::fs::OFlags::EXCL
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot create a network namespace: {e} (the engine needs root)"))?;
    rustix::mount::mount_bind("/proc/thread-self/ns/net", &path)
        .map_err(|e| format!("cannot mount the network namespace at {}: {e}", path.display()))?;
    let mut inside = Rtnl::open()?;
    inside.set_up("lo")?;
    let (Some(n), Some(bridge)) = (ns.address, bridge) else {
        return Ok(());
    };
    let this_ns =
        std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| format!("cannot open the namespace: {e}"))?;
    host.add_veth(&host_veth(n), bridge, "eth0", this_ns.as_fd())?;
    let eth0 = inside
        .link_index("eth0")?
        .ok_or("the veth's `eth0` end did not appear in the namespace")?;
    inside.add_address(eth0, ip_of(n), PREFIX)?;
    inside.set_up("eth0")?;
    inside.add_default_route(GATEWAY)?;
    Ok(())
}

fn run_sync(cmd: &str, args: &[&str]) -> Result<bool, String> {
    std::process::Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .map_err(|e| format!("cannot run `{cmd}` ({e})"))
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Network {
    /// Network state; the bridge is set up on first use.
    pub fn new() -> Self {
        Self {
            mode: Mutex::new(None),
            pool: Mutex::default(),
            filling: std::sync::atomic::AtomicUsize::new(0),
            warned: std::sync::atomic::AtomicBool::new(false),
            in_use: InUse::default(),
            setup_error: Mutex::default(),
        }
    }

    /// Network state that gives every namespace loopback only, as `DAGGER_RS_NETWORK=none` does.
    pub fn loopback_only() -> Self {
        let network = Self::new();
        *network.mode.lock() = Some(Mode::None);
        network
    }

    /// Why bridge networking is off, if it is.
    pub fn setup_error(&self) -> Option<String> {
        self.setup_error.lock().clone()
    }

    /// Why bridge networking is off, the first time it is asked (to be reported once).
    pub fn take_setup_warning(&self) -> Option<String> {
        use std::sync::atomic::Ordering;
        if self.warned.swap(true, Ordering::Relaxed) {
            return None;
        }
        self.setup_error()
    }

    fn mode(&self) -> Mode {
        let mut mode = self.mode.lock();
        if let Some(m) = *mode {
            return m;
        }
        let wanted = std::env::var("DAGGER_RS_NETWORK").unwrap_or_default();
        let m = if wanted == "none" {
            Mode::None
        } else {
            match setup_bridge() {
                Ok(()) => Mode::Bridge,
                Err(e) => {
                    *self.setup_error.lock() = Some(e);
                    Mode::None
                }
            }
        };
        *mode = Some(m);
        m
    }

    /// A namespace for one exec: a ready one from the pool when there is one (the pool is topped up in the
    /// background), else a new one.
    ///
    /// It is deleted when the returned [`NetnsLease`] is dropped or [released](Self::release).
    pub async fn take(self: &Arc<Self>) -> Result<NetnsLease, String> {
        let ready = self.pool.lock().pop();
        self.refill();
        let ns = match ready {
            Some(ns) => ns,
            None => self.create().await?,
        };
        Ok(NetnsLease {
            ns: Some(ns),
            network: self.clone(),
        })
    }

    /// Deletes a used namespace in the background (as dropping it does).
    pub fn release(self: &Arc<Self>, ns: NetnsLease) {
        drop(ns);
    }

    fn refill(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let have = self.pool.lock().len();
        let filling = self.filling.load(Ordering::Relaxed);
        for _ in (have + filling)..POOL {
            self.filling.fetch_add(1, Ordering::Relaxed);
            let this = self.clone();
            tokio::spawn(async move {
                if let Ok(ns) = this.create().await {
                    this.pool.lock().push(ns);
                }
                this.filling.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// Takes a free container address (the low 16 bits of `10.87.x.y`) for this process.
    fn lease_address(&self) -> Result<u32, String> {
        let mut used = self.in_use.lock();
        let n = (2..0xfffe)
            .filter(|n| n & 0xff != 0 && n & 0xff != 0xff && !used.contains(n))
            .find(|n| lease(*n))
            .ok_or("no free container addresses left in 10.87.0.0/16")?;
        used.insert(n);
        Ok(n)
    }

    /// Creates a namespace for one exec.
    ///
    /// The work is done on a thread of its own, which hands the namespace over when it is ready, or deletes
    /// it when it could not be made or nobody waits for it any more (this future was dropped).
    pub async fn create(&self) -> Result<Namespace, String> {
        let name = format!("drs-{}", crate::worker::snapshot::unique());
        let address = match self.mode() {
            Mode::None => None,
            Mode::Bridge => Some(self.lease_address()?),
        };
        let in_use = self.in_use.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new().name("drs-netns".into()).spawn(move || {
            let ns = Namespace { name, address };
            // Opened before the thread leaves the host's namespace: it speaks for the host throughout.
            let mut host = match Rtnl::open() {
                Ok(h) => h,
                Err(e) => {
                    remove_now(ns, &in_use, None);
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            match build(&ns, &mut host) {
                Ok(()) => {
                    if let Err(Ok(ns)) = tx.send(Ok(ns)) {
                        remove_now(ns, &in_use, Some(&mut host));
                    }
                }
                Err(e) => {
                    remove_now(ns, &in_use, Some(&mut host));
                    let _ = tx.send(Err(e));
                }
            }
        });
        if let Err(e) = spawned {
            if let Some(n) = address {
                self.in_use.lock().remove(&n);
                let _ = std::fs::remove_file(lease_path(n));
            }
            return Err(format!("cannot start a thread to make the network namespace: {e}"));
        }
        rx.await
            .map_err(|_| "the thread making the network namespace stopped".to_owned())?
    }

    /// Deletes a namespace (and its veth) and frees its address.
    pub async fn remove(&self, ns: Namespace) {
        let doomed = Doomed {
            ns: Some(ns),
            in_use: self.in_use.clone(),
        };
        let _ = tokio::task::spawn_blocking(move || drop(doomed)).await;
    }
}

/// Where address leases live: shared by every engine on the host, so two engines never hand out one address.
const LEASES: &str = "/run/dagger-rs/leases";

fn lease_path(n: u32) -> PathBuf {
    PathBuf::from(LEASES).join(n.to_string())
}

/// Takes address `n` for this process, reclaiming a lease whose process is gone.
fn lease(n: u32) -> bool {
    let path = lease_path(n);
    let _ = std::fs::create_dir_all(LEASES);
    let me = std::process::id().to_string();
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                use std::io::Write;
                return f.write_all(me.as_bytes()).is_ok();
            }
            Err(_) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                // An empty lease is being written by its taker right now (create, then write): it is only
                // free once it has stayed empty far longer than that takes. Taking it over at once let two
                // engines share an address, and the second deleted the first one's veth as a leftover.
                let alive = if holder.trim().is_empty() {
                    std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().map_or(true, |age| age < std::time::Duration::from_secs(60)))
                } else {
                    std::path::Path::new("/proc").join(holder.trim()).exists()
                };
                if alive {
                    return false;
                }
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    false
}

/// Deletes what engines that are gone left on the host (see [`crate::worker::cleanup`]): their namespaces (named
/// `drs-<pid>-…`), the host ends of veths whose address lease is not held by a live engine, and those leases.
/// `dead` says whether the engine with a process ID is gone.
pub(crate) fn collect_dead(dead: &mut dyn FnMut(u32) -> bool) -> crate::worker::collected::Collected {
    let mut c = crate::worker::collected::Collected::default();
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let owned_by_dead = name
                .strip_prefix("drs-")
                .and_then(crate::worker::collected::owner_pid)
                .is_some_and(&mut *dead);
            if owned_by_dead && delete_namespace(&name) {
                c.namespaces += 1;
            }
        }
    }
    // Whether lease `n` is free: no file, or a holder that is gone. A lease is written just after it is
    // created: an empty one is someone's for a moment, and only a stale empty one is free.
    let mut lease_free = |n: u32| -> bool {
        let path = lease_path(n);
        let Ok(holder) = std::fs::read_to_string(&path) else {
            return !path.exists();
        };
        match holder.trim().parse::<u32>() {
            Ok(pid) => dead(pid),
            Err(_) => std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(60))),
        }
    };
    let mut rtnl = None;
    if let Ok(links) = std::fs::read_dir("/sys/class/net") {
        for l in links.flatten() {
            let name = l.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("drsv").and_then(|h| u32::from_str_radix(h, 16).ok()) else {
                continue;
            };
            if !lease_free(n) {
                continue;
            }
            if rtnl.is_none() {
                rtnl = Rtnl::open().ok();
            }
            if rtnl.as_mut().is_some_and(|r| r.delete_link(&name).unwrap_or(false)) {
                c.veths += 1;
            }
        }
    }
    if let Ok(leases) = std::fs::read_dir(LEASES) {
        for l in leases.flatten() {
            let Some(n) = l.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if l.path().exists() && lease_free(n) && std::fs::remove_file(l.path()).is_ok() {
                c.leases += 1;
            }
        }
    }
    c
}

/// How many namespaces are kept ready.
const POOL: usize = 2;

impl Drop for Network {
    fn drop(&mut self) {
        let pooled = std::mem::take(&mut *self.pool.lock());
        for ns in pooled {
            delete_namespace(&ns.name);
            if let Some(n) = ns.address {
                let _ = std::fs::remove_file(lease_path(n));
            }
        }
    }
}

/// Creates the bridge, enables forwarding and adds the NAT rule, each only when missing.
fn setup_bridge() -> Result<(), String> {
    let mut rtnl = Rtnl::open()?;
    if rtnl.link_index(BRIDGE)?.is_none() {
        let made = rtnl.add_bridge(BRIDGE).and_then(|()| {
            let index = rtnl.link_index(BRIDGE)?.unwrap_or(0);
            rtnl.add_address(index, GATEWAY, PREFIX)
        });
        // Another engine may have made it at the same moment.
        if let Err(e) = made
            && rtnl.link_index(BRIDGE)?.is_none()
        {
            return Err(format!("cannot create the bridge {BRIDGE}: {e}"));
        }
    }
    rtnl.set_up(BRIDGE)?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| format!("cannot enable IPv4 forwarding: {e}"))?;
    let rule = [
        "-t",
        "nat",
        "POSTROUTING",
        "-s",
        SUBNET,
        "!",
        "-o",
        BRIDGE,
        "-j",
        "MASQUERADE",
    ];
    let mut check_args = vec!["-t", "nat", "-C"];
    check_args.extend_from_slice(&rule[2..]);
    let present = run_sync("iptables", &check_args).map_err(|e| format!("{e}: install the Debian package iptables"))?;
    if !present {
        let mut add = vec!["-t", "nat", "-A"];
        add.extend_from_slice(&rule[2..]);
        if !run_sync("iptables", &add)? {
            return Err("cannot add the NAT rule for container traffic (iptables failed)".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_veth_names_follow_the_lease_number() {
        assert_eq!(ip_of(2), Ipv4Addr::new(10, 87, 0, 2));
        assert_eq!(ip_of(0x1_2a), Ipv4Addr::new(10, 87, 1, 42));
        assert_eq!(ip_of(0xfffd), Ipv4Addr::new(10, 87, 255, 253));
        assert_eq!(host_veth(0x1_2a), "drsv12a");
        assert!(host_veth(0xfffd).len() < 16, "fits a link name (IFNAMSIZ)");
    }

    /// Runs `f` on a thread of its own in a fresh network namespace (root only): the host's links are not
    /// touched.
    fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            f()
        })
        .join()
        .expect("the test thread")
    }

    #[test]
    fn the_bridge_its_address_and_the_nat_rule_are_made_when_missing() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (first, second, index, addresses, rules) = in_fresh_netns(|| {
            let mut rtnl = Rtnl::open().expect("netlink");
            assert_eq!(rtnl.link_index(BRIDGE).expect("lookup"), None, "a fresh namespace");
            let first = setup_bridge();
            // Again, as a second engine would: nothing is added twice.
            let second = setup_bridge();
            let index = rtnl.link_index(BRIDGE).expect("lookup");
            let out = |cmd: &str, args: &[&str]| {
                let o = std::process::Command::new(cmd).args(args).output().expect(cmd);
                String::from_utf8_lossy(&o.stdout).into_owned()
            };
            let addresses = out("ip", &["-4", "-o", "addr", "show", "dev", BRIDGE]);
            let rules = out("iptables", &["-t", "nat", "-S", "POSTROUTING"]);
            (first, second, index, addresses, rules)
        });
        assert_eq!(first, Ok(()));
        assert_eq!(second, Ok(()));
        assert!(index.is_some(), "the bridge exists");
        assert_eq!(addresses.matches("inet 10.87.0.1/16").count(), 1, "{addresses}");
        let nat = format!("-A POSTROUTING -s {SUBNET} ! -o {BRIDGE} -j MASQUERADE");
        assert_eq!(rules.matches(&nat).count(), 1, "{rules}");
    }

    /// The namespaces of this process under `/var/run/netns`.
    fn mine() -> Vec<String> {
        let prefix = format!("drs-{}-", std::process::id());
        std::fs::read_dir(NETNS_DIR)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Held by the tests that make namespaces, so each sees only its own.
    static NAMESPACES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn a_namespace_is_made_and_deleted_without_running_ip() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let _one = NAMESPACES.lock().await;
        let network = Network::new();
        *network.mode.lock() = Some(Mode::None);
        let ns = network.create().await.expect("a namespace");
        let path = ns.path();
        // It is a network namespace of its own: not the test's.
        let own = std::fs::metadata("/proc/self/ns/net").expect("own namespace");
        let made = std::fs::metadata(&path).expect("the namespace file");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(own.dev(), made.dev(), "a namespace file (nsfs) is mounted there");
        assert_ne!(own.ino(), made.ino());
        let name = path.file_name().expect("a name").to_string_lossy().into_owned();
        network.remove(ns).await;
        assert!(!path.exists(), "{name} is deleted");
        assert!(!delete_namespace(&name), "nothing left to delete");
    }

    #[tokio::test]
    async fn a_namespace_whose_creation_is_abandoned_is_deleted_by_its_thread() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let _one = NAMESPACES.lock().await;
        let network = Network::new();
        *network.mode.lock() = Some(Mode::None);
        // Polled once (the thread starts, and waits for the lock held here), then dropped: nobody takes the
        // namespace the thread goes on to make.
        let gate = NETNS_DIR_READY.lock();
        let abandoned = futures_util::FutureExt::now_or_never(network.create());
        assert!(abandoned.is_none(), "the creation was still under way: {abandoned:?}");
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .map(|d| {
                    d.flatten()
                        .filter(|t| {
                            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "drs-netns")
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // The thread has started (and waits for the lock).
        while threads() == 0 {
            assert!(std::time::Instant::now() < deadline, "the thread did not start");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(gate);
        // Once the thread is gone, it has made the namespace and, finding nobody to hand it to, deleted it.
        while threads() > 0 {
            assert!(std::time::Instant::now() < deadline, "the thread is still at work");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(mine().is_empty(), "left behind: {:?}", mine());
    }
}
