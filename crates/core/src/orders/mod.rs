//! The order use case, in one direction: resolve the lines, decide each line's price (an honoured quote or
//! the current dynamic price), run the sale's transaction (lock in id order, check, decrement, insert),
//! then the post-commit steps (cached products refreshed and demand counted in one script, the wake-up jobs
//! enqueued in another, both shared by the sales committed at about the same time: `after_sale.rs`). The
//! api only parses and answers; `db::orders` only runs SQL; the pricing rules an order follows are in
//! `lines.rs`, each with a test.

mod access;
mod after_sale;
mod batch;
mod lines;

use std::sync::Arc;

use sqlx::PgPool;

pub use access::{access_token_hash, new_access_token, OrderAccess};
pub use lines::{IdempotencyKey, OrderLine, OrderRequest};

use crate::{
    cache::{Cache, ProductChange},
    db::{self, idempotency::Claim, orders::OrderOwner},
    domain::{Buyer, Order, OrderStatus, Product},
    jobs::OrderQueue,
    pricing::{PricingService, Shopper},
    prometheus::names,
    Error, Result, Settings,
};

pub struct OrderService {
    db: PgPool,
    cache: Cache,
    pricing: Arc<PricingService>,
    settings: Arc<Settings>,
    /// The post-commit steps of the sales committed at about the same time, in one flush.
    after_sale: after_sale::AfterSale,
    /// Single-product orders waiting for their product's next group commit (`batch.rs`).
    batches: batch::Batches,
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
        let batches = batch::Batches::new(db.clone(), pricing.clone(), settings.clone(), after_sale.clone());
        Arc::new(Self { db, cache, pricing, settings, after_sale, batches })
    }

    /// Places an order. Once the sale starts it runs in its own task, so a caller that goes away (a client
    /// disconnecting drops its handler) cannot cut off the commit or the steps that must follow it. A
    /// request whose `Idempotency-Key` already placed an order gets that order back (`replayed`). A guest
    /// gets an order access token with the order (a fresh one with a replay: only digests are kept).
    pub async fn place(self: &Arc<Self>, request: OrderRequest) -> Result<Placed> {
        let guest = matches!(request.buyer, Buyer::Guest { .. });
        let (token, token_hash) = match guest {
            true => new_access_token(),
            false => (String::new(), Vec::new()),
        };
        let owner =
            OrderOwner { buyer: request.buyer.clone(), access_token_hash: guest.then_some(token_hash) };
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
        let mut wanted = self.resolve_lines(&request, &shopper).await?;
        if wanted.len() == 1 {
            // One product: committed with the other orders for it that arrive meanwhile (group commit).
            let line = wanted.remove(0);
            let waiting = batch::Waiting { span: tracing::Span::current(), request, owner, line, shopper };
            self.batches.sell(waiting).await
        } else {
            let this = Arc::clone(self);
            detached(async move { this.sell(request, owner, wanted, shopper).await }).await
        }
    }

    /// The sale's transaction and what follows its commit.
    async fn sell(
        &self,
        request: OrderRequest,
        owner: OrderOwner,
        wanted: Vec<lines::WantedLine>,
        shopper: Shopper,
    ) -> Result<Placed> {
        let ids: Vec<i64> = wanted.iter().map(|l| l.product_id).collect();
        // Read before the transaction: no row lock is held across a Redis round trip.
        let demand = self.pricing.recent_orders(&ids).await;
        let mut tx = self.db.begin().await?;
        if let Some(key) = &request.idempotency {
            // First in the transaction: a concurrent request with the key waits here for this one's outcome.
            let ttl = self.settings.idempotency_ttl;
            match db::idempotency::claim(&mut tx, &key.scoped_key, &key.request_hash, ttl).await? {
                Claim::New => {}
                other => return replayed(other, key),
            }
        }
        let locked = db::orders::lock_for_sale(&mut tx, &ids).await?;
        let items = lines::price_lines(&self.pricing, &wanted, &locked, &demand, &shopper)?;
        let total = lines::order_total(&items, request.expected_total)?;
        let sale = db::orders::record_sale(&mut tx, &owner, total, &items).await?;
        let order = Order::placed(sale.order_id, sale.created_at, &owner.buyer, total, items);
        if let Some(key) = &request.idempotency {
            db::idempotency::record(&mut tx, &key.scoped_key, &order).await?;
        }
        tx.commit().await?;

        let products = sale.products.into_iter().map(|p| (p, 1)).collect();
        self.after_sale.sale_committed(products, vec![(order.id, tracing::Span::current())]).await;
        Ok(Placed::new(order))
    }

    /// Cancels a pending order that `access` reaches, its stock given back; like `place`, it runs to the
    /// end once started.
    pub async fn cancel(self: &Arc<Self>, order_id: i64, access: OrderAccess) -> Result<Order> {
        let this = Arc::clone(self);
        let order = detached(async move {
            let (order, products) = db::orders::cancel(&this.db, order_id, &access).await?;
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
        self.cache.products_changed(&changed, &ProductChange::new(&self.settings)).await;
    }
}

/// An order placed, or replayed for a repeated `Idempotency-Key`.
#[derive(Debug)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
    /// A guest's order access token: shown in this answer only (only its digest is kept).
    pub access_token: Option<String>,
}

impl Placed {
    pub(crate) fn new(order: Order) -> Self {
        Self { order, replayed: false, access_token: None }
    }
}

/// The answer for a key already used: its order, or a refusal when the request differs.
fn replayed(claim: Claim, key: &IdempotencyKey) -> Result<Placed> {
    match claim {
        Claim::Replay(order) => Ok(Placed { order: *order, replayed: true, access_token: None }),
        _ => Err(Error::Validation(format!(
            "Idempotency-Key {} was already used with a different request; use a new key for a new order",
            key.key
        ))),
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
