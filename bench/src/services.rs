//! Figure 16, services: how long an exec that binds a service waits for it to be ready, against the same
//! server started with raw `runc run`, and ten dependents sharing one instance.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dagger::ContainerAsServiceOpts;
use dagger::prelude::*;

use crate::engine::{EngineOpts, EngineProc};
use crate::figures::{Bench, timed, timed_retry};
use crate::fixtures::Fixtures;
use crate::raw::Bundle;
use crate::report::{Goal, Row};
use crate::stats::{Samples, Unit, format_value};

/// How many dependents bind one service at once in 16b and 16c.
const DEPENDENTS: usize = 10;

/// How often the raw side tries to connect to the server's port.
const RAW_POLL: Duration = Duration::from_millis(5);

/// What a slice of the engine's events (`--events`, JSON lines) says about services.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ServiceEvents {
    /// `Service` `started` events: instances started.
    pub(crate) started: usize,
    /// Each readiness line (`… is ready at 10.87.x.y (N ms)`): when it was sent (ms since the Unix epoch) and
    /// the N it states (from the service's start to ready, timed by the engine).
    pub(crate) ready: Vec<(u64, u64)>,
    /// When the first `Container.withExec` whose detail (its command) contains the tag started.
    pub(crate) exec_started: Option<u64>,
    /// When that exec was done.
    pub(crate) exec_done: Option<u64>,
}

/// Reads `jsonl` for the services' events and the start of the exec tagged `tag`; lines that are not events
/// are skipped.
pub(crate) fn service_events(jsonl: &str, tag: &str) -> ServiceEvents {
    let mut out = ServiceEvents::default();
    let mut tagged: Vec<String> = Vec::new();
    for line in jsonl.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(op), Some(id), Some(kind), Some(at)) =
            (v["op"].as_str(), v["id"].as_str(), v["kind"].as_str(), v["at"].as_u64())
        else {
            continue;
        };
        if op == "Container.withExec" && v["info"]["detail"].as_str().is_some_and(|d| d.contains(tag)) {
            tagged.push(id.to_owned());
        }
        match (op, kind) {
            ("Service", "started") => out.started += 1,
            ("Service", "log") => {
                let text = v["value"].as_str().unwrap_or_default();
                if text.contains(" is ready") {
                    let stated = text
                        .rsplit_once('(')
                        .and_then(|(_, r)| r.strip_suffix(" ms)"))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    out.ready.push((at, stated));
                }
            }
            ("Container.withExec", "started") if out.exec_started.is_none() && tagged.iter().any(|t| t == id) => {
                out.exec_started = Some(at);
            }
            ("Container.withExec", "done") if out.exec_done.is_none() && tagged.iter().any(|t| t == id) => {
                out.exec_done = Some(at);
            }
            _ => {}
        }
    }
    out
}

/// Starts busybox `httpd -f -p PORT` with raw `runc run` in this process's network namespace, and tries to
/// connect to 127.0.0.1:PORT every [`RAW_POLL`] until it accepts: the time from `runc run` to that.
async fn raw_ready(work: &Path, rootfs: &Path) -> Result<Duration, String> {
    let port = crate::engine::free_port()?.to_string();
    let netns = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
    let bundle = Bundle::write_in(
        work,
        "httpd",
        rootfs,
        &["httpd", "-f", "-p", &port, "-h", "/"],
        Some(netns),
    )?;
    let start = Instant::now();
    let started = bundle.start_runc()?;
    let deadline = start + Duration::from_secs(20);
    let result = loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap_or(0)))
            .await
            .is_ok()
        {
            break Ok(start.elapsed());
        }
        if Instant::now() > deadline {
            break Err(format!("raw runc: httpd did not accept on port {port} within 20 s"));
        }
        tokio::time::sleep(RAW_POLL).await;
    };
    started.stop().await;
    result
}

fn ms(s: f64) -> String {
    format_value(s, Unit::Seconds)
}

/// One repetition's samples.
#[derive(Default)]
struct ServiceSamples {
    /// Exec started → service ready (events).
    ours: Samples,
    /// The engine's own figure: service started → ready.
    stated: Samples,
    raw: Samples,
    /// The whole dependent exec at the client, and the same exec without a binding.
    dependent: Samples,
    /// The dependent exec from its start to done (events), and from the service's readiness to done.
    exec_engine: Samples,
    after_ready: Samples,
    plain: Samples,
    /// Ten dependents at once: wall, and instances started.
    ten: Samples,
    instances: Samples,
}

impl Bench {
    /// Figure 16 on one engine (runc, bridge networking) that writes its events to a file.
    pub(crate) async fn services(&mut self, fx: &Fixtures) -> Result<Vec<Row>, String> {
        let events = self.run_dir().join("events-services.jsonl");
        let opts = EngineOpts {
            runtime: "runc",
            network_none: false,
            snapshotter: None,
            cache_dir: self.run_dir().join("cache-services"),
            workdir: self.work.clone(),
            events: Some(events.clone()),
        };
        let log = self.run_dir().join("engine-services.log");
        let engine = EngineProc::start(&self.engine_bin, &opts, &log).await?;
        let result = async {
            let dag = engine.client().await?;
            self.services_on(&dag, fx, &events).await
        }
        .await;
        engine.stop().await;
        let s = result?;
        let bad: Vec<f64> = s.instances.0.iter().copied().filter(|&n| n != 1.0).collect();
        Ok(vec![
            Row::new(
                "16a",
                "a service bound by an exec: exec start → service ready ÷ raw `runc run` of the same server → its \
                 port accepts",
                Unit::Ratio,
                s.ours.ratio_to(&s.raw),
            )
            .goal(Goal::AtMost(1.5))
            .note(format!(
                "ours {} (events: the exec's start to the engine's readiness line; the engine itself states {} \
                 from the service's start); raw runc {} (`httpd -f` in the host's network namespace, port tried \
                 every {} ms; the engine tries every 50 ms); the whole dependent exec at the client {} (events: start \
                 to done {}, of which readiness to done {}), the same exec without the binding {}",
                ms(s.ours.median()),
                ms(s.stated.median()),
                ms(s.raw.median()),
                RAW_POLL.as_millis(),
                ms(s.dependent.median()),
                ms(s.exec_engine.median()),
                ms(s.after_ready.median()),
                ms(s.plain.median()),
            )),
            Row::new(
                "16b",
                format!("service instances started for {DEPENDENTS} dependents bound to one service at once"),
                Unit::Count,
                s.instances.clone(),
            )
            .goal(Goal::AtMost(1.0))
            .note(if bad.is_empty() {
                "counted from the engine's `Service` `started` events".to_owned()
            } else {
                format!("counted from the engine's `Service` `started` events; repetitions not 1: {bad:?}")
            }),
            Row::new(
                "16c",
                format!("{DEPENDENTS} dependents sharing one service at once ÷ one dependent, wall"),
                Unit::Ratio,
                s.ten.ratio_to(&s.dependent),
            )
            .note(format!(
                "{DEPENDENTS} at once {}, one {} (each a new service, and each dependent a `wget` of its page)",
                ms(s.ten.median()),
                ms(s.dependent.median())
            )),
        ])
    }

    async fn services_on(&mut self, dag: &Query, fx: &Fixtures, events: &Path) -> Result<ServiceSamples, String> {
        let base = dag.container().from(&fx.busybox_pinned);
        base.sync().await.map_err(|e| e.to_string())?;
        let web = |nonce: &str| {
            base.with_env_variable("BENCH_NONCE", nonce)
                .with_new_file("/srv/index.html", "hello from the service\n")
                .with_exposed_port(8080)
                .as_service_opts(ContainerAsServiceOpts::default().args(["httpd", "-f", "-p", "8080", "-h", "/srv"]))
        };
        let dependent = |svc: &Service, tag: &str| {
            base.with_service_binding("www", svc.clone()).with_exec([
                "sh",
                "-c",
                &format!("wget -q -O /dev/null http://www:8080/index.html && : {tag}"),
            ])
        };
        let events_len = || std::fs::metadata(events).map_or(0, |m| m.len() as usize);
        let events_since = |from: usize| {
            let text = std::fs::read_to_string(events).unwrap_or_default();
            text.get(from..).unwrap_or_default().to_owned()
        };
        let mut s = ServiceSamples::default();
        for i in 0..=self.reps {
            // One dependent of a new service.
            let nonce = self.nonce();
            let svc = web(&nonce);
            let exec = dependent(&svc, &nonce);
            let from = events_len();
            let one = timed_retry(|| exec.sync()).await?;
            // The recorder writes each line as it comes; the last ones may trail the response a little.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let ev = service_events(&events_since(from), &nonce);
            let (Some(exec_at), Some(done_at), [(ready_at, stated)]) =
                (ev.exec_started, ev.exec_done, ev.ready.as_slice())
            else {
                return Err(format!(
                    "the engine's events do not show one exec start and one service readiness ({ev:?}); see {}",
                    events.display()
                ));
            };
            let raw = raw_ready(&self.work, &fx.rootfs).await?;
            let plain_nonce = self.nonce();
            let plain = timed_retry(|| {
                base.with_env_variable("BENCH_NONCE", plain_nonce.clone())
                    .with_exec(["true"])
                    .sync()
            })
            .await?;
            // Ten dependents of another new service, at once.
            let nonce = self.nonce();
            let svc = web(&nonce);
            let execs: Vec<Container> = (0..DEPENDENTS)
                .map(|n| dependent(&svc, &format!("{nonce}-{n}")))
                .collect();
            let from = events_len();
            let ten = timed(futures_util::future::try_join_all(
                execs.iter().map(|e| e.sync().into_future()),
            ))
            .await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let instances = service_events(&events_since(from), "").started;
            // The first round warms both sides up.
            if i > 0 {
                s.ours.push(ready_at.saturating_sub(exec_at) as f64 / 1e3);
                s.stated.push(*stated as f64 / 1e3);
                s.raw.push_duration(raw);
                s.dependent.push_duration(one);
                s.exec_engine.push(done_at.saturating_sub(exec_at) as f64 / 1e3);
                s.after_ready.push(done_at.saturating_sub(*ready_at) as f64 / 1e3);
                s.plain.push_duration(plain);
                s.ten.push_duration(ten);
                s.instances.push(instances as f64);
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_and_starts_are_read_from_events() {
        let jsonl = r#"{"at":100,"op":"Container.withExec","id":"aa","kind":"queued","info":{"detail":"sh -c wget … && : n-1"}}
{"at":101,"op":"Container.withExec","id":"bb","kind":"started","info":{"detail":"true"}}
{"at":102,"op":"Container.withExec","id":"aa","kind":"started"}
{"at":103,"op":"Service","id":"ss","kind":"started","info":{"detail":"abc: httpd -f -p 8080"}}
not json
{"at":160,"op":"Service","id":"ss","kind":"log","value":"abc is ready at 10.87.0.5 (57 ms)"}
{"at":161,"op":"Service","id":"ss","kind":"log","value":"something else"}
{"at":170,"op":"Container.withExec","id":"aa","kind":"done","value":68}
"#;
        assert_eq!(
            service_events(jsonl, "n-1"),
            ServiceEvents {
                started: 1,
                ready: vec![(160, 57)],
                exec_started: Some(102),
                exec_done: Some(170),
            }
        );
        let none = service_events(jsonl, "n-2");
        assert_eq!(none.exec_started, None);
        assert_eq!(service_events("", "x"), ServiceEvents::default());
    }
}
