//! Process set-up shared by every binary: logs (`RUST_LOG`-style filtering, text or JSON lines) and traces.
//!
//! Traces are OpenTelemetry, exported over OTLP and configured only by the standard variables
//! (`OTEL_VARS`): with no `OTEL_EXPORTER_OTLP_ENDPOINT` nothing is exported and nothing is set up. With one,
//! spans go through the SDK's batch processor: a bounded queue, sent in the background, dropped (never
//! waited for, counted in `otel_spans_dropped_total`) when full, so a slow or absent collector never slows
//! a request. `init` returns a guard the binary holds until it exits; dropping it flushes what is queued.
//!
//! Context crosses processes as W3C `traceparent`: read from HTTP headers, written into every job payload
//! and event message (`current_traceparent`), and restored by the worker and the listener
//! (`parent_from`), so one request is one trace.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
    Context,
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
    },
    Resource,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::prometheus::names;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

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

/// Sets up logs and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, trace export for `service_name` (the
/// default of `OTEL_SERVICE_NAME`). Only the first call in a process installs anything (tests call it
/// many times).
pub fn init(service_name: &'static str, filter: &str, format: &str) -> TelemetryGuard {
    let provider = tracer_provider(service_name);
    // One global filter (`RUST_LOG`) for logs and spans alike: per-layer filters were seen to lose span
    // callsites under concurrency, and a lost span is a broken trace.
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name)));
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (json, text) = if format == "json" {
        (Some(fmt::layer().json().flatten_event(true).with_current_span(true)), None)
    } else {
        (None, Some(fmt::layer().with_target(true)))
    };
    let installed =
        tracing_subscriber::registry().with(filter).with(json).with(text).with(otel).try_init().is_ok();
    if installed {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::debug!(service = service_name, export = provider.is_some(), "telemetry ready");
    }
    TelemetryGuard { provider: provider.filter(|_| installed) }
}

fn tracer_provider(service_name: &'static str) -> Option<SdkTracerProvider> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty())?;
    let grpc = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").is_ok_and(|p| p.trim() == "grpc");
    let exporter = if grpc {
        opentelemetry_otlp::SpanExporter::builder().with_tonic().build()
    } else {
        opentelemetry_otlp::SpanExporter::builder().with_http().build()
    };
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("trace export is off: the OTLP exporter could not be built: {e}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service_name);
    }
    let queued = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(CountingExporter { inner: exporter, queued: queued.clone() })
        .with_batch_config(BatchConfigBuilder::default().with_max_queue_size(MAX_QUEUED_SPANS).build())
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the SDK's default config).
    Some(
        SdkTracerProvider::builder()
            .with_span_processor(BoundedProcessor { inner: batch, queued })
            .with_resource(resource.build())
            .build(),
    )
}

/// Spans waiting for export, at most. Beyond it a span is dropped (never waited for) and counted in
/// `otel_spans_dropped_total`.
const MAX_QUEUED_SPANS: usize = 2_048;

/// The batch processor, behind a count of the spans it holds: a span that would overflow its queue is
/// dropped here, where it can be counted (the SDK's own drops are not observable).
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_SPANS {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(names::SPANS_DROPPED).increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, releasing the spans it is handed from the count `BoundedProcessor` keeps.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = batch.len();
        let _ = self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| Some(q.saturating_sub(n)));
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The W3C `traceparent` of the current span, to carry in a job payload or an event message.
pub fn current_traceparent() -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new()
        .inject_context(&tracing::Span::current().context(), &mut Carrier(&mut carrier));
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote context in `traceparent` (when it is a valid one).
pub fn parent_from(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let context = context_from(traceparent);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
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
