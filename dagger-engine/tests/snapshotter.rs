//! Each engine chooses its snapshotter for its own cache directory: in one process, an engine whose cache
//! directory is on overlayfs (where an overlay cannot be stacked) copies, and another one overlays.

use dagger_engine::snapshot::SnapshotterKind;
use dagger_engine::{Config, Engine};

/// An overlay mount at `dir/merged`, unmounted when dropped.
struct Overlay(std::path::PathBuf);

impl Overlay {
    fn mount(dir: &std::path::Path) -> Overlay {
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(d)).expect("mkdir");
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            dir.join("lower").display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let status = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(dir.join("merged"))
            .status()
            .expect("mount");
        assert!(status.success(), "mount the overlay");
        Overlay(dir.join("merged"))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn engine(cache: &std::path::Path) -> std::sync::Arc<Engine> {
    Engine::new(Config::for_dir(cache)).expect("engine")
}

#[test]
fn engines_in_one_process_choose_their_snapshotter_for_their_own_cache_directory() {
    if !rustix::process::geteuid().is_root() || std::env::var_os("DAGGER_RS_SNAPSHOTTER").is_some() {
        eprintln!("skipped: needs root (to mount overlays) and no DAGGER_RS_SNAPSHOTTER");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let overlay = Overlay::mount(dir.path());
    // The engine on overlayfs asks first: its choice must not become the other engine's.
    let on_overlay = engine(&overlay.0.join("cache"));
    let on_disk = engine(&dir.path().join("cache"));
    assert_eq!(on_overlay.snapshotter().kind(), SnapshotterKind::Copy);
    assert_eq!(on_disk.snapshotter().kind(), SnapshotterKind::Overlay);
    drop((on_overlay, on_disk));
}
