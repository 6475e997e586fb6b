//! Market events: `POST /api/v1/publish-market-event` records an event in PostgreSQL (the truth) and
//! appends it to the Redis stream (announcing it on the channel too), then answers 202 at once; the
//! `pricing-listener` applies it. `GET /api/v1/market-events[/{event_id}]` shows what became of them.

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use pricing_core::{
    db::market_events::{self, MarketEventRecord, MarketEventStatus},
    domain::{Page, ProductRef},
    events::{MarketEvent, MarketEventDraft, EVENT_ID_PATTERN},
    telemetry,
};
use serde::{Deserialize, Serialize};
use utoipa::{
    openapi::schema::{Object, ObjectBuilder, SchemaType, Type},
    IntoParams, ToSchema,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::paging::PageParams;
use crate::{
    auth::Admin,
    error::{ApiResult, ErrorBody},
    extract::{PathText, Query, RawBody},
    ApiContext, ApiError,
};

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(publish)).routes(routes!(list)).routes(routes!(read))
}

/// An event accepted: recorded, and appended to the stream the listener reads.
#[derive(Debug, Serialize, ToSchema)]
struct EventAccepted {
    status: &'static str,
    event_id: String,
    /// The Redis stream, and the channel it is announced on.
    stream: String,
    channel: String,
}

/// How the API description states an event: a recalculation (optionally scoped), or a market signal for a
/// category or for products, each closed (`additionalProperties: false`). Never deserialized: `draft_from`
/// reads the body and `MarketEventDraft::validate` applies the same rules.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum MarketEventForms {
    Recalculation(RecalculationEvent),
    CategorySignal(CategorySignal),
    ProductSignal(ProductSignal),
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
enum RecalculateType {
    #[serde(rename = "recalculate")]
    Recalculate,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
enum SignalType {
    #[serde(rename = "competitor_price")]
    CompetitorPrice,
    #[serde(rename = "demand_shock")]
    DemandShock,
}

/// An optional `event_id` as the description states it: `EVENT_ID_PATTERN`, the rule `validate` applies
/// (a schema attribute would need a copy of it as a literal).
fn event_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(EVENT_ID_PATTERN))
        .build()
}

/// A recalculation: of everything, or of a category or some products.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RecalculationEvent {
    #[schema(schema_with = event_id_schema)]
    event_id: Option<String>,
    event_type: Option<RecalculateType>,
    #[schema(
        max_length = 100,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    category: Option<String>,
    #[schema(max_items = 1000)]
    product_ids: Option<Vec<ProductRef>>,
    #[schema(
        max_length = 255,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    source: Option<String>,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(
        max_length = 128,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    traceparent: Option<String>,
}

/// A market signal for a category (and, optionally, some products).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CategorySignal {
    #[schema(schema_with = event_id_schema)]
    event_id: Option<String>,
    event_type: SignalType,
    /// The market part of the price, between 0.5 and 2.0.
    #[schema(minimum = 0.5, maximum = 2.0)]
    multiplier: f64,
    #[schema(
        max_length = 100,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    category: String,
    #[schema(max_items = 1000)]
    product_ids: Option<Vec<ProductRef>>,
    #[schema(
        max_length = 255,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    source: Option<String>,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(
        max_length = 128,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    traceparent: Option<String>,
}

/// A market signal for some products.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ProductSignal {
    #[schema(schema_with = event_id_schema)]
    event_id: Option<String>,
    event_type: SignalType,
    /// The market part of the price, between 0.5 and 2.0.
    #[schema(minimum = 0.5, maximum = 2.0)]
    multiplier: f64,
    #[schema(min_items = 1, max_items = 1000)]
    product_ids: Vec<ProductRef>,
    #[schema(
        max_length = 255,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    source: Option<String>,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(
        max_length = 128,
        pattern = "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    traceparent: Option<String>,
}

/// Reads the optional body: none, empty or `null` is a full recalculation, as the old service had it.
fn draft_from(body: &[u8]) -> ApiResult<MarketEventDraft> {
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

/// Publishes a market event (no body: a full recalculation). Retrying with the same `event_id` publishes nothing new.
#[utoipa::path(post, path = "/publish-market-event", operation_id = "publish_market_event", tag = "market events",
    request_body(content = Option<MarketEventForms>, description = "The event; none (or `null`) is a full recalculation"),
    security(("bearer" = [])),
    responses((status = 202, description = "Accepted", body = EventAccepted)))]
async fn publish(
    _: Admin,
    State(ctx): State<ApiContext>,
    RawBody(body): RawBody,
) -> ApiResult<impl IntoResponse> {
    let mut draft = draft_from(&body)?;
    if draft.traceparent.is_none() {
        // The request's own span (a child of the caller's), or the caller's context with export off: the
        // listener's work continues this trace.
        draft.traceparent = telemetry::current_traceparent();
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
        axum::Json(EventAccepted {
            status: "Event published",
            event_id: event.event_id,
            channel: stream.clone(),
            stream,
        }),
    ))
}

/// What became of one event.
#[utoipa::path(get, path = "/market-events/{event_id}", operation_id = "get_market_event", tag = "market events",
    params(("event_id" = String, Path, max_length = 200, description = "The event's id")),
    responses((status = 200, description = "The event", body = MarketEventRecord),
              (status = 404, description = "No such event", body = ErrorBody)))]
async fn read(
    State(ctx): State<ApiContext>,
    PathText(event_id): PathText,
) -> ApiResult<axum::Json<MarketEventRecord>> {
    if event_id.len() > 200 {
        return Err(ApiError::Validation("event_id must be at most 200 characters".into()));
    }
    if !pricing_core::domain::is_printable_text(&event_id) {
        // No event can have such an id (publishing refuses it), and PostgreSQL refuses NUL in a query.
        return Err(ApiError::NotFound(format!("Market event {event_id:?} not found")));
    }
    Ok(axum::Json(market_events::get(&ctx.db, &event_id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListFilter {
    #[param(value_type = Option<MarketEventStatus>, inline)]
    status: Option<String>,
}

/// Events, newest first.
#[utoipa::path(get, path = "/market-events", operation_id = "list_market_events", tag = "market events", params(ListFilter, PageParams),
    responses((status = 200, description = "A page of events", body = Page<MarketEventRecord>)))]
async fn list(
    State(ctx): State<ApiContext>,
    Query(filter): Query<ListFilter>,
    Query(paging): Query<PageParams>,
) -> ApiResult<axum::Json<Page<MarketEventRecord>>> {
    let (page, page_size) = paging.checked(&ctx.settings.limits)?;
    let status = filter
        .status
        .as_deref()
        .map(|s| super::one_of("status", s, MarketEventStatus::ALL, MarketEventStatus::as_str))
        .transpose()?;
    Ok(axum::Json(market_events::list(&ctx.db, status, page, page_size).await?))
}
