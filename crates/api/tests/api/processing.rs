//! Order processing in the worker: completion, recovery from a lost queue, duplicate deliveries.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::helpers::{spawn_app, wait_until};

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
    let order: Value = app
        .get(&format!("/api/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order["attempts"], 1);
    assert!(order["completed_at"].is_string());
    assert_eq!(app.stock_of(product["id"].as_i64().unwrap()).await, 3);
}

#[tokio::test]
async fn an_order_placed_while_the_worker_is_down_completes_once_it_starts() {
    let mut app = spawn_app().await;
    let product = app.create_product("Desk", 100.0, 5).await;
    let order: Value = app
        .order(product["id"].as_i64().unwrap(), 1)
        .await
        .json()
        .await
        .unwrap();
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
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'completed'")
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
