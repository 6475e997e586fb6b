//! Several listeners on one stream: a killed listener's entries claimed by another, a thousand events
//! shared by two, every event applied exactly once across them. One listener: `market_events.rs`.

use serde_json::json;

use crate::helpers::{spawn_app, wait_until, TestApp};
use crate::market_events::{applied_by, pending, product_in, EVENTUALLY};

async fn count_with_status(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM market_events WHERE status = $1")
        .bind(status)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Appends `n` events (one product each) straight into the stream in one pipeline.
async fn append_events(app: &TestApp, n: usize, product_id: i64) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        let event = json!({ "event_id": format!("burst-{i}"), "event_type": "competitor_price",
                            "product_ids": [product_id], "multiplier": 1.1, "occurred_at": "2026-11-23T00:00:00Z" });
        pipe.cmd("XADD")
            .arg(app.cache.keys.market_events())
            .arg("*")
            .arg("event")
            .arg(event.to_string())
            .ignore();
    }
    let () = pipe.query_async(&mut app.cache.conn().await.unwrap()).await.unwrap();
}

#[tokio::test]
async fn a_killed_listeners_entries_are_claimed_and_every_event_applies_exactly_once() {
    let mut app = spawn_app().await;
    let id = product_in(&app, "Lamp", "home", 50.0).await;
    let first = app.start_listener_with(|s| s.listener_batch_size = 50).await;
    append_events(&app, 2_000, id).await;
    wait_until(EVENTUALLY, "the first listener under way", || async { applied_by(&app, &[first]) > 0 }).await;
    app.kill_listener(first);
    let second = app.start_listener().await;
    wait_until(EVENTUALLY, "all 2,000 applied", || async {
        count_with_status(&app, "applied").await == 2_000
    })
    .await;
    wait_until(EVENTUALLY, "nothing left pending", || async { pending(&app).await == 0 }).await;
    assert_eq!(applied_by(&app, &[first, second]), 2_000, "each event applied exactly once across both");
}

#[tokio::test]
async fn two_listeners_share_a_thousand_events_and_apply_each_once() {
    let mut app = spawn_app().await;
    let id = product_in(&app, "Lamp", "home", 50.0).await;
    let a = app.start_listener_with(|s| s.listener_batch_size = 20).await;
    let b = app.start_listener_with(|s| s.listener_batch_size = 20).await;
    append_events(&app, 1_000, id).await;
    wait_until(EVENTUALLY, "all 1,000 applied", || async {
        count_with_status(&app, "applied").await == 1_000
    })
    .await;
    wait_until(EVENTUALLY, "both listeners done", || async { applied_by(&app, &[a, b]) == 1_000 }).await;
    let share = |i| app.listener(i).state.counters.batches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(share(a) > 0 && share(b) > 0, "both took batches: {} and {}", share(a), share(b));
}
