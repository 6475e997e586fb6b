//! Orders under load: no oversell, no deadlock, and group commit (`orders/batch.rs`, `orders/sale.rs`):
//! concurrent orders, single-product or not, are committed together, each still all-or-nothing. A batch
//! that would oversell is split (those that fit are sold), an order refused for its own reason does not
//! affect the others, and an `Idempotency-Key` still places one order.
//! (`order_batch_size` on `/metrics` shows the batches; it is process-wide, so tests count transactions.)

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_at_list_prices, spawn_app_with, TestApp};

fn id_of(v: Value) -> i64 {
    v["id"].as_i64().expect("an id")
}

async fn json_of(res: reqwest::Response) -> Value {
    res.json().await.expect("a JSON body")
}

async fn order_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&app.db).await.unwrap()
}

async fn order(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let res = app.post("/api/v1/orders", &body).await;
    (res.status(), res.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_flash_sale_is_committed_in_batches_and_never_oversells() {
    let app = spawn_app_with(|s| s.database_max_connections = 20).await;
    let id = app.create_product("Flash", 5.0, 300).await["id"].as_i64().unwrap();
    let answers =
        join_all((0..400).map(|i| order(&app, json!({ "user_id": format!("b{i}"), "product_id": id }))))
            .await;
    let sold: Vec<&Value> =
        answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).map(|(_, b)| b).collect();
    let refused = answers.iter().filter(|(s, _)| *s == StatusCode::BAD_REQUEST).count();
    assert_eq!((sold.len(), refused), (300, 100), "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    assert_eq!(app.stock_of(id).await, 0);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM order_items WHERE product_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 300, "one row per order sold");
    let mut ids: Vec<i64> = sold.iter().map(|o| o["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 300, "every answer names its own order");
    for (_, body) in answers.iter().filter(|(s, _)| *s == StatusCode::BAD_REQUEST) {
        assert_eq!(body["requested"], 1);
        assert_eq!(body["available"], 0);
    }
    // `created_at` is the transaction's start: orders committed together share it.
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT o.created_at) FROM orders o JOIN order_items i ON i.order_id = o.id
         WHERE i.product_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(transactions < 300, "300 orders in {transactions} transactions: none shared one");
    let cached = app.get(&format!("/api/v1/products/{id}/cached")).await.json::<Value>().await.unwrap();
    assert_eq!(cached["stock"], 0);
}

#[tokio::test]
async fn orders_for_different_products_share_a_transaction_and_each_product_keeps_its_own_stock() {
    let app = spawn_app_with(|s| s.database_max_connections = 20).await;
    // Products four ids apart land in the same group-commit queue.
    let scarce = app.create_product("Scarce", 5.0, 3).await["id"].as_i64().unwrap();
    for _ in 0..3 {
        app.create_product("Other", 5.0, 1).await;
    }
    let plenty = app.create_product("Plenty", 7.0, 100).await["id"].as_i64().unwrap();
    assert_eq!(plenty - scarce, 4, "ids are consecutive in a fresh database");
    let answers = join_all((0..60).map(|i| {
        let product_id = if i % 2 == 0 { scarce } else { plenty };
        order(&app, json!({ "user_id": format!("m{i}"), "product_id": product_id }))
    }))
    .await;
    let sold = |id: i64| {
        answers.iter().filter(|(s, b)| *s == StatusCode::CREATED && b["items"][0]["product_id"] == id).count()
    };
    assert_eq!(
        (sold(scarce), sold(plenty)),
        (3, 30),
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    let refused = answers.iter().filter(|(s, _)| *s == StatusCode::BAD_REQUEST).count();
    assert_eq!(refused, 27, "the scarce product's other buyers are refused, nobody else");
    assert_eq!((app.stock_of(scarce).await, app.stock_of(plenty).await), (0, 70));
    let shared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT o.created_at FROM orders o JOIN order_items i ON i.order_id = o.id
                               GROUP BY o.created_at HAVING count(DISTINCT i.product_id) = 2) t",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(shared > 0, "no transaction sold both products");
    let cached = app.get(&format!("/api/v1/products/{plenty}/cached")).await.json::<Value>().await.unwrap();
    assert_eq!(cached["stock"], 70, "the cache shows each product's stock after its batch");
}

#[tokio::test]
async fn an_order_refused_in_a_batch_does_not_affect_the_others() {
    let app = spawn_app_with(|_| {}).await;
    let id = app.create_product("Mixed", 10.0, 1_000).await["id"].as_i64().unwrap();
    let bodies = (0..60).map(|i| {
        if i % 3 == 0 {
            // Saw a lower price than the current one: refused with 409, nothing sold.
            json!({ "product_id": id, "quantity": 2, "expected_unit_price": 0.5 })
        } else {
            json!({ "product_id": id, "quantity": 2 })
        }
    });
    let answers = join_all(bodies.map(|b| order(&app, b))).await;
    let created = answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let conflicts = answers.iter().filter(|(s, _)| *s == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (40, 20));
    assert_eq!(app.stock_of(id).await, 1_000 - 80);
}

#[tokio::test]
async fn one_key_sent_many_times_at_once_places_one_order_in_a_batch() {
    let app = spawn_app_with(|_| {}).await;
    let id = app.create_product("Keyed", 10.0, 100).await["id"].as_i64().unwrap();
    let send = |key: String| {
        let request = app
            .client
            .post(app.url("/api/v1/orders"))
            .header("Idempotency-Key", key)
            .json(&json!({ "user_id": "u1", "product_id": id, "quantity": 3 }))
            .send();
        async move {
            let res = request.await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    // 30 retries of one purchase and 10 other purchases, all at once.
    let keys = (0..40).map(|i| if i < 30 { "same-purchase".to_string() } else { format!("other-{i}") });
    let answers = join_all(keys.map(send)).await;
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::CREATED), "{answers:?}");
    let same: Vec<i64> = answers[..30].iter().map(|(_, b)| b["id"].as_i64().unwrap()).collect();
    assert!(same.iter().all(|o| *o == same[0]), "one order for one key: {same:?}");
    assert_eq!(app.stock_of(id).await, 100 - 3 * 11);
}

#[tokio::test]
async fn two_hundred_buyers_of_ten_units_never_oversell() {
    let app = spawn_app_at_list_prices().await;
    let product = app.create_product("Hot item", 49.99, 10).await;
    let pid = product["id"].as_i64().unwrap();

    let statuses: Vec<StatusCode> = join_all((0..200).map(|i| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/orders",
                &json!({ "user_id": format!("buyer-{i}"), "product_id": pid, "quantity": 1 }),
            )
            .await
            .status()
        }
    }))
    .await;
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::BAD_REQUEST).count();
    assert_eq!((created, refused), (10, 190), "{statuses:?}");
    assert_eq!(app.stock_of(pid).await, 0);

    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_items WHERE product_id = $1 AND quantity = 1")
            .bind(pid)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(rows, 10);
    assert_eq!(order_count(&app).await, 10);
    let cached = json_of(app.get(&format!("/api/v1/products/{pid}/cached")).await).await;
    assert_eq!(cached["stock"], 0);
}

#[tokio::test]
async fn orders_naming_the_same_products_in_opposite_order_never_deadlock() {
    const ORDERS: i32 = 100;
    let app = spawn_app_at_list_prices().await;
    let a = id_of(app.create_product("A", 1.0, ORDERS).await);
    let b = id_of(app.create_product("B", 2.0, ORDERS + 5).await);

    let responses: Vec<(StatusCode, Value)> = join_all((0..ORDERS).map(|i| {
        let app = &app;
        let (first, second) = if i % 2 == 0 { (a, b) } else { (b, a) };
        async move {
            let res = app
                .post(
                    "/api/v1/orders",
                    &json!({ "items": [
                        { "product_id": first, "quantity": 1 },
                        { "product_id": second, "quantity": 1 },
                    ] }),
                )
                .await;
            let status = res.status();
            (status, res.json().await.unwrap_or(Value::Null))
        }
    }))
    .await;
    for (status, body) in &responses {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(body["total_price"], json!(3.0));
    }
    assert_eq!(app.stock_of(a).await, 0);
    assert_eq!(app.stock_of(b).await, 5);
    assert_eq!(order_count(&app).await, ORDERS as i64);
}

/// Cancelling and buying the same product at once must not deadlock: both take the product rows before the
/// order-status counter rows (`order_stats` shards, `pid % 16`, shared as soon as there are more than 16
/// connections). Before the fix, cancel took a counter row first and PostgreSQL aborted one side.
#[tokio::test]
async fn cancels_racing_purchases_of_the_same_product_never_deadlock() {
    const ORDERS: i32 = 200;
    let app = spawn_app_with(|s| {
        s.database_max_connections = 40;
        // 400 requests queue for 40 connections on one row: on a loaded machine that wait can exceed the
        // default, and this test is about deadlocks, not about the pool's limit (`limits.rs` tests that).
        s.limits.database_acquire_timeout = std::time::Duration::from_secs(30);
    })
    .await;
    let pid = id_of(app.create_product("Contended", 1.0, 2 * ORDERS).await);
    let mut pending = Vec::new();
    for _ in 0..ORDERS {
        pending.push(id_of(json_of(app.order(pid, 1).await).await));
    }
    let cancels = join_all(pending.iter().map(|id| {
        let app = &app;
        async move { app.admin_post(&format!("/api/v1/orders/{id}/cancel")).await.status() }
    }));
    let purchases = join_all((0..ORDERS).map(|_| {
        let app = &app;
        async move { app.order(pid, 1).await.status() }
    }));
    let (cancels, purchases) = tokio::join!(cancels, purchases);
    assert!(cancels.iter().all(|s| *s == StatusCode::OK), "{cancels:?}");
    assert!(purchases.iter().all(|s| *s == StatusCode::CREATED), "{purchases:?}");
    assert_eq!(app.stock_of(pid).await, ORDERS);
}

/// One sale for every order: multi-line orders queue with single-product ones and are sold in the same
/// transactions, each all-or-nothing. Against a small stock, exactly what fits is sold, whichever order
/// shape takes it, and every order's items match its lines.
#[tokio::test]
async fn multi_line_and_single_orders_share_sales_and_each_is_all_or_nothing() {
    let app = spawn_app_at_list_prices().await;
    let a = id_of(app.create_product("Shared A", 5.0, 40).await);
    let b = id_of(app.create_product("Shared B", 7.0, 25).await);
    let orders = (0..60).map(|i| {
        let body = match i % 3 {
            0 => json!({ "product_id": a, "quantity": 1 }),
            1 => json!({ "items": [{ "product_id": a, "quantity": 1 }, { "product_id": b, "quantity": 1 }] }),
            _ => json!({ "items": [{ "product_id": b, "quantity": 2 }, { "product_id": a, "quantity": 1 }] }),
        };
        let app = &app;
        async move { (i % 3, order(app, body).await) }
    });
    let answers = join_all(orders).await;
    let (mut sold_a, mut sold_b) = (0, 0);
    for (shape, (status, body)) in &answers {
        match *status {
            StatusCode::CREATED => {
                let (qa, qb) = [(1, 0), (1, 1), (1, 2)][*shape];
                let items = body["items"].as_array().unwrap();
                assert_eq!(items.len(), if qb == 0 { 1 } else { 2 }, "{body}");
                sold_a += qa;
                sold_b += qb;
            }
            StatusCode::BAD_REQUEST => {
                assert!(body["detail"].as_str().unwrap().contains("Insufficient stock"))
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(sold_a <= 40 && sold_b <= 25, "never oversold: {sold_a} of A, {sold_b} of B");
    assert_eq!(app.stock_of(a).await, 40 - sold_a, "A's stock is what was sold");
    assert_eq!(app.stock_of(b).await, 25 - sold_b, "B's stock is what was sold");
    let items: i64 = sqlx::query_scalar("SELECT coalesce(sum(quantity), 0)::bigint FROM order_items")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(items, (sold_a + sold_b) as i64, "every sold order's items, and no others");
    let batched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT created_at FROM orders GROUP BY created_at HAVING count(*) > 1) shared",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(batched > 0, "some orders were committed together (one transaction: one created_at)");
}
