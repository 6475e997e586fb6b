//! Applying a batch of market events, exactly once each: one PostgreSQL transaction records the events
//! that came only through Redis, takes those still `received` (an `event_id` seen before is skipped), stores
//! their signals in `market_multipliers` (the latest per scope wins), records the recalculation of their
//! scope (merged into one still waiting, if there is one; it waits for a running recalculation rather than
//! being skipped, so no event's work is lost) and marks them `applied`. After the commit, the affected
//! pricing states are dropped so the next quote recomputes them with the new market part, and the
//! recalculation's job is enqueued.
//!
//! It takes only the connections it uses (no listener state), so the listener's tests drive it against a
//! real database and Redis without a running listener.

use std::collections::{BTreeSet, HashSet};

use rust_decimal::Decimal;
use sqlx::PgPool;

use pricing_core::{
    cache::Cache,
    db::{
        market::{self, category_scope, product_scope},
        market_events, products, tasks,
    },
    domain::{ProductRef, ProductScope},
    events::{MarketEvent, MarketEventType},
    jobs::{RecalculatePrices, TaskQueue},
    Result,
};

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    /// Events applied before (a redelivery, a retried publish): skipped.
    pub duplicates: usize,
}

/// What the fresh events of a batch ask for.
#[derive(Debug, Default)]
struct Effect {
    event_ids: Vec<String>,
    /// `(scope key, multiplier, source)`, in stream order (the later signal for a scope wins).
    signals: Vec<(String, Decimal, String)>,
    /// The products and categories they name.
    scope: ProductScope,
    /// A `recalculate` event without a scope: every product.
    everything: bool,
}

impl Effect {
    /// The recalculation to start: `None` for none, `Some(None)` for every product.
    fn recalculation(&self) -> Option<Option<&ProductScope>> {
        if self.event_ids.is_empty() {
            None
        } else if self.everything {
            Some(None)
        } else {
            Some(Some(&self.scope)).filter(|_| !self.scope.is_all())
        }
    }
}

/// Applies `events` (in stream order) in one transaction, each `event_id` at most once ever; then drops
/// the pricing states they changed (`cache`) and enqueues their recalculation (`task_queue`). On an error
/// the caller leaves the batch unacknowledged and applies it again: what a first try committed is skipped.
pub async fn apply_batch(
    db: &PgPool,
    cache: &Cache,
    task_queue: &TaskQueue,
    events: &[MarketEvent],
) -> Result<BatchOutcome> {
    if events.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let sku_ids = resolve_skus(db, events).await?;
    let mut tx = db.begin().await?;
    let refs: Vec<&MarketEvent> = events.iter().collect();
    let fresh: HashSet<String> = market_events::claim_for_apply(&mut tx, &refs).await?.into_iter().collect();
    let effect = effect_of(events, &fresh, &sku_ids);
    market::set_multipliers(&mut tx, &effect.signals).await?;
    // The recalculation is recorded with the effect that asks for it: both commit, or neither.
    let mut new_task = None;
    if let Some(scope) = effect.recalculation() {
        let (task, created) = tasks::for_events(&mut tx, tasks::TaskKind::ForMarketEvents, scope).await?;
        market_events::set_task(&mut tx, &effect.event_ids, task.id).await?;
        new_task = created.then_some(task.id);
    }
    tx.commit().await?;

    if !effect.signals.is_empty() {
        forget_states(db, cache, &effect.scope).await;
    }
    if let Some(task_id) = new_task {
        // If the enqueue fails, the task is recorded and the worker's sweeper enqueues it.
        if let Err(e) = task_queue.enqueue(RecalculatePrices::new(task_id), true).await {
            tracing::warn!(%task_id, error = %e, "enqueue failed; the sweeper will pick the task up");
        }
    }
    let applied = effect.event_ids.len();
    Ok(BatchOutcome { applied, duplicates: events.len() - applied })
}

/// Product ids of the SKUs the events name, as `(sku, id)`.
async fn resolve_skus(db: &PgPool, events: &[MarketEvent]) -> Result<Vec<(String, i64)>> {
    let skus: Vec<String> = events
        .iter()
        .flat_map(|e| &e.product_ids)
        .filter_map(|p| match p {
            ProductRef::Sku(sku) => Some(sku.clone()),
            ProductRef::Id(_) => None,
        })
        .collect();
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    products::ids_of_skus(db, &skus).await
}

/// The effect of the events this transaction applies (`fresh`), each once, in stream order. A SKU that
/// names no product is left out; a `recalculate` event whose scope names no product then recalculates none
/// (only one that names no scope at all means every product).
fn effect_of(events: &[MarketEvent], fresh: &HashSet<String>, sku_ids: &[(String, i64)]) -> Effect {
    let mut effect = Effect::default();
    let mut seen = HashSet::new();
    for event in events.iter().filter(|e| fresh.contains(&e.event_id) && seen.insert(e.event_id.as_str())) {
        let product_ids = event
            .product_ids
            .iter()
            .filter_map(|p| match p {
                ProductRef::Id(id) => Some(*id),
                ProductRef::Sku(sku) => sku_ids.iter().find(|(s, _)| s == sku).map(|(_, id)| *id),
            })
            .collect();
        let scope = ProductScope { product_ids, categories: event.category.iter().cloned().collect() };
        if let Some(multiplier) = event.multiplier.filter(|_| event.event_type.is_signal()) {
            let source = event.source.clone().unwrap_or_else(|| event.event_type.as_str().to_string());
            let scopes = scope.product_ids.iter().map(|id| product_scope(*id));
            for key in scopes.chain(scope.categories.iter().map(|c| category_scope(c))) {
                effect.signals.push((key, multiplier, source.clone()));
            }
        }
        let names_no_scope = event.product_ids.is_empty() && event.category.is_none();
        effect.everything |= event.event_type == MarketEventType::Recalculate && names_no_scope;
        effect.scope.merge(&scope);
        effect.event_ids.push(event.event_id.clone());
    }
    effect
}

/// Drops the affected pricing states (best effort: the recalculation rewrites them anyway).
async fn forget_states(db: &PgPool, cache: &Cache, scope: &ProductScope) {
    let ids = match products::ids_in(db, scope).await {
        Ok(ids) => ids.into_iter().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>(),
        Err(e) => return tracing::warn!(error = %e, "could not list the affected products"),
    };
    if let Err(e) = cache.forget_pricing(&ids).await {
        tracing::warn!(error = %e, "could not drop the affected pricing states; the recalculation will replace them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pricing_core::events::MarketEventDraft;
    use serde_json::json;

    fn event(json: serde_json::Value) -> MarketEvent {
        serde_json::from_value::<MarketEventDraft>(json).unwrap().validate(MarketEvent::new_id).unwrap()
    }

    #[test]
    fn only_fresh_events_count_each_once_and_the_later_signal_comes_last() {
        let a = event(
            json!({ "event_id": "a", "event_type": "competitor_price", "product_ids": [1, "P-7"], "multiplier": 1.1 }),
        );
        let b = event(
            json!({ "event_id": "b", "event_type": "demand_shock", "category": "toys", "product_ids": [1], "multiplier": 1.3 }),
        );
        let old = event(json!({ "event_id": "old", "event_type": "recalculate" }));
        let fresh: HashSet<String> = ["a", "b"].into_iter().map(String::from).collect();
        let effect = effect_of(&[a.clone(), b, a, old], &fresh, &[("P-7".into(), 7)]);
        assert_eq!(effect.event_ids, ["a", "b"]);
        let keys: Vec<&str> = effect.signals.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(keys, ["product:1", "product:7", "product:1", "category:toys"]);
        assert_eq!(effect.signals[2].1, Decimal::new(13, 1), "b's signal for product 1 comes after a's");
        assert_eq!(effect.scope, ProductScope { product_ids: vec![1, 7], categories: vec!["toys".into()] });
        assert_eq!(effect.recalculation(), Some(Some(&effect.scope)));
    }

    #[test]
    fn a_fresh_recalculate_without_scope_means_every_product() {
        let all = event(json!({ "event_id": "all" }));
        let effect = effect_of(&[all], &["all".to_string()].into_iter().collect(), &[]);
        assert_eq!(effect.recalculation(), Some(None));
        assert!(effect_of(&[], &HashSet::new(), &[]).recalculation().is_none());
    }

    #[test]
    fn a_recalculate_naming_only_unknown_skus_recalculates_nothing() {
        let unknown =
            event(json!({ "event_id": "u", "event_type": "recalculate", "product_ids": ["NOPE-1"] }));
        let effect = effect_of(&[unknown], &["u".to_string()].into_iter().collect(), &[]);
        assert_eq!(effect.event_ids, ["u"], "applied all the same");
        assert!(effect.recalculation().is_none(), "not a recalculation of every product");
    }
}
