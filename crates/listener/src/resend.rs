//! The resend sweep: an event the api recorded in PostgreSQL may never have reached the stream (Redis was
//! down at publish time, or it was trimmed, or Redis restarted empty). Every half `LISTENER_RESEND_AFTER_MS`
//! the events still `received` after that long are appended again. Applying stays exactly once: the stream
//! may carry an event twice, PostgreSQL applies it once.

use std::{sync::Arc, time::Duration};

use pricing_core::{db::market_events, Result};
use tokio_util::sync::CancellationToken;

use crate::state::{Counted, ListenerState};

/// Events one sweep appends at most.
const RESEND_LIMIT: i64 = 1_000;

/// Sweeps until `shutdown`; a failed sweep is logged and retried the next period.
pub async fn run(state: Arc<ListenerState>, shutdown: CancellationToken) {
    let period = (state.settings.listener_resend_after / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match sweep(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "appended received events again"),
            Err(e) => tracing::warn!(error = %e, "resend sweep failed; retrying next period"),
        }
    }
}

/// One sweep: appends the `received` events last appended longer than `LISTENER_RESEND_AFTER_MS` ago
/// (marking them appended now) and counts them. Returns how many.
pub async fn sweep(state: &ListenerState) -> Result<usize> {
    let after = state.settings.listener_resend_after;
    let lost = market_events::take_unapplied(&state.db, after, RESEND_LIMIT).await?;
    state.events.append(&lost).await?;
    state.counters.add(Counted::Resent, lost.len());
    Ok(lost.len())
}
