//! The worker's small HTTP server on `WORKER_ADDR`: `/health` (200 while PostgreSQL and Redis answer, 503
//! naming the one that does not) and `/metrics` (Prometheus text from the recorder every binary installs).

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use pricing_core::{cache::Cache, prometheus};
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a backend may take to answer a health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Backends {
    db: PgPool,
    cache: Cache,
}

pub async fn serve(listener: TcpListener, db: PgPool, cache: Cache, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(Backends { db, cache });
    let served =
        axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the worker's HTTP server stopped");
    }
}

async fn health(State(b): State<Backends>) -> impl IntoResponse {
    let postgres = tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&b.db)).await;
    let redis = tokio::time::timeout(CHECK_TIMEOUT, b.cache.ping()).await;
    let mut failing = Vec::new();
    if !matches!(postgres, Ok(Ok(_))) {
        failing.push("PostgreSQL not answering");
    }
    if !matches!(redis, Ok(Ok(_))) {
        failing.push("Redis not answering");
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

async fn metrics(State(b): State<Backends>) -> impl IntoResponse {
    prometheus::record_pool(&b.db);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus::render())
}
