//! OpenTelemetry traces: a span per operation, exported over OTLP/HTTP (feature `otel`).
//!
//! Switched on by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL; `/v1/traces` is
//! appended) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is), with `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `http/json`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`
//! and `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` read by the OpenTelemetry crates themselves;
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
//!
//! Each operation that runs, fails or comes from the cache is one span named after its field
//! (`Container.withExec`), from its start to its end, with what it does and its arguments (secrets `***`)
//! as attributes, an error status with the message when it fails, and the exit code of its process. Its
//! parent is the span of the client request that first asked for it (the request's W3C `traceparent`
//! header), so a pipeline shows up beside the client's own spans; operations of requests without one are
//! children of a span `dagger-rs session` of their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use parking_lot::Mutex;

use crate::ops::engine::Engine;
use crate::solver::events::{Event, EventKind, Role};

/// What the engine calls its tracer and, unless `OTEL_SERVICE_NAME` says otherwise, its service.
const NAME: &str = "dagger-rs";

/// An operation running, until its span can be made.
struct Open {
    name: String,
    start: SystemTime,
    parent: Option<SpanContext>,
    attributes: Vec<KeyValue>,
}

/// The spans being made.
struct Spans {
    tracer: SdkTracer,
    open: HashMap<String, Open>,
    /// The span operations without a client's trace context are children of, made on first use.
    session: Option<(opentelemetry_sdk::trace::Span, SpanContext)>,
    stopped: bool,
}

/// Spans of an engine's operations, exported over OTLP/HTTP.
pub struct Tracing {
    provider: SdkTracerProvider,
    spans: Arc<Mutex<Spans>>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

/// A variable of the environment, when it is set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Tracing {
    /// Tracing as the standard `OTEL_*` variables ask: `None` when neither `OTEL_EXPORTER_OTLP_ENDPOINT` nor
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or when it is turned off.
    pub fn from_env() -> Result<Option<Self>, String> {
        let off = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if off || endpoint.is_none() {
            return Ok(None);
        }
        if let Some(p) = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            && !matches!(p.as_str(), "http/protobuf" | "http/json")
        {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL `{p}` is not supported: this engine exports over OTLP/HTTP; set \
                 `http/protobuf` or `http/json` (and an endpoint on the collector's HTTP port, usually 4318)"
            ));
        }
        // The exporter reads the endpoint, protocol, headers and timeout from the same variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build();
        Self::with_exporter(exporter).map(Some)
    }

    /// Tracing to the OTLP/HTTP receiver at `traces_url` (the full URL, such as
    /// `http://127.0.0.1:4318/v1/traces`), in JSON when `json`, else in protobuf.
    pub fn to_endpoint(traces_url: &str, json: bool) -> Result<Self, String> {
        let protocol = if json { Protocol::HttpJson } else { Protocol::HttpBinary };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url)
            .with_protocol(protocol)
            .build();
        Self::with_exporter(exporter)
    }

    fn with_exporter(
        exporter: Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError>,
    ) -> Result<Self, String> {
        let exporter = exporter.map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
        let mut resource = Resource::builder();
        if env("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(NAME);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer(NAME);
        Ok(Self {
            provider,
            spans: Arc::new(Mutex::new(Spans {
                tracer,
                open: HashMap::new(),
                session: None,
                stopped: false,
            })),
        })
    }

    /// Makes spans of every operation `engine` runs from now on.
    pub fn attach(&self, engine: &Engine) {
        let spans = self.spans.clone();
        engine.listen(move |e| spans.lock().follow(e));
    }

    /// Ends the session's span and sends what is left; waits for the export (up to the exporter's timeout).
    pub fn shutdown(&self) -> Result<(), String> {
        {
            let mut spans = self.spans.lock();
            spans.stopped = true;
            if let Some((mut span, _)) = spans.session.take() {
                span.end();
            }
        }
        self.provider
            .shutdown()
            .map_err(|e| format!("cannot send the last spans: {e}"))
    }
}

/// The span context a W3C `traceparent` names.
fn remote_parent(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.split('-');
    let (_, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// The attributes of an operation, from the event that describes it.
fn attributes(ev: &Event) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new("dagger_rs.op", ev.op.clone()),
        KeyValue::new("dagger_rs.id", ev.id.clone()),
    ];
    if let Some(serves) = &ev.serves {
        out.push(KeyValue::new("dagger_rs.serves", serves.clone()));
    }
    if let Some(info) = &ev.info {
        if !info.detail.is_empty() {
            out.push(KeyValue::new("dagger_rs.detail", info.detail.clone()));
        }
        let role = match info.role {
            Role::Work => "work",
            Role::Setting => "setting",
            Role::Root => "root",
        };
        out.push(KeyValue::new("dagger_rs.role", role));
        if !info.args.is_empty() {
            let args = serde_json::to_string(&info.args).unwrap_or_default();
            out.push(KeyValue::new("dagger_rs.args", args));
        }
    }
    out
}

impl Spans {
    /// Follows one event: opens a span's record when an operation starts, makes the span when it ends.
    fn follow(&mut self, ev: &Event) {
        if self.stopped || ev.op == "engine" {
            return;
        }
        let now = SystemTime::now();
        match &ev.kind {
            EventKind::Queued | EventKind::Log(_) | EventKind::Graph(_) => {}
            EventKind::Pulled(bytes) => {
                if let Some(open) = self.open.get_mut(&ev.id) {
                    open.attributes.push(KeyValue::new(
                        "dagger_rs.bytes_pulled",
                        i64::try_from(*bytes).unwrap_or(i64::MAX),
                    ));
                }
            }
            EventKind::Started => {
                self.open.insert(
                    ev.id.clone(),
                    Open {
                        name: ev.op.clone(),
                        start: now,
                        parent: ev.traceparent.as_deref().and_then(remote_parent),
                        attributes: attributes(ev),
                    },
                );
            }
            EventKind::Cached => {
                let mut attributes = attributes(ev);
                attributes.push(KeyValue::new("dagger_rs.cached", true));
                let open = Open {
                    name: ev.op.clone(),
                    start: now,
                    parent: ev.traceparent.as_deref().and_then(remote_parent),
                    attributes,
                };
                self.end(open, now, None);
            }
            EventKind::Done(_) => {
                if let Some(open) = self.open.remove(&ev.id) {
                    self.end(open, now, None);
                }
            }
            EventKind::Failed(message) => {
                let mut open = self.open.remove(&ev.id).unwrap_or_else(|| Open {
                    name: ev.op.clone(),
                    start: now,
                    parent: None,
                    attributes: attributes(ev),
                });
                if let Some(code) = ev.exit_code {
                    open.attributes
                        .push(KeyValue::new("process.exit.code", i64::from(code)));
                }
                self.end(open, now, Some(message.clone()));
            }
        }
    }

    /// Makes the span of an operation that ended at `end`, failed with `error` if it did.
    fn end(&mut self, open: Open, end: SystemTime, error: Option<String>) {
        let parent = match open.parent {
            Some(remote) => remote,
            None => self.session_context(),
        };
        let cx = Context::new().with_remote_span_context(parent);
        let mut span = self
            .tracer
            .span_builder(open.name)
            .with_kind(SpanKind::Internal)
            .with_start_time(open.start)
            .with_attributes(open.attributes)
            .start_with_context(&self.tracer, &cx);
        if let Some(message) = error {
            span.set_status(Status::error(message));
        }
        span.end_with_timestamp(end);
    }

    /// The context of the session's span, started on first use.
    fn session_context(&mut self) -> SpanContext {
        let tracer = &self.tracer;
        let (_, context) = self.session.get_or_insert_with(|| {
            let span = tracer
                .span_builder("dagger-rs session")
                .with_kind(SpanKind::Server)
                .start(tracer);
            let context = span.span_context().clone();
            (span, context)
        });
        context.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_names_the_remote_parent_span() {
        let sc = remote_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(remote_parent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(remote_parent("garbage").is_none());
    }
}
