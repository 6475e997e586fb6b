//! Liveness, readiness (PostgreSQL and Redis both answer) and cache statistics.

use axum::{extract::State, http::StatusCode, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{auth::Admin, error::ApiResult, ApiContext};

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready)).routes(routes!(cache_stats))
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// The process is up (it checks nothing else).
#[utoipa::path(get, path = "", operation_id = "health", tag = "health", responses((status = 200, description = "Alive", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "healthy" })
}

#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// Which backing services are down, when any is.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    checks: Checks,
}

/// Each backing service: `ok` or `unavailable`.
#[derive(Debug, Serialize, ToSchema)]
struct Checks {
    postgres: &'static str,
    redis: &'static str,
}

/// Ready when PostgreSQL and Redis both answer within a second; 503 naming the one that does not.
#[utoipa::path(get, path = "/ready", operation_id = "readiness", tag = "health", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "A backing service is down", body = Readiness)))]
async fn ready(State(ctx): State<ApiContext>) -> (StatusCode, Json<Readiness>) {
    // Well inside the 2 s an orchestrator allows, so an outage shows as 503 rather than a probe timeout.
    let timeout = std::time::Duration::from_secs(1);
    let backends = pricing_core::health::check_backends(&ctx.db, &ctx.cache, timeout).await;
    let state = |ok: bool| if ok { "ok" } else { "unavailable" };
    let checks = Checks { postgres: state(backends.postgres), redis: state(backends.redis) };
    if backends.all_ok() {
        return (StatusCode::OK, Json(Readiness { status: "ready", detail: None, checks }));
    }
    let detail = Some(format!("{} not answering", backends.failing().join(" and ")));
    (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status: "unavailable", detail, checks }))
}

#[derive(Debug, Serialize, ToSchema)]
struct CacheStats {
    connected_clients: u64,
    used_memory_bytes: u64,
    /// Every key of the Redis database (`DBSIZE`, one O(1) call: this service's keys are not counted one by
    /// one, which would scan the keyspace).
    database_keys: u64,
    key_prefix: String,
    /// Cached product reads since this process started.
    hits: u64,
    misses: u64,
    hit_rate: f64,
}

/// Redis's view of this service's cache, for operators: counters and O(1) figures only.
#[utoipa::path(get, path = "/cache/stats", operation_id = "cache_stats", tag = "health",
    security(("bearer" = [])),
    responses((status = 200, description = "Statistics", body = CacheStats)))]
async fn cache_stats(_: Admin, State(ctx): State<ApiContext>) -> ApiResult<Json<CacheStats>> {
    let (connected_clients, used_memory_bytes, database_keys) = ctx.cache.server_info().await?;
    let (hits, misses) = ctx.cache.lookup_counts();
    let lookups = hits + misses;
    Ok(Json(CacheStats {
        connected_clients,
        used_memory_bytes,
        database_keys,
        key_prefix: ctx.cache.keys.prefix().to_string(),
        hits,
        misses,
        hit_rate: if lookups > 0 { hits as f64 / lookups as f64 } else { 0.0 },
    }))
}
