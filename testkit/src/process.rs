//! Helpers for tests that start programs: a free port to give them, waiting for them to exit, finding the
//! processes they leave behind.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// A port on `127.0.0.1` that was free a moment ago: bound to port 0, read, and released.
pub fn try_free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// [`try_free_port`], panicking when no port can be bound.
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(p) => p,
        Err(e) => panic!("a free port on 127.0.0.1: {e}"),
    }
}

/// Waits for `child` to exit; after `limit`, kills it and panics naming `what`.
pub fn wait_for_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}
