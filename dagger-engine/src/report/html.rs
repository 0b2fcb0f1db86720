//! The HTML report: one self-contained file (its style and script inline, nothing fetched), written by hand
//! so it needs no template engine.
//!
//! Its parts have stable ids and classes that tests (and people's own tools) can rely on: `#summary` holds
//! one `.figure[data-figure]` per figure; `#timeline` holds one `details.op` per operation, in timeline
//! order, with `data-id`, `data-op`, `data-state` (`queued`, `running`, `cached`, `done`, `failed`),
//! `data-role`, `data-start` and `data-end` (milliseconds since the run started), and the class `critical`
//! on the critical path.

use std::fmt::Write as _;

use crate::report::run::{Op, Run, State};
use crate::report::text::{bytes, duration};
use crate::solver::events::Role;

/// The style: a light page, the timeline as a grid of rows (state, what it does, its bar, its duration).
const STYLE: &str = r#"
:root{--fg:#1d2330;--dim:#6b7385;--line:#e3e6ec;--bg:#fff;--panel:#f6f7f9;--done:#2f7d4f;--cached:#8a94a6;
--failed:#c62f2f;--running:#2d6cdf;--queued:#c9d3e6;--critical:#e08a00}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:18px 24px 8px}
h1{margin:0;font-size:20px}
h2{font-size:15px;margin:18px 0 8px}
.sub{color:var(--dim);margin-top:2px}
main{padding:0 24px 32px}
code,pre{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
#summary{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 4px}
.figure{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:120px}
.figure b{display:block;font-size:20px}
.figure span{color:var(--dim);font-size:12px}
.figure.bad b{color:var(--failed)}
.notes{color:var(--dim)}
.controls{display:flex;gap:16px;align-items:center;margin:6px 0;color:var(--dim)}
.legend i{display:inline-block;width:12px;height:10px;border-radius:2px;margin:0 4px 0 10px;vertical-align:-1px}
.row{display:grid;grid-template-columns:22px minmax(220px,34%) 1fr 70px;align-items:center;gap:8px;padding:2px 6px}
.axis{color:var(--dim);font-size:11px;border-bottom:1px solid var(--line)}
.axis .track{height:18px}
.tick{position:absolute;top:2px;transform:translateX(-50%);white-space:nowrap}
.track{position:relative;height:14px}
.bar,.wait,.hit{position:absolute;top:2px;height:10px;border-radius:3px}
.wait{background:var(--queued)}
.bar{background:var(--done);min-width:2px}
.hit{width:8px;height:8px;top:3px;margin-left:-4px;background:var(--cached);transform:rotate(45deg);border-radius:1px}
details.op{border-bottom:1px solid var(--line)}
details.op>summary{list-style:none;cursor:pointer}
details.op>summary::-webkit-details-marker{display:none}
details.op>summary:hover{background:var(--panel)}
details.op:target>summary{background:#fff6dd}
.name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.name .field{color:var(--dim)}
.name .with{display:block;color:var(--dim);font-size:11.5px;line-height:1.2;overflow:hidden;text-overflow:ellipsis}
.dur{text-align:right;color:var(--dim);font-variant-numeric:tabular-nums}
.st{font-weight:bold;text-align:center}
.st-done .st{color:var(--done)}
.st-cached .st{color:var(--cached)}
.st-failed .st{color:var(--failed)}
.st-running .st{color:var(--running)}
.st-queued .st{color:var(--dim)}
.st-cached .name{color:var(--dim)}
.st-failed .bar{background:var(--failed)}
.st-running .bar{background:var(--running)}
.st-failed>summary{background:#fdf0f0}
.critical .bar{box-shadow:0 0 0 2px var(--critical)}
.crit{color:var(--critical)}
.serves{color:var(--dim);font-size:12px}
.graph-wrap{overflow-x:auto;border:1px solid var(--line);border-radius:8px;background:var(--panel);padding:4px}
.graph .edge{fill:none;stroke:#8a94a6;stroke-width:1.3}
.graph .edge.value{stroke-width:2.6}
.graph .edge.after{stroke-dasharray:5 4}
.graph rect{fill:#fff;stroke:#555}
.graph .input rect{fill:#eef3fb;stroke:#6b7fa8}
.graph .output rect{fill:#f3f5f8;stroke:#8a94a6}
.graph .s-done rect{fill:#eaf6ec;stroke:var(--done)}
.graph .s-cached rect{fill:#f1f2f5;stroke:var(--cached)}
.graph .s-failed rect{fill:#fdf0f0;stroke:var(--failed);stroke-width:2}
.graph .s-running rect{fill:#eef3fd;stroke:var(--running)}
.graph text{font:12px system-ui,sans-serif;fill:var(--fg)}
.minor{display:none}
body.show-minor .minor{display:block}
body.only-critical details.op:not(.critical){display:none}
.minor .name{color:var(--dim);font-style:italic}
.body{padding:8px 12px 12px 36px;background:var(--panel)}
.body table{border-collapse:collapse;margin:4px 0}
.body td,.body th{text-align:left;vertical-align:top;padding:2px 12px 2px 0}
.body th{color:var(--dim);font-weight:normal;white-space:nowrap}
.body pre{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px;max-height:360px;overflow:auto;
white-space:pre-wrap;word-break:break-all;margin:6px 0}
.error{border-left:4px solid var(--failed);background:#fff;padding:6px 10px;margin:6px 0}
.error pre{border:0;padding:0;margin:4px 0 0}
.exit{color:var(--failed);font-weight:bold}
a{color:var(--running)}
"#;

/// The script: the two switches above the timeline, opening an operation linked to, and the time the page
/// took to be laid out (`body[data-rendered-ms]`, from navigation to the load event with layout done).
const SCRIPT: &str = r#"
(function(){
var b=document.body;
function sw(id,cls){var e=document.getElementById(id);if(e){e.addEventListener('change',function(){b.classList.toggle(cls,e.checked);});}}
sw('show-minor','show-minor');sw('only-critical','only-critical');
function open(){var h=location.hash.slice(1);if(!h)return;var d=document.getElementById(h);
if(d&&d.tagName==='DETAILS'){d.open=true;if(d.classList.contains('minor')){b.classList.add('show-minor');
var c=document.getElementById('show-minor');if(c)c.checked=true;}}}
window.addEventListener('hashchange',open);open();
window.addEventListener('load',function(){b.getBoundingClientRect();b.setAttribute('data-rendered-ms',Math.round(performance.now()));});
})();
"#;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time of the Unix epoch in milliseconds as `2025-01-31 12:34:56 UTC`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// A step of the time axis near a tenth of `wall`: 1, 2 or 5 times a power of ten, in milliseconds.
fn tick_step(wall: u64) -> u64 {
    let target = (wall / 8).max(1);
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if step * m >= target {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// A percentage of the timeline's width.
fn pct(ms: u64, wall: u64) -> String {
    format!("{:.3}%", ms as f64 * 100.0 / wall.max(1) as f64)
}

/// The state's mark.
fn mark(state: State) -> &'static str {
    match state {
        State::Queued => "…",
        State::Running => "▶",
        State::Cached => "●",
        State::Done => "✔",
        State::Failed => "✘",
    }
}

impl Run {
    /// The report as one self-contained HTML document.
    pub fn html(&self) -> String {
        let s = &self.summary;
        let mut out = String::with_capacity(4096 + self.ops.len() * 1024);
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
        let _ = write!(
            out,
            "<title>dagger-rs run report — {}</title><style>{STYLE}</style></head><body>",
            esc(&utc(self.started_at))
        );
        let verdict = if s.failed > 0 {
            format!("{} failed", s.failed)
        } else if s.running + s.queued > 0 {
            "unfinished".to_owned()
        } else {
            "succeeded".to_owned()
        };
        let _ = write!(
            out,
            "<header><h1>Run report</h1><div class=\"sub\">started {} · {} · {} · dagger-rs {}</div></header><main>",
            esc(&utc(self.started_at)),
            duration(s.wall_ms),
            esc(&verdict),
            env!("CARGO_PKG_VERSION")
        );

        out.push_str("<section id=\"summary\">");
        let ratio = format!("{:.0}%", s.cache_hit_ratio * 100.0);
        let critical = format!("{} · {} ops", duration(s.critical_ms), s.critical_ops);
        let figures: [(&str, String, &str, bool); 9] = [
            ("wall", duration(s.wall_ms), "wall time", false),
            ("run", s.run.to_string(), "operations run", false),
            ("cached", s.cached.to_string(), "from the cache", false),
            ("failed", s.failed.to_string(), "failed", s.failed > 0),
            ("ratio", ratio, "cache hit ratio", false),
            ("peak", s.peak_concurrency.to_string(), "peak concurrency", false),
            ("critical", critical, "critical path", false),
            ("pulled", bytes(s.bytes_pulled), "pulled from registries", false),
            (
                "settings",
                s.settings.to_string(),
                "settings and starting points",
                false,
            ),
        ];
        for (key, value, what, bad) in figures {
            let _ = write!(
                out,
                "<div class=\"figure{}\" data-figure=\"{key}\"><b>{}</b><span>{what}</span></div>",
                if bad { " bad" } else { "" },
                esc(&value)
            );
        }
        out.push_str("</section>");
        for note in &self.notes {
            let _ = write!(out, "<p class=\"notes\">engine: {}</p>", esc(note));
        }
        self.graphs(&mut out);

        let _ = write!(
            out,
            "<h2>Timeline</h2><div class=\"controls\"><label><input type=\"checkbox\" id=\"show-minor\"> show \
             the {} settings and starting points</label><label><input type=\"checkbox\" id=\"only-critical\"> \
             only the critical path</label><span class=\"legend\"><i style=\"background:var(--queued)\"></i>\
             queued<i style=\"background:var(--done)\"></i>ran<i style=\"background:var(--cached)\"></i>cached\
             <i style=\"background:var(--failed)\"></i>failed<i style=\"background:var(--running)\"></i>running\
             <i style=\"background:var(--critical)\"></i>critical path</span></div>",
            s.settings
        );
        out.push_str("<section id=\"timeline\">");
        self.axis(&mut out);
        for op in &self.ops {
            self.row(&mut out, op);
        }
        if self.ops.is_empty() {
            out.push_str("<p class=\"notes\" id=\"empty\">No operation has run yet.</p>");
        }
        let _ = writeln!(out, "</section></main><script>{SCRIPT}</script></body></html>");
        out
    }

    /// The graphs of the pipelines the clients ran, outputs coloured by how their operations ended.
    fn graphs(&self, out: &mut String) {
        if self.graphs.is_empty() {
            return;
        }
        out.push_str("<section id=\"pipelines\">");
        for g in &self.graphs {
            let _ = write!(
                out,
                "<h2>Pipeline <code>{}</code></h2><div class=\"graph-wrap\">",
                esc(&g.name)
            );
            let state_of = |serves: &str| {
                crate::report::graph::output_state(
                    serves,
                    self.ops
                        .iter()
                        .filter(|o| o.role == Role::Work || o.state == State::Failed)
                        .filter_map(|o| Some((o.serves.as_deref()?, o.state))),
                )
            };
            crate::report::graph::svg(g, &state_of, out);
            out.push_str("</div>");
        }
        out.push_str("</section>");
    }

    /// The time axis.
    fn axis(&self, out: &mut String) {
        let wall = self.summary.wall_ms.max(1);
        let step = tick_step(wall);
        out.push_str("<div class=\"row axis\"><span></span><span>operation</span><div class=\"track\">");
        let mut t = 0;
        while t <= wall {
            let _ = write!(
                out,
                "<span class=\"tick\" style=\"left:{}\">{}</span>",
                pct(t, wall),
                duration(t)
            );
            t += step;
        }
        out.push_str("</div><span class=\"dur\">took</span></div>");
    }

    /// One operation: its row on the timeline, and what opening it shows.
    fn row(&self, out: &mut String, op: &Op) {
        let wall = self.summary.wall_ms.max(1);
        let role = match op.role {
            Role::Work => "work",
            Role::Setting => "setting",
            Role::Root => "root",
        };
        let mut classes = format!("op st-{}", op.state.as_str());
        if op.role != Role::Work {
            classes.push_str(" minor");
        }
        if op.critical {
            classes.push_str(" critical");
        }
        let end = op.ended.or(match op.state {
            State::Running => Some(wall),
            _ => None,
        });
        let _ = write!(
            out,
            "<details class=\"{classes}\" id=\"op-{id}\" data-id=\"{id}\" data-op=\"{opname}\" data-state=\"{state}\" \
             data-role=\"{role}\" data-start=\"{start}\" data-end=\"{end}\"{serves}{open}><summary class=\"row\">\
             <span class=\"st\" title=\"{state}\">{mark}</span><span class=\"name\" title=\"{title}\">{name}</span>\
             <div class=\"track\">",
            id = esc(&op.id),
            opname = esc(&op.op),
            state = op.state.as_str(),
            start = op.start(),
            end = end.map(|e| e.to_string()).unwrap_or_default(),
            open = if op.state == State::Failed { " open" } else { "" },
            serves = op
                .serves
                .as_deref()
                .map(|s| format!(" data-serves=\"{}\"", esc(s)))
                .unwrap_or_default(),
            mark = mark(op.state),
            title = esc(&title(op)),
            name = name_html(op),
        );
        if let (Some(q), Some(s)) = (op.queued, op.started)
            && s > q
        {
            let _ = write!(
                out,
                "<span class=\"wait\" style=\"left:{};width:{}\" title=\"queued {}\"></span>",
                pct(q, wall),
                pct(s - q, wall),
                duration(s - q)
            );
        }
        match (op.state, op.started) {
            (State::Cached, Some(s)) => {
                let _ = write!(
                    out,
                    "<span class=\"hit\" style=\"left:{}\" title=\"cached\"></span>",
                    pct(s, wall)
                );
            }
            (State::Queued, _) => {
                if let Some(q) = op.queued {
                    let _ = write!(
                        out,
                        "<span class=\"wait\" style=\"left:{};width:{}\" title=\"never started\"></span>",
                        pct(q, wall),
                        pct(wall.saturating_sub(q), wall)
                    );
                }
            }
            (_, Some(s)) => {
                let e = end.unwrap_or(s);
                let _ = write!(
                    out,
                    "<span class=\"bar\" style=\"left:{};width:{}\"></span>",
                    pct(s, wall),
                    pct(e.saturating_sub(s), wall)
                );
            }
            _ => {}
        }
        let took = match (op.state, op.duration()) {
            (_, Some(ms)) => duration(ms),
            (State::Cached, _) => "cached".to_owned(),
            (State::Running, _) => format!("{}+", duration(wall.saturating_sub(op.start()))),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "</div><span class=\"dur\">{took}</span></summary><div class=\"body\">"
        );
        self.details(out, op);
        out.push_str("</div></details>");
    }

    /// What an opened operation shows: its field, id, times, arguments, inputs, error and logs.
    fn details(&self, out: &mut String, op: &Op) {
        // What a person opens a row for first: the error, then the output.
        if let Some(e) = &op.error {
            out.push_str("<div class=\"error\">");
            if let Some(code) = op.exit_code {
                let _ = write!(
                    out,
                    "<span class=\"exit\" data-exit-code=\"{code}\">exit code {code}</span>"
                );
            } else {
                out.push_str("<span class=\"exit\">failed</span>");
            }
            let _ = write!(out, "<pre>{}</pre></div>", esc(e));
        }
        if !op.logs.is_empty() {
            out.push_str("<pre class=\"logs\">");
            if op.logs_dropped > 0 {
                let _ = writeln!(out, "… {} earlier lines not kept", op.logs_dropped);
            }
            for line in &op.logs {
                out.push_str(&esc(line));
                out.push('\n');
            }
            out.push_str("</pre>");
        }
        out.push_str("<table>");
        let _ = write!(
            out,
            "<tr><th>field</th><td><code>{}</code> <span class=\"sub\">#{}</span></td></tr>",
            esc(&op.op),
            esc(&op.id)
        );
        let mut times = op.state.as_str().to_owned();
        if let Some(q) = op.queued {
            let _ = write!(times, " · queued at {}", duration(q));
        }
        if let Some(s) = op.started {
            let _ = write!(times, " · started at {}", duration(s));
        }
        if let Some(e) = op.ended {
            let _ = write!(times, " · ended at {}", duration(e));
        }
        if op.critical {
            times.push_str(" · on the critical path");
        }
        let _ = write!(out, "<tr><th>state</th><td>{}</td></tr>", esc(&times));
        if let Some(serves) = &op.serves {
            let _ = write!(
                out,
                "<tr class=\"serves\"><th>serves</th><td><code>{}</code></td></tr>",
                esc(serves)
            );
        }
        if op.pulled > 0 {
            let _ = write!(
                out,
                "<tr class=\"pulled\"><th>pulled</th><td>{}</td></tr>",
                bytes(op.pulled)
            );
        }
        // Arguments with a value; those left false or empty (nearly always their defaults) on one line.
        let mut unset = Vec::new();
        for (k, v) in &op.args {
            let shown = match v {
                serde_json::Value::Null | serde_json::Value::Bool(false) => None,
                serde_json::Value::String(s) if s.is_empty() => None,
                serde_json::Value::Array(a) if a.is_empty() => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            match shown {
                Some(shown) => {
                    let _ = write!(
                        out,
                        "<tr class=\"arg\"><th>{}</th><td><code>{}</code></td></tr>",
                        esc(k),
                        esc(&shown)
                    );
                }
                None => unset.push(k.as_str()),
            }
        }
        if !unset.is_empty() {
            let _ = write!(
                out,
                "<tr class=\"arg unset\"><th>false or empty</th><td class=\"sub\">{}</td></tr>",
                esc(&unset.join(", "))
            );
        }
        if !op.settings.is_empty() {
            let _ = write!(out, "<tr><th>with</th><td>{}</td></tr>", esc(&op.settings.join(", ")));
        }
        if !op.inputs.is_empty() {
            out.push_str("<tr><th>built from</th><td>");
            for (i, input) in op.inputs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "<a href=\"#op-{0}\">#{0}</a>", esc(input));
            }
            out.push_str("</td></tr>");
        }
        out.push_str("</table>");
    }
}

/// The name of an operation: its field dimmed, then what it does, then the settings made for it.
fn name_html(op: &Op) -> String {
    let field = op.op.rsplit_once('.').map_or(op.op.as_str(), |(_, f)| f);
    let mut out = match op.label.strip_prefix(field).map(str::trim_start) {
        Some(rest) if !rest.is_empty() => {
            format!("<span class=\"field\">{}</span> <code>{}</code>", esc(field), esc(rest))
        }
        _ => format!("<span class=\"field\">{}</span>", esc(&op.op)),
    };
    if op.critical {
        out.push_str(" <span class=\"crit\" title=\"on the critical path\">◆</span>");
    }
    if let Some(serves) = &op.serves {
        let _ = write!(out, " <span class=\"serves\" title=\"serves\">→ {}</span>", esc(serves));
    }
    if !op.settings.is_empty() {
        let _ = write!(out, "<span class=\"with\">{}</span>", esc(&op.settings.join(", ")));
    }
    out
}

/// The name's tooltip: what it does and the settings made for it, in full.
fn title(op: &Op) -> String {
    if op.settings.is_empty() {
        op.label.clone()
    } else {
        format!("{} · {}", op.label, op.settings.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Record;
    use crate::solver::events::{Event, EventKind, OpInfo};

    fn rec(at: u64, id: &str, kind: EventKind, detail: &str) -> Record {
        let mut event = Event::new("Container.withExec", id, kind);
        if !detail.is_empty() {
            event.info = Some(Box::new(OpInfo {
                detail: detail.into(),
                args: [("args".to_owned(), serde_json::json!(["sh", "-c", detail]))]
                    .into_iter()
                    .collect(),
                ..OpInfo::default()
            }));
        }
        Record { at, event }
    }

    #[test]
    fn the_report_is_one_file_that_fetches_nothing() {
        let mut failed = rec(30, "b", EventKind::Failed("process \"sh\" failed <here>".into()), "");
        failed.event.exit_code = Some(3);
        let run = Run::from_records(
            &[
                rec(0, "a", EventKind::Started, "echo <hi> & \"bye\""),
                rec(10, "a", EventKind::Log("<script>alert(1)</script>".into()), ""),
                rec(20, "a", EventKind::Done(20), ""),
                rec(20, "b", EventKind::Started, "exit 3"),
                failed,
            ],
            None,
            None,
        );
        let html = run.html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        for remote in ["src=\"http", "href=\"http", "@import", "url("] {
            assert!(!html.contains(remote), "{remote} in the report");
        }
        assert!(!html.contains("<script>alert"), "output is escaped");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("echo &lt;hi&gt; &amp; &quot;bye&quot;"));
        assert!(html.contains("data-id=\"b\""));
        assert!(html.contains("data-state=\"failed\""));
        assert!(html.contains("data-exit-code=\"3\""));
        assert_eq!(html.matches("<details class=\"op").count(), 2);
    }

    #[test]
    fn rows_say_what_they_serve_and_the_summary_what_was_pulled() {
        let mut started = rec(0, "a", EventKind::Started, "cargo <test>");
        started.event.serves = Some("tests<1>".into());
        let run = Run::from_records(
            &[
                started,
                rec(5, "a", EventKind::Pulled(5 << 20), ""),
                rec(20, "a", EventKind::Done(20), ""),
            ],
            None,
            None,
        );
        let html = run.html();
        assert!(
            html.contains("<span class=\"serves\" title=\"serves\">→ tests&lt;1&gt;</span>"),
            "{html}"
        );
        assert!(html.contains("<th>serves</th><td><code>tests&lt;1&gt;</code>"));
        assert!(html.contains("<tr class=\"pulled\"><th>pulled</th><td>5.0 MiB</td></tr>"));
        assert!(html.contains("data-figure=\"pulled\"><b>5.0 MiB</b>"));
    }

    #[test]
    fn dates_and_ticks_read_naturally() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
        assert_eq!(tick_step(60_000), 10_000);
        assert_eq!(tick_step(800), 100);
        assert_eq!(tick_step(3), 1);
        assert_eq!(pct(50, 200), "25.000%");
    }

    #[test]
    fn an_empty_run_says_so() {
        let html = Run::from_records(&[], Some(0), Some(0)).html();
        assert!(html.contains("id=\"empty\""), "{html}");
    }
}
