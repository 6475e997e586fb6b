//! The order use case, in one direction: the route calls `OrderService::place`, which resolves the lines
//! and decides each line's price source (an honoured quote or the current dynamic price: `lines.rs`),
//! queues the order for the next sale of its queue (`batch.rs`), whose one transaction sells it with the
//! orders that arrived meanwhile (`sale.rs`), then the post-commit steps run (cached products refreshed
//! and demand counted in one script, the wake-up jobs enqueued in another: `after_sale.rs`). The api only
//! parses and answers; `db::orders` only runs SQL.

mod access;
mod after_sale;
mod batch;
mod lines;
mod sale;

use std::sync::Arc;

use sqlx::PgPool;

pub use access::{access_token_hash, new_access_token, OrderAccess};
pub use lines::{IdempotencyKey, OrderLine, OrderRequest};
pub use sale::Placed;
use sale::{replayed, sale_failed, SaleSlots};

use crate::{
    cache::{Cache, CacheLifetimes},
    db::{self, orders::OrderOwner},
    domain::{Buyer, Order, OrderStatus, Product},
    jobs::OrderQueue,
    pricing::PricingService,
    prometheus::names,
    Error, Result, Settings,
};

pub struct OrderService {
    db: PgPool,
    cache: Cache,
    pricing: Arc<PricingService>,
    settings: Arc<Settings>,
    /// Orders waiting for the next sale of their queue (`batch.rs`).
    batches: batch::Batches,
    /// The connections sales may hold at once (`DATABASE_SALE_CONNECTIONS`).
    sale_slots: SaleSlots,
}

impl OrderService {
    pub fn new(
        db: PgPool,
        cache: Cache,
        pricing: Arc<PricingService>,
        queue: OrderQueue,
        settings: Arc<Settings>,
    ) -> Arc<Self> {
        let after_sale = after_sale::AfterSale::new(cache.clone(), queue, settings.clone());
        let sale_slots = SaleSlots::new(settings.database_sale_connections);
        let batches = batch::Batches::new(
            db.clone(),
            pricing.clone(),
            settings.clone(),
            after_sale,
            sale_slots.clone(),
        );
        Arc::new(Self { db, cache, pricing, settings, batches, sale_slots })
    }

    /// Places an order, or answers why not. A client answered with an error was sold nothing: the sale
    /// commits by the request's `deadline` or not at all (its transaction's statements are bounded by it
    /// and it is checked before COMMIT), an order still queued when its client leaves or its deadline passes
    /// is dropped, and a COMMIT whose outcome is unknown says so (`Error::OutcomeUnknown`). A request whose
    /// `Idempotency-Key` already placed an order gets that order back (`replayed`). A guest gets an order
    /// access token with the order (a fresh one with a replay: only digests are kept).
    pub async fn place(self: &Arc<Self>, request: OrderRequest) -> Result<Placed> {
        let guest = matches!(request.buyer, Buyer::Guest { .. });
        let (token, token_hash) = match guest {
            true => new_access_token(),
            false => (String::new(), Vec::new()),
        };
        let owner = OrderOwner {
            buyer: request.buyer.clone(),
            access_token_hash: guest.then_some(token_hash),
            traceparent: crate::telemetry::current_traceparent(),
        };
        let mut placed = self.sell_once(request, owner.clone()).await?;
        if guest {
            if placed.replayed {
                let hash = owner.access_token_hash.as_deref().unwrap_or_default();
                db::orders::add_access_token(&self.db, placed.order.id, hash).await?;
            }
            placed.access_token = Some(token);
        }
        if !placed.replayed {
            tracing::info!(order_id = placed.order.id, total = %placed.order.total_price, "order placed");
            count_order(OrderStatus::Pending);
        }
        Ok(placed)
    }

    /// The order's sale, or the first answer to its `Idempotency-Key`.
    async fn sell_once(self: &Arc<Self>, request: OrderRequest, owner: OrderOwner) -> Result<Placed> {
        if let Some(key) = &request.idempotency {
            // A committed key answers at once, before its quotes (which may have expired since) are checked.
            if let Some(claim) = db::idempotency::find(
                &self.db,
                &key.scoped_key,
                &key.request_hash,
                self.settings.idempotency_ttl,
            )
            .await?
            {
                return replayed(claim, key);
            }
        }
        let shopper = self.pricing.shopper(request.user_location.as_deref(), request.is_prime_member);
        let max_quantity = self.settings.limits.max_quantity;
        let lines = lines::resolve(&self.pricing, &request, &shopper, max_quantity).await?;
        let waiting = sale::Waiting { span: tracing::Span::current(), request, owner, lines, shopper };
        self.batches.sell(waiting).await
    }

    /// Cancels a pending order that `access` reaches, its stock given back; like `place`, it runs to the
    /// end once started.
    pub async fn cancel(self: &Arc<Self>, order_id: i64, access: OrderAccess) -> Result<Order> {
        let this = Arc::clone(self);
        let deadline = tokio::time::Instant::now() + self.settings.limits.database_acquire_timeout;
        let order = detached(async move {
            let _slot = this.sale_slots.take(deadline).await?;
            let (order, products) =
                db::orders::cancel(&this.db, order_id, &access).await.map_err(sale_failed)?;
            this.products_changed(&products).await;
            Ok(order)
        })
        .await?;
        tracing::info!(order_id, "order cancelled");
        count_order(OrderStatus::Cancelled);
        Ok(order)
    }

    /// After a cancellation's commit: cached rows refreshed, pricing states tombstoned.
    async fn products_changed(&self, products: &[Product]) {
        let changed: Vec<(&Product, u32)> = products.iter().map(|p| (p, 0)).collect();
        self.cache.products_changed(&changed, &CacheLifetimes::new(&self.settings)).await;
    }
}

/// Counts an order reaching `status` (`orders_total`): placed (`pending`), cancelled, and, in the worker,
/// completed or failed.
pub fn count_order(status: OrderStatus) {
    metrics::counter!(names::ORDERS, "status" => status.as_str()).increment(1);
}

/// Runs `work` in its own task and waits for it.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    use tracing::Instrument;
    // In the caller's span: the sale's queries and the job it enqueues stay in the request's trace.
    tokio::spawn(work.in_current_span())
        .await
        .map_err(|e| Error::Unavailable(format!("the request's task failed: {e}")))?
}
