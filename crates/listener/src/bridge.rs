//! The channel bridge: services built for the old listener only `PUBLISH` events on the channel
//! `{prefix}:market_events`. While a listener is connected it hears them and appends each to the stream,
//! from where it is applied like every other event. Messages the api announces there are already in the
//! stream and are skipped. A message without an `event_id` gets one derived from its content, so when
//! several listeners bridge the same message it is still applied once.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use pricing_core::{
    cache::RedisTarget,
    events::{EventStream, MarketEventDraft},
    retry,
};
use tokio_util::sync::CancellationToken;

use crate::state::{Counted, ListenerState};

const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(5);

pub async fn run(state: Arc<ListenerState>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        match listen(&state, &shutdown, failures as usize).await {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                let delay = retry::backoff(failures, RETRY_BASE, RETRY_CAP);
                tracing::warn!(error = %e, ?delay, "channel subscription lost; resubscribing");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Subscribes and bridges until shutdown (`Ok`) or the connection fails (`Err`). On a cluster a PUBLISH
/// reaches every node, so a SUBSCRIBE on any one node hears the whole cluster: the bridge takes the seed
/// nodes in turn, moving to the next when its node fails.
async fn listen(state: &ListenerState, shutdown: &CancellationToken, attempt: usize) -> anyhow::Result<()> {
    let channel = state.cache.keys.market_events();
    let nodes = RedisTarget::from_settings(&state.settings);
    let node = &nodes.node_urls()[attempt % nodes.node_urls().len()];
    let mut pubsub = redis::Client::open(node.as_str())?.get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    let mut messages = pubsub.on_message();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = messages.next() => message,
        };
        let Some(message) = message else { anyhow::bail!("the subscription ended") };
        let payload: String = message.get_payload()?;
        bridge(state, &payload).await?;
    }
}

async fn bridge(state: &ListenerState, payload: &str) -> pricing_core::Result<()> {
    let value: serde_json::Value = match serde_json::from_str(payload) {
        Ok(value) => value,
        Err(e) => return dead_letter(state, payload, &format!("not JSON: {e}")).await,
    };
    if EventStream::already_appended(&value) {
        return Ok(());
    }
    let derived_id =
        || format!("channel-{}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, payload.as_bytes()).simple());
    let event = match serde_json::from_value::<MarketEventDraft>(value).map_err(|e| e.to_string()) {
        Ok(draft) => draft.validate(derived_id).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match event {
        Ok(event) => {
            state.events.append(std::slice::from_ref(&event)).await?;
            state.counters.add(Counted::Bridged, 1);
            Ok(())
        }
        Err(reason) => dead_letter(state, payload, &reason).await,
    }
}

async fn dead_letter(state: &ListenerState, payload: &str, reason: &str) -> pricing_core::Result<()> {
    tracing::warn!(reason, "malformed message on the market events channel; dead-lettered");
    let fields = [("channel_message".to_string(), payload.to_string())].into_iter().collect();
    state.events.dead_letter("channel", &fields, reason).await?;
    state.counters.add(Counted::DeadLetter, 1);
    Ok(())
}
