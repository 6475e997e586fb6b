//! The stream consumer: reads `{prefix}:market_events` with the consumer group, applies each batch
//! (`apply.rs`), and acknowledges (`XACK`) entries only after their effect committed. Entries it could not
//! apply stay pending and are read again (its own, with id `0`) after a backoff; entries another listener
//! left pending longer than `LISTENER_CLAIM_IDLE_MS` are claimed (`XAUTOCLAIM`). A malformed entry is
//! dead-lettered and acknowledged, so one bad message never stops the stream. Redis or PostgreSQL outages
//! are retried with backoff, never fatal.

use std::{collections::HashMap, sync::Arc, time::Duration};

use opentelemetry::trace::TraceContextExt;
use pricing_core::{
    cache::{redis_connection_with_timeout, RedisConnection, RedisTarget},
    db::market_events,
    events::{MarketEvent, MarketEventDraft, CONSUMER_GROUP},
    retry, telemetry, Result,
};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    apply,
    state::{Counted, ListenerState},
};

/// Failed steps wait 100 ms, 200 ms ... at most 5 s before the next try.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

pub struct Consumer {
    state: Arc<ListenerState>,
    /// Its own connection (on a cluster, its own connection to the stream's node, following MOVED after a
    /// failover): a blocking read would hold up every other command on a shared one.
    reader: RedisConnection,
    name: String,
    stream: String,
    /// Read this consumer's own pending entries (id `0`) before new ones: set after a failed batch.
    reread_pending: bool,
    next_claim: Instant,
}

/// One stream entry, decoded or not.
enum Entry {
    Event(MarketEvent),
    Malformed { event_id: Option<String>, reason: String },
}

impl Consumer {
    pub fn new(state: Arc<ListenerState>) -> anyhow::Result<Self> {
        let timeout = state.settings.listener_block + pricing_core::cache::RESPONSE_TIMEOUT;
        let reader = redis_connection_with_timeout(&RedisTarget::from_settings(&state.settings), timeout)?;
        let stream = state.cache.keys.market_events();
        let name = format!("listener-{}", uuid::Uuid::new_v4().simple());
        Ok(Self { state, reader, name, stream, reread_pending: false, next_claim: Instant::now() })
    }

    /// Reads and applies until shutdown; a step in hand is finished first.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            match self.step().await {
                Ok(()) => {
                    failures = 0;
                    self.state.consumer_ok();
                }
                Err(e) => {
                    failures += 1;
                    let delay = retry::backoff(failures, RETRY_BASE, RETRY_CAP);
                    tracing::warn!(error = %e, ?delay, "market event batch failed; retrying");
                    self.state.consumer_failed(e.to_string());
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!(consumer = %self.name, "stream consumer stopped");
    }

    /// One batch: claimed entries of dead listeners when it is time, else own pending ones after a failure,
    /// else new ones (blocking up to `LISTENER_BLOCK_MS`). Public so tests drive the consumer step by step.
    pub async fn step(&mut self) -> Result<()> {
        let stepped = self.next_batch().await;
        // A failed batch stays pending, unacknowledged: the next steps read it again (id `0`) first.
        self.reread_pending |= stepped.is_err();
        stepped
    }

    async fn next_batch(&mut self) -> Result<()> {
        if Instant::now() >= self.next_claim {
            let claimed = self.claim_idle().await?;
            self.next_claim = Instant::now() + self.state.settings.listener_claim_idle / 2;
            if !claimed.is_empty() {
                self.state.counters.add(Counted::Claimed, claimed.len());
                tracing::info!(entries = claimed.len(), "claimed entries a silent listener left pending");
                return self.handle(claimed).await;
            }
        }
        let from = if self.reread_pending { "0" } else { ">" };
        let entries = self.read(from).await?;
        if self.reread_pending && entries.is_empty() {
            self.reread_pending = false;
        }
        self.handle(entries).await
    }

    async fn read(&mut self, from: &str) -> Result<Vec<StreamId>> {
        let s = &self.state.settings;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(CONSUMER_GROUP).arg(&self.name).arg("COUNT").arg(s.listener_batch_size);
        if from == ">" {
            cmd.arg("BLOCK").arg(s.listener_block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(from);
        let reply: Option<StreamReadReply> = match cmd.query_async(&mut self.reader).await {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.create_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default())
    }

    /// Creates the group (and the stream) if missing, from the start of the stream: events appended while
    /// no listener ever ran are applied too. Called when Redis says there is none (first start, or Redis
    /// restarted empty).
    async fn create_group(&mut self) -> Result<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(CONSUMER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.reader)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(stream = %self.stream, group = CONSUMER_GROUP, "created the consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn claim_idle(&mut self) -> Result<Vec<StreamId>> {
        let s = &self.state.settings;
        let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(CONSUMER_GROUP)
            .arg(&self.name)
            .arg(s.listener_claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(s.listener_batch_size)
            .query_async(&mut self.reader)
            .await;
        match reply {
            Ok(reply) => Ok(reply.claimed),
            Err(e) if e.code() == Some("NOGROUP") => {
                self.create_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies the batch's events, dead-letters what cannot be read, then acknowledges every entry.
    async fn handle(&mut self, entries: Vec<StreamId>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut events = Vec::with_capacity(entries.len());
        for entry in &entries {
            match decode(entry) {
                Entry::Event(event) => events.push(event),
                Entry::Malformed { event_id, reason } => self.dead_letter(entry, event_id, &reason).await?,
            }
        }
        let span = batch_span(&events);
        // With export off the span records nothing: the first publisher's context is passed on as is.
        let caller = events.iter().find_map(|e| e.traceparent.as_deref()).map(telemetry::context_from);
        let state = &self.state;
        let applying = apply::apply_batch(&state.db, &state.cache, &state.tasks, &events);
        let apply = telemetry::within_caller(caller, applying);
        let outcome = apply.instrument(span).await?;
        self.state.counters.add(Counted::Applied, outcome.applied);
        self.state.counters.add(Counted::Duplicate, outcome.duplicates);
        self.state.counters.add(Counted::Batch, 1);
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let _: u64 = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(CONSUMER_GROUP)
            .arg(&ids)
            .query_async(&mut self.state.cache.conn().await?)
            .await?;
        Ok(())
    }

    async fn dead_letter(&self, entry: &StreamId, event_id: Option<String>, reason: &str) -> Result<()> {
        tracing::warn!(entry = %entry.id, ?event_id, reason, "malformed market event; dead-lettered");
        let fields = fields_of(entry);
        self.state.events.dead_letter(&entry.id, &fields, reason).await?;
        if let Some(event_id) = event_id {
            let payload = serde_json::to_string(&fields).unwrap_or_default();
            let kind = fields.get("event_type").map_or("unknown", String::as_str);
            market_events::mark_dead(&self.state.db, &event_id, kind, &payload, reason).await?;
        }
        self.state.counters.add(Counted::DeadLetter, 1);
        Ok(())
    }
}

/// The span of one applied batch: a child of its first event's trace (the publisher's request), linked to
/// the traces of the others, so a published event's timeline runs from the request through the listener
/// to the recalculation it started.
fn batch_span(events: &[MarketEvent]) -> tracing::Span {
    let span = tracing::info_span!(
        "market_events.apply",
        otel.name = "market_events apply",
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.batch.message_count = events.len(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let mut parents = events.iter().filter_map(|e| e.traceparent.as_deref());
    telemetry::parent_from(&span, parents.next());
    telemetry::record_ids(&span);
    for other in parents.take(MAX_LINKS) {
        let context = telemetry::context_from(other);
        span.add_link(context.span().span_context().clone());
    }
    span
}

/// Links one batch span carries at most.
const MAX_LINKS: usize = 32;

fn fields_of(entry: &StreamId) -> HashMap<String, String> {
    entry.map.keys().filter_map(|k| entry.get::<String>(k).map(|v| (k.clone(), v))).collect()
}

/// An entry's event. Without an `event_id` it gets `stream:{entry id}`, which a redelivery of the same
/// entry repeats, so it is still applied once.
fn decode(entry: &StreamId) -> Entry {
    let fields = fields_of(entry);
    let draft = match MarketEventDraft::from_stream_fields(&fields) {
        Ok(draft) => draft,
        Err(reason) => return Entry::Malformed { event_id: None, reason },
    };
    let given_id = draft.event_id.clone();
    match draft.validate(|| format!("stream:{}", entry.id)) {
        Ok(event) => Entry::Event(event),
        Err(e) => Entry::Malformed {
            event_id: given_id.filter(|id| id.len() <= 200 && !id.chars().any(char::is_control)),
            reason: e.to_string(),
        },
    }
}
