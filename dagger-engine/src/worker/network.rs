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
//! In rootless mode (the engine is root of a user namespace, see [`crate::worker::userns`]) there is no bridge:
//! the host's network namespace is not the engine's to add links to. Each exec's namespace gets a `tap0`
//! device served by a `slirp4netns` process of its own instead (`10.0.2.100/24`, gateway `10.0.2.2`), which
//! carries the container's connections out as ordinary sockets of the user — the way rootless Podman does.
//! It runs with `--disable-host-loopback`, so the host's loopback stays out of reach here too, in its own
//! sandbox (a mount namespace without the host's files) and with a seccomp filter. It ends when its namespace
//! is deleted, or when the engine dies (its `--exit-fd` is a pipe the engine holds). The namespaces are
//! mounted under the cache directory (`tmp/netns/`) instead of `/var/run/netns`, inside the engine's own mount
//! namespace; without `slirp4netns` (or without access to `/dev/net/tun`) execs get loopback only, and the
//! engine says why once. Containers cannot reach each other there: the engine reaches services by making
//! sockets inside the namespaces, as root of the user namespace that owns them (the `inside` submodule).
//!
//! Links, addresses and routes are made over rtnetlink (the `netlink` submodule), not by running `ip`. A namespace is
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

mod dns;
pub(crate) mod inside;
mod netlink;

use netlink::Rtnl;

/// The bridge's name on the host.
pub const BRIDGE: &str = "drs0";
/// The bridge's subnet; the host side is `.0.1`.
pub const SUBNET: &str = "10.87.0.0/16";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 87, 0, 1);
/// The subnet's prefix length.
const PREFIX: u8 = 16;
/// The address `slirp4netns` gives a rootless container (on its `tap0`).
pub const SLIRP_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// Where named network namespaces are mounted (as `ip netns` does).
const NETNS_DIR: &str = "/var/run/netns";

/// How execs are networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A veth on the engine's bridge with NAT to the outside.
    Bridge,
    /// A `tap0` served by a `slirp4netns` process (rootless mode).
    Slirp,
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
    /// Whether the note that containers resolve no names was made.
    dns_warned: std::sync::atomic::AtomicBool,
    /// That note, until it is taken.
    dns_note: Mutex<Option<String>>,
    in_use: InUse,
    setup_error: Mutex<Option<String>>,
    /// Where namespaces are mounted: `/var/run/netns` as root, a directory of the engine's when rootless.
    dir: PathBuf,
    /// The `slirp4netns` binary, in [`Mode::Slirp`].
    slirp: Mutex<Option<PathBuf>>,
}

/// A namespace for one exec; deleted by [`Network::remove`].
#[derive(Debug)]
pub struct Namespace {
    name: String,
    dir: PathBuf,
    address: Option<u32>,
    /// The `slirp4netns` process serving it, in [`Mode::Slirp`].
    slirp: Option<Slirp>,
}

impl Namespace {
    /// The path runtimes join (`/var/run/netns/<name>`, or under the engine's directory when rootless).
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// A `slirp4netns` process: it exits when the pipe of its `--exit-fd` closes, so dropping this ends it, and
/// it is killed as well, should it not.
#[derive(Debug)]
struct Slirp {
    child: tokio::process::Child,
    exit: Option<tokio::process::ChildStdin>,
}

impl Drop for Slirp {
    fn drop(&mut self) {
        self.exit = None;
        let _ = self.child.start_kill();
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

    /// The namespace's address on the bridge (`None` without one: loopback only, or rootless).
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.ns.as_ref().and_then(|ns| ns.address).map(ip_of)
    }

    /// The namespace's own address besides loopback, as seen inside it: its address on the bridge, or, served
    /// by `slirp4netns`, [`SLIRP_ADDRESS`]; `None` with loopback only.
    pub fn own_address(&self) -> Option<Ipv4Addr> {
        let ns = self.ns.as_ref()?;
        match (ns.address, &ns.slirp) {
            (Some(n), _) => Some(ip_of(n)),
            (None, Some(_)) => Some(SLIRP_ADDRESS),
            (None, None) => None,
        }
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

/// Deletes the namespace at `path` (unmounts it and removes its file, as `ip netns delete` does); whether
/// its file was removed.
fn delete_namespace(path: &Path) -> bool {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    std::fs::remove_file(path).is_ok()
}

/// Deletes a namespace's veth, then the namespace, then frees its address, synchronously. `host` is a netlink
/// socket of the host's network namespace; without one, one is opened (so the calling thread must be in the
/// host's).
fn remove_now(mut ns: Namespace, in_use: &Mutex<BTreeSet<u32>>, host: Option<&mut Rtnl>) {
    // Its slirp4netns first: it holds the namespace's tap device.
    ns.slirp = None;
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
    delete_namespace(&ns.path());
    if let Some(n) = ns.address {
        in_use.lock().remove(&n);
        let _ = std::fs::remove_file(lease_path(n));
    }
}

/// The directories [`prepare_netns_dir`] has prepared in this process.
static NETNS_DIR_READY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Prepares the directory namespaces are mounted in, once per process. As root that is `/var/run/netns`, made
/// a shared mount point as `ip netns add` does: a namespace mounted there later is then seen in every mount
/// namespace that shares it (a runtime's among them). Rootless, it is a private directory of the engine's,
/// in a mount namespace of its own with the runtime it starts.
fn prepare_netns_dir(dir: &Path) -> Result<(), String> {
    use rustix::mount::{MountPropagationFlags as P, mount_bind_recursive, mount_change};
    let mut ready = NETNS_DIR_READY.lock();
    if ready.iter().any(|d| d == dir) {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    let rootless = crate::worker::userns::is_rootless();
    let fail = |e: &dyn std::fmt::Display| {
        let why = if rootless { "" } else { " (the engine needs root)" };
        format!("cannot prepare {}: {e}{why}", dir.display())
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(if rootless { 0o700 } else { 0o755 })
        .create(dir)
        .map_err(|e| fail(&e))?;
    if rootless {
        // A directory someone else made first (in the shared temporary directory) is not used.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(&e))?;
        if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
            return Err(fail(&"not a private directory of the engine's user"));
        }
    }
    if !rootless && let Err(e) = mount_change(dir, P::SHARED | P::REC) {
        // Not a mount point yet: make it one (bound onto itself), then shared.
        if e != rustix::io::Errno::INVAL {
            return Err(fail(&e));
        }
        mount_bind_recursive(dir, dir).map_err(|e| fail(&e))?;
        mount_change(dir, P::SHARED | P::REC).map_err(|e| fail(&e))?;
    }
    ready.push(dir.to_owned());
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
    prepare_netns_dir(&ns.dir)?;
    rustix::fs::open(
        &path,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::CREATE
            | rustix::fs::OFlags::EXCL
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        let why = if crate::worker::userns::is_rootless() {
            ""
        } else {
            " (the engine needs root)"
        };
        format!("cannot create a network namespace: {e}{why}")
    })?;
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
    /// Network state; the bridge (or, rootless, `slirp4netns`) is set up on first use. Rootless, namespaces
    /// are mounted in a directory of this process's under the system's temporary directory; an engine uses
    /// [`Network::for_cache`] instead.
    pub fn new() -> Self {
        let dir = if crate::worker::userns::is_rootless() {
            std::env::temp_dir().join(format!("drs-netns-{}", std::process::id()))
        } else {
            PathBuf::from(NETNS_DIR)
        };
        Self::in_dir(dir)
    }

    /// Network state for an engine on the cache directory `cache`: as [`Network::new`], but rootless the
    /// namespaces are mounted under `<cache>/tmp/netns/`, where the next engine collects what a dead one
    /// left.
    pub fn for_cache(cache: &Path) -> Self {
        if crate::worker::userns::is_rootless() {
            Self::in_dir(cache.join("tmp").join(ROOTLESS_NETNS))
        } else {
            Self::new()
        }
    }

    fn in_dir(dir: PathBuf) -> Self {
        Self {
            mode: Mutex::new(None),
            pool: Mutex::default(),
            filling: std::sync::atomic::AtomicUsize::new(0),
            warned: std::sync::atomic::AtomicBool::new(false),
            dns_warned: std::sync::atomic::AtomicBool::new(false),
            dns_note: Mutex::default(),
            in_use: InUse::default(),
            setup_error: Mutex::default(),
            dir,
            slirp: Mutex::default(),
        }
    }

    /// How execs are networked: decided on first use (setting up what the mode needs), then kept.
    pub fn current_mode(&self) -> Mode {
        self.mode()
    }

    /// Network state that gives every namespace loopback only, as `DAGGER_RS_NETWORK=none` does.
    pub fn loopback_only() -> Self {
        let network = Self::new();
        *network.mode.lock() = Some(Mode::None);
        network
    }

    /// Network state fixed to `mode`, without setting anything up (tests of what each mode allows).
    #[cfg(test)]
    pub(crate) fn fixed(mode: Mode) -> Self {
        let network = Self::new();
        *network.mode.lock() = Some(mode);
        network
    }

    /// Why bridge networking is off, if it is.
    pub fn setup_error(&self) -> Option<String> {
        self.setup_error.lock().clone()
    }

    /// The `/etc/resolv.conf` containers get (see the `dns` submodule): the host's, with name servers on its
    /// loopback replaced by ones a container reaches; `None` when the host has no `/etc/resolv.conf`. When
    /// containers will resolve no names, [`Network::take_dns_warning`] says so once.
    pub fn resolv_conf(&self) -> Option<String> {
        use std::sync::atomic::Ordering;
        let host = std::fs::read_to_string("/etc/resolv.conf").ok()?;
        let upstream = std::fs::read_to_string(dns::SYSTEMD_UPSTREAM).ok();
        let r = dns::for_containers(self.mode(), &host, upstream.as_deref());
        if let Some(note) = r.note
            && !self.dns_warned.swap(true, Ordering::Relaxed)
        {
            *self.dns_note.lock() = Some(note);
        }
        Some(r.text)
    }

    /// Why containers resolve no names, once (see [`Network::resolv_conf`]).
    pub fn take_dns_warning(&self) -> Option<String> {
        self.dns_note.lock().take()
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
        } else if crate::worker::userns::is_rootless() {
            match find_slirp() {
                Ok(slirp) => {
                    *self.slirp.lock() = Some(slirp);
                    Mode::Slirp
                }
                Err(e) => {
                    *self.setup_error.lock() = Some(e);
                    Mode::None
                }
            }
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
            Some(ns) if is_namespace_mount(&ns.path()) => ns,
            // Something unmounted it while it waited (a tool that remounts `/run/netns` in a namespace of its
            // own, say): a runtime could not join it. It goes as a used one does, and a new one is made.
            Some(stale) => {
                drop(NetnsLease {
                    ns: Some(stale),
                    network: self.clone(),
                });
                self.create().await?
            }
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
        let mode = self.mode();
        let address = match mode {
            Mode::None | Mode::Slirp => None,
            Mode::Bridge => Some(self.lease_address()?),
        };
        let in_use = self.in_use.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new().name("drs-netns".into()).spawn(move || {
            let ns = Namespace {
                name,
                dir,
                address,
                slirp: None,
            };
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
        let ns = rx
            .await
            .map_err(|_| "the thread making the network namespace stopped".to_owned())??;
        if mode != Mode::Slirp {
            return Ok(ns);
        }
        // Should starting slirp4netns fail, or this future be dropped while it starts, the namespace is deleted
        // (and the process killed).
        let path = ns.path();
        let mut doomed = Doomed {
            ns: Some(ns),
            in_use: self.in_use.clone(),
        };
        let slirp = self.slirp.lock().clone().unwrap_or_default();
        let served = start_slirp(&slirp, &path).await?;
        let mut ns = doomed.ns.take().ok_or("internal error: the namespace is gone")?;
        ns.slirp = Some(served);
        Ok(ns)
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

/// The directory under a cache directory's `tmp/` where a rootless engine mounts its namespaces.
pub(crate) const ROOTLESS_NETNS: &str = "netns";

/// The `slirp4netns` binary, checked to be usable: installed, and `/dev/net/tun` open to this user.
fn find_slirp() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let slirp = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("slirp4netns"))
        .find(|p| p.is_file())
        .ok_or(
            "rootless containers reach the network through slirp4netns, which is not installed: `sudo apt-get \
                install slirp4netns`",
        )?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| {
            format!(
                "slirp4netns cannot open /dev/net/tun ({e}): give users access as Debian does by default (`sudo \
                 chmod 0666 /dev/net/tun`), or load the module (`sudo modprobe tun`)"
            )
        })?;
    Ok(slirp)
}

/// Starts `slirp4netns` for the namespace at `netns` and waits until it has configured `tap0` (an address,
/// the route through `10.0.2.2`): it writes one byte, `1`, to its `--ready-fd` (here its standard output,
/// which it closes then). Standard input is its `--exit-fd`.
async fn start_slirp(slirp: &Path, netns: &Path) -> Result<Slirp, String> {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new(slirp)
        .args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
            "--exit-fd=0",
            "--ready-fd=1",
            "--netns-type=path",
        ])
        .arg(netns)
        .arg("tap0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", slirp.display()))?;
    let exit = child.stdin.take();
    let mut ready = Vec::new();
    let read = match child.stdout.take() {
        Some(mut out) => tokio::time::timeout(std::time::Duration::from_secs(30), out.read_to_end(&mut ready)).await,
        None => Ok(Ok(0)),
    };
    // Ready: the byte came, then the end of the stream (messages it prints to standard output are buffered,
    // and lost when it closes that). Anything else: it failed, and says why on standard error.
    if matches!(read, Ok(Ok(_))) && ready.last() == Some(&b'1') {
        drop(child.stderr.take());
        return Ok(Slirp { child, exit });
    }
    let _ = child.start_kill();
    let mut why = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), err.read_to_end(&mut why)).await;
    }
    let status = child.wait().await.map(|s| s.to_string()).unwrap_or_default();
    let why = String::from_utf8_lossy(&why).trim().replace('\n', "; ");
    Err(match read {
        Err(_) => format!("slirp4netns did not configure the container's network within 30 s: {why}"),
        _ => format!("slirp4netns failed ({status}): {why}"),
    })
}

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
/// Whether `path` is a network namespace mounted there (an `nsfs` file), as a runtime needs to join it.
fn is_namespace_mount(path: &Path) -> bool {
    /// `NSFS_MAGIC` of the kernel's `magic.h`.
    const NSFS_MAGIC: u64 = 0x6e73_6673;
    rustix::fs::statfs(path).is_ok_and(|fs| fs.f_type as u64 == NSFS_MAGIC)
}

pub(crate) fn collect_dead(dead: &mut dyn FnMut(u32) -> bool) -> crate::worker::collected::Collected {
    let mut c = collect_dead_namespaces(Path::new(NETNS_DIR), dead);
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

/// Deletes the namespaces in `dir` (named `drs-<pid>-…`) whose engine is gone, as `dead` says. Rootless ones
/// (under a cache directory) are plain files by then: their mounts went with the dead engine's mount
/// namespace, and their slirp4netns processes with the engine.
pub(crate) fn collect_dead_namespaces(
    dir: &Path,
    dead: &mut dyn FnMut(u32) -> bool,
) -> crate::worker::collected::Collected {
    let mut c = crate::worker::collected::Collected::default();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let owned_by_dead = name
                .strip_prefix("drs-")
                .and_then(crate::worker::collected::owner_pid)
                .is_some_and(&mut *dead);
            if owned_by_dead && delete_namespace(&e.path()) {
                c.namespaces += 1;
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
        for mut ns in pooled {
            ns.slirp = None;
            delete_namespace(&ns.path());
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
    // Containers reach the session's services across the bridge. Where bridged packets go through iptables
    // (`br_netfilter`) and the host forwards nothing by default (Docker sets that policy), they would be
    // dropped: traffic from the bridge to itself is accepted ahead of other rules.
    let forward = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];
    let mut check = vec!["-C"];
    check.extend_from_slice(&forward);
    if !run_sync("iptables", &check)? {
        let mut insert = vec!["-I"];
        insert.extend_from_slice(&forward);
        if !run_sync("iptables", &insert)? {
            return Err(
                "cannot add the rule that lets containers reach services on the bridge (iptables failed)".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mounted_namespace_can_be_joined() {
        // This process's own network namespace file is one; a plain file left where a mount was is not.
        assert!(is_namespace_mount(Path::new("/proc/self/ns/net")));
        let dir = tempfile::tempdir().expect("dir");
        let stale = dir.path().join("drs-1-1-0");
        std::fs::write(&stale, b"").expect("file");
        assert!(!is_namespace_mount(&stale));
        assert!(!is_namespace_mount(&dir.path().join("missing")));
    }

    #[test]
    fn addresses_and_veth_names_follow_the_lease_number() {
        assert_eq!(ip_of(2), Ipv4Addr::new(10, 87, 0, 2));
        assert_eq!(ip_of(0x1_2a), Ipv4Addr::new(10, 87, 1, 42));
        assert_eq!(ip_of(0xfffd), Ipv4Addr::new(10, 87, 255, 253));
        assert_eq!(host_veth(0x1_2a), "drsv12a");
        assert!(host_veth(0xfffd).len() < 16, "fits a link name (IFNAMSIZ)");
    }

    #[test]
    fn a_dead_rootless_engines_namespace_files_are_collected_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let (live, dead) = (std::process::id(), std::process::id() + 1_000_000);
        for pid in [live, dead] {
            std::fs::write(dir.path().join(format!("drs-{pid}-0-ab")), "").expect("namespace file");
        }
        std::fs::write(dir.path().join("other"), "").expect("not a namespace");
        let c = collect_dead_namespaces(dir.path(), &mut |pid| pid == dead);
        assert_eq!(c.namespaces, 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [format!("drs-{live}-0-ab"), "other".to_owned()]);
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
        let (first, second, index, addresses, rules, forward_rules) = in_fresh_netns(|| {
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
            let forward_rules = out("iptables", &["-S", "FORWARD"]);
            (first, second, index, addresses, rules, forward_rules)
        });
        assert_eq!(first, Ok(()));
        assert_eq!(second, Ok(()));
        assert!(index.is_some(), "the bridge exists");
        assert_eq!(addresses.matches("inet 10.87.0.1/16").count(), 1, "{addresses}");
        let nat = format!("-A POSTROUTING -s {SUBNET} ! -o {BRIDGE} -j MASQUERADE");
        assert_eq!(rules.matches(&nat).count(), 1, "{rules}");
        let forward = format!("-A FORWARD -i {BRIDGE} -o {BRIDGE} -j ACCEPT");
        assert_eq!(forward_rules.matches(&forward).count(), 1, "{forward_rules}");
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
        assert!(!delete_namespace(&path), "nothing left to delete");
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
