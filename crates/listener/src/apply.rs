//! Applying a batch of market events, exactly once each: one PostgreSQL transaction records the events
//! that came only through Redis, takes those still `received` (an `event_id` seen before is skipped), stores
//! their signals in `market_multipliers` (the latest per scope wins) and marks them `applied`. After the
//! commit, the affected pricing states are dropped so the next quote recomputes them with the new market
//! part, and a recalculation of the scope is started (merged into one still waiting, if there is one; it
//! waits for a running recalculation rather than being skipped, so no event's work is lost).

use std::collections::{BTreeSet, HashSet};

use pricing_core::{
    db::{
        market::{self, category_scope, product_scope},
        market_events, products, tasks,
    },
    domain::{ProductRef, ProductScope},
    events::{MarketEvent, MarketEventType},
    jobs::RecalculatePrices,
    Result,
};

use crate::startup::ListenerState;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    /// Events applied before (a redelivery, a retried publish): skipped.
    pub duplicates: usize,
}

pub async fn apply_batch(state: &ListenerState, events: &[MarketEvent]) -> Result<BatchOutcome> {
    if events.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let skus: Vec<String> = events
        .iter()
        .flat_map(|e| &e.product_ids)
        .filter_map(|p| match p {
            ProductRef::Sku(sku) => Some(sku.clone()),
            ProductRef::Id(_) => None,
        })
        .collect();
    let sku_ids = if skus.is_empty() { Vec::new() } else { products::ids_of_skus(&state.db, &skus).await? };

    let mut tx = state.db.begin().await?;
    let refs: Vec<&MarketEvent> = events.iter().collect();
    let fresh: HashSet<String> = market_events::claim_for_apply(&mut tx, &refs).await?.into_iter().collect();
    // In stream order, each fresh event once (a batch may carry the same event twice).
    let mut seen = HashSet::new();
    let applying: Vec<&MarketEvent> =
        events.iter().filter(|e| fresh.contains(&e.event_id) && seen.insert(e.event_id.as_str())).collect();
    let mut signals = Vec::new();
    let mut scope = ProductScope::default();
    let mut everything = false;
    for event in &applying {
        let ids: Vec<i64> = event
            .product_ids
            .iter()
            .filter_map(|p| match p {
                ProductRef::Id(id) => Some(*id),
                ProductRef::Sku(sku) => sku_ids.iter().find(|(s, _)| s == sku).map(|(_, id)| *id),
            })
            .collect();
        let event_scope =
            ProductScope { product_ids: ids, categories: event.category.iter().cloned().collect() };
        if let Some(multiplier) = event.multiplier.filter(|_| event.event_type.is_signal()) {
            let source = event.source.clone().unwrap_or_else(|| event.event_type.as_str().to_string());
            for id in &event_scope.product_ids {
                signals.push((product_scope(*id), multiplier, source.clone()));
            }
            for category in &event_scope.categories {
                signals.push((category_scope(category), multiplier, source.clone()));
            }
        }
        everything |= event.event_type == MarketEventType::Recalculate && event_scope.is_all();
        scope.merge(&event_scope);
    }
    market::set_multipliers(&mut tx, &signals).await?;
    tx.commit().await?;

    let outcome = BatchOutcome { applied: applying.len(), duplicates: events.len() - applying.len() };
    if applying.is_empty() {
        return Ok(outcome);
    }
    let applied_ids: Vec<String> = applying.iter().map(|e| e.event_id.clone()).collect();
    if !signals.is_empty() {
        forget_states(state, &scope).await;
    }
    let scope = if everything { None } else { Some(scope).filter(|s| !s.is_all()) };
    if everything || scope.is_some() {
        // The effect has committed: a failure here must not make the batch look unapplied.
        if let Err(e) = start_recalculation(state, scope.as_ref(), &applied_ids).await {
            tracing::error!(error = %e, "could not start the recalculation for applied market events");
        }
    }
    tracing::debug!(applied = outcome.applied, duplicates = outcome.duplicates, "market events applied");
    Ok(outcome)
}

/// Drops the affected pricing states (best effort: the recalculation rewrites them anyway).
async fn forget_states(state: &ListenerState, scope: &ProductScope) {
    let ids = match products::ids_in(&state.db, scope).await {
        Ok(ids) => ids.into_iter().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>(),
        Err(e) => return tracing::warn!(error = %e, "could not list the affected products"),
    };
    if let Err(e) = state.cache.forget_pricing(&ids).await {
        tracing::warn!(error = %e, "could not drop the affected pricing states; the recalculation will replace them");
    }
}

/// Records (or merges into a waiting one) the recalculation task and enqueues its job. If the enqueue
/// fails, the task is still recorded and the worker's sweeper enqueues it.
async fn start_recalculation(
    state: &ListenerState,
    scope: Option<&ProductScope>,
    event_ids: &[String],
) -> Result<()> {
    let (task, created) = tasks::for_events(&state.db, RecalculatePrices::KIND_EVENTS, scope).await?;
    market_events::set_task(&state.db, event_ids, task.id).await?;
    if created {
        if let Err(e) = state.tasks.enqueue(RecalculatePrices { task_id: task.id }, true).await {
            tracing::warn!(task_id = %task.id, error = %e, "enqueue failed; the sweeper will pick the task up");
        }
    }
    Ok(())
}
