//! The retention jobs against a real PostgreSQL: what a pass deletes (only finished rows past their
//! retention, a backlog in many batches), what it never deletes (unfinished events and tasks, live keys),
//! that two workers passing at once delete each row once without waiting for each other, and that every
//! batch finds its rows through an index.

#[path = "../../core/testing/backends.rs"]
mod backends;

use std::{sync::Arc, time::Duration};

use backends::TestBackends;
use pricing_core::{db::retention::Retained, Settings};
use pricing_worker::retention::{Retention, RetentionReport};
use tokio_util::sync::CancellationToken;

const DAY: Duration = Duration::from_secs(86_400);

/// Backends whose settings keep idempotency keys 1 h, finished events and tasks 1 day, deleting `batch`
/// rows per transaction.
async fn backends(batch: i64) -> TestBackends {
    TestBackends::connect_with(|s| {
        s.idempotency_ttl = Duration::from_secs(3_600);
        s.retention.market_events = Some(DAY);
        s.retention.tasks = Some(DAY);
        s.retention.batch_size = batch;
    })
    .await
}

fn retention(t: &TestBackends, configure: impl FnOnce(&mut Settings)) -> Retention {
    let mut settings = t.settings.clone();
    configure(&mut settings);
    Retention { db: t.db.clone(), settings: Arc::new(settings) }
}

async fn pass(retention: &Retention) -> RetentionReport {
    retention.pass(&CancellationToken::new()).await
}

/// `count` idempotency keys named `{name}-{n}`, claimed `age` ago.
async fn keys(t: &TestBackends, name: &str, count: i64, age: &str) {
    sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, created_at)
         SELECT $1 || '-' || n, 'hash', now() - $3::interval FROM generate_series(1, $2) AS n",
    )
    .bind(name)
    .bind(count)
    .bind(age)
    .execute(&t.db)
    .await
    .unwrap();
}

/// `count` market events named `{name}-{n}` in `status`, heard `heard` ago and applied `applied` ago
/// (`None`: never).
async fn events(t: &TestBackends, name: &str, count: i64, status: &str, heard: &str, applied: Option<&str>) {
    sqlx::query(
        "INSERT INTO market_events (event_id, event_type, payload, status, received_at, applied_at)
         SELECT $1 || '-' || n, 'price_update', '{}', $3, now() - $4::interval, now() - $5::interval
         FROM generate_series(1, $2) AS n",
    )
    .bind(name)
    .bind(count)
    .bind(status)
    .bind(heard)
    .bind(applied)
    .execute(&t.db)
    .await
    .unwrap();
}

/// `count` tasks in `status`, created 10 days ago and finished `finished` ago (`None`: not finished).
async fn tasks(t: &TestBackends, count: i64, status: &str, finished: Option<&str>) {
    sqlx::query(
        "INSERT INTO tasks (kind, status, created_at, finished_at)
         SELECT 'recalculate_all_prices', $2, now() - interval '10 days', now() - $3::interval
         FROM generate_series(1, $1)",
    )
    .bind(count)
    .bind(status)
    .bind(finished)
    .execute(&t.db)
    .await
    .unwrap();
}

/// `(group, rows)` of what `sql` (a `SELECT group, count(*)::bigint ... GROUP BY 1`) finds, sorted.
async fn grouped(t: &TestBackends, sql: &'static str) -> Vec<(String, i64)> {
    let mut rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(&t.db).await.unwrap();
    rows.sort();
    rows
}

fn rows(expected: &[(&str, i64)]) -> Vec<(String, i64)> {
    expected.iter().map(|(group, n)| (group.to_string(), *n)).collect()
}

/// This process's `retention_deleted_total` for `table`.
fn deleted_counter(table: &str) -> f64 {
    let series = format!("retention_deleted_total{{table=\"{table}\"}} ");
    let text = pricing_core::prometheus::render();
    text.lines().find_map(|l| l.strip_prefix(&series)?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn a_pass_deletes_only_finished_rows_past_their_retention_in_batches() {
    pricing_core::prometheus::install();
    let t = backends(7).await;
    keys(&t, "expired", 20, "2 hours").await;
    keys(&t, "live", 3, "30 minutes").await;
    events(&t, "applied", 10, "applied", "3 days", Some("2 days")).await;
    events(&t, "dead", 5, "dead_letter", "2 days", None).await;
    // Unfinished, however old: still work for the listener.
    events(&t, "received", 4, "received", "10 days", None).await;
    // Heard long ago but applied only now: its stream entry may still be delivered again.
    events(&t, "late", 3, "applied", "10 days", Some("1 hour")).await;
    events(&t, "recent", 2, "applied", "1 hour", Some("1 hour")).await;
    for status in ["succeeded", "failed", "skipped"] {
        tasks(&t, 4, status, Some("2 days")).await;
    }
    tasks(&t, 3, "queued", None).await;
    tasks(&t, 2, "running", None).await;
    tasks(&t, 5, "succeeded", Some("1 hour")).await;
    let counted_before = deleted_counter("idempotency_keys");

    let report = pass(&retention(&t, |_| {})).await;

    // 20 keys at 7 per transaction: three batches in one pass.
    assert_eq!(report, RetentionReport { idempotency_keys: 20, market_events: 15, tasks: 12, failed: 0 });
    let kept_keys = "SELECT split_part(key, '-', 1), count(*)::bigint FROM idempotency_keys GROUP BY 1";
    assert_eq!(grouped(&t, kept_keys).await, rows(&[("live", 3)]));
    let kept_events = "SELECT split_part(event_id, '-', 1), count(*)::bigint FROM market_events GROUP BY 1";
    assert_eq!(grouped(&t, kept_events).await, rows(&[("late", 3), ("received", 4), ("recent", 2)]));
    let kept_tasks = "SELECT status, count(*)::bigint FROM tasks GROUP BY 1";
    assert_eq!(grouped(&t, kept_tasks).await, rows(&[("queued", 3), ("running", 2), ("succeeded", 5)]));
    // Other tests in this process count too: at least this pass's deletions.
    assert!(deleted_counter("idempotency_keys") - counted_before >= 20.0);

    assert_eq!(pass(&retention(&t, |_| {})).await, RetentionReport::default(), "nothing left to delete");
}

#[tokio::test]
async fn zero_days_keeps_events_and_tasks_forever_but_keys_still_expire() {
    let t = backends(100).await;
    keys(&t, "expired", 2, "2 hours").await;
    events(&t, "applied", 3, "applied", "400 days", Some("400 days")).await;
    tasks(&t, 4, "failed", Some("400 days")).await;

    let forever = retention(&t, |s| {
        s.retention.market_events = None;
        s.retention.tasks = None;
    });
    assert_eq!(pass(&forever).await, RetentionReport { idempotency_keys: 2, ..Default::default() });
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM market_events").fetch_one(&t.db).await.unwrap();
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(&t.db).await.unwrap();
    assert_eq!((events, tasks), (3, 4));
}

/// Two workers' passes at once over a backlog of many batches: between them every old row is deleted,
/// each exactly once (the counts add up to the backlog).
#[tokio::test]
async fn two_workers_passing_at_once_delete_each_row_once() {
    let t = backends(50).await;
    keys(&t, "expired", 2_000, "2 hours").await;
    events(&t, "applied", 1_000, "applied", "2 days", Some("2 days")).await;
    tasks(&t, 1_000, "succeeded", Some("2 days")).await;
    let (first, second) = (retention(&t, |_| {}), retention(&t, |_| {}));

    let (a, b) = tokio::join!(pass(&first), pass(&second));

    assert_eq!((a.failed, b.failed), (0, 0), "{a:?} {b:?}");
    let total =
        (a.idempotency_keys + b.idempotency_keys, a.market_events + b.market_events, a.tasks + b.tasks);
    assert_eq!(total, (2_000, 1_000, 1_000), "{a:?} {b:?}");
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM idempotency_keys) + (SELECT count(*) FROM market_events)
                + (SELECT count(*) FROM tasks)",
    )
    .fetch_one(&t.db)
    .await
    .unwrap();
    assert_eq!(left, 0);
}

/// Rows another worker's batch holds (locked, not yet deleted) are skipped, not waited for: the pass ends
/// at once with everything else deleted, and a later pass deletes them if they are still there.
#[tokio::test]
async fn a_pass_skips_rows_another_worker_holds_instead_of_waiting() {
    let t = backends(10).await;
    keys(&t, "held", 5, "3 hours").await;
    keys(&t, "free", 25, "2 hours").await;
    tasks(&t, 15, "succeeded", Some("2 days")).await;
    let mut other = t.db.begin().await.unwrap();
    sqlx::query("SELECT key FROM idempotency_keys WHERE key LIKE 'held-%' FOR UPDATE")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query("SELECT id FROM tasks ORDER BY finished_at LIMIT 5 FOR UPDATE")
        .execute(&mut *other)
        .await
        .unwrap();
    let retention = retention(&t, |_| {});

    // Waiting for the held rows would last until the other transaction ends (never, here) or the
    // statement timeout (5 s) fails the batch.
    let report = tokio::time::timeout(Duration::from_secs(3), pass(&retention)).await.expect("no waiting");
    assert_eq!(report, RetentionReport { idempotency_keys: 25, tasks: 10, ..Default::default() });

    other.rollback().await.unwrap();
    assert_eq!(
        pass(&retention).await,
        RetentionReport { idempotency_keys: 5, tasks: 5, ..Default::default() }
    );
}

/// Each batch's `DELETE` finds its rows through the index made for it, never a scan of the table: with
/// sequential scans priced out the plan has none, and it reads the table's retention index (without one, a
/// batch over 300,000 finished tasks sorted them all: 440 ms a batch instead of 25).
#[tokio::test]
async fn every_batch_finds_its_rows_through_an_index() {
    let t = backends(100).await;
    for (table, index) in [
        (Retained::IdempotencyKeys, "idempotency_keys_created_at"),
        (Retained::MarketEvents, "market_events_finished"),
        (Retained::Tasks, "tasks_finished"),
    ] {
        let mut tx = t.db.begin().await.unwrap();
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
        let explain = format!("EXPLAIN {}", table.delete_sql());
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
            .bind(86_400.0_f64)
            .bind(1_000_i64)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{}: {plan}", table.table());
        assert!(plan.contains(&format!(" {index} ")), "{} reads {index}: {plan}", table.table());
        tx.rollback().await.unwrap();
    }
}
