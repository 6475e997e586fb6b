//! The bulk recalculation: progress in the task record, one run at a time under the Redis lock, the lock
//! freed by expiry when its holder dies, and transient failures retried.

use std::time::Duration;

use pricing_core::{
    db,
    db::tasks::{Coverage, TaskKind, TaskStatus},
    lock,
    pricing::ProductPricing,
};
use pricing_worker::recalculate::RecalcOutcome;
use serde_json::Value;

use crate::helpers::{spawn_app, wait_until, TestApp};

async fn start(app: &TestApp) -> (u16, Value) {
    let res = app.admin(reqwest::Method::POST, "/api/v1/recalculate", None).await;
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn task(app: &TestApp, task_id: &str) -> Value {
    app.get(&format!("/api/v1/tasks/{task_id}")).await.json().await.unwrap()
}

/// A product's cached pricing state, read straight from Redis (`{version}|{json}`): `None` when it is
/// absent or invalidated (`{version}|null`).
async fn cached_pricing(app: &TestApp, product_id: i64) -> Option<ProductPricing> {
    let mut conn = app.cache.conn().await.unwrap();
    let raw: Option<String> =
        redis::cmd("GET").arg(app.cache.keys.price(product_id)).query_async(&mut conn).await.unwrap();
    let raw = raw?;
    let (version, json) = raw.split_once('|').expect("a versioned entry");
    version.parse::<i64>().expect("a numeric version");
    (json != "null").then(|| serde_json::from_str(json).expect("a pricing state"))
}

#[tokio::test]
async fn a_recalculation_fills_the_cache_and_reports_progress() {
    let mut app = spawn_app().await;
    db::products::seed(&app.db, 3_000, 100).await.unwrap();
    app.start_worker().await;
    let (status, body) = start(&app).await;
    assert_eq!(status, 202);
    let task_id = body["task_id"].as_str().unwrap().to_string();
    assert_eq!(body["status_url"], format!("/api/v1/tasks/{task_id}"));
    wait_until(Duration::from_secs(30), "the recalculation to succeed", || async {
        task(&app, &task_id).await["status"] == "succeeded"
    })
    .await;
    let done = task(&app, &task_id).await;
    assert_eq!(done["processed"], 3_000);
    assert_eq!(done["total"], 3_000);
    assert_eq!(done["attempts"], 1);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    // Every product's pricing state is cached now: a quote is a hit.
    assert!(cached_pricing(&app, 1_500).await.is_some());
}

#[tokio::test]
async fn a_recalculation_counts_each_products_recent_orders() {
    let mut app = spawn_app().await;
    let sold = app.create_product("Sold", 10.0, 100).await["id"].as_i64().unwrap();
    let quiet = app.create_product("Quiet", 10.0, 100).await["id"].as_i64().unwrap();
    for _ in 0..3 {
        assert_eq!(app.order(sold, 1).await.status(), 201);
    }
    // The walk reads the demand window once; a window larger than its limit is read per batch instead.
    let window = app.pricing.all_recent_orders(10).await.expect("a small window is read whole");
    assert_eq!((window.get(&sold), window.get(&quiet)), (Some(&3), None));
    assert!(app.pricing.all_recent_orders(0).await.is_none(), "over the limit: asked per batch");

    app.start_worker().await;
    let (_, body) = start(&app).await;
    let task_id = body["task_id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "the recalculation to succeed", || async {
        task(&app, &task_id).await["status"] == "succeeded"
    })
    .await;
    let sold_state = cached_pricing(&app, sold).await.expect("a cached pricing state");
    let quiet_state = cached_pricing(&app, quiet).await.expect("a cached pricing state");
    assert_eq!((sold_state.recent_orders, quiet_state.recent_orders), (3, 0));
}

#[tokio::test]
async fn recalculation_needs_the_admin_token_and_unknown_tasks_are_404() {
    let app = spawn_app().await;
    let res = app.client.post(app.url("/api/v1/recalculate")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = app.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(res.status(), 404);
    let res = app.get("/api/v1/tasks/not-a-uuid").await;
    assert_eq!(res.status(), 422);
}

#[tokio::test]
async fn two_recalculations_started_together_one_runs_one_is_skipped() {
    let mut app = spawn_app().await;
    db::products::seed(&app.db, 20_000, 100).await.unwrap();
    let (_, a) = start(&app).await;
    let (_, b) = start(&app).await;
    // Both jobs are waiting when the worker starts, so it takes them together.
    app.start_worker().await;
    let ids = [a["task_id"].as_str().unwrap().to_string(), b["task_id"].as_str().unwrap().to_string()];
    wait_until(Duration::from_secs(60), "both tasks to finish", || async {
        let mut finished = 0;
        for id in &ids {
            let status = task(&app, id).await["status"].as_str().unwrap().to_string();
            finished += usize::from(status == "succeeded" || status == "skipped");
        }
        finished == 2
    })
    .await;
    let mut statuses = vec![
        task(&app, &ids[0]).await["status"].as_str().unwrap().to_string(),
        task(&app, &ids[1]).await["status"].as_str().unwrap().to_string(),
    ];
    statuses.sort();
    assert_eq!(statuses, ["skipped", "succeeded"]);
}

/// The one test that waits for Redis's own clock: the lease's expiry. (When our side renews and decides a
/// lease is lost is tested on a paused clock in `pricing_core::lock`.) The lease is short, yet long enough
/// for the next round trip to find it held.
#[tokio::test]
async fn a_lock_whose_holder_died_frees_itself_by_expiry() {
    let app = spawn_app().await;
    let key = app.cache.keys.recalculate_lock();
    let dead =
        lock::try_acquire_for(&app.cache, &key, Duration::from_millis(250), "").await.unwrap().unwrap();
    // The holder "dies": it never renews nor releases. Meanwhile nobody else can take the lock...
    assert!(lock::try_acquire_for(&app.cache, &key, Duration::from_secs(5), "").await.unwrap().is_none());
    // ...and once the lease runs out someone can, and the dead holder cannot release the new lock.
    let next = std::sync::Mutex::new(None);
    wait_until(Duration::from_secs(5), "the lock to expire", || async {
        let lease = lock::try_acquire_for(&app.cache, &key, Duration::from_secs(5), "").await.unwrap();
        let taken = lease.is_some();
        *next.lock().unwrap() = lease;
        taken
    })
    .await;
    let next = next.into_inner().unwrap();
    assert!(!dead.release(&app.cache).await.unwrap(), "a stale token must not release the new lock");
    assert!(next.unwrap().release(&app.cache).await.unwrap());
}

/// Renewing: only the holder's token extends the lease; once someone else holds the lock, a renewal says
/// it is lost and leaves the new holder's lease alone.
#[tokio::test]
async fn a_lease_is_renewed_only_while_it_is_ours() {
    let app = spawn_app().await;
    let key = app.cache.keys.recalculate_lock();
    let pttl = || async {
        let mut conn = app.cache.conn().await.unwrap();
        redis::cmd("PTTL").arg(&key).query_async::<i64>(&mut conn).await.unwrap()
    };
    let lease = lock::try_acquire_for(&app.cache, &key, Duration::from_secs(30), "").await.unwrap().unwrap();
    let mut conn = app.cache.conn().await.unwrap();
    let _: () = redis::cmd("PEXPIRE").arg(&key).arg(10_000).query_async(&mut conn).await.unwrap();
    assert!(lease.renew(&app.cache).await.unwrap());
    assert!(pttl().await > 20_000, "renewed to its whole lease");

    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    let next = lock::try_acquire_for(&app.cache, &key, Duration::from_secs(5), "next").await.unwrap();
    assert!(next.is_some());
    assert!(!lease.renew(&app.cache).await.unwrap(), "not ours any more");
    assert!(pttl().await <= 5_000, "the new holder's lease is untouched");
    assert_eq!(lock::holder(&app.cache, &key).await.unwrap().as_deref(), Some("next"));
}

#[tokio::test]
async fn a_recalculation_finding_the_lock_held_is_skipped_at_once() {
    let app = spawn_app().await;
    let key = app.cache.keys.recalculate_lock();
    let held = lock::try_acquire_for(&app.cache, &key, Duration::from_secs(30), "").await.unwrap().unwrap();
    let worker = pricing_worker::Worker::build(app.settings.clone()).await.unwrap();
    let task = db::tasks::create(&app.db, TaskKind::RecalculateAll, Coverage::Everything).await.unwrap();
    let outcome = worker.recalculator().unwrap().run(task.id).await.unwrap();
    assert_eq!(outcome, RecalcOutcome::Skipped);
    assert_eq!(db::tasks::get(&app.db, task.id).await.unwrap().status, TaskStatus::Skipped);
    held.release(&app.cache).await.unwrap();
}

/// Makes PostgreSQL refuse the next `failures` progress records of a task in this test's database: a trigger
/// raises the error a statement timeout raises (57014, which `Error::is_outage` counts as transient), so
/// the batch whose progress it is fails as it would against a stalled database. A sequence counts them:
/// unlike a table, it keeps counting across the rolled-back statements.
async fn refuse_progress(app: &TestApp, failures: u32) {
    // `failures` is a number of ours, not outside input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SEQUENCE refused_progress;
         CREATE FUNCTION refuse_progress() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('refused_progress') <= {failures} THEN
                 RAISE EXCEPTION 'canceling statement due to statement timeout' USING ERRCODE = 'query_canceled';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_progress BEFORE UPDATE OF processed ON tasks
             FOR EACH ROW EXECUTE FUNCTION refuse_progress();"
    )))
    .execute(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_then_succeeds() {
    let app = spawn_app().await;
    db::products::seed(&app.db, 500, 100).await.unwrap();
    let worker = pricing_worker::Worker::build(app.settings.clone()).await.unwrap();
    let recalculator = worker.recalculator().unwrap();
    refuse_progress(&app, 2).await;
    let task = db::tasks::create(&app.db, TaskKind::RecalculateAll, Coverage::Everything).await.unwrap();
    let outcome = recalculator.run(task.id).await.unwrap();
    assert_eq!(outcome, RecalcOutcome::Succeeded { processed: 500 });
    let task = db::tasks::get(&app.db, task.id).await.unwrap();
    assert_eq!(task.attempts, 3, "two failed attempts, then success");
    assert_eq!(task.status, TaskStatus::Succeeded);
    // The lock was released at the end (and between attempts).
    let key = app.cache.keys.recalculate_lock();
    assert!(lock::try_acquire_for(&app.cache, &key, Duration::from_secs(1), "").await.unwrap().is_some());
}

#[tokio::test]
async fn a_recalculation_that_keeps_failing_ends_failed_after_its_attempts() {
    let app = spawn_app().await;
    db::products::seed(&app.db, 10, 100).await.unwrap();
    let mut settings = app.settings.clone();
    settings.recalc_max_attempts = 3;
    let worker = pricing_worker::Worker::build(settings).await.unwrap();
    let recalculator = worker.recalculator().unwrap();
    refuse_progress(&app, 1_000).await;
    let task = db::tasks::create(&app.db, TaskKind::RecalculateAll, Coverage::Everything).await.unwrap();
    let outcome = recalculator.run(task.id).await.unwrap();
    assert!(matches!(outcome, RecalcOutcome::Failed(_)), "{outcome:?}");
    let task = db::tasks::get(&app.db, task.id).await.unwrap();
    assert_eq!((task.status.as_str(), task.attempts), ("failed", 3));
    // A stable reason for the client; the cause (the statement's error) is in the worker's log.
    assert_eq!(task.error.unwrap(), "PostgreSQL was unavailable (attempt 3 of 3)");
}

/// A worker died mid-run: its task is `running` with a stale heartbeat, half the catalogue done, and its
/// lock still held until the lease runs out. Nothing can run meanwhile; once the lease is gone the next
/// delivery (the sweeper re-enqueues such tasks) re-takes the task and resumes after the last batch. The
/// lease's end is a `DEL` here: that Redis expires a lease is the test above.
#[tokio::test]
async fn a_run_whose_worker_died_resumes_once_the_lock_expires() {
    let app = spawn_app().await;
    db::products::seed(&app.db, 1_000, 100).await.unwrap();
    let mut settings = app.settings.clone();
    settings.recalc_batch_size = 100;
    let task = db::tasks::create(&app.db, TaskKind::RecalculateAll, Coverage::Everything).await.unwrap();
    // The dead worker's state: started, 600 of 1,000 done, silent since, its lock not yet expired.
    sqlx::query(
        "UPDATE tasks SET status = 'running', attempts = 1, processed = 600, total = 1000, cursor = 600,
                started_at = now() - interval '1 minute', heartbeat_at = now() - interval '1 minute'
         WHERE id = $1",
    )
    .bind(task.id)
    .execute(&app.db)
    .await
    .unwrap();
    let key = app.cache.keys.recalculate_lock();
    let _dead = lock::try_acquire_for(&app.cache, &key, settings.recalc_lock_ttl, "").await.unwrap().unwrap();

    let worker = pricing_worker::Worker::build(settings).await.unwrap();
    let recalculator = worker.recalculator().unwrap();
    assert_eq!(recalculator.run(task.id).await.unwrap(), RecalcOutcome::Duplicate, "the lock is still held");
    let mut conn = app.cache.conn().await.unwrap();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    let outcome = recalculator.run(task.id).await.unwrap();
    assert_eq!(outcome, RecalcOutcome::Succeeded { processed: 1_000 });
    let task = db::tasks::get(&app.db, task.id).await.unwrap();
    assert_eq!((task.attempts, task.total), (2, 1_000), "re-taken once, resumed: 400 more, not 1,000");
    // Products before the cursor were not recomputed by the resumed run.
    let (first, last) = (cached_pricing(&app, 1).await, cached_pricing(&app, 1_000).await);
    assert!(first.is_none() && last.is_some());
}

/// Two deliveries of one task: the one that finds the lock held by its own task leaves the task alone
/// instead of marking it skipped (the holder is about to run it).
#[tokio::test]
async fn a_second_delivery_of_the_same_task_does_not_skip_it() {
    let app = spawn_app().await;
    let task = db::tasks::create(&app.db, TaskKind::RecalculateAll, Coverage::Everything).await.unwrap();
    let key = app.cache.keys.recalculate_lock();
    let first = lock::try_acquire_for(&app.cache, &key, Duration::from_secs(30), &task.id.to_string())
        .await
        .unwrap()
        .unwrap();
    let worker = pricing_worker::Worker::build(app.settings.clone()).await.unwrap();
    let outcome = worker.recalculator().unwrap().run(task.id).await.unwrap();
    assert_eq!(outcome, RecalcOutcome::Duplicate);
    assert_eq!(db::tasks::get(&app.db, task.id).await.unwrap().status, TaskStatus::Queued);
    first.release(&app.cache).await.unwrap();
}
