//! The limits every request meets: body size (413), request timeout (503, and the order can be retried
//! safely), a bounded wait for a PostgreSQL connection (503, never a hang), the configurable caps, and CORS
//! (off unless allowed). Each answer is a JSON `{"detail": ...}` and changes nothing.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::helpers::{spawn_app_with, TestApp};

async fn detail(res: reqwest::Response) -> String {
    let body: Value = res.json().await.expect("a JSON body");
    body["detail"].as_str().expect("a detail").to_string()
}

/// Holds the product's row lock in a transaction of the test's own until the returned connection is dropped
/// (or rolled back), so an order for it waits inside the api.
async fn lock_product(app: &TestApp, id: i64) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&app.settings.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT 1 FROM products WHERE id = $1 FOR UPDATE").bind(id).execute(&mut conn).await.unwrap();
    conn
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_a_413_and_changes_nothing() {
    let app = spawn_app_with(|s| s.limits.max_body_bytes = 2048).await;
    let id = app.create_product("Widget", 10.0, 5).await["id"].as_i64().unwrap();
    let padding = "x".repeat(4096);
    let res =
        app.post("/api/v1/orders", &json!({ "product_id": id, "quantity": 1, "user_id": padding })).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let detail = detail(res).await;
    assert!(detail.contains("2048") && detail.contains("MAX_BODY_BYTES"), "{detail}");
    assert_eq!(app.stock_of(id).await, 5);
    // Just under the limit is read as usual (and refused for its own reason).
    let res = app
        .post("/api/v1/orders", &json!({ "product_id": id, "quantity": 1, "user_id": "x".repeat(300) }))
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_request_over_the_timeout_is_a_503_and_its_order_is_retried_safely_with_its_key() {
    let app = spawn_app_with(|s| s.limits.request_timeout = Duration::from_millis(300)).await;
    let id = app.create_product("Widget", 10.0, 5).await["id"].as_i64().unwrap();
    let lock = lock_product(&app, id).await;
    let order = || {
        app.client
            .post(app.url("/api/v1/orders"))
            .header("Idempotency-Key", "timeout-retry-1")
            .json(&json!({ "product_id": id, "quantity": 2 }))
            .send()
    };
    let started = Instant::now();
    let res = order().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(3), "answered in {:?}", started.elapsed());
    let detail = detail(res).await;
    assert!(detail.contains("REQUEST_TIMEOUT_MS") && detail.contains("nothing was sold"), "{detail}");

    // The sale was rolled back by its deadline, before the client was answered: once the lock is gone a
    // retry with the same key places it, once; a second retry replays it. The stock moves by 2, never 4.
    lock.close().await.unwrap();
    let res = order().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["idempotent-replayed"], "false", "the timed-out attempt sold nothing");
    let first: Value = res.json().await.unwrap();
    let again: Value = order().await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(app.stock_of(id).await, 3);
}

#[tokio::test]
async fn waiting_for_a_database_connection_is_bounded() {
    let app = spawn_app_with(|s| {
        s.database_max_connections = 1;
        s.limits.database_acquire_timeout = Duration::from_millis(300);
    })
    .await;
    let id = app.create_product("Widget", 10.0, 5).await["id"].as_i64().unwrap();
    let other = app.create_product("Gadget", 10.0, 5).await["id"].as_i64().unwrap();
    let lock = lock_product(&app, id).await;
    // This order holds the api's only connection while it waits for the row.
    let blocked =
        tokio::spawn(app.client.post(app.url("/api/v1/orders")).json(&json!({ "product_id": id })).send());
    // Polled on a connection of the test's own: the api's pool has none to spare.
    let mut watcher = sqlx::PgConnection::connect(&app.settings.database_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the order never waited for the row lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let res = app.get(&format!("/api/v1/products/{other}")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(3), "answered in {:?}", started.elapsed());
    assert!(detail(res).await.contains("PostgreSQL"));
    lock.close().await.unwrap();
    assert_eq!(blocked.await.unwrap().unwrap().status(), StatusCode::CREATED);
}

#[tokio::test]
async fn every_cap_is_configurable_and_named_in_its_error() {
    let app = spawn_app_with(|s| {
        s.limits.max_page_size = 5;
        s.limits.max_order_items = 2;
        s.limits.max_quantity = 3;
        s.limits.max_text_len = 10;
    })
    .await;
    let id = app.create_product("Widget", 10.0, 50).await["id"].as_i64().unwrap();
    let cases = [
        (app.get("/api/v1/products?page_size=6").await, "between 1 and 5"),
        (app.admin_get("/api/v1/orders?page_size=6").await, "between 1 and 5"),
        (app.post("/api/v1/orders", &json!({ "product_id": id, "quantity": 4 })).await, "between 1 and 3"),
        (
            app.post(
                "/api/v1/orders",
                &json!({ "items": [
                { "product_id": id, "quantity": 1 }, { "product_id": id, "quantity": 1 },
                { "product_id": id, "quantity": 1 }] }),
            )
            .await,
            "at most 2 items",
        ),
        (
            app.post("/api/v1/orders", &json!({ "product_id": id, "user_id": "u".repeat(11) })).await,
            "at most 10",
        ),
        (
            app.admin(
                reqwest::Method::POST,
                "/api/v1/products",
                Some(&json!({ "name": "n".repeat(11), "price": 1.0, "stock": 1 })),
            )
            .await,
            "at most 10",
        ),
    ];
    for (res, expected) in cases {
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let detail = detail(res).await;
        assert!(detail.contains(expected), "{detail} lacks {expected}");
    }
    assert_eq!(app.stock_of(id).await, 50);
    assert_eq!(app.get("/api/v1/products?page_size=5").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn cors_is_off_by_default_and_allows_only_the_listed_origins() {
    let preflight = |app: &TestApp, origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/price"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let closed = spawn_app_with(|_| {}).await;
    let res = preflight(&closed, "https://shop.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none(), "{:?}", res.headers());

    let open = spawn_app_with(|s| s.cors_origins = vec!["https://shop.example".into()]).await;
    let res = preflight(&open, "https://shop.example").await.unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "https://shop.example");
    let res = preflight(&open, "https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none(), "{:?}", res.headers());
    let res =
        open.client.get(open.url("/api/v1/products")).header("Origin", "https://shop.example").send().await;
    assert_eq!(res.unwrap().headers()["access-control-allow-origin"], "https://shop.example");
}
