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
            after_sale.clone(),
            sale_slots.clone(),
        );
        Arc::new(Self { db, cache, pricing, settings, after_sale, batches, sale_slots })
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
        let mut wanted = self.resolve_lines(&request, &shopper).await?;
        if wanted.len() == 1 {
            // One product: committed with the other orders for it that arrive meanwhile (group commit).
            let line = wanted.remove(0);
            let waiting = batch::Waiting { span: tracing::Span::current(), request, owner, line, shopper };
            self.batches.sell(waiting).await
        } else {
            // In its own task, so the transaction is never dropped half-way; it looks whether its caller
            // still waits (`alive`) before it commits.
            let this = Arc::clone(self);
            let (alive, _waiting) = tokio::sync::oneshot::channel::<()>();
            detached(async move { this.sell(request, owner, wanted, shopper, alive).await }).await
        }
    }

    /// The sale's transaction and what follows its commit.
    async fn sell(
        &self,
        request: OrderRequest,
        owner: OrderOwner,
        wanted: Vec<lines::WantedLine>,
        shopper: Shopper,
        alive: tokio::sync::oneshot::Sender<()>,
    ) -> Result<Placed> {
        let ids: Vec<i64> = wanted.iter().map(|l| l.product_id).collect();
        // Read before the transaction: no row lock is held across a Redis round trip.
        let demand = self.pricing.recent_orders(&ids).await;
        let _slot = self.sale_slots.take(request.deadline).await?;
        let deadline = request.deadline;
        let result = self.sell_in_transaction(&request, &owner, &wanted, &shopper, &demand, &alive).await;
        let (order, products) = match result.map_err(sale_failed)? {
            Sold::Committed(order, products) => (order, products),
            Sold::Replayed(placed) => return Ok(placed),
        };
        let jobs = vec![(order.id, owner.traceparent.clone())];
        let products = products.into_iter().map(|p| (p, 1)).collect();
        self.after_sale.sale_committed(products, jobs, deadline).await;
        Ok(Placed::new(order))
    }

    /// The multi-product sale's transaction: committed, or the first answer to its key.
    async fn sell_in_transaction(
        &self,
        request: &OrderRequest,
        owner: &OrderOwner,
        wanted: &[lines::WantedLine],
        shopper: &Shopper,
        demand: &[u64],
        alive: &tokio::sync::oneshot::Sender<()>,
    ) -> Result<Sold> {
        let ids: Vec<i64> = wanted.iter().map(|l| l.product_id).collect();
        let mut tx = self.db.begin().await?;
        db::orders::bound_sale(&mut tx, self.settings.database_lock_timeout, request.deadline).await?;
        if let Some(key) = &request.idempotency {
            // First in the transaction: a concurrent request with the key waits here for this one's outcome.
            let ttl = self.settings.idempotency_ttl;
            match db::idempotency::claim(&mut tx, &key.scoped_key, &key.request_hash, ttl).await? {
                Claim::New => {}
                other => return Ok(Sold::Replayed(replayed(other, key)?)),
            }
        }
        let locked = db::orders::lock_for_sale(&mut tx, &ids).await?;
        let items = lines::price_lines(&self.pricing, wanted, &locked, demand, shopper)?;
        let total = lines::order_total(&items, request.expected_total)?;
        let sale = db::orders::record_sale(&mut tx, owner, total, &items).await?;
        let order = Order::placed(sale.order_id, sale.created_at, &owner.buyer, total, items);
        if let Some(key) = &request.idempotency {
            db::idempotency::record(&mut tx, &key.scoped_key, &order).await?;
        }
        if alive.is_closed() {
            return Err(Error::NotSold(
                "The client left before the order was committed; nothing was sold".into(),
            ));
        }
        db::orders::commit_sale(tx, request.deadline).await?;
        Ok(Sold::Committed(order, sale.products))
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
        self.cache.products_changed(&changed, &ProductChange::new(&self.settings)).await;
    }
}

/// What a sale's transaction ended with.
enum Sold {
    Committed(Order, Vec<Product>),
    Replayed(Placed),
}

/// A sale that gave up waiting for a row lock or its deadline was rolled back: the client is told so in
/// those words (and that nothing was sold), not that PostgreSQL is down.
pub(crate) fn sale_failed(error: Error) -> Error {
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
pub(crate) struct SaleSlots(Arc<tokio::sync::Semaphore>);

impl SaleSlots {
    fn new(slots: u32) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(slots.max(1) as usize)))
    }

    pub(crate) async fn take(
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
        // 409: the request is well formed; it conflicts with the first one sent under this key.
        _ => Err(Error::Conflict(format!(
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
