//! Order processing in the worker: completion, recovery from a lost queue, duplicate deliveries.

use std::time::Duration;

use futures::StreamExt;
use pricing_worker::orders::Outcome;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, wait_until, TestApp};

/// Places an order of `quantity` units of a new product with `stock` in stock; returns (order id, product id).
async fn place_order(app: &TestApp, stock: i32, quantity: i32) -> (i64, i64) {
    let product = app.create_product("Processed", 10.0, stock).await;
    let product_id = product["id"].as_i64().unwrap();
    let res = app.order(product_id, quantity).await;
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    (order["id"].as_i64().unwrap(), product_id)
}

async fn attempts_of(app: &TestApp, order_id: i64) -> i32 {
    sqlx::query_scalar("SELECT attempts FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn failure_reason_of(app: &TestApp, order_id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT failure_reason FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_order_reaches_completed() {
    let mut app = spawn_app().await;
    app.start_worker().await;
    let product = app.create_product("Lamp", 10.0, 5).await;
    let res = app.order(product["id"].as_i64().unwrap(), 2).await;
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    assert_eq!(order["status"], "pending");
    let id = order["id"].as_i64().unwrap();
    wait_until(Duration::from_secs(10), "order completed", || async {
        app.order_status(id).await == "completed"
    })
    .await;
    let order: Value = app.admin_get(&format!("/api/v1/orders/{id}")).await.json().await.unwrap();
    assert_eq!(order["attempts"], 1);
    assert!(order["completed_at"].is_string());
    assert_eq!(app.stock_of(product["id"].as_i64().unwrap()).await, 3);
}

#[tokio::test]
async fn an_order_placed_while_the_worker_is_down_completes_once_it_starts() {
    let mut app = spawn_app().await;
    let product = app.create_product("Desk", 100.0, 5).await;
    let order: Value = app.order(product["id"].as_i64().unwrap(), 1).await.json().await.unwrap();
    let id = order["id"].as_i64().unwrap();
    assert_eq!(app.order_status(id).await, "pending");
    app.start_worker().await;
    wait_until(Duration::from_secs(10), "order completed", || async {
        app.order_status(id).await == "completed"
    })
    .await;
}

/// 20,000 orders pile up with no worker running (far past the ~8,000 at which apalis-redis' fetch script
/// jams); once a worker starts every one completes exactly once. With `wipe`, Redis loses the whole
/// queue before the worker starts, and the sweeper recovers every order from PostgreSQL.
async fn backlog_completes_exactly_once(wipe: bool) {
    const ORDERS: usize = 20_000;
    let mut app = spawn_app().await;
    let product = app.create_product("Backlog", 1.0, ORDERS as i32).await;
    let product_id = product["id"].as_i64().unwrap();
    let statuses: Vec<u16> = futures::stream::iter(0..ORDERS)
        .map(|_| {
            let app = &app;
            async move { app.order(product_id, 1).await.status().as_u16() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201), "every order accepted");
    assert_eq!(app.stock_of(product_id).await, 0);
    if wipe {
        app.wipe_redis().await;
    }
    app.start_worker_with(|s| s.worker_concurrency = 256).await;
    wait_until(Duration::from_secs(240), "all orders completed", || async {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'completed'")
            .fetch_one(&app.db)
            .await
            .unwrap();
        done == ORDERS as i64
    })
    .await;
    // Exactly once: one delivery took each order, the status counters saw 20,000 completions (a second
    // completion of an order would count twice), and stock moved once per order.
    let (max_attempts, completions): (i32, i64) = sqlx::query_as(
        "SELECT (SELECT max(attempts) FROM orders),
                (SELECT sum(orders)::bigint FROM order_stats WHERE status = 'completed')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(max_attempts, 1);
    assert_eq!(completions, ORDERS as i64);
    assert_eq!(app.stock_of(product_id).await, 0);
    app.stop_worker().await;
}

#[tokio::test]
async fn twenty_thousand_orders_queued_without_a_worker_complete_exactly_once() {
    backlog_completes_exactly_once(false).await;
}

#[tokio::test]
async fn twenty_thousand_orders_complete_after_redis_restarts_empty() {
    backlog_completes_exactly_once(true).await;
}

#[tokio::test]
async fn a_job_delivered_twice_completes_the_order_once() {
    let app = spawn_app().await;
    let (id, product_id) = place_order(&app, 5, 2).await;
    let processor = pricing_worker::Worker::build(app.settings.clone()).await.unwrap().processor();

    assert_eq!(processor.process(id).await.unwrap(), Outcome::Completed);
    assert_eq!(processor.process(id).await.unwrap(), Outcome::Skipped);

    assert_eq!(app.order_status(id).await, "completed");
    assert_eq!(attempts_of(&app, id).await, 1);
    assert_eq!(app.stock_of(product_id).await, 3);
    let completions: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(orders), 0)::bigint FROM order_stats WHERE status = 'completed'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(completions, 1, "the completion is counted once");
}

#[tokio::test]
async fn batched_claims_and_completions_answer_each_order_and_keep_the_attempt_fence() {
    let app = spawn_app().await;
    let (first, _) = place_order(&app, 5, 1).await;
    let (second, _) = place_order(&app, 5, 1).await;
    let stale_after = Duration::from_secs(60);

    let claimed =
        pricing_core::db::orders::claim(&app.db, &[first, second, 999_999], stale_after).await.unwrap();
    assert_eq!(claimed, vec![Some(1), Some(1), None], "an unknown id is answered `None` in its place");
    let again = pricing_core::db::orders::claim(&app.db, &[second, first], stale_after).await.unwrap();
    assert_eq!(again, vec![None, None], "orders being processed are not taken twice");

    // The second pair names an attempt this handler does not hold: only the first order completes.
    let done = pricing_core::db::orders::complete(&app.db, &[(first, 1), (second, 7)]).await.unwrap();
    assert_eq!(done, vec![true, false]);
    assert_eq!(app.order_status(first).await, "completed");
    assert_eq!(app.order_status(second).await, "processing");
}

#[tokio::test]
async fn an_order_whose_processing_keeps_being_interrupted_ends_failed_with_its_stock_back() {
    let app = spawn_app().await;
    let (id, product_id) = place_order(&app, 5, 2).await;
    assert_eq!(app.stock_of(product_id).await, 3);
    let max = app.settings.order_max_attempts;

    // Each claim is a delivery whose worker died before finishing: the next one re-takes the order.
    for attempt in 1..=max {
        let claimed = pricing_core::db::orders::claim(&app.db, &[id], Duration::ZERO).await.unwrap();
        assert_eq!(claimed, vec![Some(attempt)]);
    }
    assert_eq!(app.order_status(id).await, "processing");
    assert_eq!(attempts_of(&app, id).await, max);

    let processor = pricing_worker::Worker::build({
        let mut s = app.settings.clone();
        s.order_stale_after = Duration::ZERO;
        s
    })
    .await
    .unwrap()
    .processor();
    let outcome = processor.process(id).await.unwrap();
    assert!(matches!(&outcome, Outcome::Failed(reason) if reason.contains("interrupted")), "{outcome:?}");

    assert_eq!(app.order_status(id).await, "failed");
    let reason = failure_reason_of(&app, id).await.expect("a failure reason");
    assert!(reason.contains(&max.to_string()), "{reason}");
    assert_eq!(app.stock_of(product_id).await, 5, "stock given back");
    let cached: Value = app.get(&format!("/api/v1/products/{product_id}/cached")).await.json().await.unwrap();
    assert_eq!(cached["stock"], 5);

    // A late delivery changes nothing: stock is not given back twice.
    assert_eq!(processor.process(id).await.unwrap(), Outcome::Skipped);
    assert_eq!(app.stock_of(product_id).await, 5);
}

#[tokio::test]
async fn an_order_whose_fulfilment_always_fails_ends_failed_after_the_maximum_attempts() {
    let mut app = spawn_app_with(|s| {
        s.order_failure_rate = 1.0;
        s.order_max_attempts = 3;
    })
    .await;
    app.start_worker().await;
    let (id, product_id) = place_order(&app, 5, 2).await;
    wait_until(Duration::from_secs(10), "order failed", || async { app.order_status(id).await == "failed" })
        .await;
    assert_eq!(attempts_of(&app, id).await, 3);
    let reason = failure_reason_of(&app, id).await.expect("a failure reason");
    assert!(reason.contains("3 attempts"), "{reason}");
    assert_eq!(app.stock_of(product_id).await, 5, "stock given back");

    let order: Value = app.admin_get(&format!("/api/v1/orders/{id}")).await.json().await.unwrap();
    assert_eq!(order["status"], "failed");
    assert_eq!(order["failure_reason"], reason.as_str());
    assert!(order["completed_at"].is_null());
    let metrics: Value = app.get("/api/v1/orders/metrics").await.json().await.unwrap();
    assert_eq!(metrics["order_status_counts"]["failed"], 1);
    assert_eq!(metrics["total_processed"], 1);
    app.stop_worker().await;
}

#[tokio::test]
async fn a_cancelled_order_is_not_processed() {
    let app = spawn_app().await;
    let (id, product_id) = place_order(&app, 5, 2).await;
    let res = app.admin_post(&format!("/api/v1/orders/{id}/cancel")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.stock_of(product_id).await, 5);

    let processor = pricing_worker::Worker::build(app.settings.clone()).await.unwrap().processor();
    assert_eq!(processor.process(id).await.unwrap(), Outcome::Skipped);
    assert_eq!(app.order_status(id).await, "cancelled");
    assert_eq!(attempts_of(&app, id).await, 0);
    assert_eq!(app.stock_of(product_id).await, 5);
}

/// Redis loses everything while the worker runs (its registration too, so apalis' next fetch fails and the
/// apalis worker stops): the supervisor starts a fresh one, and orders placed before and after complete.
#[tokio::test]
async fn the_worker_recovers_when_redis_loses_its_data_while_running() {
    let mut app = spawn_app().await;
    app.start_worker().await;
    let (before, _) = place_order(&app, 10, 1).await;
    wait_until(Duration::from_secs(10), "the first order completed", || async {
        app.order_status(before).await == "completed"
    })
    .await;
    let (lost, _) = place_order(&app, 10, 1).await;
    app.wipe_redis().await;
    let (after, _) = place_order(&app, 10, 1).await;
    wait_until(Duration::from_secs(30), "orders placed around the wipe completed", || async {
        app.order_status(lost).await == "completed" && app.order_status(after).await == "completed"
    })
    .await;
    assert_eq!(attempts_of(&app, after).await, 1);
}

/// An idle worker rests between empty fetches: its queues are asked about ten times a second each, not in
/// a loop (apalis's own `poll_with_interval` does not gate fetches; `IdlePoll` does).
#[tokio::test]
async fn an_idle_worker_rests_between_fetches() {
    let mut app = spawn_app().await;
    app.start_worker().await;
    let queues = format!("\"{}", app.cache.keys.queue(""));
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut monitor = tokio::process::Command::new("redis-cli")
        .args(["-u", &url, "monitor"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-cli");
    let window = Duration::from_secs(2);
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(monitor.stdout.take().unwrap()));
    let mut ours = 0;
    let _ = tokio::time::timeout(window, async {
        while let Ok(Some(line)) = lines.next_line().await {
            ours += usize::from(line.contains(&queues));
        }
    })
    .await;
    // Two queues, each fetch cycle about five commands, ten cycles a second: about 200 in the window. Without
    // the rest it was about 15,000.
    assert!(ours < 1_000, "{ours} queue commands in {window:?} from an idle worker");
}
