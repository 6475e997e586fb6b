//! Market events: `POST /api/v1/publish-market-event` records an event in PostgreSQL (the truth) and
//! appends it to the Redis stream (announcing it on the channel too), then answers 202 at once; the
//! `pricing-listener` applies it. `GET /api/v1/market-events[/{event_id}]` shows what became of them.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use pricing_core::{
    db::market_events::{self, MarketEventRecord, STATUSES},
    domain::Page,
    events::{MarketEvent, MarketEventDraft},
    telemetry,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    auth::Admin,
    error::ApiResult,
    extract::{page_params, Query},
    ApiContext, ApiError,
};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/publish-market-event", post(publish))
        .route("/market-events", get(list))
        .route("/market-events/{event_id}", get(read))
}

/// Reads the optional body: none, empty or `null` is a full recalculation, as the old service had it.
fn draft_from(body: &Bytes) -> ApiResult<MarketEventDraft> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(MarketEventDraft::default());
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    let draft: Option<MarketEventDraft> = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let field = e.path().to_string();
        ApiError::Validation(format!("Invalid request body: {field}: {}", e.into_inner()))
    })?;
    let draft = draft.unwrap_or_default();
    if let Some(field) = draft.unknown.keys().next() {
        return Err(ApiError::Validation(format!("unknown field `{field}`")));
    }
    Ok(draft)
}

async fn publish(
    _: Admin,
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let mut draft = draft_from(&body)?;
    if draft.traceparent.is_none() {
        // The request's own span (a child of the caller's): the listener's work continues this trace.
        draft.traceparent = telemetry::current_traceparent()
            .or_else(|| headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string));
    }
    let event = draft.validate(MarketEvent::new_id).map_err(|e| ApiError::Validation(e.to_string()))?;
    if market_events::record(&ctx.db, &event).await? {
        // Recorded: if the append fails, the listener's sweep appends it later.
        if let Err(e) = ctx.events.append(std::slice::from_ref(&event)).await {
            tracing::warn!(event_id = %event.event_id, error = %e, "append failed; the listener's sweep will retry");
        }
        tracing::info!(event_id = %event.event_id, event_type = event.event_type.as_str(), "market event published");
    } else {
        tracing::info!(event_id = %event.event_id, "market event already known; not published again");
    }
    let stream = ctx.cache.keys.market_events();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "status": "Event published",
            "event_id": event.event_id,
            "stream": stream,
            "channel": stream,
        })),
    ))
}

async fn read(
    State(ctx): State<ApiContext>,
    Path(event_id): Path<String>,
) -> ApiResult<axum::Json<MarketEventRecord>> {
    if event_id.len() > 200 || event_id.chars().any(char::is_control) {
        return Err(ApiError::Validation("event_id must be 1 to 200 printable characters".into()));
    }
    Ok(axum::Json(market_events::get(&ctx.db, &event_id).await?))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    status: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

async fn list(
    State(ctx): State<ApiContext>,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Page<MarketEventRecord>>> {
    let (page, page_size) = page_params(params.page, params.page_size)?;
    let status = params.status.as_deref().filter(|s| !s.is_empty());
    if let Some(status) = status.filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::Validation(format!(
            "status must be one of {}; got {status:?}",
            STATUSES.join(", ")
        )));
    }
    Ok(axum::Json(market_events::list(&ctx.db, status, page, page_size).await?))
}
