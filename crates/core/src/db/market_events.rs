//! The `market_events` table: every market event heard, and whether it was applied. Applying an event and
//! marking it `applied` happen in one transaction (`claim_for_apply` then the effect, then commit), guarded
//! by its `event_id`, so at-least-once delivery from the stream becomes an exactly-once effect.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};

use crate::{domain::Page, events::MarketEvent, Error, Result};

/// An event's record, as `GET /api/v1/market-events/{event_id}` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MarketEventRecord {
    pub event_id: String,
    pub event_type: String,
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub status: MarketEventStatus,
    pub received_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// The recalculation its effect started.
    pub task_id: Option<uuid::Uuid>,
}

text_enum! {
    /// Where an event is: `received` until its effect is applied, then `applied`; `dead_letter` when it could
    /// not be applied.
    // The table's `CHECK` admits the same three; `applied` is set in the transaction that applies the effect.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum MarketEventStatus("market event status") {
        Received => "received",
        Applied => "applied",
        DeadLetter => "dead_letter",
    }
}

macro_rules! event_columns {
    () => {
        "event_id, event_type, status, received_at, applied_at, error, task_id"
    };
}

/// Records a new event as `received`. Returns `false` when its `event_id` was already known (a retried
/// publish): nothing changes then.
#[tracing::instrument(skip(pool, event), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "market_events", event_id = %event.event_id))]
pub async fn record(pool: &PgPool, event: &MarketEvent) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO market_events (event_id, event_type, payload) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(event.event_type.as_str())
    .bind(event.to_json())
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn get(pool: &PgPool, event_id: &str) -> Result<MarketEventRecord> {
    sqlx::query_as(concat!("SELECT ", event_columns!(), " FROM market_events WHERE event_id = $1"))
        .bind(event_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("Market event {event_id} not found")))
}

/// The latest events, newest first, optionally of one status.
pub async fn list(
    pool: &PgPool,
    status: Option<MarketEventStatus>,
    page: i64,
    page_size: i64,
) -> Result<Page<MarketEventRecord>> {
    let status = status.map(MarketEventStatus::as_str);
    let items = sqlx::query_as(concat!(
        "SELECT ",
        event_columns!(),
        " FROM market_events WHERE ($1::text IS NULL OR status = $1)
         ORDER BY received_at DESC, event_id LIMIT $2 OFFSET $3"
    ))
    .bind(status)
    .bind(page_size)
    .bind((page - 1) * page_size)
    .fetch_all(pool)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM market_events WHERE ($1::text IS NULL OR status = $1)")
            .bind(status)
            .fetch_one(pool)
            .await?;
    Ok(Page::new(items, total, page, page_size))
}

/// Inside the applying transaction: records the events not yet known (those that came only through Redis),
/// then takes every one still `received` (row locks, in `event_id` order so two listeners never deadlock)
/// and marks it `applied`. Returns the ids this transaction applies; the others were applied before.
#[tracing::instrument(skip(tx, events), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "market_events", events = events.len()))]
pub async fn claim_for_apply(
    tx: &mut Transaction<'_, Postgres>,
    events: &[&MarketEvent],
) -> Result<Vec<String>> {
    let mut sorted: Vec<&&MarketEvent> = events.iter().collect();
    sorted.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    sorted.dedup_by(|a, b| a.event_id == b.event_id);
    let ids: Vec<&str> = sorted.iter().map(|e| e.event_id.as_str()).collect();
    let types: Vec<&str> = sorted.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<String> = sorted.iter().map(|e| e.to_json()).collect();
    sqlx::query(
        "INSERT INTO market_events (event_id, event_type, payload)
         SELECT id, kind, payload::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS v(id, kind, payload)
         ORDER BY id
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&payloads)
    .execute(&mut **tx)
    .await?;
    Ok(sqlx::query_scalar(
        "UPDATE market_events SET status = 'applied', applied_at = now(), error = NULL
         WHERE event_id IN (SELECT event_id FROM market_events
                            WHERE event_id = ANY($1) AND status = 'received'
                            ORDER BY event_id FOR UPDATE)
         RETURNING event_id",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?)
}

/// Marks an event that could not be applied `dead_letter` with the reason (recording it if it was only
/// in Redis). An event already applied stays applied.
pub async fn mark_dead(
    pool: &PgPool,
    event_id: &str,
    event_type: &str,
    payload: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO market_events (event_id, event_type, payload, status, error)
         VALUES ($1, $2, to_jsonb($3::text), 'dead_letter', $4)
         ON CONFLICT (event_id) DO UPDATE SET status = 'dead_letter', error = EXCLUDED.error
         WHERE market_events.status = 'received'",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

/// Events still `received` whose last append is older than `older_than` (Redis lost them, or the append
/// failed), oldest first; marked as appended now so the next sweep does not take them again.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "market_events"))]
pub async fn take_unapplied(pool: &PgPool, older_than: Duration, limit: i64) -> Result<Vec<MarketEvent>> {
    let payloads: Vec<sqlx::types::Json<MarketEvent>> = sqlx::query_scalar(take_stale!(
        table: "market_events",
        key: "event_id",
        stamp: "last_appended_at",
        filter: "status = 'received'",
        returning: "payload"
    ))
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(payloads.into_iter().map(|p| p.0).collect())
}

/// Inside the applying transaction: links the events to the recalculation their effect started.
pub async fn set_task(
    tx: &mut Transaction<'_, Postgres>,
    event_ids: &[String],
    task_id: uuid::Uuid,
) -> Result<()> {
    sqlx::query("UPDATE market_events SET task_id = $2 WHERE event_id = ANY($1)")
        .bind(event_ids)
        .bind(task_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
