//! Market events end to end: published through the api (or straight into the stream, or only on the
//! channel), applied by `pricing-listener` exactly once, moving the market part of the affected prices.
//! Several listeners sharing a stream: `market_events_listeners.rs`.

use std::time::Duration;

use pricing_core::{events::CONSUMER_GROUP, lock};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, use_single_redis, wait_until, TestApp};

const WITHIN: Duration = Duration::from_secs(2);
pub(super) const EVENTUALLY: Duration = Duration::from_secs(20);

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("a JSON body")
}

async fn publish(app: &TestApp, event: Value) -> Value {
    let res = app.admin(Method::POST, "/api/v1/publish-market-event", Some(&event)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    body(res).await
}

pub(super) async fn product_in(app: &TestApp, name: &str, category: &str, price: f64) -> i64 {
    let body = json!({ "name": name, "category": category, "price": price, "stock": 500 });
    let res = app.admin(Method::POST, "/api/v1/products", Some(&body)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    body_of(res).await["id"].as_i64().unwrap()
}

async fn body_of(res: reqwest::Response) -> Value {
    body(res).await
}

async fn market_part(app: &TestApp, product_id: i64) -> f64 {
    let quote = body(app.post("/api/v1/price", &json!({ "product_id": product_id })).await).await;
    let market =
        quote["breakdown"].as_array().unwrap().iter().find(|a| a["name"] == "market").unwrap().clone();
    market["multiplier"].as_f64().unwrap()
}

async fn status_of(app: &TestApp, event_id: &str) -> Value {
    body(app.get(&format!("/api/v1/market-events/{event_id}")).await).await
}

async fn xadd(app: &TestApp, fields: &[(&str, &str)]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(app.cache.keys.market_events()).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    let _: String = cmd.query_async(&mut app.cache.conn().await.unwrap()).await.unwrap();
}

pub(super) fn applied_by(app: &TestApp, listeners: &[usize]) -> u64 {
    listeners
        .iter()
        .map(|i| app.listener(*i).state.counters.applied.load(std::sync::atomic::Ordering::SeqCst))
        .sum()
}

#[tokio::test]
async fn a_category_signal_moves_that_category_within_two_seconds_and_no_other() {
    let mut app = spawn_app().await;
    app.start_listener().await;
    let book = product_in(&app, "Novel", "books", 20.0).await;
    let toy = product_in(&app, "Kite", "toys", 20.0).await;
    assert_eq!(market_part(&app, book).await, 1.0);
    assert_eq!(market_part(&app, toy).await, 1.0, "cached now");

    let published = publish(
        &app,
        json!({ "event_type": "competitor_price", "category": "books", "multiplier": 1.3, "source": "rival.example" }),
    )
    .await;
    assert_eq!(published["status"], "Event published");
    assert_eq!(published["stream"], app.cache.keys.market_events());
    assert_eq!(published["channel"], app.cache.keys.market_events());
    wait_until(WITHIN, "the books quote shows the new market part", || async {
        market_part(&app, book).await == 1.3
    })
    .await;
    assert_eq!(market_part(&app, toy).await, 1.0, "another category does not move");
    let record = status_of(&app, published["event_id"].as_str().unwrap()).await;
    assert_eq!(record["status"], "applied", "{record}");
    assert!(record["applied_at"].is_string());
}

#[tokio::test]
async fn events_published_while_no_listener_runs_are_applied_once_it_starts_and_only_once() {
    let mut app = spawn_app().await;
    let id = product_in(&app, "Lamp", "home", 50.0).await;
    let event = json!({ "event_id": "rival-42", "event_type": "demand_shock", "product_ids": [id], "multiplier": 1.2 });
    publish(&app, event.clone()).await;
    publish(&app, event.clone()).await; // a retried publish: the same event
    assert_eq!(status_of(&app, "rival-42").await["status"], "received");
    // The same event also arrives through the stream a second time (another service re-sent it).
    xadd(&app, &[("event", &json!({ "event_id": "rival-42", "event_type": "demand_shock", "product_ids": [id], "multiplier": 1.2, "occurred_at": "2026-11-23T00:00:00Z" }).to_string())]).await;

    let listener = app.start_listener().await;
    wait_until(EVENTUALLY, "the event applied", || async {
        status_of(&app, "rival-42").await["status"] == "applied"
    })
    .await;
    wait_until(EVENTUALLY, "both deliveries handled", || async {
        let c = &app.listener(listener).state.counters;
        c.applied.load(std::sync::atomic::Ordering::SeqCst)
            + c.duplicate.load(std::sync::atomic::Ordering::SeqCst)
            == 2
    })
    .await;
    assert_eq!(applied_by(&app, &[listener]), 1, "applied once");
    assert_eq!(market_part(&app, id).await, 1.2, "not compounded");
    let applied_at: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        sqlx::query_scalar("SELECT applied_at FROM market_events").fetch_all(&app.db).await.unwrap();
    assert_eq!(applied_at.len(), 1);
}

#[tokio::test]
async fn redis_cli_entries_garbage_and_plain_publishes_are_each_handled() {
    let mut app = spawn_app().await;
    let listener = app.start_listener().await;
    let toy = product_in(&app, "Kite", "toys", 10.0).await;
    let sku: String = sqlx::query_scalar("SELECT sku FROM products WHERE id = $1")
        .bind(toy)
        .fetch_one(&app.db)
        .await
        .unwrap();

    // Garbage first: dead-lettered, and the stream goes on.
    xadd(&app, &[("event", "{not json")]).await;
    xadd(
        &app,
        &[
            ("event_type", "competitor_price"),
            ("event_id", "bad-1"),
            ("category", "toys"),
            ("multiplier", "9"),
        ],
    )
    .await;
    // What an operator types in redis-cli.
    xadd(
        &app,
        &[
            ("event_type", "competitor_price"),
            ("event_id", "cli-1"),
            ("product_ids", &sku),
            ("multiplier", "1.4"),
        ],
    )
    .await;
    wait_until(EVENTUALLY, "the redis-cli event applied", || async {
        status_of(&app, "cli-1").await["status"] == "applied"
    })
    .await;
    assert_eq!(market_part(&app, toy).await, 1.4);
    assert_eq!(status_of(&app, "bad-1").await["status"], "dead_letter");
    let dead: u64 = redis::cmd("XLEN")
        .arg(app.cache.keys.market_events_dead())
        .query_async(&mut app.cache.conn().await.unwrap())
        .await
        .unwrap();
    assert_eq!(dead, 2);
    assert_eq!(
        app.listener(listener).state.counters.dead_letter.load(std::sync::atomic::Ordering::SeqCst),
        2
    );

    // A service that only PUBLISHes, as the old one did: heard while the listener is subscribed. The same
    // message is published until it lands (the subscription may start a moment later); it applies once.
    let message =
        json!({ "event_type": "demand_shock", "product_ids": [toy], "multiplier": 0.8 }).to_string();
    wait_until(EVENTUALLY, "the published message applied", || async {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(app.cache.keys.market_events())
            .arg(&message)
            .query_async(&mut app.cache.conn().await.unwrap())
            .await
            .unwrap();
        market_part(&app, toy).await == 0.8
    })
    .await;
    let channel_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM market_events WHERE event_id LIKE 'channel-%'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(channel_events, 1, "one message, one event, however often it was heard");
}

/// Entries read but not acknowledged, across the group.
pub(super) async fn pending(app: &TestApp) -> u64 {
    let (count, _, _, _): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(app.cache.keys.market_events())
        .arg(CONSUMER_GROUP)
        .query_async(&mut app.cache.conn().await.unwrap())
        .await
        .unwrap();
    count
}

#[tokio::test]
async fn a_full_recalculation_event_runs_one_task_even_behind_a_running_recalculation() {
    let mut app = spawn_app().await;
    app.start_worker().await;
    app.start_listener().await;
    let id = product_in(&app, "Lamp", "home", 50.0).await;
    assert_eq!(market_part(&app, id).await, 1.0);

    // A recalculation holds the lock: an explicit POST /recalculate ends skipped (the old contract) ...
    let lock_key = app.cache.keys.recalculate_lock();
    let lease = lock::try_acquire_for(&app.cache, &lock_key, Duration::from_secs(30), "someone-else")
        .await
        .unwrap()
        .expect("the lock is free");
    let explicit = body(app.admin(Method::POST, "/api/v1/recalculate", None).await).await;
    let explicit_url = explicit["status_url"].as_str().unwrap().to_string();
    wait_until(EVENTUALLY, "the explicit run skipped", || async {
        body(app.get(&explicit_url).await).await["status"] == "skipped"
    })
    .await;
    // ... but an event's work waits for it and then happens.
    let full = publish(&app, json!({})).await;
    let signal =
        publish(&app, json!({ "event_type": "competitor_price", "product_ids": [id], "multiplier": 1.25 }))
            .await;
    for event in [&full, &signal] {
        let id = event["event_id"].as_str().unwrap().to_string();
        wait_until(EVENTUALLY, "events applied", || async {
            status_of(&app, &id).await["status"] == "applied"
        })
        .await;
    }
    let task_id =
        status_of(&app, full["event_id"].as_str().unwrap()).await["task_id"].as_str().unwrap().to_string();
    assert_eq!(body(app.get(&format!("/api/v1/tasks/{task_id}")).await).await["status"], "queued");
    lease.release(&app.cache).await.unwrap();
    wait_until(EVENTUALLY, "the event's recalculation succeeded", || async {
        body(app.get(&format!("/api/v1/tasks/{task_id}")).await).await["status"] == "succeeded"
    })
    .await;
    let tasks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE kind = 'recalculate_for_market_events'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(tasks <= 2, "events coalesce into few runs: {tasks}");
    assert_eq!(market_part(&app, id).await, 1.25);
}

#[tokio::test]
async fn bad_events_are_422_naming_the_field_and_publish_nothing() {
    let app = spawn_app().await;
    let cases = [
        (json!({ "event_type": "price_war" }), "event_type"),
        (json!({ "event_type": "competitor_price", "category": "books" }), "multiplier"),
        (json!({ "event_type": "demand_shock", "category": "books", "multiplier": 0.1 }), "multiplier"),
        (json!({ "event_type": "demand_shock", "category": "books", "multiplier": "lots" }), "multiplier"),
        (json!({ "event_type": "competitor_price", "multiplier": 1.1 }), "category"),
        (json!({ "event_type": "recalculate", "product_ids": [0] }), "product id"),
        (json!({ "event_id": "two words" }), "event_id"),
        (json!({ "colour": "red" }), "colour"),
    ];
    for (event, field) in cases {
        let res = app.admin(Method::POST, "/api/v1/publish-market-event", Some(&event)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{event}");
        let detail = body(res).await["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(field), "{event}: {detail:?} should name {field:?}");
    }
    let res = app.client.post(app.url("/api/v1/publish-market-event")).body("{}").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res =
        app.client.post(app.url("/api/v1/publish-market-event")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "not a token this api can verify");
    let shopper = app.shopper_token("s1", true);
    let res =
        app.client.post(app.url("/api/v1/publish-market-event")).bearer_auth(shopper).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "a shopper is not an admin");

    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM market_events").fetch_one(&app.db).await.unwrap();
    assert_eq!(recorded, 0);
    let appended: u64 = redis::cmd("XLEN")
        .arg(app.cache.keys.market_events())
        .query_async(&mut app.cache.conn().await.unwrap())
        .await
        .unwrap();
    assert_eq!(appended, 0);
    assert_eq!(app.get("/api/v1/market-events/nope").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/v1/market-events?status=lost").await.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_listener_reports_its_health_and_counts_in_metrics() {
    let mut app = spawn_app().await;
    let i = app.start_listener().await;
    let base = format!("http://127.0.0.1:{}", app.listener(i).port);
    wait_until(EVENTUALLY, "the listener healthy", || async {
        app.client.get(format!("{base}/health")).send().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    let published = publish(&app, json!({ "event_type": "recalculate", "category": "books" })).await;
    let event_id = published["event_id"].as_str().unwrap().to_string();
    wait_until(EVENTUALLY, "applied", || async { status_of(&app, &event_id).await["status"] == "applied" })
        .await;
    wait_until(EVENTUALLY, "the listener counts it", || async {
        app.listener(i).state.counters.applied.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let metrics = app.client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("market_events_total{outcome=\"applied\"}"), "{metrics}");
    let listed = body(app.get("/api/v1/market-events?status=applied").await).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["event_id"], json!(event_id));

    // SIGTERM: the listener finishes what it holds, acknowledges it, and stops cleanly.
    app.stop_listener(i).await;
    assert_eq!(pending(&app).await, 0);
}

#[tokio::test]
async fn an_event_published_while_redis_is_down_is_answered_202_and_applied_later() {
    let redis_down = "redis://127.0.0.1:1".to_string();
    let mut app = crate::helpers::spawn_app_with(|s| use_single_redis(s, redis_down.clone())).await;
    let id = product_in(&app, "Lamp", "home", 50.0).await;
    let published =
        publish(&app, json!({ "event_type": "competitor_price", "product_ids": [id], "multiplier": 1.5 }))
            .await;
    let event_id = published["event_id"].as_str().unwrap().to_string();
    assert_eq!(status_of(&app, &event_id).await["status"], "received");

    // A listener that reaches Redis re-appends it from PostgreSQL, and applies it.
    let real = crate::helpers::test_settings().redis_url;
    app.start_listener_with(|s| use_single_redis(s, real)).await;
    wait_until(EVENTUALLY, "the event applied", || async {
        status_of(&app, &event_id).await["status"] == "applied"
    })
    .await;
    let multiplier: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT multiplier FROM market_multipliers WHERE scope = $1")
            .bind(format!("product:{id}"))
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(multiplier, rust_decimal::Decimal::new(15, 1));
}

#[tokio::test]
async fn a_listener_without_redis_keeps_running_and_says_so() {
    let mut app = spawn_app().await;
    let i = app.start_listener_with(|s| use_single_redis(s, "redis://127.0.0.1:1".into())).await;
    let url = format!("http://127.0.0.1:{}/health", app.listener(i).port);
    wait_until(EVENTUALLY, "the listener reports Redis", || async {
        let res = app.client.get(&url).send().await.unwrap();
        res.status() == 503 && res.text().await.unwrap().contains("Redis")
    })
    .await;
    assert!(!app.listener(i).is_finished(), "an outage never ends the listener");
}
