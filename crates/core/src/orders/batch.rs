//! Group commit for single-product orders. A design that takes a row lock per order is capped by how many
//! transactions one hot row admits per second; here the orders that arrive while the previous batch commits
//! are gathered and committed together: one lock per product, one stock decrement per product, all the
//! orders and items inserted by one statement. Each order is still all-or-nothing and is answered only
//! after the commit that contains it. Each product's orders are taken in arrival order: when its stock runs
//! out part-way, those that fit are sold and the rest get the usual 400; an order refused for its own
//! reason (a price above what the customer saw, a replayed key) does not affect the others.
//!
//! Products are spread over `SHARDS` queues by id, each a `Coalescer` (one flush at a time per queue and
//! process), so a hot product's orders share one transaction and orders for many products share a few. A
//! batch locks its products in ascending id order, like every transaction that touches products, so
//! batches of several queues or api processes cannot deadlock; the row locks still serialise them.
//! Multi-product orders take the ordinary path (`OrderService::sell`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use rust_decimal::Decimal;
use sqlx::PgPool;

use super::{
    after_sale::AfterSale,
    lines::{self, WantedLine},
    replayed, OrderRequest, Placed, SaleSlots,
};
use crate::{
    coalesce::Coalescer,
    db::{self, idempotency::Claim},
    domain::{Order, OrderItem},
    pricing::{PricingService, Shopper},
    Result, Settings,
};

/// The most orders one transaction commits.
const MAX_BATCH: usize = 256;
/// The most orders one queue holds; beyond, an order is refused at once (503, nothing sold) rather than
/// queued without bound.
const MAX_WAITING: usize = 4 * MAX_BATCH;
/// An order with less time than this left is not started: it could not commit before its client is told
/// it failed.
const MIN_TIME_LEFT: std::time::Duration = std::time::Duration::from_millis(20);
/// Batches one process commits at once (each product always in the same one): a few, so one batch's
/// commit (its WAL flush) overlaps the next one's statements.
/// (`tests/shutdown.rs` relies on four consecutive products landing in four queues.)
const SHARDS: usize = 4;

/// One single-product order waiting for its batch.
pub(super) struct Waiting {
    /// The request's span: the batch's work is traced in the first request's.
    pub span: tracing::Span,
    pub request: OrderRequest,
    pub owner: db::orders::OrderOwner,
    pub line: WantedLine,
    pub shopper: Shopper,
}

/// The group-commit queues, one per shard.
pub(super) struct Batches {
    shards: Vec<Coalescer<Waiting, Result<Placed>>>,
}

impl Batches {
    pub fn new(
        db: PgPool,
        pricing: Arc<PricingService>,
        settings: Arc<Settings>,
        after_sale: AfterSale,
        sale_slots: SaleSlots,
    ) -> Self {
        let seller = GroupCommit { db, pricing, settings, after_sale, sale_slots };
        let shards = (0..SHARDS)
            .map(|_| {
                let seller = seller.clone();
                Coalescer::new("order batch", MAX_BATCH, move |batch| {
                    let seller = seller.clone();
                    async move { Ok(seller.commit(batch).await) }
                })
                .with_max_waiting(MAX_WAITING)
            })
            .collect();
        Self { shards }
    }

    /// Sells a single-product order in the next batch of its product's shard, and waits for that batch's
    /// commit.
    pub async fn sell(&self, waiting: Waiting) -> Result<Placed> {
        let shard = waiting.line.product_id.rem_euclid(SHARDS as i64) as usize;
        self.shards[shard].submit(waiting).await?
    }
}

/// What a batch's transaction needs (cheap to clone: each flush gets its own).
#[derive(Clone)]
struct GroupCommit {
    db: PgPool,
    pricing: Arc<PricingService>,
    settings: Arc<Settings>,
    after_sale: AfterSale,
    sale_slots: SaleSlots,
}

impl GroupCommit {
    /// Commits a batch, answering each order in its place. A key sent again while its first request waits
    /// goes in a later round, which then replays the first's order (within one transaction the key is not
    /// committed yet). The statements appear in the trace of the batch's first order.
    async fn commit(&self, batch: Vec<Waiting>) -> Vec<Result<Placed>> {
        use tracing::Instrument;
        metrics::histogram!(crate::prometheus::names::ORDER_BATCH_SIZE).record(batch.len() as f64);
        let span = batch.first().map_or_else(tracing::Span::none, |w| w.span.clone());
        async {
            let mut outcomes: Vec<Option<Result<Placed>>> = batch.iter().map(|_| None).collect();
            // An order whose client will be told it failed before it could commit is not started.
            let now = tokio::time::Instant::now();
            let (mut pending, late): (Vec<usize>, Vec<usize>) =
                (0..batch.len()).partition(|&i| batch[i].request.deadline > now + MIN_TIME_LEFT);
            for i in late {
                outcomes[i] = Some(Err(crate::Error::NotSold(
                    "The order waited too long for its turn (REQUEST_TIMEOUT_MS); nothing was sold".into(),
                )));
            }
            while !pending.is_empty() {
                let mut keys = HashSet::new();
                let (round, later): (Vec<usize>, Vec<usize>) = pending
                    .into_iter()
                    .partition(|&i| key_of(&batch[i]).is_empty() || keys.insert(key_of(&batch[i])));
                let orders: Vec<&Waiting> = round.iter().map(|&i| &batch[i]).collect();
                for (i, outcome) in round.into_iter().zip(self.commit_round(&orders).await) {
                    outcomes[i] = Some(outcome);
                }
                pending = later;
            }
            outcomes.into_iter().map(|o| o.expect("every order is in one round")).collect()
        }
        .instrument(span)
        .await
    }

    /// One transaction for `orders` (no key twice), answering each in its place.
    async fn commit_round(&self, orders: &[&Waiting]) -> Vec<Result<Placed>> {
        let mut product_ids: Vec<i64> = orders.iter().map(|w| w.line.product_id).collect();
        product_ids.sort_unstable();
        product_ids.dedup();
        let demand = self.pricing.recent_orders(&product_ids).await;
        let demand: HashMap<i64, u64> = product_ids.iter().copied().zip(demand).collect();
        let mut decided: Vec<Option<Result<Placed>>> = orders.iter().map(|_| None).collect();
        let deadline = orders.iter().map(|w| w.request.deadline).min().expect("a round has orders");
        let sold = match self.sale_slots.take(deadline).await {
            Ok(_slot) => self.sell_batch(&product_ids, orders, &demand, deadline, &mut decided).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sold.map_err(super::sale_failed) {
            // The transaction failed: no order of the round was sold (or, for an interrupted COMMIT, no one
            // knows yet: each is told to retry with its key).
            let detail = e.to_string();
            let each = |e: &crate::Error| match e {
                crate::Error::OutcomeUnknown(_) => crate::Error::OutcomeUnknown(detail.clone()),
                crate::Error::NotSold(_) => crate::Error::NotSold(detail.clone()),
                _ => crate::Error::Unavailable(detail.clone()),
            };
            return orders.iter().map(|_| Err(each(&e))).collect();
        }
        decided
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(crate::Error::Unavailable("order not decided".into()))))
            .collect()
    }

    /// The batch's transaction: keys claimed (in key order, so two batches never wait on each other's
    /// keys), the products locked (in id order), each order priced and checked against the stock its
    /// product has left after the orders before it, the accepted ones recorded by one statement, their keys
    /// recorded, commit; then the post-commit steps.
    async fn sell_batch(
        &self,
        product_ids: &[i64],
        batch: &[&Waiting],
        demand: &HashMap<i64, u64>,
        deadline: tokio::time::Instant,
        outcomes: &mut [Option<Result<Placed>>],
    ) -> Result<()> {
        let mut tx = self.db.begin().await?;
        // Every statement, lock wait included, ends by the earliest deadline among these orders.
        db::orders::bound_sale(&mut tx, self.settings.database_lock_timeout, deadline).await?;
        let mut claimed = vec![false; batch.len()];
        let mut keyed: Vec<usize> =
            (0..batch.len()).filter(|&i| batch[i].request.idempotency.is_some()).collect();
        keyed.sort_by(|&a, &b| key_of(batch[a]).cmp(key_of(batch[b])));
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
            .map(|i| key_of(batch[i]))
            .collect();
        db::idempotency::release(&mut tx, &refused).await?;
        if accepted.is_empty() {
            db::orders::commit_sale(tx, deadline).await?;
            return Ok(());
        }
        let rows: Vec<db::orders::BatchOrder> = accepted
            .iter()
            .map(|(i, items, total)| db::orders::BatchOrder {
                owner: batch[*i].owner.clone(),
                total: *total,
                item: items[0].clone(),
            })
            .collect();
        let sale = db::orders::record_batch_sale(&mut tx, &rows).await?;
        let mut placed = Vec::with_capacity(accepted.len());
        for ((i, items, total), (order_id, created_at)) in accepted.into_iter().zip(sale.orders) {
            let order = Order::placed(order_id, created_at, &batch[i].owner.buyer, total, items);
            if let Some(key) = &batch[i].request.idempotency {
                db::idempotency::record(&mut tx, &key.scoped_key, &order).await?;
            }
            placed.push((i, order));
        }
        db::orders::commit_sale(tx, deadline).await?;

        let jobs = placed.iter().map(|(i, order)| (order.id, batch[*i].owner.traceparent.clone())).collect();
        let sold = sale
            .products
            .into_iter()
            .map(|p| {
                let orders = placed.iter().filter(|(i, _)| batch[*i].line.product_id == p.id).count();
                (p, orders as u32)
            })
            .collect();
        self.after_sale.sale_committed(sold, jobs, deadline).await;
        for (i, order) in placed {
            outcomes[i] = Some(Ok(Placed::new(order)));
        }
        Ok(())
    }
}

fn key_of(waiting: &Waiting) -> &str {
    waiting.request.idempotency.as_ref().map_or("", |k| k.scoped_key.as_str())
}
