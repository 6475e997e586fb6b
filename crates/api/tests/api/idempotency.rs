//! Idempotent orders: a client retrying with the same `Idempotency-Key` gets the first order back and buys
//! nothing more; the same key with another request is refused; concurrent requests with one key make one
//! order; keys are scoped per `user_id`.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{shopper_token, spawn_app, TestApp};

async fn order_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client.post(app.url("/api/v1/orders")).header("Idempotency-Key", key).json(body).send().await.unwrap()
}

async fn order_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&app.db).await.unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_first_order_and_buys_nothing_more() {
    let app = spawn_app().await;
    let id = app.create_product("Kettle", 20.0, 100).await["id"].as_i64().unwrap();
    let body = json!({ "user_id": "u1", "product_id": id, "quantity": 2 });
    let first = order_with_key(&app, "retry-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    let first: Value = first.json().await.unwrap();

    // The same body, written differently (a SKU-free reordering of the keys): the same request.
    let again =
        order_with_key(&app, "retry-1", &json!({ "quantity": 2, "product_id": id, "user_id": "u1" })).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let mut again: Value = again.json().await.unwrap();
    // A guest's replay carries a fresh order token (only digests are kept); both reach the order.
    let mut first = first;
    let tokens = [first["order_access_token"].take(), again["order_access_token"].take()];
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(again, first, "the first response, replayed");
    for token in tokens {
        let path = format!("/api/v1/orders/{}", first["id"]);
        let res = app.client.get(app.url(&path)).header("X-Order-Token", token.as_str().unwrap()).send();
        assert_eq!(res.await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(order_count(&app).await, 1);
    assert_eq!(app.stock_of(id).await, 98, "stock moved once");
}

#[tokio::test]
async fn the_same_key_with_a_different_request_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let id = app.create_product("Kettle", 20.0, 100).await["id"].as_i64().unwrap();
    let first = order_with_key(&app, "k-2", &json!({ "product_id": id, "quantity": 1 })).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let other = order_with_key(&app, "k-2", &json!({ "product_id": id, "quantity": 3 })).await;
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let detail = other.json::<Value>().await.unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("Idempotency-Key") && detail.contains("different request"), "{detail}");
    assert_eq!(order_count(&app).await, 1);
    assert_eq!(app.stock_of(id).await, 99);

    let bad = order_with_key(&app, &"x".repeat(256), &json!({ "product_id": id })).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_order() {
    let app = spawn_app().await;
    let id = app.create_product("Kettle", 20.0, 100).await["id"].as_i64().unwrap();
    let body = json!({ "user_id": "racer", "product_id": id, "quantity": 1 });
    let responses = join_all((0..20).map(|_| order_with_key(&app, "race-1", &body))).await;
    let mut ids = Vec::new();
    for res in responses {
        assert_eq!(res.status(), StatusCode::CREATED);
        ids.push(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every response names the one order: {ids:?}");
    assert_eq!(order_count(&app).await, 1);
    assert_eq!(app.stock_of(id).await, 99);
}

#[tokio::test]
async fn keys_are_scoped_per_user_and_a_failed_first_try_can_be_retried() {
    let app = spawn_app().await;
    let id = app.create_product("Kettle", 20.0, 5).await["id"].as_i64().unwrap();
    // Each verified shopper has their own keys; a delimiter inside a sub or a key cannot make two meet
    // (user `a` with key `k:1` against user `a:k` with key `1`).
    for (user, key) in [("alice", "shared"), ("bob", "shared"), ("a", "k:1"), ("a:k", "1")] {
        let res = order_as(&app, &shopper_token(user, false), key, &json!({ "product_id": id })).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{user}");
        assert_eq!(res.headers()["idempotent-replayed"], "false", "{user} with {key}");
    }
    assert_eq!(order_count(&app).await, 4);

    // Too many for the stock: refused, and nothing recorded under the key ...
    let carol = shopper_token("carol", false);
    let greedy = json!({ "product_id": id, "quantity": 2 });
    assert_eq!(order_as(&app, &carol, "later", &greedy).await.status(), StatusCode::BAD_REQUEST);
    // ... so once stock is back, the same key with the same request goes through.
    app.admin(reqwest::Method::PUT, &format!("/api/v1/products/{id}"), Some(&json!({ "stock": 10 }))).await;
    assert_eq!(order_as(&app, &carol, "later", &greedy).await.status(), StatusCode::CREATED);
}

async fn order_as(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    let req = app.client.post(app.url("/api/v1/orders")).bearer_auth(token).header("Idempotency-Key", key);
    req.json(body).send().await.unwrap()
}
