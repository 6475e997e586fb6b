//! Graceful shutdown, proven on the binaries with a real SIGTERM: the api stops accepting, answers every
//! request it had accepted (none fails) and exits 0, and gives up after `SHUTDOWN_TIMEOUT_SECS`; the worker
//! finishes the orders in hand; the listener exits promptly. Also: the admin token never reaches the logs.

mod processes;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use processes::{Stack, TOKEN};
use serde_json::{json, Value};
use sqlx::Connection;

/// Holds the products' row locks until the connection is closed, so orders for them stay in flight.
async fn lock_products(stack: &Stack, ids: &[i64]) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&stack.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT 1 FROM products WHERE id = ANY($1) FOR UPDATE")
        .bind(ids)
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Waits until `n` sessions of the stack's database wait for a lock.
async fn wait_for_lock_waiters(conn: &mut sqlx::PgConnection, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Inside a transaction the statistics views are a snapshot taken at their first read: refresh it.
        sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *conn).await.unwrap();
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {waiting} of {n} orders reached the row lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct LoadCounts {
    answered: AtomicUsize,
    failed: AtomicUsize,
    refused: AtomicUsize,
}

/// Quotes from `clients` loops until `stop`: a status other than 200 is a failure; a request the server never
/// accepted (connection refused or closed before any answer) is counted apart.
fn quote_load(
    api: &str,
    id: i64,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<LoadCounts>, Vec<tokio::task::JoinHandle<()>>) {
    let counts = Arc::new(LoadCounts::default());
    let handles = (0..clients)
        .map(|_| {
            let (url, counts, stop) = (format!("{api}/api/v1/price"), counts.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.post(&url).json(&json!({ "product_id": id })).send().await {
                        Ok(res) if res.status() == 200 => counts.answered.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counts.refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    (counts, handles)
}

#[tokio::test]
async fn sigterm_under_load_finishes_every_accepted_request_then_exits_0() {
    let mut stack = Stack::start("shutdown", &[("RUST_LOG", "debug,sqlx=warn".into())]).await;
    // Four consecutive products, one order each: the api spreads single-product orders over four group-commit
    // queues by product id, so each order waits at the row lock in a transaction of its own.
    let mut held = vec![];
    for _ in 0..4 {
        held.push(stack.create_product(1_000).await);
    }
    let quoted = stack.create_product(1_000).await;
    let mut lock = lock_products(&stack, &held).await;
    let client = reqwest::Client::new();
    let orders: Vec<_> = held
        .iter()
        .map(|hot| {
            let request = client
                .post(format!("{}/api/v1/orders", stack.api))
                .json(&json!({ "product_id": hot, "quantity": 1 }));
            tokio::spawn(request.send())
        })
        .collect();
    wait_for_lock_waiters(&mut lock, held.len() as i64).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (counts, load) = quote_load(&stack.api, quoted, 8, stop.clone());
    // Under load before the signal: wait until the load has been answered a few times.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts.answered.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "the quote load never got answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stack.signal("pricing-api", "TERM");
    // The api has stopped accepting once a new connection is refused; the orders are still in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while reqwest::Client::new().get(format!("{}/api/v1/health", stack.api)).send().await.is_ok() {
        assert!(Instant::now() < deadline, "the api still accepts connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.close().await.unwrap();
    for order in orders {
        let res = order.await.unwrap().expect("an accepted order is answered");
        assert_eq!(res.status(), 201, "{:?}", res.text().await);
    }
    let status = stack.exit_of("pricing-api", Duration::from_secs(10)).await.expect("the api exits");
    assert!(status.success(), "exit status {status}");
    stop.store(true, Ordering::Relaxed);
    for handle in load {
        handle.await.unwrap();
    }
    let (answered, failed) = (counts.answered.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed));
    assert!(answered > 0, "the load ran");
    assert_eq!(failed, 0, "{failed} accepted requests failed ({answered} answered)");

    // Logged at debug, every request above carried no secret into the logs, nor did the admin calls.
    let log = stack.log("pricing-api");
    assert!(log.contains("shutdown requested") && log.contains("pricing-api stopped"), "{log}");
    assert!(!log.contains(TOKEN), "the admin token was logged");
}

#[tokio::test]
async fn the_api_gives_up_on_a_stuck_request_after_shutdown_timeout() {
    let mut stack = Stack::start("shutdown", &[("SHUTDOWN_TIMEOUT_SECS", "1".into())]).await;
    let id = stack.create_product(10).await;
    let mut lock = lock_products(&stack, &[id]).await;
    let order = reqwest::Client::new()
        .post(format!("{}/api/v1/orders", stack.api))
        .json(&json!({ "product_id": id, "quantity": 1 }))
        .send();
    let order = tokio::spawn(order);
    wait_for_lock_waiters(&mut lock, 1).await;
    let signalled = Instant::now();
    stack.signal("pricing-api", "TERM");
    let status = stack.exit_of("pricing-api", Duration::from_secs(10)).await.expect("the api exits");
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(5), "exited after {:?}", signalled.elapsed());
    assert!(stack.log("pricing-api").contains("SHUTDOWN_TIMEOUT_SECS"));
    assert!(order.await.unwrap().is_err(), "the stuck request was cut off with the process");
    lock.close().await.unwrap();
}

#[tokio::test]
async fn sigterm_lets_the_worker_finish_its_orders_and_the_listener_exit() {
    let mut stack = Stack::start("shutdown", &[("ORDER_PROCESSING_DELAY_MS", "1500".into())]).await;
    let id = stack.create_product(100).await;
    let client = reqwest::Client::new();
    let mut ids = vec![];
    for _ in 0..5 {
        let res =
            client.post(format!("{}/api/v1/orders", stack.api)).json(&json!({ "product_id": id })).send();
        let order: Value = res.await.unwrap().json().await.unwrap();
        ids.push(order["id"].as_i64().unwrap());
    }
    stack.spawn("pricing-worker");
    stack.spawn("pricing-listener");
    let api = stack.api.clone();
    let status_of = |order: i64| {
        let request = client.get(format!("{api}/api/v1/orders/{order}")).bearer_auth(TOKEN).send();
        async move {
            request.await.unwrap().json::<Value>().await.unwrap()["status"].as_str().unwrap().to_string()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_of(ids[0]).await != "processing" {
        assert!(Instant::now() < deadline, "the worker never took the order");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    processes::wait_for(&format!("{}/health", stack.url_of("LISTENER_ADDR"))).await;
    stack.signal("pricing-worker", "TERM");
    stack.signal("pricing-listener", "TERM");
    let worker = stack.exit_of("pricing-worker", Duration::from_secs(15)).await.expect("the worker exits");
    assert!(worker.success(), "worker exit status {worker}");
    let listener =
        stack.exit_of("pricing-listener", Duration::from_secs(5)).await.expect("the listener exits");
    assert!(listener.success(), "listener exit status {listener}");
    // The order it was working on was finished, not dropped half-way.
    assert_eq!(status_of(ids[0]).await, "completed");
    for order in &ids {
        assert_ne!(status_of(*order).await, "processing", "order {order} was left processing");
    }
}
