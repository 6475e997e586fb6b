//! Trace export: the OTLP exporter behind a bounded queue, so a slow or absent collector never slows a
//! request. A span that would overflow the queue is dropped (never waited for) and counted in
//! `otel_spans_dropped_total`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
    },
    Resource,
};

use crate::prometheus::names;

/// The tracer provider `OTEL_EXPORTER_OTLP_ENDPOINT` asks for, or `None` when it is unset (nothing is
/// exported then).
pub(super) fn tracer_provider(service_name: &'static str) -> Option<SdkTracerProvider> {
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
