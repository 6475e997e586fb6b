//! The worker's small HTTP server on `WORKER_ADDR`: `/health` (200 while PostgreSQL and Redis answer, 503
//! naming the one that does not) and `/metrics` (Prometheus text from the recorder every binary installs).

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use pricing_core::{cache::Cache, health, prometheus};
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    let backends = health::check_backends(&b.db, &b.cache, health::CHECK_TIMEOUT).await;
    if backends.all_ok() {
        return (StatusCode::OK, Json(json!({ "status": "healthy" })));
    }
    let failing: Vec<String> =
        backends.failing().into_iter().map(|name| format!("{name} not answering")).collect();
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unhealthy", "detail": failing.join("; ") })))
}

async fn metrics(State(b): State<Backends>) -> impl IntoResponse {
    prometheus::record_pool(&b.db);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus::render())
}
