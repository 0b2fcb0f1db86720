//! Figure 17, rootless mode: the same execs, fan-out and cached re-run through an engine run by an ordinary
//! user (`dagger-rs` re-runs itself in a user namespace; containers reach the network through one
//! `slirp4netns` each) and through a root engine, side by side in every repetition. Engines with
//! `DAGGER_RS_NETWORK=none` on both sides tell the network's share from the rest.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::engine::{EngineOpts, EngineProc, RunAs};
use crate::figures::{Bench, timed_retry};
use crate::fixtures::Fixtures;
use crate::pipelines::{fan8, linear10};
use crate::report::{Goal, Row};
use crate::stats::{Samples, Unit, format_value};

/// The ordinary user the rootless engine runs as (the one the project's rootless tests use).
const USER: &str = "drs-rootless";

fn ms(s: f64) -> String {
    format_value(s, Unit::Seconds)
}

/// A copy of the engine binary the user can run, and a cache and work directory the user owns; removed when
/// dropped.
struct Staged {
    dir: PathBuf,
    bin: PathBuf,
    user: RunAs,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Staged {
    async fn new(engine_bin: &Path) -> Result<Self, String> {
        // Creates the user and its subordinate ID ranges when missing (it panics on failure: caught here).
        let test_user = tokio::task::spawn_blocking(|| testkit::users::ensure(USER, true))
            .await
            .map_err(|e| format!("could not set up the user {USER} (useradd, /etc/subuid): {e}"))?;
        let gid = std::process::Command::new("id")
            .args(["-g", USER])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().ok())
            .ok_or_else(|| format!("`id -g {USER}` gave no group"))?;
        let dir = PathBuf::from(format!("/tmp/drs-bench-rootless-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(|e| io(&dir, e))?;
        let staged = Staged {
            bin: dir.join("dagger-rs"),
            dir,
            user: RunAs {
                name: USER.to_owned(),
                uid: test_user.uid,
                gid,
            },
        };
        std::fs::copy(engine_bin, &staged.bin).map_err(|e| io(&staged.bin, e))?;
        std::fs::set_permissions(&staged.bin, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&staged.bin, e))?;
        Ok(staged)
    }

    /// A directory under the staging one, owned by the user.
    fn owned_dir(&self, name: &str) -> Result<PathBuf, String> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        std::os::unix::fs::chown(&d, Some(self.user.uid), Some(self.user.gid))
            .map_err(|e| format!("chown {}: {e}", d.display()))?;
        Ok(d)
    }
}

/// Starts `slirp4netns` with the engine's options (`worker/network.rs` `start_slirp`) on a fresh network
/// namespace made by `ip netns add`, as root in a private mount namespace (`unshare --mount`), and waits until it says it is ready (its ready byte, then the end
/// of its standard output): the time from its start to that. The namespace and the process are then removed.
async fn slirp_start(n: usize) -> Result<std::time::Duration, String> {
    use tokio::io::AsyncReadExt;
    let name = format!("drs-bench-slirp-{}-{n}", std::process::id());
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .arg(&name)
            .output()
            .map_err(|e| format!("ip: {e}"))
    };
    let out = ip(&["netns", "add"])?;
    if !out.status.success() {
        return Err(format!(
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let result = async {
        let start = std::time::Instant::now();
        // In a private mount namespace: as root in the host's, its sandbox (`--enable-sandbox`) unmounts the host's
        // shared `/run/netns` mounts, root engines' ready namespaces among them (see `FINDINGS.md`).
        let mut child = tokio::process::Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "slirp4netns",
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                "--exit-fd=0",
                "--ready-fd=1",
                "--netns-type=path",
            ])
            .arg(format!("/run/netns/{name}"))
            .arg("tap0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("slirp4netns: {e}"))?;
        let exit = child.stdin.take();
        let mut ready = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let read = tokio::time::timeout(std::time::Duration::from_secs(30), out.read_to_end(&mut ready)).await;
            if !matches!(read, Ok(Ok(_))) {
                return Err("slirp4netns did not get ready within 30 s".to_owned());
            }
        }
        let took = start.elapsed();
        drop(exit);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
        if ready.last() == Some(&b'1') {
            Ok(took)
        } else {
            Err("slirp4netns exited without saying it was ready".to_owned())
        }
    }
    .await;
    let _ = ip(&["netns", "delete"]);
    result
}

/// Fails unless the process `pid` runs as `uid` (the rootless engine must not be root).
fn check_uid(pid: u32, uid: u32) -> Result<(), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}: {e}"))?;
    let real = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse::<u32>().ok());
    if real == Some(uid) {
        Ok(())
    } else {
        Err(format!(
            "the rootless engine (pid {pid}) runs as uid {real:?}, not {uid}"
        ))
    }
}

/// What the four engines are, in the order of [`Four`].
const LABELS: [&str; 4] = ["root", "root loopback-only", "rootless", "rootless loopback-only"];

/// The four engines: root and rootless, each with bridge (root) or slirp4netns (rootless) networking and with
/// loopback only.
struct Four {
    root: EngineProc,
    root_none: EngineProc,
    rootless: EngineProc,
    rootless_none: EngineProc,
}

/// The samples of figure 17.
#[derive(Default)]
struct RootlessSamples {
    exec: [Samples; 4],
    fan: [Samples; 3],
    cached: [Samples; 2],
    cold: [Samples; 2],
    slirp: Samples,
}

impl Bench {
    async fn start_four(&self, staged: &Staged) -> Result<Four, String> {
        let opts = |cache_dir: PathBuf, workdir: PathBuf, network_none: bool| EngineOpts {
            runtime: "runc",
            network_none,
            snapshotter: None,
            cache_dir,
            workdir,
            events: None,
        };
        let log = |name: &str| self.run_dir().join(format!("engine-{name}.log"));
        let work = staged.owned_dir("work")?;
        let specs = [
            (self.run_dir().join("cache-rl-root"), self.work.clone(), false, None),
            (self.run_dir().join("cache-rl-root-none"), self.work.clone(), true, None),
            (staged.owned_dir("cache")?, work.clone(), false, Some(&staged.user)),
            (staged.owned_dir("cache-none")?, work, true, Some(&staged.user)),
        ];
        let mut up: Vec<EngineProc> = Vec::new();
        let mut failed = None;
        for (i, (cache, workdir, none, user)) in specs.into_iter().enumerate() {
            let bin = if user.is_some() { &staged.bin } else { &self.engine_bin };
            let name = LABELS[i].replace(' ', "-");
            let started = EngineProc::start_as(bin, &opts(cache, workdir, none), &log(&name), user)
                .await
                .and_then(|e| match user {
                    Some(u) => check_uid(e.pid, u.uid).map(|()| e),
                    None => Ok(e),
                });
            match started {
                Ok(e) => up.push(e),
                Err(e) => {
                    failed = Some(format!("starting the {} engine: {e}", LABELS[i]));
                    break;
                }
            }
        }
        // Stopped with SIGINT, which a rootless engine passes on to its restart in the user namespace (a
        // SIGKILL on drop would leave that one running).
        let four = match (failed, <[EngineProc; 4]>::try_from(up)) {
            (None, Ok([root, root_none, rootless, rootless_none])) => Four {
                root,
                root_none,
                rootless,
                rootless_none,
            },
            (failed, Ok(all)) => {
                for e in all {
                    e.stop().await;
                }
                return Err(failed.unwrap_or_default());
            }
            (failed, Err(some)) => {
                for e in some {
                    e.stop().await;
                }
                return Err(failed.unwrap_or_else(|| "not every engine started".to_owned()));
            }
        };
        Ok(four)
    }

    /// Figure 17: rootless against root, side by side.
    pub(crate) async fn rootless(&mut self, fx: &Fixtures) -> Result<Vec<Row>, String> {
        let staged = Staged::new(&self.engine_bin).await?;
        let four = self.start_four(&staged).await?;
        let result = self.rootless_on(&four, fx).await;
        for e in [four.root, four.root_none, four.rootless, four.rootless_none] {
            e.stop().await;
        }
        let s = result?;
        drop(staged);
        let [root, root_none, rootless, rootless_none] = &s.exec;
        let [fan_root, fan_rootless, fan_rootless_none] = &s.fan;
        let [cached_root, cached_rootless] = &s.cached;
        Ok(vec![
            Row::new(
                "17a",
                "rootless: one `withExec([\"true\"])` ÷ the same through a root engine",
                Unit::Ratio,
                rootless.ratio_to(root),
            )
            .goal(Goal::AtMost(1.5))
            .note(format!(
                "rootless {}, root {}; with `DAGGER_RS_NETWORK=none`: rootless {}, root {}",
                ms(rootless.median()),
                ms(root.median()),
                ms(rootless_none.median()),
                ms(root_none.median())
            )),
            Row::new(
                "17b",
                "diagnostic: the same, both engines with `DAGGER_RS_NETWORK=none` (the user namespace without \
                 slirp4netns)",
                Unit::Ratio,
                rootless_none.ratio_to(root_none),
            ),
            Row::new(
                "17c",
                "span: rootless exec − the same with loopback only (its slirp4netns network)",
                Unit::Seconds,
                rootless.minus(rootless_none),
            )
            .note(format!(
                "root: exec − loopback only (its bridge veth) {}",
                ms(root.minus(root_none).median())
            )),
            Row::new(
                "17i",
                "span: one `slirp4netns` started with the engine's options on a fresh network namespace, until ready",
                Unit::Seconds,
                s.slirp.clone(),
            )
            .note(
                "as root, beside the engines (`ip netns add`, then `unshare --mount slirp4netns --configure … \
                 --ready-fd`; the `unshare` exec is counted)",
            ),
            Row::new(
                "17d",
                "rootless fan-out: 8 × `sleep 1` in one level, wall",
                Unit::Seconds,
                fan_rootless.clone(),
            )
            .note(format!(
                "root engine {}; rootless with `DAGGER_RS_NETWORK=none` {}",
                ms(fan_root.median()),
                ms(fan_rootless_none.median())
            )),
            Row::new(
                "17e",
                "rootless fan-out wall ÷ the same through a root engine",
                Unit::Ratio,
                fan_rootless.ratio_to(fan_root),
            )
            .goal(Goal::AtMost(1.10)),
            Row::new(
                "17f",
                "diagnostic: rootless fan-out with `DAGGER_RS_NETWORK=none` ÷ root engine (bridge)",
                Unit::Ratio,
                fan_rootless_none.ratio_to(fan_root),
            ),
            Row::new(
                "17g",
                "rootless: cached re-run of the 10-step pipeline (same engine), absolute",
                Unit::Seconds,
                cached_rootless.clone(),
            )
            .goal(Goal::Below(0.050))
            .note(format!(
                "root engine {}; cold runs: rootless {}, root {}",
                ms(cached_root.median()),
                ms(s.cold[1].median()),
                ms(s.cold[0].median())
            )),
            Row::new(
                "17h",
                "rootless cached re-run ÷ the same through a root engine",
                Unit::Ratio,
                cached_rootless.ratio_to(cached_root),
            ),
        ])
    }

    async fn rootless_on(&mut self, four: &Four, fx: &Fixtures) -> Result<RootlessSamples, String> {
        let mut dags = Vec::new();
        for e in [&four.root, &four.root_none, &four.rootless, &four.rootless_none] {
            let dag = e.client().await?;
            let base = dag.container().from(&fx.busybox_pinned);
            base.sync()
                .await
                .map_err(|err| format!("pulling busybox on {}: {err}", e.url()))?;
            dags.push((dag, base));
        }
        let mut s = RootlessSamples::default();
        // Per-exec overhead, the four engines one after the other in each repetition.
        for i in 0..=self.exec_reps {
            for (k, (_, base)) in dags.iter().enumerate() {
                let nonce = self.nonce();
                let exec = base.with_env_variable("BENCH_NONCE", nonce).with_exec(["true"]);
                let t = timed_retry(|| exec.sync())
                    .await
                    .map_err(|e| format!("one exec on the {} engine: {e}", LABELS[k]))?;
                // The first round warms every engine up.
                if i > 0 {
                    s.exec[k].push_duration(t);
                }
            }
        }
        // slirp4netns alone, as many times.
        for n in 0..self.exec_reps {
            s.slirp.push_duration(slirp_start(n).await?);
        }
        // Fan-out, and the cached re-run, on root, rootless and rootless without network.
        for _ in 0..self.reps {
            for (k, idx) in [0usize, 2, 3].into_iter().enumerate() {
                let (dag, base) = &dags[idx];
                let nonce = self.nonce();
                let wall = timed_retry(|| fan8::run(dag, base.clone(), nonce.clone(), "sleep 1".to_owned()))
                    .await
                    .map_err(|e| format!("fan-out on the {} engine: {e}", LABELS[idx]))?;
                s.fan[k].push_duration(wall);
            }
            for (k, idx) in [0usize, 2].into_iter().enumerate() {
                let (dag, base) = &dags[idx];
                let nonce = self.nonce();
                for samples in [&mut s.cold[k], &mut s.cached[k]] {
                    let t = timed_retry(|| linear10::run(dag, base.clone(), nonce.clone()))
                        .await
                        .map_err(|e| format!("`linear10` on the {} engine: {e}", LABELS[idx]))?;
                    samples.push_duration(t);
                }
            }
        }
        Ok(s)
    }
}
