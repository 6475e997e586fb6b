//! The caller's W3C trace context with export off (these in-process tests export nothing): an order keeps
//! the `traceparent` of the request that placed it, in PostgreSQL and in its job; the sweeper's re-push of
//! a lost order's job names that trace as its `origin`; a market event carries its publisher's trace
//! context in the stream (and says `null` when there is none).

use std::time::Duration;

use pricing_core::jobs::{self, Job, ProcessOrder};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, wait_until, TestApp, ADMIN_TOKEN};

const WITHIN: Duration = Duration::from_secs(5);

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// Places a guest order for `body` with the caller's `traceparent`; returns its id.
async fn order_with(app: &TestApp, traceparent: &str, body: &Value) -> i64 {
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("traceparent", traceparent)
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    assert_eq!(order["guest"], true);
    order["id"].as_i64().unwrap()
}

async fn stored_traceparent(app: &TestApp, order_id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT traceparent FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Every payload of the order's jobs in the apalis queue (its data hash: one field per job pushed).
async fn jobs_of(app: &TestApp, order_id: i64) -> Vec<Value> {
    let data = jobs::queue_config(&app.cache.keys, ProcessOrder::QUEUE, 1).job_data_hash();
    let payloads: Vec<String> =
        redis::cmd("HVALS").arg(data).query_async(&mut app.cache.conn().await.unwrap()).await.unwrap();
    payloads
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).expect("a JSON job"))
        .filter(|job| job["order_id"] == order_id)
        .collect()
}

/// The order's jobs once there are `n` of them (the push after the commit may finish after the answer).
async fn wait_for_jobs(app: &TestApp, order_id: i64, n: usize) -> Vec<Value> {
    wait_until(WITHIN, "the order's jobs in the queue", || async { jobs_of(app, order_id).await.len() >= n })
        .await;
    let jobs = jobs_of(app, order_id).await;
    assert_eq!(jobs.len(), n, "{jobs:#?}");
    jobs
}

#[tokio::test]
async fn an_order_keeps_its_callers_traceparent_and_the_sweepers_repush_names_it_as_origin() {
    let app = spawn_app().await;
    let a = app.create_product("Traced", 10.0, 10).await["id"].as_i64().unwrap();
    let b = app.create_product("Traced too", 10.0, 10).await["id"].as_i64().unwrap();
    // One product (group commit) and two (a sale of its own): both ways of selling keep it.
    let single = traceparent("4bf92f3577b34da6a3ce929d0e0e4736");
    let multi = traceparent("5bf92f3577b34da6a3ce929d0e0e4737");
    let single_id = order_with(&app, &single, &json!({ "product_id": a, "quantity": 1 })).await;
    let multi_id = order_with(
        &app,
        &multi,
        &json!({ "items": [{ "product_id": a, "quantity": 1 }, { "product_id": b, "quantity": 2 }] }),
    )
    .await;

    for (id, traceparent) in [(single_id, &single), (multi_id, &multi)] {
        assert_eq!(stored_traceparent(&app, id).await.as_ref(), Some(traceparent), "order {id}");
        let first = wait_for_jobs(&app, id, 1).await.remove(0);
        assert_eq!(
            first["traceparent"],
            traceparent.as_str(),
            "the job continues the caller's trace: {first}"
        );
        assert!(first.get("origin").is_none_or(Value::is_null), "a first job has no origin: {first}");
    }
    // An order without a caller's context keeps none.
    let untraced: Value = app.order(a, 1).await.json().await.unwrap();
    let untraced = untraced["id"].as_i64().unwrap();
    assert_eq!(stored_traceparent(&app, untraced).await, None);
    assert!(wait_for_jobs(&app, untraced, 1).await[0]["traceparent"].is_null());

    // No worker runs: the first order's job is "lost" (its wake-up is an hour old), and the sweeper
    // enqueues it again, in a trace of its own that names the placing request's as its origin.
    sqlx::query("UPDATE orders SET last_enqueued_at = now() - interval '1 hour' WHERE id = $1")
        .bind(single_id)
        .execute(&app.db)
        .await
        .unwrap();
    let sweeper = pricing_worker::Worker::build(app.settings.clone()).await.unwrap().sweeper();
    let report = sweeper.sweep_once().await.unwrap();
    assert_eq!(report.requeued, 1, "{report:?}");
    let jobs = wait_for_jobs(&app, single_id, 2).await;
    let again = jobs.iter().find(|job| job.get("origin").is_some_and(|o| !o.is_null())).expect("a re-push");
    assert_eq!(again["origin"], single.as_str(), "{again}");
    assert_ne!(again["traceparent"], single.as_str(), "the re-push does not continue that trace: {again}");
    assert_eq!(jobs_of(&app, multi_id).await.len(), 1, "an order whose job is not lost is left alone");
}

/// The `event` field of the stream entry of `event_id`.
async fn stream_entry(app: &TestApp, event_id: &str) -> Value {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(app.cache.keys.market_events())
        .arg("-")
        .arg("+")
        .query_async(&mut app.cache.conn().await.unwrap())
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("event"))
        .map(|json| serde_json::from_str::<Value>(&json).expect("a JSON event"))
        .find(|event| event["event_id"] == event_id)
        .unwrap_or_else(|| panic!("no stream entry for {event_id}"))
}

async fn publish(app: &TestApp, traceparent: Option<&str>, event: Value) -> String {
    let mut req = app.client.post(app.url("/api/v1/publish-market-event")).bearer_auth(ADMIN_TOKEN);
    if let Some(traceparent) = traceparent {
        req = req.header("traceparent", traceparent);
    }
    let res = req.json(&event).send().await.expect("request");
    assert_eq!(res.status(), 202);
    let accepted: Value = res.json().await.unwrap();
    accepted["event_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_published_event_carries_the_callers_traceparent_or_null() {
    let app = spawn_app().await;
    let traced = traceparent("7bf92f3577b34da6a3ce929d0e0e4739");
    let event = || json!({ "event_type": "competitor_price", "category": "books", "multiplier": 1.1 });

    let id = publish(&app, Some(&traced), event()).await;
    assert_eq!(stream_entry(&app, &id).await["traceparent"], traced.as_str());

    let id = publish(&app, None, event()).await;
    let entry = stream_entry(&app, &id).await;
    assert!(entry.get("traceparent").is_some_and(Value::is_null), "present and null: {entry}");
}
