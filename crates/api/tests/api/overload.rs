//! Bounded waits and honest outcomes: with hot rows held `FOR UPDATE` by another connection, orders are
//! answered with an error within the request timeout and none of them is committed afterwards, while reads
//! and quotes keep answering; a row lock waited for longer than `DATABASE_LOCK_TIMEOUT_MS` sells nothing
//! and says why; a line cap holds after lines naming one product are merged.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::helpers::{spawn_app_with, TestApp};

/// Holds the rows of `ids` `FOR UPDATE` from a connection of its own until the returned transaction ends.
async fn hold_rows(app: &TestApp, ids: &[i64]) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&app.settings.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT id FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(ids)
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Waits until no statement of the app runs any more: a late commit would have happened by then.
async fn until_quiet(app: &TestApp, conn: &mut sqlx::PgConnection) {
    let db = app.settings.database_url.rsplit('/').next().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid() AND state <> 'idle'",
        )
        .bind(&db)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if running == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the app's statements never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn order(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    let res = app.client.post(app.url("/api/v1/orders")).header("Idempotency-Key", key).json(&body).send();
    let res = res.await.unwrap();
    (res.status(), res.json().await.unwrap_or_default())
}

#[tokio::test]
async fn orders_answered_with_an_error_are_never_committed_and_reads_keep_answering() {
    let app = spawn_app_with(|s| {
        s.limits.request_timeout = Duration::from_millis(1500);
        s.database_lock_timeout = Duration::from_secs(30); // the request's deadline must be what ends the wait
    })
    .await;
    let a = app.create_product("Hot A", 10.0, 1000).await["id"].as_i64().unwrap();
    let b = app.create_product("Hot B", 10.0, 1000).await["id"].as_i64().unwrap();
    let cold = app.create_product("Cold", 10.0, 1000).await["id"].as_i64().unwrap();
    let mut locker = hold_rows(&app, &[a, b]).await;

    let orders = (0..24).map(|i| {
        let body = match i % 3 {
            0 => json!({ "product_id": a, "quantity": 1 }),
            1 => json!({ "product_id": b, "quantity": 1 }),
            _ => json!({ "items": [{ "product_id": a, "quantity": 1 }, { "product_id": b, "quantity": 1 }] }),
        };
        let app = &app;
        async move { order(app, &format!("held-{i}"), body).await }
    });
    let reads = async {
        let mut statuses = vec![];
        for _ in 0..15 {
            statuses.push(app.get(&format!("/api/v1/products/{a}")).await.status());
            statuses.push(app.post("/api/v1/price", &json!({ "product_id": b })).await.status());
            statuses.push(app.get("/api/v1/health/ready").await.status());
            tokio::time::sleep(Duration::from_millis(100)).await; // paced: reads spread over the lock's hold
        }
        statuses
    };
    let (answers, reads) = tokio::join!(join_all(orders), reads);
    assert!(reads.iter().all(|s| *s == StatusCode::OK), "reads and quotes kept answering: {reads:?}");
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("nothing was sold"), "{detail}");
    }
    // An order elsewhere is not held up by the locked rows.
    assert_eq!(order(&app, "cold-1", json!({ "product_id": cold })).await.0, StatusCode::CREATED);

    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    until_quiet(&app, &mut locker).await;
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM order_items WHERE product_id = ANY($1)")
        .bind([a, b])
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(held, 0, "an order whose client was told 503 was committed afterwards");
    assert_eq!((app.stock_of(a).await, app.stock_of(b).await), (1000, 1000));
    // The keys were not spent: each retry places its order now.
    let (status, _) = order(&app, "held-0", json!({ "product_id": a, "quantity": 1 })).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_row_lock_held_past_the_lock_timeout_sells_nothing_and_says_why() {
    let app = spawn_app_with(|s| s.database_lock_timeout = Duration::from_millis(200)).await;
    let a = app.create_product("Held", 10.0, 100).await["id"].as_i64().unwrap();
    let b = app.create_product("Other", 10.0, 100).await["id"].as_i64().unwrap();
    let mut locker = hold_rows(&app, &[a]).await;
    let started = std::time::Instant::now();
    for body in [
        json!({ "product_id": a, "quantity": 1 }),
        json!({ "items": [{ "product_id": a, "quantity": 1 }, { "product_id": b, "quantity": 1 }] }),
    ] {
        let (status, answer) = order(&app, &uuid::Uuid::new_v4().to_string(), body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains("busy") && detail.contains("nothing was sold"), "{detail}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "the lock wait was bounded: {:?}", started.elapsed());
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    assert_eq!((app.stock_of(a).await, app.stock_of(b).await), (100, 100));
}

#[tokio::test]
async fn the_quantity_cap_holds_after_lines_for_one_product_are_merged() {
    let app = spawn_app_with(|s| s.limits.max_quantity = 10).await;
    let id = app.create_product("Capped", 1.0, 1000).await["id"].as_i64().unwrap();
    let line = json!({ "product_id": id, "quantity": 10 });
    let res = app.post("/api/v1/orders", &json!({ "items": [line, line, line] })).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let detail = res.json::<Value>().await.unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("between 1 and 10 per product") && detail.contains(": 30"), "{detail}");
    assert_eq!(app.stock_of(id).await, 1000);
}
