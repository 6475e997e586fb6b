//! Liveness, readiness (PostgreSQL and Redis both answer) and cache statistics.

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use serde_json::json;

use crate::{error::ApiResult, ApiContext};

pub fn router() -> Router<ApiContext> {
    Router::new().route("/", get(health)).route("/ready", get(ready)).route("/cache/stats", get(cache_stats))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}

async fn ready(State(ctx): State<ApiContext>) -> impl IntoResponse {
    let timeout = std::time::Duration::from_secs(2);
    let postgres = tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&ctx.db)).await;
    let redis = tokio::time::timeout(timeout, ctx.cache.ping()).await;
    let postgres_ok = matches!(postgres, Ok(Ok(_)));
    let redis_ok = matches!(redis, Ok(Ok(_)));
    let state = |ok: bool| if ok { "ok" } else { "unavailable" };
    let checks = json!({ "postgres": state(postgres_ok), "redis": state(redis_ok) });
    if postgres_ok && redis_ok {
        (StatusCode::OK, Json(json!({ "status": "ready", "checks": checks })))
    } else {
        let down: Vec<&str> = [("PostgreSQL", postgres_ok), ("Redis", redis_ok)]
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| name)
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "unavailable", "detail": format!("{} not answering", down.join(" and ")), "checks": checks }),
            ),
        )
    }
}

async fn cache_stats(State(ctx): State<ApiContext>) -> ApiResult<Json<serde_json::Value>> {
    let (connected_clients, used_memory) = ctx.cache.server_info().await?;
    let (hits, misses) = ctx.cache.lookup_counts();
    let (keys, keys_truncated) = ctx.cache.count_keys(100_000).await?;
    let lookups = hits + misses;
    Ok(Json(json!({
        "connected_clients": connected_clients,
        "used_memory_bytes": used_memory,
        "keys": keys,
        "keys_truncated": keys_truncated,
        "key_prefix": ctx.cache.keys.prefix(),
        "hits": hits,
        "misses": misses,
        "hit_rate": if lookups > 0 { hits as f64 / lookups as f64 } else { 0.0 },
    })))
}
