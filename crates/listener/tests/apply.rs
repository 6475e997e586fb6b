//! `apply_batch`, the listener's exactly-once core, against a real PostgreSQL and Redis without a running
//! listener: each `event_id` takes effect once however often it is delivered (again later, twice in one
//! batch, or to two listeners at once), a batch commits whole or not at all, and events naming products
//! that do not exist are applied without touching any other.

#[path = "../../core/testing/backends.rs"]
mod backends;
mod support;

use backends::TestBackends;
use pricing_core::events::MarketEvent;
use pricing_listener::apply::{apply_batch, BatchOutcome};
use serde_json::json;
use support::{count, decimal, event, multiplier, product, signal, status_of};

async fn apply(t: &TestBackends, events: &[MarketEvent]) -> pricing_core::Result<BatchOutcome> {
    apply_batch(&t.db, &t.cache, &t.tasks, events).await
}

fn outcome(applied: usize, duplicates: usize) -> BatchOutcome {
    BatchOutcome { applied, duplicates }
}

/// When each event was applied, by id.
async fn applied_at(t: &TestBackends) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT event_id, applied_at::text FROM market_events ORDER BY event_id")
        .fetch_all(&t.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_applies_once_and_applying_it_again_changes_nothing() {
    let t = TestBackends::connect().await;
    let lamp = product(&t.db, "LAMP-1", "home").await;
    product(&t.db, "KITE-1", "toys").await;
    let events = [
        signal("rival-1", json!([lamp]), 1.1),
        event(json!({ "event_id": "news-1", "event_type": "demand_shock", "category": "toys",
                      "multiplier": 1.3 })),
    ];

    assert_eq!(apply(&t, &events).await.unwrap(), outcome(2, 0));
    assert_eq!(multiplier(&t.db, &format!("product:{lamp}")).await, Some(decimal("1.1")));
    assert_eq!(multiplier(&t.db, "category:toys").await, Some(decimal("1.3")));
    assert_eq!(status_of(&t.db, "rival-1").await.as_deref(), Some("applied"));
    // Both events share one recalculation of their scope, recorded and enqueued once.
    let scope: serde_json::Value =
        sqlx::query_scalar("SELECT scope FROM tasks").fetch_one(&t.db).await.unwrap();
    assert_eq!(scope, json!({ "product_ids": [lamp], "categories": ["toys"] }));
    assert_eq!(count(&t.db, "SELECT count(*) FROM market_events WHERE task_id IS NOT NULL").await, 2);
    assert_eq!(t.tasks.depth().await.unwrap(), 1);
    let first = applied_at(&t).await;

    // A redelivery (the stream carried them again, or another listener claimed them).
    assert_eq!(apply(&t, &events).await.unwrap(), outcome(0, 2));
    assert_eq!(applied_at(&t).await, first, "applied_at is the first application's");
    assert_eq!(multiplier(&t.db, &format!("product:{lamp}")).await, Some(decimal("1.1")));
    assert_eq!(count(&t.db, "SELECT count(*) FROM tasks").await, 1, "no second recalculation");
    assert_eq!(t.tasks.depth().await.unwrap(), 1, "no second job");
}

#[tokio::test]
async fn within_a_batch_a_repeated_event_counts_once_and_the_later_signal_wins() {
    let t = TestBackends::connect().await;
    let lamp = product(&t.db, "LAMP-1", "home").await;
    let first = signal("a", json!([lamp]), 1.2);
    let later = signal("b", json!(["LAMP-1"]), 0.9);

    let outcome_of_batch = apply(&t, &[first.clone(), later, first]).await.unwrap();
    assert_eq!(outcome_of_batch, outcome(2, 1));
    assert_eq!(multiplier(&t.db, &format!("product:{lamp}")).await, Some(decimal("0.9")), "named by SKU");
    assert_eq!(count(&t.db, "SELECT count(*) FROM market_events WHERE status = 'applied'").await, 2);
}

#[tokio::test]
async fn events_naming_unknown_products_are_applied_and_touch_no_other_product() {
    let t = TestBackends::connect().await;
    let lamp = product(&t.db, "LAMP-1", "home").await;
    let events = [
        signal("sku", json!(["NOPE-1"]), 1.5),
        event(json!({ "event_id": "recalc", "event_type": "recalculate", "product_ids": ["NOPE-2"] })),
        signal("id", json!([999_999]), 1.5),
    ];

    assert_eq!(apply(&t, &events).await.unwrap(), outcome(3, 0));
    for id in ["sku", "recalc", "id"] {
        assert_eq!(status_of(&t.db, id).await.as_deref(), Some("applied"), "{id}: not retried forever");
    }
    assert_eq!(multiplier(&t.db, &format!("product:{lamp}")).await, None);
    assert_eq!(
        count(&t.db, "SELECT count(*) FROM market_multipliers WHERE scope LIKE 'product:NOPE%'").await,
        0
    );
    // A scope that names no existing product is not "every product": no full recalculation.
    assert_eq!(count(&t.db, "SELECT count(*) FROM tasks WHERE scope IS NULL").await, 0);
    let unknown_sku_only = [event(json!({ "event_type": "recalculate", "product_ids": ["NOPE-3"] }))];
    assert_eq!(apply(&t, &unknown_sku_only).await.unwrap(), outcome(1, 0));
    assert_eq!(count(&t.db, "SELECT count(*) FROM tasks WHERE scope IS NULL").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_listeners_applying_overlapping_batches_at_once_apply_each_event_once() {
    let t = TestBackends::connect().await;
    let lamp = product(&t.db, "LAMP-1", "home").await;
    let events: Vec<MarketEvent> = (0..60)
        .map(|i| {
            event(json!({ "event_id": format!("e-{i:02}"), "event_type": "competitor_price",
                          "product_ids": [lamp], "multiplier": 1.1 }))
        })
        .collect();
    // One listener holds events 0..40, the other 20..60 (in reverse: row locks are taken in id order).
    let mut second: Vec<MarketEvent> = events[20..].to_vec();
    second.reverse();

    let (a, b) = tokio::join!(apply(&t, &events[..40]), apply(&t, &second));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.applied + b.applied, 60, "{a:?} {b:?}");
    assert_eq!(a.duplicates + b.duplicates, 20, "{a:?} {b:?}");
    assert_eq!(count(&t.db, "SELECT count(*) FROM market_events WHERE status = 'applied'").await, 60);
    assert_eq!(count(&t.db, "SELECT count(*) FROM market_events WHERE task_id IS NULL").await, 0);
}

#[tokio::test]
async fn a_batch_that_fails_applies_nothing_and_applies_whole_when_delivered_again() {
    let t = TestBackends::connect().await;
    let lamp = product(&t.db, "LAMP-1", "home").await;
    let kite = product(&t.db, "KITE-1", "toys").await;
    let recorded = signal("ok", json!([lamp]), 1.1);
    // As the api does before appending it to the stream.
    assert!(pricing_core::db::market_events::record(&t.db, &recorded).await.unwrap());
    let only_in_redis = signal("big", json!([kite]), 1.8);
    let batch = [recorded, only_in_redis];
    // PostgreSQL refuses the second signal's row: the statement fails inside the batch's transaction.
    sqlx::query("ALTER TABLE market_multipliers ADD CONSTRAINT test_refuses_big CHECK (multiplier < 1.5)")
        .execute(&t.db)
        .await
        .unwrap();

    assert!(apply(&t, &batch).await.is_err());
    assert_eq!(status_of(&t.db, "ok").await.as_deref(), Some("received"), "not applied");
    assert_eq!(status_of(&t.db, "big").await, None, "not even recorded");
    assert_eq!(count(&t.db, "SELECT count(*) FROM market_multipliers").await, 0, "no signal of it");
    assert_eq!(count(&t.db, "SELECT count(*) FROM tasks").await, 0, "no recalculation of it");
    assert_eq!(t.tasks.depth().await.unwrap(), 0);

    sqlx::query("ALTER TABLE market_multipliers DROP CONSTRAINT test_refuses_big")
        .execute(&t.db)
        .await
        .unwrap();
    assert_eq!(apply(&t, &batch).await.unwrap(), outcome(2, 0));
    assert_eq!(multiplier(&t.db, &format!("product:{kite}")).await, Some(decimal("1.8")));
    assert_eq!(t.tasks.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn a_signal_drops_the_pricing_states_it_changed_and_no_other() {
    let t = TestBackends::connect().await;
    let lamp = product(&t.db, "LAMP-1", "home").await;
    let kite = product(&t.db, "KITE-1", "toys").await;
    let mut redis = t.cache.conn().await.unwrap();
    for id in [lamp, kite] {
        let () =
            redis::cmd("SET").arg(t.cache.keys.price(id)).arg("state").query_async(&mut redis).await.unwrap();
    }

    let signal = event(json!({ "event_type": "competitor_price", "category": "home", "multiplier": 1.2 }));
    assert_eq!(apply(&t, &[signal]).await.unwrap(), outcome(1, 0));
    let exists = |id: i64| redis::cmd("EXISTS").arg(t.cache.keys.price(id)).clone();
    let lamp_cached: bool = exists(lamp).query_async(&mut redis).await.unwrap();
    let kite_cached: bool = exists(kite).query_async(&mut redis).await.unwrap();
    assert!(!lamp_cached, "the next quote recomputes it with the new market part");
    assert!(kite_cached, "another category's state stays");
}
