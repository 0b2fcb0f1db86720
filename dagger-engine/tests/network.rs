//! Container networking as the host sees it: a namespace made for an exec has a loopback device that is up, an
//! `eth0` with a leased address in 10.87.0.0/16 and a default route through the bridge, and a host-side veth on
//! the bridge; removing it leaves no namespace, veth or lease behind. `iproute2` is used here only to look.
//!
//! Needs root (namespaces, links); skipped otherwise. Honors `DAGGER_RS_NETWORK` like the engine (`none`: the
//! namespace has only loopback).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dagger_engine::network::{BRIDGE, Network};

fn root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (network namespaces)");
    false
}

fn bridge_mode() -> bool {
    std::env::var("DAGGER_RS_NETWORK").as_deref() != Ok("none")
}

/// `ip <args>`'s standard output, which must succeed.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace's address on `eth0` (`10.87.x.y`), from inside it.
fn address_in(ns: &str) -> String {
    let out = ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]);
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("eth0 has an IPv4 address: {out}"))
        .to_owned();
    let (addr, len) = cidr.split_once('/').expect("a prefix length");
    assert_eq!(len, "16", "{cidr}");
    assert!(addr.starts_with("10.87."), "{cidr}");
    addr.to_owned()
}

/// The host-side veth's name for a container address (`drsv<hex>` of the address's low 16 bits).
fn host_veth(addr: &str) -> String {
    let parts: Vec<u32> = addr.split('.').map(|p| p.parse().expect("an octet")).collect();
    format!("drsv{:x}", (parts[2] << 8) | parts[3])
}

#[tokio::test]
async fn a_namespace_is_wired_to_the_bridge_and_leaves_nothing_when_removed() {
    if !root() {
        return;
    }
    let network = Arc::new(Network::new());
    let ns = network.create().await.expect("a namespace");
    let path = ns.path();
    let name = path.file_name().expect("a name").to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("drs-{}-", std::process::id())), "{name}");
    assert!(path.exists(), "{} exists", path.display());
    let links = ip(&["-n", &name, "-o", "link", "show"]);
    assert!(
        links.lines().any(|l| l.contains(" lo:") && l.contains("UP")),
        "loopback is up: {links}"
    );
    let mut veth = None;
    if bridge_mode() && network.setup_error().is_none() {
        let addr = address_in(&name);
        let routes = ip(&["-n", &name, "-4", "route", "show", "default"]);
        assert!(routes.contains("default via 10.87.0.1 dev eth0"), "{routes}");
        let eth0 = ip(&["-n", &name, "-o", "link", "show", "dev", "eth0"]);
        assert!(eth0.contains("state UP") || eth0.contains(",UP"), "{eth0}");
        let host = host_veth(&addr);
        let shown = ip(&["-o", "link", "show", "dev", &host]);
        assert!(shown.contains(&format!("master {BRIDGE}")), "{shown}");
        assert!(shown.contains(",UP"), "{shown}");
        let lease = Path::new("/run/dagger-rs/leases").join(
            u32::from_str_radix(host.trim_start_matches("drsv"), 16)
                .expect("hex")
                .to_string(),
        );
        assert_eq!(
            std::fs::read_to_string(&lease).expect("the lease").trim(),
            std::process::id().to_string()
        );
        veth = Some((host, lease));
    } else {
        let out = ip(&["-n", &name, "-o", "link", "show"]);
        assert_eq!(out.lines().count(), 1, "loopback only: {out}");
    }
    network.remove(ns).await;
    assert!(!path.exists(), "the namespace is deleted");
    if let Some((host, lease)) = veth {
        assert!(
            !Path::new("/sys/class/net").join(&host).exists(),
            "{host} is deleted with its namespace"
        );
        assert!(!lease.exists(), "the address lease is released");
    }
}

#[tokio::test]
async fn a_dropped_lease_deletes_its_namespace() {
    if !root() {
        return;
    }
    let network = Arc::new(Network::new());
    let lease = network.take().await.expect("a namespace");
    let path = lease.path();
    assert!(path.exists());
    drop(lease);
    let deadline = Instant::now() + Duration::from_secs(30);
    while path.exists() {
        assert!(Instant::now() < deadline, "{} is left behind", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A namespace made ahead of time that something unmounts while it waits in the pool (a tool that remounts
/// `/run/netns` in a mount namespace of its own) is not handed to a runtime, which could not join it: it is
/// deleted, and a new one is made.
#[tokio::test]
async fn a_pooled_namespace_unmounted_meanwhile_is_replaced() {
    if !root() {
        return;
    }
    const NSFS_MAGIC: u64 = 0x6e73_6673;
    let is_ns = |p: &Path| rustix::fs::statfs(p).is_ok_and(|fs| fs.f_type as u64 == NSFS_MAGIC);
    let network = Arc::new(Network::new());
    let first = network.take().await.expect("a namespace");
    let prefix = format!("drs-{}-", std::process::id());
    let pooled = |skip: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir("/var/run/netns")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)) && p != skip)
                    .collect()
            })
            .unwrap_or_default()
    };
    // The pool refills to two behind the first lease.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pooled(&first.path()).iter().filter(|p| is_ns(p)).count() < 2 {
        assert!(Instant::now() < deadline, "the pool never refilled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stale = pooled(&first.path());
    for p in &stale {
        let out = Command::new("umount").arg(p).output().expect("umount");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!is_ns(p));
    }
    let second = network.take().await.expect("a namespace");
    assert!(is_ns(&second.path()), "{} can be joined", second.path().display());
    assert!(!stale.contains(&second.path()), "a new one, not a stale one");
    drop((first, second));
}

/// The per-namespace cost (bench figure 3g with the bridge, 3h with `DAGGER_RS_NETWORK=none`): create and
/// delete, 30 times after one warm-up. Run with `--ignored --nocapture`.
#[tokio::test]
#[ignore = "a timing loop, run by hand"]
async fn namespace_create_and_delete_timing() {
    if !root() {
        return;
    }
    let network = Arc::new(Network::new());
    let (mut samples, mut created) = (Vec::new(), Vec::new());
    for i in 0..=30 {
        let t = Instant::now();
        let ns = network.create().await.expect("a namespace");
        let c = t.elapsed();
        network.remove(ns).await;
        if i > 0 {
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            created.push(c.as_secs_f64() * 1000.0);
        }
    }
    created.sort_by(f64::total_cmp);
    eprintln!("of which creating: median {:.1} ms", created[created.len() / 2]);
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    eprintln!(
        "namespace create+delete ({}): mean {mean:.1} ms, median {:.1} ms, min {:.1} ms, max {:.1} ms, n {}",
        if bridge_mode() { "bridge" } else { "none" },
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
}
