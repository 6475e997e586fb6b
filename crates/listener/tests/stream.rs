//! The listener's stream side step by step, against a real PostgreSQL and Redis without a running
//! listener: a consumer step applies what the stream carries (a repeated entry counted duplicate, garbage
//! dead-lettered) and acknowledges only what committed; entries a silent listener left pending are claimed;
//! the resend sweep puts back on the stream an event Redis never got.

#[path = "../../core/testing/backends.rs"]
mod backends;
mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use backends::TestBackends;
use pricing_core::events::CONSUMER_GROUP;
use pricing_listener::{
    consumer::Consumer,
    resend,
    state::{Counted, ListenerState},
};
use serde_json::json;
use support::{product, signal, status_of};

fn state_of(t: &TestBackends) -> Arc<ListenerState> {
    Arc::new(ListenerState::new(t.settings.clone(), t.db.clone(), t.cache.clone(), t.tasks.clone()))
}

async fn xadd(t: &TestBackends, fields: &[(&str, &str)]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(t.cache.keys.market_events()).arg("*");
    for (name, value) in fields {
        cmd.arg(*name).arg(*value);
    }
    let _: String = cmd.query_async(&mut t.cache.conn().await.unwrap()).await.unwrap();
}

async fn xlen(t: &TestBackends, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(&mut t.cache.conn().await.unwrap()).await.unwrap()
}

/// Entries read but not acknowledged, across the group.
async fn pending(t: &TestBackends) -> u64 {
    let (count, _, _, _): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(t.cache.keys.market_events())
        .arg(CONSUMER_GROUP)
        .query_async(&mut t.cache.conn().await.unwrap())
        .await
        .unwrap();
    count
}

/// A signal for one product, as the stream's `event` field carries it.
fn signal_json(event_id: &str, product_id: i64, multiplier: f64) -> String {
    signal(event_id, json!([product_id]), multiplier).to_json()
}

#[tokio::test]
async fn one_step_applies_the_batch_counts_a_repeat_dead_letters_garbage_and_acknowledges_it_all() {
    let t = TestBackends::connect().await;
    let state = state_of(&t);
    let lamp = product(&t.db, "LAMP-1", "home").await;
    let rival = signal_json("rival-1", lamp, 1.2);
    xadd(&t, &[("event", &rival)]).await;
    xadd(&t, &[("event", &rival)]).await;
    xadd(&t, &[("event", "{not json")]).await;
    // What an operator types in redis-cli.
    let flat =
        [("event_type", "demand_shock"), ("event_id", "cli-1"), ("category", "home"), ("multiplier", "1.1")];
    xadd(&t, &flat).await;

    let mut consumer = Consumer::new(state.clone()).unwrap();
    consumer.step().await.unwrap();
    let counters = &state.counters;
    assert_eq!(counters.get(Counted::Applied), 2);
    assert_eq!(counters.get(Counted::Duplicate), 1);
    assert_eq!(counters.get(Counted::DeadLetter), 1);
    assert_eq!(counters.get(Counted::Batch), 1);
    assert_eq!(status_of(&t.db, "rival-1").await.as_deref(), Some("applied"));
    assert_eq!(status_of(&t.db, "cli-1").await.as_deref(), Some("applied"));
    assert_eq!(pending(&t).await, 0, "every entry acknowledged");
    assert_eq!(xlen(&t, &t.cache.keys.market_events_dead()).await, 1);

    // Nothing new: the next step waits LISTENER_BLOCK_MS and changes nothing.
    consumer.step().await.unwrap();
    assert_eq!(counters.get(Counted::Applied) + counters.get(Counted::Duplicate), 3);
}

#[tokio::test]
async fn a_batch_that_fails_stays_pending_and_the_next_step_applies_it() {
    let t = TestBackends::connect().await;
    let state = state_of(&t);
    let lamp = product(&t.db, "LAMP-1", "home").await;
    xadd(&t, &[("event", &signal_json("small", lamp, 1.1))]).await;
    xadd(&t, &[("event", &signal_json("big", lamp, 1.8))]).await;
    sqlx::query("ALTER TABLE market_multipliers ADD CONSTRAINT test_refuses_big CHECK (multiplier < 1.5)")
        .execute(&t.db)
        .await
        .unwrap();

    let mut consumer = Consumer::new(state.clone()).unwrap();
    assert!(consumer.step().await.is_err());
    assert_eq!(pending(&t).await, 2, "not acknowledged");
    assert_eq!(status_of(&t.db, "small").await, None);

    sqlx::query("ALTER TABLE market_multipliers DROP CONSTRAINT test_refuses_big")
        .execute(&t.db)
        .await
        .unwrap();
    consumer.step().await.unwrap();
    assert_eq!(state.counters.get(Counted::Applied), 2);
    assert_eq!(pending(&t).await, 0);
}

#[tokio::test]
async fn entries_a_silent_listener_left_pending_are_claimed_and_applied_once() {
    let t = TestBackends::connect_with(|s| {
        s.listener_block = Duration::from_millis(50);
        s.listener_claim_idle = Duration::from_millis(150);
    })
    .await;
    let state = state_of(&t);
    let lamp = product(&t.db, "LAMP-1", "home").await;
    xadd(&t, &[("event", &signal_json("a", lamp, 1.1))]).await;
    xadd(&t, &[("event", &signal_json("b", lamp, 1.2))]).await;
    // Another listener reads both and dies before acknowledging them.
    let stream = t.cache.keys.market_events();
    let mut redis = t.cache.conn().await.unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(CONSUMER_GROUP)
        .arg("0")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(CONSUMER_GROUP)
        .arg("listener-that-died")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut redis)
        .await
        .unwrap();

    let mut consumer = Consumer::new(state.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.counters.get(Counted::Claimed) < 2 {
        assert!(Instant::now() < deadline, "the entries were never claimed");
        consumer.step().await.unwrap();
    }
    assert_eq!(state.counters.get(Counted::Applied), 2);
    assert_eq!(pending(&t).await, 0);
    assert_eq!(status_of(&t.db, "b").await.as_deref(), Some("applied"));
}

#[tokio::test]
async fn an_event_the_stream_never_got_is_appended_again_and_applied_once() {
    let t = TestBackends::connect().await;
    let state = state_of(&t);
    let lamp = product(&t.db, "LAMP-1", "home").await;
    // Recorded by the api while Redis was down: in PostgreSQL, not in the stream.
    let lost = signal("lost-1", json!([lamp]), 1.3);
    pricing_core::db::market_events::record(&t.db, &lost).await.unwrap();
    let age_all = "UPDATE market_events SET last_appended_at = now() - interval '1 minute'";
    sqlx::query(age_all).execute(&t.db).await.unwrap();

    assert_eq!(resend::sweep(&state).await.unwrap(), 1);
    assert_eq!(xlen(&t, &t.cache.keys.market_events()).await, 1);
    assert_eq!(resend::sweep(&state).await.unwrap(), 0, "just appended: not again yet");
    assert_eq!(state.counters.get(Counted::Resent), 1);

    Consumer::new(state.clone()).unwrap().step().await.unwrap();
    assert_eq!(status_of(&t.db, "lost-1").await.as_deref(), Some("applied"));
    sqlx::query(age_all).execute(&t.db).await.unwrap();
    assert_eq!(resend::sweep(&state).await.unwrap(), 0, "an applied event is never appended again");
}
