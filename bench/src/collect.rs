//! Figure 9, the start-up collection: what an engine pays at start-up to collect what a killed one left (its
//! running container, the container's mounts and scratch folder, network namespaces, veths and leases; see
//! `dagger_engine::cleanup`).
//!
//! Each repetition has a cache directory of its own. An engine pulls the base there and stops cleanly; then
//! `dagger-rs query '{ version }'` is timed end to end on it (nothing to collect). Then an engine starts an
//! exec of `sleep 300` there, and is SIGKILLed once the `sleep` runs; the same `query` is timed again, now
//! collecting. The difference is the collection's cost.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::engine::{EngineOpts, EngineProc};
use crate::figures::Bench;
use crate::fixtures::Fixtures;
use crate::report::Row;
use crate::stats::{Samples, Unit, format_value};

/// How the engine's one-line report of a collection starts (`cleanup::Collected`'s `Display`).
const REPORT: &str = "collected after an unclean stop";

/// One repetition: the query's wall on the clean cache and after the kill, and the engine's report.
struct Collection {
    clean: Duration,
    dirty: Duration,
    report: String,
}

/// The process whose environment holds `needle` (`NAME=value`) and whose command is `command`, if any.
fn find_process(needle: &str, command: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        let found = environ.split(|b| *b == 0).any(|v| v == needle.as_bytes());
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let first = cmdline.split(|b| *b == 0).next()?;
        (found && first.ends_with(command.as_bytes())).then_some(pid)
    })
}

/// Whether `pid` is a live process (a zombie waiting for its parent counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name in parentheses, which may itself hold spaces or parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

impl Bench {
    /// `dagger-rs --cache-dir <cache> --progress plain query '{ version }'`, timed from start to exit; returns
    /// the wall time and what it printed on standard error (the collection's report goes there).
    async fn cli_version(&self, cache: &Path) -> Result<(Duration, String), String> {
        let start = Instant::now();
        let out = tokio::process::Command::new(&self.engine_bin)
            .arg("--cache-dir")
            .arg(cache)
            .args(["--progress", "plain", "query", "{ version }"])
            .env("DAGGER_RS_RUNTIME", "runc")
            .env_remove("DAGGER_RS_NETWORK")
            .env_remove("DAGGER_RS_SNAPSHOTTER")
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("starting {}: {e}", self.engine_bin.display()))?;
        let took = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() || !stdout.contains("\"version\"") {
            return Err(format!(
                "`dagger-rs query '{{ version }}'` failed ({}): {stdout} {stderr}",
                out.status
            ));
        }
        Ok((took, stderr))
    }

    async fn engine_on(&self, cache: &Path, log: &str) -> Result<EngineProc, String> {
        let opts = EngineOpts {
            runtime: "runc",
            network_none: false,
            snapshotter: None,
            cache_dir: cache.to_owned(),
            workdir: self.work.clone(),
            events: None,
        };
        EngineProc::start(
            &self.engine_bin,
            &opts,
            &self.run_dir().join(format!("engine-{log}.log")),
        )
        .await
    }

    async fn collection(&mut self, fx: &Fixtures, rep: usize) -> Result<Collection, String> {
        let cache = self.run_dir().join(format!("cache-collect-{rep}"));
        let _ = std::fs::remove_dir_all(&cache);

        // The clean case: an engine pulls the base and stops cleanly, so the cache holds what the killed
        // engine's will, less what it leaves behind.
        let engine = self.engine_on(&cache, &format!("collect-{rep}-clean")).await?;
        let pulled = async {
            let dag = engine.client().await?;
            dag.container()
                .from(&fx.busybox_pinned)
                .sync()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        engine.stop().await;
        pulled?;
        let (clean, said) = self.cli_version(&cache).await?;
        if let Some(line) = said.lines().find(|l| l.contains(REPORT)) {
            return Err(format!("a cleanly stopped engine left something to collect: {line}"));
        }

        // The unclean case: an engine SIGKILLed while its exec runs.
        let engine = self.engine_on(&cache, &format!("collect-{rep}-killed")).await?;
        let nonce = self.nonce();
        let needle = format!("BENCH_NONCE={nonce}");
        let started = async {
            let dag = engine.client().await?;
            let exec = dag
                .container()
                .from(&fx.busybox_pinned)
                .with_env_variable("BENCH_NONCE", nonce.as_str())
                .with_exec(["sleep", "300"]);
            let request = tokio::spawn(async move { exec.sync().await.map(|_| ()) });
            let deadline = Instant::now() + Duration::from_secs(60);
            let pid = loop {
                if let Some(pid) = find_process(&needle, "sleep") {
                    break Ok(pid);
                }
                if request.is_finished() {
                    break Err("the `sleep 300` exec ended before it was seen running".to_owned());
                }
                if Instant::now() > deadline {
                    break Err("the `sleep 300` exec was not running within 60 s".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            Ok::<_, String>((pid?, request))
        }
        .await;
        engine.kill().await;
        let (sleeper, request) = started?;
        request.abort();
        if !alive(sleeper) {
            return Err("the container's `sleep` died with its engine: nothing left to collect".into());
        }

        let (dirty, said) = self.cli_version(&cache).await?;
        let report = said
            .lines()
            .find_map(|l| l.find(REPORT).map(|i| l[i..].trim().to_owned()))
            .ok_or_else(|| format!("the engine after the kill reported no collection; it printed: {said}"))?;
        // Collection kills the container: its `sleep` must be gone (the runtime kills it; its parent reaps it).
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(sleeper) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if alive(sleeper) {
            if let Some(pid) = rustix::process::Pid::from_raw(sleeper as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            return Err(format!(
                "the collection left the killed engine's `sleep 300` running (pid {sleeper}, killed by the harness)"
            ));
        }
        let _ = std::fs::remove_dir_all(&cache);
        Ok(Collection { clean, dirty, report })
    }

    pub(crate) async fn collect(&mut self, fx: &Fixtures) -> Result<Vec<Row>, String> {
        let (mut clean, mut dirty) = (Samples::default(), Samples::default());
        // Each distinct report, with how many repetitions printed it.
        let mut reports: Vec<(String, usize)> = Vec::new();
        for rep in 0..self.reps {
            let c = self.collection(fx, rep).await?;
            clean.push_duration(c.clean);
            dirty.push_duration(c.dirty);
            match reports.iter_mut().find(|(r, _)| *r == c.report) {
                Some((_, n)) => *n += 1,
                None => reports.push((c.report, 1)),
            }
        }
        let cost = dirty.minus(&clean);
        let secs = |v: f64| format_value(v, Unit::Seconds);
        reports.sort_by_key(|r| std::cmp::Reverse(r.1));
        let reps = cost.0.len();
        let said = reports
            .iter()
            .map(|(r, n)| format!("`{r}` ({n} of {reps})"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut note = format!(
            "collect (9a–9c): `dagger-rs query '{{ version }}'` on a cache whose engine was SIGKILLed mid-exec took \
             {} against {} on a cleanly stopped one, so the start-up collection costs {} (9c). Every repetition \
             printed the one-line report and left no `sleep 300` running; {}: {said}.",
            secs(dirty.median()),
            secs(clean.median()),
            secs(cost.median()),
            if reports.len() > 1 {
                "the reports were"
            } else {
                "the report was"
            },
        );
        if reports.len() > 1 {
            note.push_str(
                " They differ only in host-wide items (network namespaces, veths, address leases): how many there are \
                 depends on how far the killed engine had got making its ready namespaces, and any engine started \
                 as root on the machine in between (other work ran on it) may collect them first.",
            );
        }
        note.push_str(
            " Where the time goes (strace of one such collection, not measured by this run): `runc delete \
             --force` of the container about 115 ms (runc polls a killed container in 100 ms steps), `ip link \
             delete` about 27 ms per veth, `ip netns delete` about 4 ms per namespace; the mount and the scratch \
             folder about 5 ms.",
        );
        self.log.push(note);
        let typical = reports
            .first()
            .map_or(String::new(), |(r, n)| format!("`{r}` ({n} of {reps})"));
        Ok(vec![
            Row::new(
                "9a",
                "start-up: `dagger-rs query '{ version }'` end to end on a cleanly stopped engine's cache",
                Unit::Seconds,
                clean.clone(),
            )
            .note("nothing to collect: process start, cache open, one request, exit"),
            Row::new(
                "9b",
                "the same on a cache whose engine was SIGKILLed mid-exec (`sleep 300` running)",
                Unit::Seconds,
                dirty.clone(),
            )
            .note(format!(
                "the engine printed {typical}{}",
                if reports.len() > 1 {
                    "; the other repetitions collected other counts of host-wide items (see the notes)"
                } else {
                    ""
                }
            )),
            Row::new(
                "9c",
                "start-up collection cost: 9b − 9a, per repetition",
                Unit::Seconds,
                cost,
            )
            .note(format!(
                "clean {}, after the kill {}",
                secs(clean.median()),
                secs(dirty.median())
            )),
        ])
    }
}
