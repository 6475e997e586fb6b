//! A Redis lock for work that must run once at a time across all workers (the bulk recalculation).
//!
//! `SET key token NX PX ttl` takes it; only the holder's token can renew or release it (compare-and-set in
//! Lua), so a holder whose lease ran out cannot delete a successor's lock. A holder that dies stops
//! renewing and the lock expires on its own. The lease's clock (when to renew, when a lease is lost) is
//! apart from Redis in `keep_renewing`, so its tests run on a paused clock.

use std::{future::Future, sync::Arc, time::Duration};

use redis::{AsyncCommands, Script};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{cache::Cache, prometheus::names, Result};

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// A held lock. Dropping it without `release` leaves the lock to expire after its lease.
#[derive(Debug, Clone)]
pub struct Lease {
    pub key: String,
    pub token: String,
    pub ttl: Duration,
    /// When the SET that took it was sent: Redis started the lease no earlier, so it holds at least until
    /// `taken_at + ttl` on this process's clock.
    taken_at: Instant,
}

/// Takes the lock if it is free; `None` if someone holds it. Never waits. `purpose` names what the lock is
/// taken for (`holder` tells it to others; may be empty); the token stays unique.
#[tracing::instrument(name = "lock acquire", skip(cache, ttl), fields(db.system.name = "redis"))]
pub async fn try_acquire_for(
    cache: &Cache,
    key: &str,
    ttl: Duration,
    purpose: &str,
) -> Result<Option<Lease>> {
    let token = format!("{purpose}:{}", uuid::Uuid::new_v4());
    let taken_at = Instant::now();
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
    let taken: Option<String> = cache.conn().await?.set_options(key, &token, options).await?;
    let result = if taken.is_some() { "acquired" } else { "busy" };
    metrics::counter!(names::LOCK_ACQUISITIONS, "lock" => label(key), "result" => result).increment(1);
    Ok(taken.map(|_| Lease { key: key.to_string(), token, ttl, taken_at }))
}

/// The lock's name without the deployment prefix: a bounded label.
fn label(key: &str) -> String {
    key.rsplit(':').next().unwrap_or(key).to_string()
}

/// What the current holder took the lock for (`try_acquire_for`), if anyone holds it.
pub async fn holder(cache: &Cache, key: &str) -> Result<Option<String>> {
    let token: Option<String> = cache.conn().await?.get(key).await?;
    Ok(token.and_then(|t| t.rsplit_once(':').map(|(purpose, _)| purpose.to_string())))
}

impl Lease {
    /// Extends the lease; `false` if the lock is no longer ours (it expired, someone else took it).
    pub async fn renew(&self, cache: &Cache) -> Result<bool> {
        let renewed: i32 = Script::new(RENEW)
            .key(&self.key)
            .arg(&self.token)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut cache.conn().await?)
            .await?;
        Ok(renewed == 1)
    }

    /// Releases the lock if it is still ours. Returns whether it was.
    pub async fn release(&self, cache: &Cache) -> Result<bool> {
        let released: i32 = Script::new(crate::cache::DELETE_IF_EQUAL)
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut cache.conn().await?)
            .await?;
        Ok(released == 1)
    }

    /// Renews the lease (`keep_renewing`) until `stop` is cancelled. If the lock is lost (a renewal finds
    /// it is no longer ours, or none succeeded before the lease ran out), cancels `lost` so the holder
    /// stops working. Meanwhile `lock_held_seconds` tells how long the lock has been held, and a lost
    /// lease is counted (`lock_leases_lost_total`).
    pub fn keep_alive(
        self: Arc<Self>,
        cache: Cache,
        stop: CancellationToken,
        lost: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let held = metrics::gauge!(names::LOCK_HELD, "lock" => label(&self.key));
            // Exported from the first hold on, so an alert on it sees a 0 rather than no series.
            metrics::counter!(names::LOCK_LEASES_LOST, "lock" => label(&self.key)).increment(0);
            held.set(self.taken_at.elapsed().as_secs_f64());
            let renew = || {
                let (this, cache, held) = (&self, &cache, &held);
                async move {
                    let renewed = this.renew(cache).await;
                    held.set(this.taken_at.elapsed().as_secs_f64());
                    renewed
                }
            };
            if let Ended::Lost(why) = keep_renewing(self.taken_at, self.ttl, &stop, renew).await {
                tracing::error!(key = %self.key, "lock lost: {}", why.as_str());
                metrics::counter!(names::LOCK_LEASES_LOST, "lock" => label(&self.key)).increment(1);
                lost.cancel();
            }
            held.set(0.0);
        })
    }
}

/// A lease is renewed every third of its length: a renewal that fails leaves time for another before
/// the lease runs out.
fn renewal_period(ttl: Duration) -> Duration {
    ttl / 3
}

/// Why `keep_renewing` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Stopped,
    Lost(Lost),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// A renewal found the lock gone or someone else's.
    NotOurs,
    /// No renewal succeeded before the lease ran out (Redis unreachable or too slow): it has expired
    /// there, and someone else may hold it now.
    RanOut,
}

impl Lost {
    fn as_str(self) -> &'static str {
        match self {
            Lost::NotOurs => "its lease ran out before renewal",
            Lost::RanOut => "no renewal succeeded within its lease",
        }
    }
}

/// The lease's clock, apart from Redis: calls `renew` every `renewal_period` until `stop` is cancelled.
/// A renewal that succeeds extends the lease to `ttl` from when it was sent; one that fails is retried
/// at the next period; the lease is lost when a renewal says it is not ours, or at its end if no renewal
/// succeeded by then (a renewal still waiting for Redis at that moment is given up).
async fn keep_renewing<F, R>(
    taken_at: Instant,
    ttl: Duration,
    stop: &CancellationToken,
    mut renew: F,
) -> Ended
where
    F: FnMut() -> R,
    R: Future<Output = Result<bool>>,
{
    let mut holds_until = taken_at + ttl;
    loop {
        let next = (Instant::now() + renewal_period(ttl)).min(holds_until);
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            _ = tokio::time::sleep_until(next) => {}
        }
        if Instant::now() >= holds_until {
            return Ended::Lost(Lost::RanOut);
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(holds_until, renew()).await {
            Ok(Ok(true)) => holds_until = sent + ttl,
            Ok(Ok(false)) => return Ended::Lost(Lost::NotOurs),
            Ok(Err(e)) => tracing::warn!(error = %e, "lock renewal failed; trying again"),
            Err(_) => return Ended::Lost(Lost::RanOut),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The lease's clock on a paused tokio clock: no real time passes, and every instant is exact. The
    //! renewals answer as Redis would (ours, not ours, an error, no answer); `renew` itself is tested
    //! against a real Redis in the api's recalculation tests.

    use std::{collections::VecDeque, sync::Mutex};

    use super::*;
    use crate::Error;

    /// What a scripted renewal answers.
    #[derive(Clone, Copy)]
    enum Answer {
        Ours,
        NotOurs,
        Fails,
        Hangs,
    }

    /// Runs `keep_renewing` for a lease of `ttl` taken now, its renewals answering `answers` in turn (then
    /// `Ours`), stopped after `stop_after`. Returns how it ended, when (since the lease was taken), and
    /// when each renewal was sent.
    async fn run(
        ttl: Duration,
        answers: &[Answer],
        stop_after: Duration,
    ) -> (Ended, Duration, Vec<Duration>) {
        let taken_at = Instant::now();
        let answers = Mutex::new(answers.iter().copied().collect::<VecDeque<_>>());
        let sent = Mutex::new(Vec::new());
        let stop = CancellationToken::new();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(stop_after).await;
                stop.cancel();
            })
        };
        let renew = || {
            sent.lock().unwrap().push(taken_at.elapsed());
            let answer = answers.lock().unwrap().pop_front().unwrap_or(Answer::Ours);
            async move {
                match answer {
                    Answer::Ours => Ok(true),
                    Answer::NotOurs => Ok(false),
                    Answer::Fails => Err(Error::Unavailable("Redis is down".into())),
                    Answer::Hangs => std::future::pending().await,
                }
            }
        };
        let ended = keep_renewing(taken_at, ttl, &stop, renew).await;
        stopper.abort();
        (ended, taken_at.elapsed(), sent.into_inner().unwrap())
    }

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_renewed_every_third_of_its_length_until_stopped() {
        let (ended, at, sent) = run(Duration::from_secs(3), &[], Duration::from_millis(4_500)).await;
        assert_eq!(ended, Ended::Stopped);
        assert_eq!(at, Duration::from_millis(4_500), "stopped at once, not at the next renewal");
        assert_eq!(sent, secs(&[1, 2, 3, 4]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_stopped_before_its_first_renewal_is_never_renewed() {
        let (ended, _, sent) = run(Duration::from_secs(3), &[], Duration::ZERO).await;
        assert_eq!((ended, sent), (Ended::Stopped, vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_finds_the_lock_not_ours_loses_it_at_once() {
        let answers = [Answer::Ours, Answer::NotOurs];
        let (ended, at, sent) = run(Duration::from_secs(3), &answers, Duration::from_secs(60)).await;
        assert_eq!((ended, at), (Ended::Lost(Lost::NotOurs), Duration::from_secs(2)));
        assert_eq!(sent, secs(&[1, 2]));
    }

    /// One failed renewal is survived (the next one comes while the lease still holds); a whole lease
    /// without a successful one is lost when the lease runs out, counted from the last renewal that
    /// succeeded, not from the failures.
    #[tokio::test(start_paused = true)]
    async fn failed_renewals_keep_the_lease_until_it_runs_out() {
        use Answer::{Fails, Ours};
        let answers = [Fails, Ours, Fails, Fails, Fails];
        let (ended, at, sent) = run(Duration::from_secs(3), &answers, Duration::from_secs(60)).await;
        assert_eq!(ended, Ended::Lost(Lost::RanOut));
        assert_eq!(at, Duration::from_secs(5), "the renewal sent at 2 s held it until 5 s");
        assert_eq!(sent, secs(&[1, 2, 3, 4]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_still_unanswered_when_the_lease_runs_out_loses_it_then() {
        let answers = [Answer::Ours, Answer::Hangs];
        let (ended, at, sent) = run(Duration::from_secs(3), &answers, Duration::from_secs(60)).await;
        assert_eq!((ended, at), (Ended::Lost(Lost::RanOut), Duration::from_secs(4)));
        assert_eq!(sent, secs(&[1, 2]));
    }

    /// Renewals that take time (a slow Redis) extend the lease from when they were sent, and the next
    /// one is a period after the answer.
    #[tokio::test(start_paused = true)]
    async fn a_slow_renewal_extends_the_lease_from_when_it_was_sent() {
        let taken_at = Instant::now();
        let (stop, sent) = (CancellationToken::new(), Mutex::new(Vec::new()));
        let renew = || {
            sent.lock().unwrap().push(taken_at.elapsed());
            let fails = sent.lock().unwrap().len() > 1;
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if fails {
                    return Err(Error::Unavailable("Redis is down".into()));
                }
                Ok(true)
            }
        };
        let ended = keep_renewing(taken_at, Duration::from_secs(3), &stop, renew).await;
        // Sent at 1 s, answered at 1.5 s: it holds until 4 s (not 4.5). The next is sent at 2.5 s and fails
        // at 3 s; the one after would be at 4 s, when the lease has run out: lost then.
        assert_eq!((ended, taken_at.elapsed()), (Ended::Lost(Lost::RanOut), Duration::from_secs(4)));
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        assert_eq!(sent.into_inner().unwrap(), ms(&[1_000, 2_500]));
    }
}
