//! The `tasks` table: background tasks (the bulk recalculation) and their progress, the truth that
//! `GET /api/v1/tasks/{id}` shows and the sweeper recovers from.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{domain::ProductScope, Error, Result};

text_enum! {
    /// Where a task is in its life: `queued -> running -> succeeded | failed | skipped` (a retry goes back to
    /// `queued`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum TaskStatus("task status") {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
    }
}

text_enum! {
    /// What a task is for (its `kind` column), and so how it meets a running recalculation.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TaskKind("task kind") {
        /// Asked for by `POST /api/v1/recalculate`: every product; skipped when another run holds the lock.
        RecalculateAll => "recalculate_all_prices",
        /// Started by market events: their scope; it waits for the lock (an event's effect is never dropped).
        ForMarketEvents => "recalculate_for_market_events",
    }
}

impl TaskKind {
    /// Whether a task of this kind waits for a running recalculation instead of being skipped. The one
    /// place this is decided: the `waits_for_lock` column is written from it.
    pub fn waits_for_lock(self) -> bool {
        matches!(self, TaskKind::ForMarketEvents)
    }
}

impl Serialize for TaskKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which products a recalculation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage<'a> {
    /// Every product (the task is stored without a scope).
    Everything,
    /// These products and categories only.
    Only(&'a ProductScope),
}

impl<'a> Coverage<'a> {
    /// As the `scope` column holds it: `NULL` is every product.
    fn scope(self) -> Option<&'a ProductScope> {
        match self {
            Coverage::Everything => None,
            Coverage::Only(scope) => Some(scope),
        }
    }
}

/// The column's reading (`None` is every product), for callers that hold a scope that way.
impl<'a> From<Option<&'a ProductScope>> for Coverage<'a> {
    fn from(scope: Option<&'a ProductScope>) -> Self {
        scope.map_or(Coverage::Everything, Coverage::Only)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Task {
    #[serde(rename = "task_id")]
    pub id: Uuid,
    #[sqlx(try_from = "String")]
    #[schema(value_type = String)]
    pub kind: TaskKind,
    #[sqlx(try_from = "String")]
    pub status: TaskStatus,
    pub processed: i64,
    pub total: i64,
    pub attempts: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The products it covers; `None` is every product.
    #[schema(value_type = Option<ProductScope>)]
    pub scope: Option<sqlx::types::Json<ProductScope>>,
    #[serde(skip)]
    #[schema(ignore)]
    pub cursor: i64,
}

impl Task {
    pub fn product_scope(&self) -> ProductScope {
        self.scope.as_ref().map(|s| s.0.clone()).unwrap_or_default()
    }

    /// Whether it waits for a running recalculation instead of being skipped (its kind says).
    pub fn waits_for_lock(&self) -> bool {
        self.kind.waits_for_lock()
    }
}

macro_rules! task_columns {
    () => {
        "id, kind, status, processed, total, attempts, error, created_at, started_at, finished_at, scope, \
         cursor"
    };
}

/// Records a new task of `kind`, `queued`, covering `coverage` (a `Coverage`, or a scope as the column
/// holds it: `None` is every product).
pub async fn create<'s>(pool: &PgPool, kind: TaskKind, coverage: impl Into<Coverage<'s>>) -> Result<Task> {
    insert(pool, kind, coverage.into()).await
}

/// The one `INSERT` of a task: `waits_for_lock` (read by `skip`) is written from its kind here.
async fn insert(db: impl PgExecutor<'_>, kind: TaskKind, coverage: Coverage<'_>) -> Result<Task> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO tasks (kind, scope, waits_for_lock) VALUES ($1, $2, $3) RETURNING ",
        task_columns!()
    ))
    .bind(kind.as_str())
    .bind(coverage.scope().map(sqlx::types::Json))
    .bind(kind.waits_for_lock())
    .fetch_one(db)
    .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Task> {
    sqlx::query_as(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("Task {id} not found")))
}

/// `queued -> running` (or re-takes a running task whose worker went silent). Counts the attempt.
pub async fn start(pool: &PgPool, id: Uuid, stale_after: Duration) -> Result<Option<Task>> {
    Ok(sqlx::query_as(concat!(
        "UPDATE tasks SET status = 'running', attempts = attempts + 1, error = NULL,
                started_at = coalesce(started_at, now()), heartbeat_at = now()
         WHERE id = $1 AND (status = 'queued'
               OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => $2)))
         RETURNING ",
        task_columns!()
    ))
    .bind(id)
    .bind(stale_after.as_secs_f64())
    .fetch_optional(pool)
    .await?)
}

pub async fn set_total(pool: &PgPool, id: Uuid, total: i64) -> Result<()> {
    sqlx::query("UPDATE tasks SET total = $2, heartbeat_at = now() WHERE id = $1")
        .bind(id)
        .bind(total)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a finished batch: progress, the keyset cursor, and a heartbeat.
pub async fn record_progress(pool: &PgPool, id: Uuid, done: i64, cursor: i64) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET processed = processed + $2, cursor = $3, heartbeat_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(done)
    .bind(cursor)
    .execute(pool)
    .await?;
    Ok(())
}

/// A failed attempt that will be retried: back to `queued` with the error kept for the record.
pub async fn record_retry(pool: &PgPool, id: Uuid, error: &str) -> Result<()> {
    sqlx::query("UPDATE tasks SET status = 'queued', error = $2 WHERE id = $1 AND status = 'running'")
        .bind(id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends a task: `succeeded`, `failed` or `skipped`.
pub async fn finish(pool: &PgPool, id: Uuid, status: TaskStatus, error: Option<&str>) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET status = $2, error = $3, finished_at = now()
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends a task that never started as `skipped` (another run holds the lock). A running task, one waiting
/// to retry, or one started by market events (it waits for the lock) is left alone.
pub async fn skip(pool: &PgPool, id: Uuid, reason: &str) -> Result<bool> {
    let skipped = sqlx::query(
        "UPDATE tasks SET status = 'skipped', error = $2, finished_at = now() WHERE id = $1 AND status = 'queued' AND attempts = 0 AND NOT waits_for_lock",
    )
    .bind(id)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(skipped.rows_affected() == 1)
}

/// Unfinished tasks whose job was lost (queued, or running with a silent worker), marked re-enqueued.
pub async fn take_stale(pool: &PgPool, older_than: Duration, limit: i64) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(take_stale!(
        table: "tasks",
        key: "id",
        stamp: "last_enqueued_at",
        filter: "status = 'queued' OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => $1))",
        returning: "id"
    ))
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A recalculation for market events: merged into one of `kind` still waiting to start (so a burst of
/// events makes one run, not hundreds), or a new one covering `coverage`. Returns the task and whether it
/// is new (a new task needs its job enqueued; a merged one has its job already). Runs inside the caller's
/// transaction: the task is recorded with the effect that asked for it, or not at all. `coverage` is a
/// `Coverage`, or a scope as the column holds it (`None`: every product).
pub async fn for_events<'s>(
    tx: &mut Transaction<'_, Postgres>,
    kind: TaskKind,
    coverage: impl Into<Coverage<'s>>,
) -> Result<(Task, bool)> {
    let coverage = coverage.into();
    let waiting: Option<Task> = sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE kind = $1 AND status = 'queued' AND attempts = 0
         ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(kind.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let (task, created) = match waiting {
        Some(task) => {
            let merged = match (task.scope.as_ref(), coverage.scope()) {
                (Some(current), Some(more)) => {
                    let mut merged = current.0.clone();
                    merged.merge(more);
                    Some(merged)
                }
                _ => None,
            };
            let task = sqlx::query_as(concat!(
                "UPDATE tasks SET scope = $2 WHERE id = $1 RETURNING ",
                task_columns!()
            ))
            .bind(task.id)
            .bind(merged.map(sqlx::types::Json))
            .fetch_one(&mut **tx)
            .await?;
            (task, false)
        }
        None => (insert(&mut **tx, kind, coverage).await?, true),
    };
    Ok((task, created))
}
