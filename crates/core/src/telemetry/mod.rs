//! Process set-up shared by every binary: logs and traces, each with its own filter.
//!
//! Logs are text or JSON lines, filtered by `RUST_LOG`. Traces are OpenTelemetry, exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard variables, `OTEL_VARS`, configure the exporter) and
//! filtered by `OTEL_TRACES_FILTER`: quieting the logs (`RUST_LOG=warn`) does not thin the traces. Export
//! (`export.rs`) goes through a bounded queue, so a slow or absent collector never slows a request. `init`
//! returns a guard the binary holds until it exits; dropping it flushes what is queued.
//!
//! Context crosses processes as W3C `traceparent`: read from HTTP headers, written into every job payload
//! and event message (`current_traceparent`), and restored by the worker and the listener
//! (`parent_from`), so one request is one trace. With export off a process still passes its caller's
//! context on (the api keeps it as the request's current OpenTelemetry context), as W3C Trace Context asks
//! of a participant that does not record.

mod export;
mod filter;

use std::collections::HashMap;

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
    Context,
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::Settings;

/// The standard OpenTelemetry variables the binaries honour (read by the SDK itself).
pub const OTEL_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
];

/// Held by `main` until the process ends; dropping it flushes the spans still queued.
#[must_use = "hold the guard until the process exits"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("could not flush the queued trace spans: {e}");
            }
        }
    }
}

/// Sets up logs (`RUST_LOG`, `LOG_FORMAT`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, trace export
/// (`OTEL_TRACES_FILTER`) for `service_name` (the default of `OTEL_SERVICE_NAME`). Only the first call in
/// a process installs anything (tests call it many times). The filters were checked with the settings.
pub fn init(service_name: &'static str, settings: &Settings) -> TelemetryGuard {
    let provider = export::tracer_provider(service_name);
    let logs = if settings.log_format == "json" {
        fmt::layer().json().flatten_event(true).with_current_span(true).boxed()
    } else {
        fmt::layer().with_target(true).boxed()
    };
    let installed = match &provider {
        // Logs and traces, each with a filter of its own: per-layer filters, asked at every callsite
        // (`filter.rs` says why).
        Some(p) => {
            let traces = tracing_opentelemetry::layer()
                .with_tracer(p.tracer(service_name))
                .with_filter(filter::AskEveryTime::new(&settings.traces_filter));
            let logs = logs.with_filter(filter::AskEveryTime::new(&settings.log_filter));
            tracing_subscriber::registry().with(logs).with(traces).try_init().is_ok()
        }
        // Logs only: one global filter, whose verdict tracing caches per callsite (a per-layer filter asked
        // at every span cost the hot paths about a third of their throughput in `bench/run.sh`).
        None => tracing_subscriber::registry()
            .with(logs)
            .with(EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info")))
            .try_init()
            .is_ok(),
    };
    if installed {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::debug!(service = service_name, export = provider.is_some(), "telemetry ready");
        for warning in &settings.deprecated {
            tracing::warn!("{warning}");
        }
    }
    TelemetryGuard { provider: provider.filter(|_| installed) }
}

/// Checks a `RUST_LOG`-syntax filter (for `RUST_LOG` and `OTEL_TRACES_FILTER`), naming what is wrong.
pub fn check_filter(spec: &str) -> Result<(), String> {
    EnvFilter::try_new(spec).map(|_| ()).map_err(|e| e.to_string())
}

/// The W3C `traceparent` to carry in a job payload or an event message: the current span's, or with
/// export off (no span of ours is recorded) the caller's context the request runs in, unchanged.
pub fn current_traceparent() -> Option<String> {
    let span = tracing::Span::current().context();
    let context = if span.span().span_context().is_valid() { span } else { Context::current() };
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut Carrier(&mut carrier));
    carrier.remove("traceparent")
}

/// Adds to `span` a link to the span `traceparent` names (when it is a valid one): work that follows
/// from another trace without being part of it, such as a job the sweeper enqueues again.
pub fn link_to(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let linked = context_from(traceparent).span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Makes `span` a child of the remote context in `traceparent` (when it is a valid one).
pub fn parent_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let context = context_from(traceparent);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Runs `work` with the caller's context (the `traceparent` it sent, if valid) as the current OpenTelemetry
/// context when no span of ours is recorded (export off), so `current_traceparent` passes the caller's
/// trace on. With export on the current span already continues the caller's trace, and its context must
/// stay the parent of the spans `work` opens.
pub async fn within_caller<F: std::future::Future>(caller: Option<Context>, work: F) -> F::Output {
    use opentelemetry::context::FutureExt;
    let recorded = tracing::Span::current().context().span().span_context().is_valid();
    match caller.filter(|cx| !recorded && cx.span().span_context().is_valid()) {
        Some(cx) => work.with_context(cx).await,
        None => work.await,
    }
}

/// The remote context a `traceparent` names (an empty one if it names none).
pub fn context_from(traceparent: &str) -> Context {
    let mut carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&Carrier(&mut carrier))
}

/// Records the OpenTelemetry `trace_id` and `span_id` of `span` in its `trace_id` and `span_id` fields,
/// so every log line written inside it carries them (nothing when tracing is off).
pub fn record_ids(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
        span.record("span_id", span_context.span_id().to_string());
    }
}

struct Carrier<'a>(&'a mut HashMap<String, String>);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
