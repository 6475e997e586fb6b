//! Every background job: its payload, its queue and how it is put on that queue. The api (producer) and the
//! worker (consumer) both use this module, so a job is defined in exactly one place.
//!
//! A job in Redis is only a wake-up call: the order or task it names lives in PostgreSQL, and the worker's
//! sweeper re-enqueues whatever the queue loses. The apalis-redis 1.0 settings below close its traps
//! (each trap and how it is handled: `docs/apalis-redis.md`): a 15 s orphan window instead of 300 s, idempotency keys on, a
//! response timeout above redis 1.8's 500 ms, and `promote_due` so a big backlog cannot jam its fetch script.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_redis::{Config, RedisStorage};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    cache::{Keys, RedisConnection},
    prometheus::names,
    telemetry, Error, Result,
};

/// A job type: its payload, its queue, and the key that makes the first push of one idempotent.
pub trait Job:
    Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + Unpin + Clone + 'static
{
    const QUEUE: &'static str;
    fn idempotency_key(&self) -> String;
    fn stamp(&self) -> &Stamp;
    fn stamp_mut(&mut self) -> &mut Stamp;

    /// How long it waited in the queue until now, if its enqueue time is known.
    fn queue_wait(&self) -> Option<Duration> {
        let at = self.stamp().enqueued_at_ms;
        let waited = now_ms() - at;
        (at > 0 && waited >= 0).then(|| Duration::from_millis(waited as u64))
    }
}

/// What every job carries besides its payload: when it was put on the queue (ms since the epoch; 0 if
/// unknown), for the queue-wait metric, the trace it continues, and for a job enqueued again by the
/// sweeper the trace it was first enqueued in (its run links to it). `JobQueue::enqueue` stamps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    #[serde(default)]
    pub enqueued_at_ms: i64,
    #[serde(default)]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// How one run of a job ended, as `jobs_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    Failed,
    /// It will run again (a retry, or a task deferred behind the lock).
    Retried,
    /// Nothing to do: a duplicate delivery, or a recalculation skipped because another held the lock.
    Skipped,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Retried => "retried",
            JobOutcome::Skipped => "skipped",
        }
    }
}

/// Runs a job's handler and records its metrics: the time it waited in the queue, how long it ran, and
/// how it ended. The one place the worker's handlers are measured.
/// The run is a span (`job {queue}`) in the trace that enqueued the job, carrying how long it waited.
pub async fn measured<J: Job, F: std::future::Future<Output = JobOutcome>>(job: &J, run: F) -> JobOutcome {
    use tracing::Instrument;
    let waited = job.queue_wait();
    let span = tracing::info_span!(
        "job",
        otel.name = %format!("job {}", J::QUEUE),
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.destination.name = J::QUEUE,
        queue.wait_ms = waited.map_or(-1, |w| w.as_millis() as i64),
        job.outcome = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    telemetry::parent_from(&span, job.stamp().traceparent.as_deref());
    telemetry::link_to(&span, job.stamp().origin.as_deref());
    telemetry::record_ids(&span);
    if let Some(waited) = waited {
        metrics::histogram!(names::JOB_QUEUE_WAIT, "job_name" => J::QUEUE).record(waited.as_secs_f64());
    }
    let started = std::time::Instant::now();
    let outcome = run.instrument(span.clone()).await;
    span.record("job.outcome", outcome.as_str());
    metrics::histogram!(names::JOB_DURATION, "job_name" => J::QUEUE).record(started.elapsed().as_secs_f64());
    metrics::counter!(names::JOBS, "job_name" => J::QUEUE, "outcome" => outcome.as_str()).increment(1);
    outcome
}

/// A job stamped as enqueued now, in the current trace (the worker's run of it continues that trace).
pub fn stamped<J: Job>(job: J) -> J {
    stamped_in(job, telemetry::current_traceparent())
}

/// A job stamped as enqueued now, continuing the trace `traceparent` names.
pub fn stamped_in<J: Job>(mut job: J, traceparent: Option<String>) -> J {
    let origin = job.stamp_mut().origin.take();
    *job.stamp_mut() = Stamp { enqueued_at_ms: now_ms(), traceparent, origin };
    job
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Move an order from `pending` through `processing` to `completed` (or `failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessOrder {
    pub order_id: i64,
    #[serde(flatten)]
    pub stamp: Stamp,
}

impl ProcessOrder {
    pub fn new(order_id: i64) -> Self {
        Self { order_id, stamp: Stamp::default() }
    }

    /// The job of an order whose first job was lost, linked to the trace that placed the order (`origin`).
    pub fn again(order_id: i64, origin: Option<String>) -> Self {
        Self { order_id, stamp: Stamp { origin, ..Stamp::default() } }
    }
}

impl Job for ProcessOrder {
    const QUEUE: &'static str = "process_order";
    fn idempotency_key(&self) -> String {
        format!("order:{}", self.order_id)
    }
    fn stamp(&self) -> &Stamp {
        &self.stamp
    }
    fn stamp_mut(&mut self) -> &mut Stamp {
        &mut self.stamp
    }
}

/// Recompute and cache the pricing states of a task's products (all of them, or its scope), in batches,
/// under the global recalculation lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecalculatePrices {
    pub task_id: Uuid,
    #[serde(flatten)]
    pub stamp: Stamp,
}

impl RecalculatePrices {
    pub fn new(task_id: Uuid) -> Self {
        Self { task_id, stamp: Stamp::default() }
    }
}

impl Job for RecalculatePrices {
    const QUEUE: &'static str = "recalculate_prices";
    fn idempotency_key(&self) -> String {
        format!("task:{}", self.task_id)
    }
    fn stamp(&self) -> &Stamp {
        &self.stamp
    }
    fn stamp_mut(&mut self) -> &mut Stamp {
        &mut self.stamp
    }
}

/// How often a worker proves it is alive, and how many beats it may miss before its jobs go back on the
/// queue: 5 s x 3 = 15 s of silence (apalis' default is 300 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
pub const MISSED_HEARTBEATS: usize = 3;
/// A second push of the same job within this window is dropped (apalis keeps no keys unless this is set).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(10);
/// apalis-redis' fetch script unpacks every due job at once and fails above about 8,000; `promote_due`
/// moves due jobs to the active list in chunks this size, so the script never sees more than one chunk.
const PROMOTE_CHUNK: usize = 500;

/// The apalis configuration of one queue.
pub fn queue_config(keys: &Keys, queue: &str, batch_size: usize) -> Config {
    Config::default()
        .queue(keys.queue(queue))
        .batch_size(batch_size.max(1))
        .heartbeat_interval(HEARTBEAT_INTERVAL)
        .missed_heartbeats(MISSED_HEARTBEATS)
        .idempotency_ttl(Some(IDEMPOTENCY_TTL))
        // A lease removes each fetched job from the active list with LREM, which scans the whole list: with
        // a backlog of 40,000 a fetch of 2,000 jobs took seconds. Leases add nothing here: fetched jobs sit
        // in the worker's in-flight set (re-enqueued if it dies) and the order row fences every step.
        .lock_tasks(false)
        // Nothing here listens to apalis' pub/sub events, and on a cluster every PUBLISH goes to every node.
        .emit_events(false)
}

/// One job type's queue: pushing, its depth, and the housekeeping apalis does not do. Cheap to clone.
pub struct JobQueue<J: Job> {
    storage: RedisStorage<J, RedisConnection>,
    config: Config,
    conn: RedisConnection,
}

impl<J: Job> Clone for JobQueue<J> {
    fn clone(&self) -> Self {
        Self { storage: self.storage.clone(), config: self.config.clone(), conn: self.conn.clone() }
    }
}

pub type OrderQueue = JobQueue<ProcessOrder>;
pub type TaskQueue = JobQueue<RecalculatePrices>;

impl<J: Job> JobQueue<J> {
    pub fn new(conn: RedisConnection, keys: &Keys) -> Self {
        let config = queue_config(keys, J::QUEUE, 1);
        let storage = RedisStorage::new(conn.clone()).with_config(config.clone());
        Self { storage, config, conn }
    }

    /// The consumer's storage: the same queue, fetching up to `batch` jobs at a time.
    pub fn storage_with_batch(&self, batch: usize) -> RedisStorage<J, RedisConnection> {
        RedisStorage::new(self.conn.clone()).with_config(self.config.clone().batch_size(batch.max(1)))
    }

    /// Puts a wake-up job on the queue. `first` marks the api's push right after the commit: it carries an
    /// idempotency key, so a retried push is dropped. The sweeper's re-pushes carry none, so they are never
    /// mistaken for that first one.
    #[tracing::instrument(skip(self))]
    pub async fn enqueue(&self, job: J, first: bool) -> Result<()> {
        self.push(vec![stamped(job)], first).await
    }

    /// Puts jobs already `stamped` on the queue in one script call (apalis' batch push).
    #[tracing::instrument(name = "enqueue many", skip_all, fields(count = jobs.len()))]
    pub async fn push(&self, jobs: Vec<J>, first: bool) -> Result<()> {
        let count = jobs.len() as u64;
        let tasks = jobs.into_iter().map(|job| {
            let key = job.idempotency_key();
            let task = TaskBuilder::new(job);
            if first { task.idempotency_key(key) } else { task }.build()
        });
        self.storage
            .clone()
            .push_all(futures::stream::iter(tasks))
            .await
            .map_err(|e| Error::Queue(e.to_string()))?;
        metrics::counter!(names::JOBS, "job_name" => J::QUEUE, "outcome" => "enqueued").increment(count);
        Ok(())
    }

    /// Jobs waiting: due or scheduled, not yet fetched by a worker. Also sets `job_queue_depth`.
    pub async fn depth(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let (active, scheduled): (u64, u64) = redis::pipe()
            .llen(self.config.active_jobs_list())
            .zcard(self.config.scheduled_jobs_set())
            .query_async(&mut conn)
            .await?;
        metrics::gauge!(names::JOB_QUEUE_DEPTH, "queue" => J::QUEUE).set((active + scheduled) as f64);
        Ok(active + scheduled)
    }

    /// Moves every due job from the scheduled set to the active list, a bounded chunk per script call, so
    /// apalis' own fetch never has to unpack a huge backlog. Returns how many moved.
    pub async fn promote_due(&self) -> Result<u64> {
        let script = redis::Script::new(
            r#"
            local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
            if #ids > 0 then
                redis.call('RPUSH', KEYS[2], unpack(ids))
                redis.call('ZREM', KEYS[1], unpack(ids))
                redis.call('DEL', KEYS[3])
                redis.call('LPUSH', KEYS[3], 1)
            end
            return #ids
            "#,
        );
        let now = now_ms() / 1000;
        let mut conn = self.conn.clone();
        let mut moved = 0;
        loop {
            let n: u64 = script
                .key(self.config.scheduled_jobs_set())
                .key(self.config.active_jobs_list())
                .key(self.config.signal_list())
                .arg(now)
                .arg(PROMOTE_CHUNK)
                .invoke_async(&mut conn)
                .await?;
            moved += n;
            if n < PROMOTE_CHUNK as u64 {
                return Ok(moved);
            }
        }
    }

    /// Deletes the data of up to `limit` finished jobs (apalis keeps it forever). Returns how many.
    pub async fn purge_finished(&self, limit: usize) -> Result<u64> {
        let script = redis::Script::new(
            r#"
            local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
            for _, id in ipairs(ids) do
                redis.call('HDEL', KEYS[2], id)
                redis.call('DEL', KEYS[3] .. ':' .. id)
            end
            return #ids
            "#,
        );
        let mut conn = self.conn.clone();
        Ok(script
            .key(self.config.done_jobs_set())
            .key(self.config.job_data_hash())
            .key(self.config.job_meta_hash())
            .arg(limit)
            .invoke_async(&mut conn)
            .await?)
    }
}
