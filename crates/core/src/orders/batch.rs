//! Batching: every order waits in a queue for the next sale of its queue, which commits the orders that
//! arrived while the previous one committed (group commit, `sale.rs`). A design that takes a row lock per
//! order is capped by how many transactions one hot row admits per second; here a hot product's orders
//! share one lock, one stock decrement and one insert. Each order is still all-or-nothing and is answered
//! only after the commit that contains it.
//!
//! Orders are spread over `SHARDS` queues by their lowest product id, each a `Coalescer` (one sale at a
//! time per queue and process), so a hot product's orders share one transaction and orders for many
//! products share a few. Every sale locks its products in ascending id order, like every transaction that
//! touches products, so sales of several queues or api processes cannot deadlock; the row locks still
//! serialise them. An order whose client left while it waited is dropped before its sale starts.

use std::sync::Arc;

use sqlx::PgPool;

use super::{
    after_sale::AfterSale,
    sale::{GroupCommit, Waiting},
    Placed, SaleSlots,
};
use crate::{coalesce::Coalescer, pricing::PricingService, Result, Settings};

/// The most orders one sale commits.
const MAX_BATCH: usize = 256;
/// The most orders one queue holds; beyond, an order is refused at once (503, nothing sold) rather than
/// queued without bound.
const MAX_WAITING: usize = 4 * MAX_BATCH;
/// Sales one process commits at once (each product's orders always in the same one): a few, so one sale's
/// commit (its WAL flush) overlaps the next one's statements.
/// (`tests/shutdown.rs` relies on four consecutive products landing in four queues.)
const SHARDS: usize = 4;

/// The order queues, one per shard.
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

    /// Sells an order in the next sale of its queue, and waits for that sale's commit. An order still
    /// queued at its deadline (the sales before it held the queue) is taken out, sold nothing.
    pub async fn sell(&self, waiting: Waiting) -> Result<Placed> {
        let first = waiting.lines.first().map_or(0, |l| l.product_id);
        let shard = first.rem_euclid(SHARDS as i64) as usize;
        let deadline = waiting.request.deadline;
        let expired = || {
            crate::Error::NotSold(
                "The order waited too long for its turn (REQUEST_TIMEOUT_MS); nothing was sold".into(),
            )
        };
        self.shards[shard].submit_until(waiting, deadline, expired).await?
    }
}
