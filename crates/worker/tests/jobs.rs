//! The worker's jobs called directly, against a real PostgreSQL and Redis without a running worker: an
//! order's processing (`OrderProcessor::handle`) and a recalculation (`Recalculator::run`), each on rows
//! made straight in PostgreSQL, and what a second delivery of the same job does.

#[path = "../../core/testing/backends.rs"]
mod backends;

use std::sync::Arc;

use backends::TestBackends;
use pricing_core::{
    db::tasks::{self, Coverage, TaskKind, TaskStatus},
    domain::ProductScope,
};
use pricing_worker::{
    orders::{OrderProcessor, Outcome},
    recalculate::{RecalcOutcome, Recalculator},
};

/// A pending order of 2 units of a new product (3 left in stock after the sale), as the api leaves it;
/// returns `(order id, product id)`.
async fn pending_order(t: &TestBackends) -> (i64, i64) {
    sqlx::query_as(
        "WITH product AS (INSERT INTO products (sku, name, price, stock) VALUES ('LAMP-1', 'Lamp', 10, 3)
                          RETURNING id),
              placed AS (INSERT INTO orders (total_price) VALUES (20) RETURNING id)
         INSERT INTO order_items (order_id, product_id, quantity, unit_price)
         SELECT placed.id, product.id, 2, 10 FROM placed, product
         RETURNING order_id, product_id",
    )
    .fetch_one(&t.db)
    .await
    .unwrap()
}

/// `(status, attempts, completed)` of an order.
async fn order_row(t: &TestBackends, id: i64) -> (String, i32, bool) {
    sqlx::query_as("SELECT status, attempts, completed_at IS NOT NULL FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&t.db)
        .await
        .unwrap()
}

fn processor(t: &TestBackends) -> OrderProcessor {
    OrderProcessor::new(t.db.clone(), t.cache.clone(), Arc::new(t.settings.clone()))
}

#[tokio::test]
async fn a_pending_order_completes_and_a_second_delivery_is_skipped() {
    let t = TestBackends::connect().await;
    let (id, _) = pending_order(&t).await;
    let processor = processor(&t);

    assert_eq!(processor.handle(id).await, Some(Outcome::Completed));
    assert_eq!(order_row(&t, id).await, ("completed".into(), 1, true));
    assert_eq!(processor.handle(id).await, Some(Outcome::Skipped), "apalis delivered the job again");
    assert_eq!(order_row(&t, id).await, ("completed".into(), 1, true), "not taken again");
}

/// Two deliveries of one order's job at once (a sweeper's re-push fetched beside the original). PostgreSQL
/// keeps the order right: taken once, completed once, counted once.
#[tokio::test]
async fn two_deliveries_at_once_leave_the_order_completed_once() {
    let t = TestBackends::connect().await;
    let (id, _) = pending_order(&t).await;
    let processor = processor(&t);

    let (first, second) = tokio::join!(processor.handle(id), processor.handle(id));
    assert!(first == Some(Outcome::Completed) || second == Some(Outcome::Completed), "{first:?} {second:?}");
    assert_eq!(order_row(&t, id).await, ("completed".into(), 1, true));
    let completed: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(orders), 0)::bigint FROM order_stats WHERE status = 'completed'",
    )
    .fetch_one(&t.db)
    .await
    .unwrap();
    assert_eq!(completed, 1, "counted once");
}

/// The same two deliveries fulfil the order once: one completes it, the other is skipped, although both
/// land in one coalesced claim (`UPDATE ... WHERE id = ANY($1)` with the id twice: only the first
/// delivery in the batch is answered the attempt).
#[tokio::test]
async fn two_deliveries_at_once_fulfil_the_order_once() {
    let t = TestBackends::connect().await;
    let (id, _) = pending_order(&t).await;
    let processor = processor(&t);

    let (first, second) = tokio::join!(processor.handle(id), processor.handle(id));
    let mut outcomes = [first, second];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [Some(Outcome::Completed), Some(Outcome::Skipped)]);
}

#[tokio::test]
async fn an_order_whose_fulfilment_fails_ends_failed_with_its_stock_back() {
    let t = TestBackends::connect_with(|s| {
        s.order_failure_rate = 1.0;
        s.order_max_attempts = 1;
    })
    .await;
    let (id, product_id) = pending_order(&t).await;

    let Some(Outcome::Failed(reason)) = processor(&t).handle(id).await else { panic!("not failed") };
    assert!(reason.contains("gave up after 1 attempts"), "{reason}");
    assert_eq!(order_row(&t, id).await, ("failed".into(), 1, false));
    let stock: i32 = sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
        .bind(product_id)
        .fetch_one(&t.db)
        .await
        .unwrap();
    assert_eq!(stock, 5, "the 2 units sold are back");
}

/// `count` products in `category`, straight into PostgreSQL; returns their ids in order.
async fn products_in(t: &TestBackends, category: &str, count: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "INSERT INTO products (sku, name, category, price, stock)
         SELECT $1 || '-' || n, 'Product ' || n, $1, 10 + n % 7, 100 FROM generate_series(1, $2) AS n
         RETURNING id",
    )
    .bind(category)
    .bind(count)
    .fetch_all(&t.db)
    .await
    .unwrap()
}

/// Whether each product's pricing state is in the cache.
async fn cached(t: &TestBackends, ids: &[i64]) -> Vec<bool> {
    let keys: Vec<String> = ids.iter().map(|id| t.cache.keys.price(*id)).collect();
    t.cache.get_many(&keys).await.unwrap().iter().map(Option::is_some).collect()
}

fn recalculator(t: &TestBackends) -> Recalculator {
    Recalculator::new(t.db.clone(), t.cache.clone(), Arc::new(t.settings.clone())).unwrap()
}

#[tokio::test]
async fn a_recalculation_task_completes_records_its_progress_and_runs_once() {
    let t = TestBackends::connect().await;
    // 250 products in batches of 100 (test settings): three batches.
    let mut ids = products_in(&t, "books", 200).await;
    ids.extend(products_in(&t, "toys", 50).await);
    let task = tasks::create(&t.db, TaskKind::RecalculateAll, Coverage::Everything).await.unwrap();
    let recalculator = recalculator(&t);

    assert_eq!(recalculator.run(task.id).await.unwrap(), RecalcOutcome::Succeeded { processed: 250 });
    let done = tasks::get(&t.db, task.id).await.unwrap();
    assert_eq!(
        (done.status, done.processed, done.total, done.attempts),
        (TaskStatus::Succeeded, 250, 250, 1)
    );
    assert_eq!(done.cursor, *ids.iter().max().unwrap(), "resumes after the last product, were it retried");
    assert!(done.finished_at.is_some());
    assert!(cached(&t, &ids).await.into_iter().all(|c| c), "every product's state stored");

    assert_eq!(recalculator.run(task.id).await.unwrap(), RecalcOutcome::Duplicate, "a second delivery");
    assert_eq!(tasks::get(&t.db, task.id).await.unwrap().processed, 250);
}

#[tokio::test]
async fn a_recalculation_for_market_events_covers_only_its_scope() {
    let t = TestBackends::connect().await;
    let books = products_in(&t, "books", 30).await;
    let toys = products_in(&t, "toys", 20).await;
    let scope = ProductScope { product_ids: vec![], categories: vec!["toys".into()] };
    let task = tasks::create(&t.db, TaskKind::ForMarketEvents, Coverage::Only(&scope)).await.unwrap();

    assert_eq!(recalculator(&t).run(task.id).await.unwrap(), RecalcOutcome::Succeeded { processed: 20 });
    assert_eq!(tasks::get(&t.db, task.id).await.unwrap().total, 20);
    assert!(cached(&t, &toys).await.into_iter().all(|c| c));
    assert!(cached(&t, &books).await.into_iter().all(|c| !c), "another category untouched");
}
