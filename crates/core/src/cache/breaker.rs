//! A circuit breaker on the cache's Redis connections, so an outage costs no latency. While Redis answers,
//! every command passes through. When one fails for want of Redis (refused, dropped, timed out), the circuit
//! opens: every later command fails at once, without a reconnect attempt, and its caller takes the way it
//! already has without Redis (quotes computed and rows read from PostgreSQL; post-sale steps skipped, the
//! sweeper enqueuing the orders' jobs later). A background probe PINGs Redis a few times a second and closes
//! the circuit when it answers. The state is the gauge `redis_circuit_open`.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::{aio::ConnectionLike, Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::RedisConnection;
use crate::prometheus::names;

/// How often an open circuit's probe tries Redis.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long a probe's PING may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Shared by every connection of one `Cache`.
#[derive(Debug, Default)]
pub struct Breaker {
    open: AtomicBool,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// The error a command gets while the circuit is open.
    pub fn open_error() -> RedisError {
        RedisError::from((redis::ErrorKind::Io, "Redis is unavailable (circuit open until a probe answers)"))
    }

    /// Opens the circuit after `error`, if it says Redis cannot be reached, and starts the probe that will
    /// close it (one probe per opening).
    fn observe(self: &Arc<Self>, error: &RedisError, probe_with: &RedisConnection) {
        let unreachable = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_refusal()
            || error.is_connection_dropped();
        if unreachable && !self.open.swap(true, Ordering::SeqCst) {
            tracing::warn!(%error, "Redis is unreachable: circuit open, serving without it until it answers");
            metrics::gauge!(names::REDIS_CIRCUIT_OPEN).set(1.0);
            tokio::spawn(self.clone().probe(probe_with.clone()));
        }
    }

    async fn probe(self: Arc<Self>, mut conn: RedisConnection) {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let ping = redis::cmd("PING");
            if matches!(
                tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<String>(&mut conn)).await,
                Ok(Ok(_))
            ) {
                self.open.store(false, Ordering::SeqCst);
                metrics::gauge!(names::REDIS_CIRCUIT_OPEN).set(0.0);
                tracing::info!("Redis answers again: circuit closed");
                return;
            }
        }
    }
}

/// A cache connection that reports its failures to the breaker and fails at once while it is open.
#[derive(Clone)]
pub struct GuardedConnection {
    pub(super) inner: RedisConnection,
    pub(super) breaker: Arc<Breaker>,
}

impl ConnectionLike for GuardedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            if self.breaker.is_open() {
                return Err(Breaker::open_error());
            }
            let result = self.inner.req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.breaker.observe(e, &self.inner);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            if self.breaker.is_open() {
                return Err(Breaker::open_error());
            }
            let result = self.inner.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &result {
                self.breaker.observe(e, &self.inner);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
