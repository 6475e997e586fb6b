//! The listener's own small HTTP server: `/health` (200 while its loops run and its backends answer, 503
//! naming what fails) and `/metrics` (Prometheus text). The observability work standardises metrics across
//! the binaries; this stays thin until then.

use std::{fmt::Write, sync::atomic::Ordering, sync::Arc, time::Duration};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::startup::ListenerState;

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
    let postgres = tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&state.db)).await;
    let redis = tokio::time::timeout(CHECK_TIMEOUT, state.cache.ping()).await;
    let (beat, consumer_error) = state.consumer_beat.lock().expect("beat").clone();
    // A healthy consumer completes a step at least every block period.
    let stalled = beat.elapsed() > state.settings.listener_block * 3 + CHECK_TIMEOUT;
    let mut failing = Vec::new();
    if !matches!(postgres, Ok(Ok(_))) {
        failing.push("PostgreSQL not answering".to_string());
    }
    if !matches!(redis, Ok(Ok(_))) {
        failing.push("Redis not answering".to_string());
    }
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
    let c = &state.counters;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP market_events_total Market events handled by this listener, by outcome.");
    let _ = writeln!(out, "# TYPE market_events_total counter");
    for (outcome, counter) in
        [("applied", &c.applied), ("duplicate", &c.duplicate), ("dead_letter", &c.dead_letter)]
    {
        let _ =
            writeln!(out, "market_events_total{{outcome=\"{outcome}\"}} {}", counter.load(Ordering::Relaxed));
    }
    for (name, help, counter) in [
        ("listener_batches_total", "Stream batches applied.", &c.batches),
        ("listener_claimed_entries_total", "Entries claimed from silent listeners.", &c.claimed),
        ("listener_resent_events_total", "Received events appended to the stream again.", &c.resent),
        ("listener_bridged_messages_total", "Channel messages moved into the stream.", &c.bridged),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
