//! Group commit for single-product orders. A design that takes a row lock per order is capped by how many
//! transactions one hot row admits per second; here the orders that arrive while the previous batch commits
//! are gathered and committed together: one lock per product, one stock decrement per product, all the
//! orders and items inserted by one statement. Each order is still all-or-nothing and is answered only
//! after the commit that contains it. Each product's orders are taken in arrival order: when its stock runs
//! out part-way, those that fit are sold and the rest get the usual 400; an order refused for its own
//! reason (a price above what the customer saw, a replayed key) does not affect the others.
//!
//! Products are spread over `SHARDS` queues by id; one runner per queue and process commits its batches
//! one after the other, so a hot product's orders share one transaction and orders for many products share
//! a few. A batch locks its products in ascending id order, like every transaction that touches products,
//! so batches of several queues or api processes cannot deadlock; the row locks still serialise them.
//! Multi-product orders take the ordinary path (`OrderService::sell`).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use rust_decimal::Decimal;
use tokio::sync::oneshot;

use super::{
    lines::{self, WantedLine},
    replayed, OrderRequest, OrderService, Placed,
};
use crate::{
    db::{self, idempotency::Claim},
    domain::{Order, OrderItem},
    pricing::Shopper,
    Result,
};

/// The most orders one transaction commits.
const MAX_BATCH: usize = 256;
/// Batches one process commits at once (each product always in the same one): a few, so one batch's
/// commit (its WAL flush) overlaps the next one's statements.
/// (`tests/shutdown.rs` relies on four consecutive products landing in four queues.)
const SHARDS: i64 = 4;

/// One order waiting for its batch.
pub(super) struct Waiting {
    /// The request's span: its order's wake-up job carries this trace, whichever request's batch sold it.
    span: tracing::Span,
    request: OrderRequest,
    line: WantedLine,
    shopper: Shopper,
    reply: oneshot::Sender<Result<Placed>>,
}

/// The orders waiting in one shard, and whether its runner is at work.
#[derive(Default)]
struct ShardQueue {
    waiting: Vec<Waiting>,
    running: bool,
}

/// The queues per shard; a shard is in the map while its runner runs.
#[derive(Default)]
pub(super) struct Batches {
    queues: Mutex<HashMap<i64, ShardQueue>>,
}

impl OrderService {
    /// Sells a single-product order in the next batch of its product's shard, and waits for that batch's
    /// commit.
    pub(super) async fn sell_in_batch(
        self: &Arc<Self>,
        request: OrderRequest,
        line: WantedLine,
        shopper: Shopper,
    ) -> Result<Placed> {
        let shard = line.product_id.rem_euclid(SHARDS);
        let (reply, answer) = oneshot::channel();
        let start_runner = {
            let mut queues = self.batches.queues.lock().expect("batches lock");
            let queue = queues.entry(shard).or_default();
            queue.waiting.push(Waiting { span: tracing::Span::current(), request, line, shopper, reply });
            !std::mem::replace(&mut queue.running, true)
        };
        if start_runner {
            let this = Arc::clone(self);
            // Not in this request's span: the runner serves everyone's orders (each keeps its own span).
            tokio::spawn(tracing::Instrument::instrument(this.run_batches(shard), tracing::Span::none()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(crate::Error::Unavailable("the order's batch was dropped".into())))
    }

    /// Commits the shard's waiting orders, batch after batch, until none is left.
    async fn run_batches(self: Arc<Self>, shard: i64) {
        loop {
            // Lets the orders already on their way join this batch.
            tokio::task::yield_now().await;
            let batch: Vec<Waiting> = {
                let mut queues = self.batches.queues.lock().expect("batches lock");
                let queue = queues.entry(shard).or_default();
                let take = queue.waiting.len().min(MAX_BATCH);
                if take == 0 {
                    queues.remove(&shard);
                    return;
                }
                // A key sent again while its first request waits goes in the next batch, which then
                // replays the first's order (within one transaction the key is not committed yet).
                let mut keys = HashSet::new();
                let (batch, later): (Vec<Waiting>, Vec<Waiting>) = queue
                    .waiting
                    .drain(..take)
                    .partition(|w| keys.insert(key_of(w).to_string()) || key_of(w).is_empty());
                queue.waiting.splice(0..0, later);
                batch
            };
            metrics::histogram!(crate::prometheus::names::ORDER_BATCH_SIZE).record(batch.len() as f64);
            // In a task of its own: should it panic, its customers get an error (their answer channels are
            // dropped) and this runner goes on with the next batch instead of leaving the product stuck.
            let this = Arc::clone(&self);
            // Its statements appear in the trace of the batch's first order.
            let span = batch[0].span.clone();
            if let Err(e) =
                tokio::spawn(tracing::Instrument::instrument(this.commit_batch(batch), span)).await
            {
                tracing::error!(shard, error = %e, "an order batch failed");
            }
        }
    }

    async fn commit_batch(self: Arc<Self>, mut batch: Vec<Waiting>) {
        let mut product_ids: Vec<i64> = batch.iter().map(|w| w.line.product_id).collect();
        product_ids.sort_unstable();
        product_ids.dedup();
        let demand = self.pricing.recent_orders(&product_ids).await;
        let demand: HashMap<i64, u64> = product_ids.iter().copied().zip(demand).collect();
        let mut outcomes: Vec<Option<Result<Placed>>> = batch.iter().map(|_| None).collect();
        match self.sell_batch(&product_ids, &batch, &demand, &mut outcomes).await {
            Ok(()) => {}
            Err(e) => {
                // The transaction failed: no order of the batch was sold.
                let detail = e.to_string();
                for outcome in outcomes.iter_mut() {
                    *outcome = Some(Err(crate::Error::Unavailable(detail.clone())));
                }
            }
        }
        for (waiting, outcome) in batch.drain(..).zip(outcomes) {
            let outcome =
                outcome.unwrap_or_else(|| Err(crate::Error::Unavailable("order not decided".into())));
            let _ = waiting.reply.send(outcome);
        }
    }

    /// The batch's transaction: keys claimed (in key order, so two batches never wait on each other's
    /// keys), the products locked (in id order), each order priced and checked against the stock its
    /// product has left after the orders before it, the accepted ones recorded by one statement, their keys
    /// recorded, commit; then the post-commit steps.
    async fn sell_batch(
        &self,
        product_ids: &[i64],
        batch: &[Waiting],
        demand: &HashMap<i64, u64>,
        outcomes: &mut [Option<Result<Placed>>],
    ) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let mut claimed = vec![false; batch.len()];
        let mut keyed: Vec<usize> =
            (0..batch.len()).filter(|&i| batch[i].request.idempotency.is_some()).collect();
        keyed.sort_by(|&a, &b| key_of(&batch[a]).cmp(key_of(&batch[b])));
        for i in keyed {
            let key = batch[i].request.idempotency.as_ref().expect("keyed");
            let ttl = self.settings.idempotency_ttl;
            match db::idempotency::claim(&mut tx, &key.scoped_key, &key.request_hash, ttl).await? {
                Claim::New => claimed[i] = true,
                other => outcomes[i] = Some(replayed(other, key)),
            }
        }
        // Each locked row's stock is lowered as its orders are accepted: the next order for it is checked
        // as if those before it were already sold.
        let mut locked = db::orders::lock_for_sale(&mut tx, product_ids).await?;
        let mut accepted: Vec<(usize, Vec<OrderItem>, Decimal)> = Vec::new();
        for (i, waiting) in batch.iter().enumerate() {
            if outcomes[i].is_some() {
                continue; // replayed, or its key was used with another request
            }
            let product_id = waiting.line.product_id;
            let priced = lines::price_lines(
                &self.pricing,
                std::slice::from_ref(&waiting.line),
                &locked,
                &[demand.get(&product_id).copied().unwrap_or(0)],
                &waiting.shopper,
            )
            .and_then(|items| Ok((lines::order_total(&items, waiting.request.expected_total)?, items)));
            match priced {
                Ok((total, items)) => {
                    if let Some(row) = locked.iter_mut().find(|l| l.product.id == product_id) {
                        row.product.stock -= waiting.line.quantity;
                    }
                    accepted.push((i, items, total));
                }
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        // Keys of orders refused here are given back; keys whose claim found an earlier order stay as they are.
        let refused: Vec<&str> = (0..batch.len())
            .filter(|&i| claimed[i] && matches!(outcomes[i], Some(Err(_))))
            .map(|i| key_of(&batch[i]))
            .collect();
        db::idempotency::release(&mut tx, &refused).await?;
        if accepted.is_empty() {
            tx.commit().await?;
            return Ok(());
        }
        let rows: Vec<db::orders::BatchOrder> = accepted
            .iter()
            .map(|(i, items, total)| db::orders::BatchOrder {
                user_id: batch[*i].request.user_id.clone(),
                total: *total,
                item: items[0].clone(),
            })
            .collect();
        let sale = db::orders::record_batch_sale(&mut tx, &rows).await?;
        let mut placed = Vec::with_capacity(accepted.len());
        for ((i, items, total), (order_id, created_at)) in accepted.into_iter().zip(sale.orders) {
            let order = Order::placed(order_id, created_at, batch[i].request.user_id.clone(), total, items);
            if let Some(key) = &batch[i].request.idempotency {
                db::idempotency::record(&mut tx, &key.scoped_key, &order).await?;
            }
            placed.push((i, order));
        }
        tx.commit().await?;

        let jobs = placed.iter().map(|(i, order)| (order.id, batch[*i].span.clone())).collect();
        let sold = sale
            .products
            .into_iter()
            .map(|p| {
                let orders = placed.iter().filter(|(i, _)| batch[*i].line.product_id == p.id).count();
                (p, orders as u32)
            })
            .collect();
        self.after_sale(sold, jobs).await;
        for (i, order) in placed {
            outcomes[i] = Some(Ok(Placed { order, replayed: false }));
        }
        Ok(())
    }
}

fn key_of(waiting: &Waiting) -> &str {
    waiting.request.idempotency.as_ref().map_or("", |k| k.scoped_key.as_str())
}
