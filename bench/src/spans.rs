//! Where the time of one exec goes: the pieces of the engine's exec path timed one by one with the engine's
//! own library functions (network namespace, overlay mount, its runtime wrapper, a synced store write), and
//! the request round trip of an exec that is already cached. Diagnostics for figure 3, without a profiler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dagger_engine::network::Network;
use dagger_engine::runtime::{RunRequest, Runtime};
use dagger_engine::snapshot::{self, SnapshotterKind};
use dagger_engine::store::Store;

use crate::fixtures::Fixtures;
use crate::raw::{Bundle, Raw};
use crate::report::Row;
use crate::stats::{Samples, Unit};

fn since(start: Instant) -> Duration {
    start.elapsed()
}

/// Repeats the engine's overlayfs probe (one empty lower layer, upper and work directories, through the
/// engine's own `mount_overlay`) and says how it went: when it fails the engine assembles containers by copying.
pub(crate) fn overlay_probe(work: &std::path::Path) -> String {
    let dir = work.join("run").join("probe");
    let empty = dir.join("empty");
    if let Err(e) = std::fs::create_dir_all(&empty) {
        return format!("overlay probe not run: {e}");
    }
    let result = snapshot::mount_overlay(
        std::slice::from_ref(&empty),
        Some((&dir.join("upper"), &dir.join("work"))),
        &dir.join("root"),
        &empty,
    )
    .and_then(snapshot::Mounted::unmount);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => "the engine's overlayfs probe, repeated by the harness, succeeds on this machine".to_owned(),
        Err(e) => format!(
            "the engine's overlayfs probe, repeated by the harness, fails on this machine ({e}), so engines \
             without DAGGER_RS_SNAPSHOTTER assemble every container by copying (finding 1)"
        ),
    }
}

/// The spans, `reps` times each.
pub(crate) async fn exec_spans(work: &std::path::Path, fx: &Fixtures, reps: usize) -> Result<Vec<Row>, String> {
    let dir = work.join("run").join("spans");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let store = Store::open(dir.join("store")).map_err(|e| e.to_string())?;
    let runtime = Runtime::detect(Some("runc"), None, &dir.join("runc-state")).map_err(|e| e.to_string())?;
    let network = Network::new();
    let loopback = Network::loopback_only();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).map_err(|e| e.to_string())?;
    let bundle = Bundle::write(work, "true", &fx.rootfs, &["true"])?;
    let sink: dagger_engine::runtime::LineSink = Arc::new(|_: &str, _: bool| {});

    let (mut bridge, mut none, mut overlay, mut copy, mut wrapped, mut raw, mut fsync) = Default::default();
    let mut n = 0u64;
    for i in 0..=reps {
        let keep = i > 0;
        let push = |s: &mut Samples, d: Duration| {
            if keep {
                s.push_duration(d);
            }
        };
        // Bridge networking over netlink: a namespace, a veth on the bridge, its address and route, deleted.
        let t = Instant::now();
        let ns = network.create().await?;
        network.remove(ns).await;
        push(&mut bridge, since(t));
        // Loopback only (DAGGER_RS_NETWORK=none): the engine's own namespace, with only `lo` up.
        let t = Instant::now();
        let ns = loopback.create().await?;
        loopback.remove(ns).await;
        push(&mut none, since(t));
        // The container filesystem: an overlay of the busybox layer with a fresh upper directory.
        let scratch = dir.join(format!("exec-{i}"));
        let t = Instant::now();
        let mounted = SnapshotterKind::Overlay
            .snapshotter()
            .assemble(
                std::slice::from_ref(&fx.rootfs),
                Some((&scratch.join("upper"), &scratch.join("work"))),
                &scratch.join("rootfs"),
                &empty,
            )
            .map_err(|e| e.to_string())?;
        let mount_time = since(t);
        // The engine's runtime wrapper (spec written, JSON log, output pumped) on that overlay.
        let req = RunRequest {
            rootfs: scratch.join("rootfs"),
            bundle: scratch.join("bundle"),
            args: vec!["true".into()],
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            ..RunRequest::default()
        };
        let t = Instant::now();
        let out = runtime.run(&req, sink.clone()).await.map_err(|e| e.to_string())?;
        push(&mut wrapped, since(t));
        if out.exit_code != 0 {
            return Err(format!("`true` exited {} in the span test", out.exit_code));
        }
        let t = Instant::now();
        mounted.unmount().map_err(|e| e.to_string())?;
        push(&mut overlay, mount_time + since(t));
        snapshot::remove_all(&scratch);
        // The copy snapshotter (the engine's fallback when its overlay probe fails): copy in, then compare.
        let t = Instant::now();
        let copied = SnapshotterKind::Copy
            .snapshotter()
            .assemble(
                std::slice::from_ref(&fx.rootfs),
                Some((&scratch.join("upper"), &scratch.join("work"))),
                &scratch.join("rootfs"),
                &empty,
            )
            .map_err(|e| e.to_string())?;
        copied.unmount().map_err(|e| e.to_string())?;
        push(&mut copy, since(t));
        snapshot::remove_all(&scratch);
        // Raw runc of the same command, for scale.
        push(&mut raw, bundle.run(Raw::Runc).await?);
        // One synced store write (the engine makes several per exec: results, outputs).
        n += 1;
        let bytes = format!("span {} {n} {i}", std::process::id());
        let t = Instant::now();
        store.put_blob(bytes.as_bytes()).map_err(|e| e.to_string())?;
        push(&mut fsync, since(t));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let row = |id, what: &str, s: Samples| Row::new(id, format!("span: {what}"), Unit::Seconds, s);
    Ok(vec![
        row(
            "3g",
            "network namespace with a bridge veth, created and deleted (netlink)",
            bridge,
        ),
        row(
            "3h",
            "loopback-only network namespace, created and deleted (netlink)",
            none,
        ),
        row("3i", "overlay mount + unmount of the busybox layer", overlay),
        row(
            "3m",
            "copy snapshotter: the busybox layer copied in, changes collected, removed",
            copy,
        ),
        row("3j", "the engine's `Runtime::run` of `true` on that overlay", wrapped).note("raw runc: see 3k"),
        row("3k", "raw `runc run` of the same bundle over a plain directory", raw),
        row(
            "3l",
            "one synced store write (`Store::put_blob`: write, fsync, rename)",
            fsync,
        ),
    ])
}
