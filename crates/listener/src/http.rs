//! The listener's own small HTTP server: `/health` (200 while its loops run and its backends answer, 503
//! naming what fails) and `/metrics` (Prometheus text from the recorder every binary installs, with the
//! stream's backlog read at each scrape).

use std::{sync::Arc, time::Duration};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use pricing_core::prometheus::{self, names};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::ListenerState;

/// How long a backend may take to answer a health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn serve(listener: TcpListener, state: Arc<ListenerState>, shutdown: CancellationToken) {
    let app = Router::new().route("/health", get(health)).route("/metrics", get(metrics)).with_state(state);
    let served =
        axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the listener's HTTP server stopped");
    }
}

async fn health(State(state): State<Arc<ListenerState>>) -> impl IntoResponse {
    let backends = pricing_core::health::check_backends(&state.db, &state.cache, CHECK_TIMEOUT).await;
    let (beat, consumer_error) = state.consumer_beat.lock().expect("beat").clone();
    // A healthy consumer completes a step at least every block period.
    let stalled = beat.elapsed() > state.settings.listener_block * 3 + CHECK_TIMEOUT;
    let mut failing: Vec<String> =
        backends.failing().into_iter().map(|name| format!("{name} not answering")).collect();
    if stalled {
        failing.push(format!(
            "stream consumer stalled ({})",
            consumer_error.as_deref().unwrap_or("no progress")
        ));
    }
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "healthy" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unhealthy", "detail": failing.join("; ") })),
        )
    }
}

async fn metrics(State(state): State<Arc<ListenerState>>) -> impl IntoResponse {
    prometheus::record_pool(&state.db);
    // The stream's backlog, read at each scrape (two Redis calls); a failure leaves the last values.
    match tokio::time::timeout(CHECK_TIMEOUT, state.events.backlog()).await {
        Ok(Ok(backlog)) => {
            metrics::gauge!(names::LISTENER_STREAM_ENTRIES).set(backlog.entries as f64);
            metrics::gauge!(names::LISTENER_PENDING).set(backlog.pending as f64);
            metrics::gauge!(names::LISTENER_LAG).set(backlog.lag as f64);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "could not read the stream's backlog"),
        Err(_) => tracing::debug!("reading the stream's backlog timed out"),
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus::render())
}
