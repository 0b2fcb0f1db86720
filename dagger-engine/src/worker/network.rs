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
//! set up (no `ip`/`iptables`, no privileges) the engine says why once in its log and falls back to `none`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::io::AsyncWriteExt;

/// The bridge's name on the host.
pub const BRIDGE: &str = "drs0";
/// The bridge's subnet; the host side is `.0.1`.
pub const SUBNET: &str = "10.87.0.0/16";
const GATEWAY: &str = "10.87.0.1";

/// How execs are networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A veth on the engine's bridge with NAT to the outside.
    Bridge,
    /// Loopback only.
    None,
}

/// Per-engine network state: the mode, and the addresses in use.
#[derive(Debug)]
pub struct Network {
    mode: Mutex<Option<Mode>>,
    /// Namespaces made ahead of time, so an exec does not wait for one.
    pool: Mutex<Vec<Namespace>>,
    filling: std::sync::atomic::AtomicUsize,
    warned: std::sync::atomic::AtomicBool,
    in_use: Mutex<BTreeSet<u32>>,
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
        PathBuf::from("/var/run/netns").join(&self.name)
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
        let network = self.network.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { network.remove(ns).await });
            }
            // No runtime to run `ip` on: delete it here, synchronously.
            Err(_) => {
                if let Some(n) = ns.address {
                    let _ = run_sync("ip", &["link", "delete", &format!("drsv{n:x}")]);
                }
                let _ = run_sync("ip", &["netns", "delete", &ns.name]);
                if let Some(n) = ns.address {
                    network.in_use.lock().remove(&n);
                    let _ = std::fs::remove_file(lease_path(n));
                }
            }
        }
    }
}

fn ip_of(n: u32) -> String {
    format!("10.87.{}.{}", n >> 8, n & 0xff)
}

async fn ip(args: &[&str], batch: Option<String>) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    if batch.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `ip` ({e}): install the Debian package iproute2"))?;
    if let (Some(text), Some(mut stdin)) = (batch, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes()).await;
        drop(stdin);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("`ip` failed: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
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
            in_use: Mutex::default(),
            setup_error: Mutex::default(),
        }
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

    /// Creates a namespace for one exec.
    pub async fn create(&self) -> Result<Namespace, String> {
        let name = format!("drs-{}", crate::worker::snapshot::unique());
        ip(&["netns", "add", &name], None).await?;
        let mut ns = Namespace { name, address: None };
        let result = self.configure(&mut ns).await;
        if let Err(e) = result {
            self.remove(ns).await;
            return Err(e);
        }
        Ok(ns)
    }

    async fn configure(&self, ns: &mut Namespace) -> Result<(), String> {
        if self.mode() == Mode::None {
            return ip(&["-n", &ns.name, "link", "set", "lo", "up"], None).await;
        }
        let n = {
            let mut used = self.in_use.lock();
            let n = (2..0xfffe)
                .filter(|n| n & 0xff != 0 && n & 0xff != 0xff && !used.contains(n))
                .find(|n| lease(*n))
                .ok_or("no free container addresses left in 10.87.0.0/16")?;
            used.insert(n);
            n
        };
        ns.address = Some(n);
        let host_if = format!("drsv{n:x}");
        // The address is ours now, so a link of that name is left from an engine that died mid-way.
        if std::path::Path::new("/sys/class/net").join(&host_if).exists() {
            let _ = ip(&["link", "delete", &host_if], None).await;
        }
        ip(
            &["-batch", "-"],
            Some(format!(
                "link add {host_if} type veth peer name eth0 netns {ns}\nlink set {host_if} master {BRIDGE} up\n",
                ns = ns.name
            )),
        )
        .await?;
        ip(
            &["-n", &ns.name, "-batch", "-"],
            Some(format!(
                "link set lo up\naddr add {}/16 dev eth0\nlink set eth0 up\nroute add default via {GATEWAY}\n",
                ip_of(n)
            )),
        )
        .await
    }

    /// Deletes a namespace (and its veth) and frees its address.
    pub async fn remove(&self, ns: Namespace) {
        // The host side of the veth goes first, and synchronously: deleting only the namespace leaves the
        // kernel to remove the pair later, and the address (and with it the link's name) may be taken again
        // before that.
        if let Some(n) = ns.address {
            let _ = ip(&["link", "delete", &format!("drsv{n:x}")], None).await;
        }
        let _ = ip(&["netns", "delete", &ns.name], None).await;
        if let Some(n) = ns.address {
            self.in_use.lock().remove(&n);
            let _ = std::fs::remove_file(lease_path(n));
        }
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
    if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let owned_by_dead = name
                .strip_prefix("drs-")
                .and_then(crate::worker::collected::owner_pid)
                .is_some_and(&mut *dead);
            if owned_by_dead && run_sync("ip", &["netns", "delete", &name]).unwrap_or(false) {
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
    if let Ok(links) = std::fs::read_dir("/sys/class/net") {
        for l in links.flatten() {
            let name = l.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("drsv").and_then(|h| u32::from_str_radix(h, 16).ok()) else {
                continue;
            };
            if lease_free(n) && run_sync("ip", &["link", "delete", &name]).unwrap_or(false) {
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
            let _ = run_sync("ip", &["netns", "delete", &ns.name]);
            if let Some(n) = ns.address {
                let _ = std::fs::remove_file(lease_path(n));
            }
        }
    }
}

/// Creates the bridge, enables forwarding and adds the NAT rule, each only when missing.
fn setup_bridge() -> Result<(), String> {
    let exists = run_sync("ip", &["link", "show", BRIDGE])?;
    if !exists {
        let ok = run_sync("ip", &["link", "add", BRIDGE, "type", "bridge"])?
            && run_sync("ip", &["addr", "add", &format!("{GATEWAY}/16"), "dev", BRIDGE])?;
        if !ok && !run_sync("ip", &["link", "show", BRIDGE])? {
            return Err(format!("cannot create the bridge {BRIDGE} (the engine needs root)"));
        }
    }
    run_sync("ip", &["link", "set", BRIDGE, "up"])?;
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
