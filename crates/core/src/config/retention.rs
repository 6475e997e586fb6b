//! How long PostgreSQL keeps finished rows, and how the worker's retention jobs delete the rest: without
//! them `idempotency_keys`, `market_events` and `tasks` grow forever. Read with the other settings; used
//! only by the worker (`crates/worker/src/retention.rs`).

use std::time::Duration;

use super::{ranged, secs};

const DAY: Duration = Duration::from_secs(86_400);

/// What the retention jobs keep, how often they run and how much one transaction deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Applied and dead-lettered market events older than this are deleted (`MARKET_EVENTS_RETENTION_DAYS`);
    /// `None` (0 days) keeps them forever. An event's row is what makes its delivery exactly-once, so a
    /// producer must not retry an `event_id` for longer than this.
    pub market_events: Option<Duration>,
    /// Finished tasks (succeeded, failed, skipped) older than this are deleted (`TASKS_RETENTION_DAYS`);
    /// `None` (0 days) keeps them forever.
    pub tasks: Option<Duration>,
    /// How often each worker runs the jobs (`RETENTION_INTERVAL_SECS`).
    pub interval: Duration,
    /// Rows one transaction deletes at most (`RETENTION_BATCH_SIZE`): a backlog is deleted in many short
    /// transactions, never one long one.
    pub batch_size: i64,
}

impl Retention {
    pub(super) fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            market_events: days("MARKET_EVENTS_RETENTION_DAYS")?,
            tasks: days("TASKS_RETENTION_DAYS")?,
            interval: secs("RETENTION_INTERVAL_SECS", 300, 1..=86_400)?,
            batch_size: ranged("RETENTION_BATCH_SIZE", 1_000, 1..=100_000)?,
        })
    }
}

/// A retention in days, 30 by default, at most ten years; 0 means "keep forever".
fn days(name: &str) -> anyhow::Result<Option<Duration>> {
    let days: u32 = ranged(name, 30, 0..=3_650)?;
    Ok((days > 0).then(|| DAY * days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    #[test]
    fn retention_defaults_to_30_days_and_0_keeps_forever() {
        let r = Settings::from_vars(&[]).unwrap().retention;
        assert_eq!((r.market_events, r.tasks), (Some(DAY * 30), Some(DAY * 30)));
        assert_eq!((r.interval, r.batch_size), (Duration::from_secs(300), 1_000));
        let r = Settings::from_vars(&[("TASKS_RETENTION_DAYS", "0"), ("MARKET_EVENTS_RETENTION_DAYS", "2")])
            .unwrap()
            .retention;
        assert_eq!((r.market_events, r.tasks), (Some(DAY * 2), None));
        let err = Settings::from_vars(&[("RETENTION_BATCH_SIZE", "0")]).unwrap_err().to_string();
        assert!(err.contains("RETENTION_BATCH_SIZE=0") && err.contains("between 1 and 100000"), "{err}");
    }
}
