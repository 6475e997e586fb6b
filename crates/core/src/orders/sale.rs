//! The sale: one routine for every order, whether it sells alone or with the others that arrived at the
//! same time, whatever its number of lines. In one transaction: claim the orders' `Idempotency-Key`s (in
//! key order), lock their products (in id order), price and check each order in arrival order against the
//! stock left by the orders before it, write stock, orders and items in one statement, record the keys,
//! commit; then the post-commit steps (`after_sale.rs`). An order refused for its own reason (out of stock,
//! a price above what the customer saw, a replayed key) does not affect the others, and its key is given
//! back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rust_decimal::Decimal;
use sqlx::PgPool;

use super::{
    after_sale::AfterSale,
    lines::{self, IdempotencyKey, OrderRequest, WantedLine},
};
use crate::{
    db::{self, idempotency::Claim},
    domain::{Order, OrderItem},
    pricing::PricingService,
    Error, Result, Settings,
};

/// One order waiting for its sale.
pub(super) struct Waiting {
    /// The request's span: the sale's work is traced in its first order's.
    pub span: tracing::Span,
    pub request: OrderRequest,
    pub owner: db::orders::OrderOwner,
    /// Its products in ascending id order, each once.
    pub lines: Vec<WantedLine>,
    pub shopper: crate::pricing::Shopper,
}

/// An order with less time than this left is not started: it could not commit before its client is told
/// it failed.
const MIN_TIME_LEFT: std::time::Duration = std::time::Duration::from_millis(20);

/// An order placed, or replayed for a repeated `Idempotency-Key`.
#[derive(Debug)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
    /// A guest's order access token: shown in this answer only (only its digest is kept).
    pub access_token: Option<String>,
}

impl Placed {
    fn new(order: Order) -> Self {
        Self { order, replayed: false, access_token: None }
    }
}

/// The answer for a key already used: its order, or a refusal when the request differs.
pub(super) fn replayed(claim: Claim, key: &IdempotencyKey) -> Result<Placed> {
    match claim {
        Claim::Replay(order) => Ok(Placed { order: *order, replayed: true, access_token: None }),
        // 409: the request is well formed; it conflicts with the first one sent under this key.
        _ => Err(Error::Conflict(format!(
            "Idempotency-Key {} was already used with a different request; use a new key for a new order",
            key.key
        ))),
    }
}

/// A sale that gave up waiting for a row lock or its deadline was rolled back: the client is told so in
/// those words (and that nothing was sold), not that PostgreSQL is down.
pub(super) fn sale_failed(error: Error) -> Error {
    if db::is_timeout(&error) {
        Error::NotSold(
            "The products are busy (a row lock was not granted within DATABASE_LOCK_TIMEOUT_MS, or REQUEST_TIMEOUT_MS \
             ran out); nothing was sold, try again"
                .into(),
        )
    } else {
        error
    }
}

/// The connections sales may hold at once: a sale waits for a slot until its deadline, then gives up having
/// sold nothing, so locked rows can tie up at most `DATABASE_SALE_CONNECTIONS` of the pool.
#[derive(Clone)]
pub(super) struct SaleSlots(Arc<tokio::sync::Semaphore>);

impl SaleSlots {
    pub(super) fn new(slots: u32) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(slots as usize)))
    }

    pub(super) async fn take(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout_at(deadline, self.0.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::NotSold(
                "Every sale connection (DATABASE_SALE_CONNECTIONS) stayed busy until the request's time ran \
                 out; nothing was sold, try again"
                    .into(),
            )),
        }
    }
}

/// What a sale's transaction needs (cheap to clone: each flush of a queue gets its own).
#[derive(Clone)]
pub(super) struct GroupCommit {
    pub db: PgPool,
    pub pricing: Arc<PricingService>,
    pub settings: Arc<Settings>,
    pub after_sale: AfterSale,
    pub sale_slots: SaleSlots,
}

impl GroupCommit {
    /// Sells a batch, answering each order in its place. A key sent again while its first request waits
    /// goes in a later round, which then replays the first's order (within one transaction the key is not
    /// committed yet). The statements appear in the trace of the batch's first order.
    pub(super) async fn commit(&self, batch: Vec<Waiting>) -> Vec<Result<Placed>> {
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
                outcomes[i] = Some(Err(Error::NotSold(
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
        let mut product_ids: Vec<i64> =
            orders.iter().flat_map(|w| w.lines.iter().map(|l| l.product_id)).collect();
        product_ids.sort_unstable();
        product_ids.dedup();
        // Read before the transaction: no row lock is held across a Redis round trip.
        let demand = self.pricing.recent_orders(&product_ids).await;
        let demand: HashMap<i64, u64> = product_ids.iter().copied().zip(demand).collect();
        let mut decided: Vec<Option<Result<Placed>>> = orders.iter().map(|_| None).collect();
        let deadline = orders.iter().map(|w| w.request.deadline).min().expect("a round has orders");
        let sold = match self.sale_slots.take(deadline).await {
            Ok(_slot) => self.sell(&product_ids, orders, &demand, deadline, &mut decided).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sold.map_err(sale_failed) {
            // The transaction failed: no order of the round was sold (or, for an interrupted COMMIT, no one
            // knows yet: each is told to retry with its key).
            let detail = e.to_string();
            let each = |e: &Error| match e {
                Error::OutcomeUnknown(_) => Error::OutcomeUnknown(detail.clone()),
                Error::NotSold(_) => Error::NotSold(detail.clone()),
                _ if e.is_outage() => Error::Unavailable(detail.clone()),
                _ => Error::Internal(detail.clone()),
            };
            return orders.iter().map(|_| Err(each(&e))).collect();
        }
        decided
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::Unavailable("order not decided".into()))))
            .collect()
    }

    /// The sale's transaction: keys claimed (in key order, so two sales never wait on each other's keys),
    /// the products locked (in id order), each order priced and checked against the stock its products
    /// have left after the orders before it, the accepted ones recorded by one statement, their keys
    /// recorded, commit; then the post-commit steps.
    async fn sell(
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
        let claimed = self.claim_keys(&mut tx, batch, outcomes).await?;
        // Each locked row's stock is lowered as its orders are accepted: the next order for it is checked
        // as if those before it were already sold.
        let mut locked = db::orders::lock_for_sale(&mut tx, product_ids).await?;
        let mut accepted: Vec<(usize, Vec<OrderItem>, Decimal)> = Vec::new();
        for (i, waiting) in batch.iter().enumerate() {
            if outcomes[i].is_some() {
                continue; // replayed, or its key was used with another request
            }
            let demand: Vec<u64> =
                waiting.lines.iter().map(|l| demand.get(&l.product_id).copied().unwrap_or(0)).collect();
            let priced =
                lines::price_lines(&self.pricing, &waiting.lines, &locked, &demand, &waiting.shopper)
                    .and_then(|items| {
                        Ok((lines::order_total(&items, waiting.request.expected_total)?, items))
                    });
            match priced {
                Ok((total, items)) => {
                    for line in &waiting.lines {
                        if let Some(row) = locked.iter_mut().find(|l| l.product.id == line.product_id) {
                            row.product.stock -= line.quantity;
                        }
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
        let rows: Vec<db::orders::SaleOrder> = accepted
            .iter()
            .map(|(i, items, total)| db::orders::SaleOrder {
                owner: batch[*i].owner.clone(),
                total: *total,
                items: items.clone(),
            })
            .collect();
        let sale = db::orders::record_sale(&mut tx, &rows).await?;
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
                let id = p.id;
                let orders = placed.iter().filter(|(_, o)| o.items.iter().any(|i| i.product_id == id));
                (p, orders.count() as u32)
            })
            .collect();
        self.after_sale.sale_committed(sold, jobs, deadline).await;
        for (i, order) in placed {
            outcomes[i] = Some(Ok(Placed::new(order)));
        }
        Ok(())
    }

    /// Claims the keys of the keyed orders (in key order, so two sales never wait on each other's keys).
    /// An order whose key answers already (a replay, or a conflict) is decided here. Returns which orders
    /// claimed their key.
    async fn claim_keys(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        batch: &[&Waiting],
        outcomes: &mut [Option<Result<Placed>>],
    ) -> Result<Vec<bool>> {
        let mut claimed = vec![false; batch.len()];
        let mut keyed: Vec<usize> =
            (0..batch.len()).filter(|&i| batch[i].request.idempotency.is_some()).collect();
        keyed.sort_by(|&a, &b| key_of(batch[a]).cmp(key_of(batch[b])));
        for i in keyed {
            let key = batch[i].request.idempotency.as_ref().expect("keyed");
            let ttl = self.settings.idempotency_ttl;
            match db::idempotency::claim(tx, &key.scoped_key, &key.request_hash, ttl).await? {
                Claim::New => claimed[i] = true,
                other => outcomes[i] = Some(replayed(other, key)),
            }
        }
        Ok(claimed)
    }
}

fn key_of(waiting: &Waiting) -> &str {
    waiting.request.idempotency.as_ref().map_or("", |k| k.scoped_key.as_str())
}
