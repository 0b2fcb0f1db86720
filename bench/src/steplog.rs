//! Where a whole build's time went, read from what each side writes anyway: BuildKit's plain progress
//! (`docker build --progress=plain`), the engine's progress events (`dagger-rs --events`, one JSON object a
//! line), and cargo's `--timings` page. The span rows of the real-work figures (11–15) come from these.

use std::collections::BTreeMap;

/// One step of a build and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Step {
    /// What the step is: BuildKit's vertex name (`[build 2/3] RUN cargo build`), or the engine's operation
    /// and what it does (`Container.withExec cargo test --locked`).
    pub(crate) name: String,
    /// Seconds from start to done; `None` when it came from the cache or did not finish.
    pub(crate) secs: Option<f64>,
    /// Whether its result came from the cache.
    pub(crate) cached: bool,
    /// When it started and ended, in seconds since the Unix epoch (the engine's events carry these; BuildKit's
    /// plain progress does not).
    pub(crate) span: Option<(f64, f64)>,
}

/// The steps of BuildKit's plain progress output, in the order they first appeared.
///
/// Each vertex is numbered (`#5`); its first line is its name, later lines are its digest, its output
/// (`#5 0.512 Compiling app`), progress (`#5 extracting sha256:… 2.1s done`) and its end: `#5 DONE 3.4s`,
/// `#5 CACHED` or `#5 ERROR: …`. A vertex whose output is interleaved with another's is announced again by
/// name; the first announcement counts.
pub(crate) fn buildkit_steps(log: &str) -> Vec<Step> {
    let mut order: Vec<u64> = Vec::new();
    let mut steps: BTreeMap<u64, Step> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else { continue };
        let Some((num, text)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(n) = num.parse::<u64>() else { continue };
        let text = text.trim();
        let step = steps.entry(n).or_insert_with(|| {
            order.push(n);
            Step {
                name: text.to_owned(),
                secs: None,
                cached: false,
                span: None,
            }
        });
        if let Some(d) = text.strip_prefix("DONE ") {
            step.secs = d.trim().strip_suffix('s').and_then(|s| s.parse().ok());
        } else if text == "CACHED" {
            step.cached = true;
        }
    }
    order.into_iter().filter_map(|n| steps.remove(&n)).collect()
}

/// The operations of the engine's events (JSON lines of `dagger-rs --events`): each `done` event, with the
/// operation's name and detail taken from its earlier `queued`/`started` event, and each `cached` one. Lines
/// that are not events are skipped.
pub(crate) fn engine_steps(jsonl: &str) -> Vec<Step> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut started: BTreeMap<String, f64> = BTreeMap::new();
    let mut out = Vec::new();
    for line in jsonl.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(op), Some(id), Some(kind)) = (v["op"].as_str(), v["id"].as_str(), v["kind"].as_str()) else {
            continue;
        };
        if let Some(detail) = v["info"]["detail"].as_str() {
            let name = if detail.is_empty() {
                op.to_owned()
            } else {
                format!("{op} {detail}")
            };
            names.insert(id.to_owned(), name);
        }
        let at = v["at"].as_f64().map(|ms| ms / 1e3);
        let name = || names.get(id).cloned().unwrap_or_else(|| op.to_owned());
        match kind {
            "started" => {
                if let Some(at) = at {
                    started.insert(id.to_owned(), at);
                }
            }
            "done" => out.push(Step {
                name: name(),
                secs: v["value"].as_f64().map(|ms| ms / 1e3),
                cached: false,
                span: started.get(id).copied().zip(at),
            }),
            "cached" => out.push(Step {
                name: name(),
                secs: None,
                cached: true,
                span: None,
            }),
            _ => {}
        }
    }
    out
}

/// The longest step whose name contains every one of `words` (none: `None`). A `FROM` vertex of BuildKit
/// and the engine's `Container.from` both name the image, an exec step its command.
pub(crate) fn longest<'a>(steps: &'a [Step], words: &[&str]) -> Option<&'a Step> {
    steps
        .iter()
        .filter(|s| words.iter().all(|w| s.name.contains(w)))
        .max_by(|a, b| a.secs.unwrap_or(-1.0).total_cmp(&b.secs.unwrap_or(-1.0)))
}

/// One compilation unit of cargo's `--timings` page: the crate and its seconds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Unit {
    pub(crate) name: String,
    pub(crate) secs: f64,
}

/// The units of cargo's `cargo-timing.html` (the `UNIT_DATA` array its script holds), summed by crate name
/// (a build script's compilation and run count with its crate), longest first.
pub(crate) fn cargo_units(html: &str) -> Result<Vec<Unit>, String> {
    const START: &str = "const UNIT_DATA = ";
    let at = html
        .find(START)
        .ok_or("no UNIT_DATA in cargo's timings page (its format changed?)")?;
    let rest = &html[at + START.len()..];
    // The array is one JSON value: let the parser find its end.
    let mut de = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    let data = match de.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(format!("cargo's UNIT_DATA: {e}")),
        None => return Err("cargo's UNIT_DATA is empty".into()),
    };
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for u in data.as_array().ok_or("cargo's UNIT_DATA is not an array")? {
        let (Some(name), Some(d)) = (u["name"].as_str(), u["duration"].as_f64()) else {
            continue;
        };
        *by_name.entry(name.to_owned()).or_default() += d;
    }
    let mut units: Vec<Unit> = by_name.into_iter().map(|(name, secs)| Unit { name, secs }).collect();
    units.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_plain_progress() {
        let log = "\
#1 [internal] load build definition from Dockerfile
#1 sha256:2c0a3f1c
#1 transferring dockerfile: 512B done
#1 DONE 0.0s

#5 [toolchain 1/3] FROM 127.0.0.1:5000/library/rust:1-slim@sha256:abc
#5 resolve 127.0.0.1:5000/library/rust:1-slim@sha256:abc 0.0s done
#5 extracting sha256:def 9.8s done
#5 DONE 21.4s

#7 [build 1/1] RUN --mount=type=cache,target=/cargo-target cargo build --release
#7 0.512 Compiling app v0.1.0
#8 [test 1/1] RUN --mount=type=cache,target=/cargo-target cargo test
#8 0.300 Blocking waiting for file lock
#7 [build 1/1] RUN --mount=type=cache,target=/cargo-target cargo build --release
#7 DONE 4.25s
#8 DONE 6.5s
#9 [stage-3 2/3] COPY --from=build /app /usr/local/bin/app
#9 CACHED
#10 exporting to image
#10 ERROR: failed to export
";
        let steps = buildkit_steps(log);
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "[internal] load build definition from Dockerfile",
                "[toolchain 1/3] FROM 127.0.0.1:5000/library/rust:1-slim@sha256:abc",
                "[build 1/1] RUN --mount=type=cache,target=/cargo-target cargo build --release",
                "[test 1/1] RUN --mount=type=cache,target=/cargo-target cargo test",
                "[stage-3 2/3] COPY --from=build /app /usr/local/bin/app",
                "exporting to image",
            ]
        );
        let secs: Vec<Option<f64>> = steps.iter().map(|s| s.secs).collect();
        assert_eq!(secs, [Some(0.0), Some(21.4), Some(4.25), Some(6.5), None, None]);
        assert!(steps[4].cached && !steps[3].cached);
        assert_eq!(longest(&steps, &["FROM", "rust"]).map(|s| s.secs), Some(Some(21.4)));
        assert_eq!(longest(&steps, &["cargo test"]).map(|s| s.secs), Some(Some(6.5)));
        assert_eq!(longest(&steps, &["nothing"]), None);
        // Not progress output at all.
        assert_eq!(buildkit_steps("#x y\n#\nplain text\n#3\n"), Vec::new());
    }

    #[test]
    fn engine_events() {
        let jsonl = r#"{"at":1,"op":"Container.from","id":"aa","kind":"queued","info":{"detail":"127.0.0.1:5000/library/rust:1-slim","role":"work"}}
{"at":2,"op":"Container.from","id":"aa","kind":"started","info":{"detail":"127.0.0.1:5000/library/rust:1-slim","role":"work"}}
{"at":3,"op":"Container.withExec","id":"bb","kind":"started","info":{"detail":"cargo test --locked"}}
{"at":4,"op":"Container.withExec","id":"bb","kind":"log","value":"Compiling app"}
not json
{"at":5,"op":"Container.from","id":"aa","kind":"done","value":12500}
{"at":6,"op":"Container.withExec","id":"bb","kind":"done","value":2250}
{"at":7,"op":"Directory.withNewFile","id":"cc","kind":"cached","info":{"detail":""}}
{"at":8,"op":"Query.version","id":"dd","kind":"done","value":0}
"#;
        let steps = engine_steps(jsonl);
        assert_eq!(
            steps,
            [
                Step {
                    name: "Container.from 127.0.0.1:5000/library/rust:1-slim".into(),
                    secs: Some(12.5),
                    cached: false,
                    span: Some((0.002, 0.005)),
                },
                Step {
                    name: "Container.withExec cargo test --locked".into(),
                    secs: Some(2.25),
                    cached: false,
                    span: Some((0.003, 0.006)),
                },
                Step {
                    name: "Directory.withNewFile".into(),
                    secs: None,
                    cached: true,
                    span: None,
                },
                Step {
                    name: "Query.version".into(),
                    secs: Some(0.0),
                    cached: false,
                    span: None,
                },
            ]
        );
    }

    #[test]
    fn cargo_timings_page() {
        let html = r#"<html><script>
const UNIT_DATA = [{"i":0,"name":"syn","version":"2.0.1","mode":"todo","target":"","start":0.1,"duration":4.5,"rmeta_time":2.0,"unlocked_units":[],"unlocked_rmeta_units":[]},
{"i":1,"name":"serde","version":"1.0","mode":"run-custom-build","target":" build script","start":0.2,"duration":0.25},
{"i":2,"name":"serde","version":"1.0","mode":"todo","target":"","start":0.5,"duration":3.0}];
const CONCURRENCY_DATA = [];
</script></html>"#;
        let units = cargo_units(html).map_err(|e| e.to_string());
        assert_eq!(
            units,
            Ok(vec![
                Unit {
                    name: "syn".into(),
                    secs: 4.5
                },
                Unit {
                    name: "serde".into(),
                    secs: 3.25
                },
            ])
        );
        assert!(cargo_units("<html></html>").is_err());
    }
}
