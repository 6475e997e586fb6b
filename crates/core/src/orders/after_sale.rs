//! What follows a sale's commit, in Redis: the sold products' cached rows refreshed, their orders counted for
//! demand, and each order's wake-up job enqueued. The sales committed at about the same time (by the
//! product batches and multi-product orders of this process) are gathered (`coalesce`), so under load this
//! costs two round trips (one script each) for many orders, not two per order. Best effort: what fails here
//! is logged, the cache's versioned entries refuse anything older than what PostgreSQL committed, and the
//! sweeper enqueues any order whose job was not.

use std::{collections::HashMap, sync::Arc};

use crate::{
    cache::{Cache, CacheLifetimes},
    coalesce::Coalescer,
    domain::Product,
    jobs::{self, OrderQueue, ProcessOrder},
    Result, Settings,
};

/// The most sales one flush carries.
const MAX_SALES: usize = 256;

/// One committed sale: its products as committed, with the orders sold of each, and its orders' jobs.
struct SaleCommitted {
    products: Vec<(Product, u32)>,
    jobs: Vec<ProcessOrder>,
}

/// The post-commit steps of this process's sales, gathered across the sales of the moment. Cheap to clone.
#[derive(Clone)]
pub(super) struct AfterSale(Coalescer<SaleCommitted, ()>);

impl AfterSale {
    pub fn new(cache: Cache, queue: OrderQueue, settings: Arc<Settings>) -> Self {
        Self(Coalescer::new("post-sale updates", MAX_SALES, move |sales| {
            let (cache, queue, change) = (cache.clone(), queue.clone(), CacheLifetimes::new(&settings));
            async move {
                let count = sales.len();
                if cache.is_unavailable() {
                    // Redis is being skipped (circuit open): no wait on it. The cache entries expire or are
                    // refused as older than PostgreSQL; the sweeper enqueues these orders' jobs later.
                    return Result::Ok(vec![(); count]);
                }
                let (products, jobs) = merged(sales);
                let changed: Vec<(&Product, u32)> = products.iter().map(|(p, n)| (p, *n)).collect();
                let order_ids: Vec<i64> = jobs.iter().map(|j| j.order_id).collect();
                let (_, enqueued) =
                    tokio::join!(cache.products_changed(&changed, &change), queue.push(jobs, true));
                if let Err(e) = enqueued {
                    tracing::warn!(?order_ids, error = %e, "enqueue failed; the sweeper will pick the orders up");
                }
                Result::Ok(vec![(); count])
            }
        }))
    }

    /// After a sale's commit: its products (as committed, with the orders sold of each) refreshed in the
    /// cache and counted for demand, and each of its `orders` enqueued. Each order comes with the trace
    /// context of its request: its job carries it, so the worker's run of it continues that request's
    /// trace, whichever request's commit sold it. Returns once the flush carrying this sale is done, or at
    /// `deadline` (the customer is answered then; the steps go on, and the sweeper covers a lost job).
    pub async fn sale_committed(
        &self,
        products: Vec<(Product, u32)>,
        orders: Vec<(i64, Option<String>)>,
        deadline: tokio::time::Instant,
    ) {
        let jobs = orders
            .into_iter()
            .map(|(id, traceparent)| jobs::stamped_in(ProcessOrder::new(id), traceparent))
            .collect();
        // Best effort, and its failures are logged by the flush: nothing to answer here.
        let flush = self.0.clone();
        let done = tokio::spawn(async move { flush.submit(SaleCommitted { products, jobs }).await });
        let _ = tokio::time::timeout_at(deadline, done).await;
    }
}

/// The sales' products, each once, as of its newest version with the orders of all the sales added up, and
/// all their jobs.
fn merged(sales: Vec<SaleCommitted>) -> (Vec<(Product, u32)>, Vec<ProcessOrder>) {
    let mut products: HashMap<i64, (Product, u32)> = HashMap::new();
    let mut jobs = Vec::new();
    for sale in sales {
        for (product, orders) in sale.products {
            let entry = products.entry(product.id).or_insert_with(|| (product.clone(), 0));
            if product.version > entry.0.version {
                entry.0 = product;
            }
            entry.1 += orders;
        }
        jobs.extend(sale.jobs);
    }
    (products.into_values().collect(), jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: i64, version: i64, stock: i32) -> Product {
        Product {
            id,
            sku: format!("SKU-{id}"),
            name: "p".into(),
            category: "c".into(),
            price: rust_decimal::Decimal::ONE,
            stock,
            version,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn merged_sales_keep_each_products_newest_row_and_add_up_its_orders() {
        let sales = vec![
            SaleCommitted { products: vec![(product(1, 5, 10), 2)], jobs: vec![ProcessOrder::new(10)] },
            SaleCommitted {
                products: vec![(product(1, 7, 8), 1), (product(2, 3, 4), 1)],
                jobs: vec![ProcessOrder::new(11)],
            },
            SaleCommitted { products: vec![(product(1, 6, 9), 3)], jobs: vec![ProcessOrder::new(12)] },
        ];
        let (mut products, jobs) = merged(sales);
        products.sort_by_key(|(p, _)| p.id);
        let seen: Vec<(i64, i64, i32, u32)> =
            products.iter().map(|(p, n)| (p.id, p.version, p.stock, *n)).collect();
        assert_eq!(seen, vec![(1, 7, 8, 6), (2, 3, 4, 1)]);
        assert_eq!(jobs.iter().map(|j| j.order_id).collect::<Vec<_>>(), vec![10, 11, 12]);
    }
}
