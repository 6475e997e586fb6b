//! The per-layer filter every layer of ours uses: an `EnvFilter` asked at every span and event.
//!
//! Logs and traces have filters of their own (`RUST_LOG`, `OTEL_TRACES_FILTER`), so each layer is a
//! `Filtered` layer. tracing-subscriber 0.3 passes a per-layer decision from `enabled` to `on_new_span`
//! through a thread-local; a callsite whose interest is cached as `always` skips `enabled`, and the span is
//! then judged by whatever the previous `enabled` call (for other metadata, e.g. a `log` record sqlx
//! checks) left there: spans silently vanish from the trace (tokio-rs/tracing#2519, fix proposed in
//! #3572). Answering `sometimes` instead of `always` for every callsite this filter accepts makes
//! `enabled` run each time, so the decision is always fresh; rejected callsites stay `never` and cost
//! nothing.

use tracing::{level_filters::LevelFilter, span, subscriber::Interest, Metadata};
use tracing_subscriber::{
    layer::{Context, Filter},
    EnvFilter,
};

pub(super) struct AskEveryTime(EnvFilter);

impl AskEveryTime {
    /// A filter in `RUST_LOG` syntax; the settings checked it, so a bad one here falls back to `info`.
    pub(super) fn new(spec: &str) -> Self {
        Self(EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info")))
    }
}

impl<S> Filter<S> for AskEveryTime {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Filter::<S>::enabled(&self.0, meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if Filter::<S>::callsite_enabled(&self.0, meta).is_never() {
            Interest::never()
        } else {
            Interest::sometimes()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.0)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_new_span(&self.0, attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        Filter::<S>::on_record(&self.0, id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_enter(&self.0, id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_exit(&self.0, id, cx)
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_close(&self.0, id, cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use tracing::{span, Subscriber};
    use tracing_subscriber::{
        layer::{Context, SubscriberExt},
        registry::LookupSpan,
        Layer,
    };

    use super::AskEveryTime;

    /// Counts the spans it is told about.
    struct Spans(Arc<AtomicUsize>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
        fn on_new_span(&self, _: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The trigger of tokio-rs/tracing#2519: a check (`enabled!`, as a `log_enabled!` is) that one layer's
    /// filter rejects, with no event after it, then a span both accept. With a plain `EnvFilter` per layer
    /// the span's callsite is cached as `always`, its filters are not asked again, and the stale answer
    /// of the check drops it from the traces layer.
    #[test]
    fn a_span_both_filters_accept_reaches_both_layers_after_a_check_one_rejected() {
        let (logs, traces) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let subscriber = tracing_subscriber::registry()
            .with(Spans(logs.clone()).with_filter(AskEveryTime::new("debug")))
            .with(Spans(traces.clone()).with_filter(AskEveryTime::new("info")));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                let _ = tracing::enabled!(tracing::Level::DEBUG);
                let _span = tracing::info_span!("work").entered();
            }
        });
        assert_eq!(logs.load(Ordering::SeqCst), 3);
        assert_eq!(traces.load(Ordering::SeqCst), 3, "every span reaches the traces layer");
    }
}
