//! Whether the backing services answer: the one check behind the api's readiness and the worker's and the
//! listener's `/health`, so the three binaries agree on what "PostgreSQL is down" means. Each binary words
//! its own answer; what it checks, and how long it waits, is decided here.

use std::time::Duration;

use sqlx::PgPool;

use crate::cache::Cache;

/// How long a backend may take to answer a health check. A readiness probe that must answer inside an
/// orchestrator's own timeout passes a shorter one.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Which backends answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendHealth {
    pub postgres: bool,
    pub redis: bool,
}

impl BackendHealth {
    pub fn all_ok(self) -> bool {
        self.postgres && self.redis
    }

    /// The names of those that did not answer (`PostgreSQL`, `Redis`), in that order.
    pub fn failing(self) -> Vec<&'static str> {
        [("PostgreSQL", self.postgres), ("Redis", self.redis)]
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| name)
            .collect()
    }
}

/// Asks PostgreSQL (`SELECT 1`) and Redis (`PING`) at once, each given `timeout`.
pub async fn check_backends(db: &PgPool, cache: &Cache, timeout: Duration) -> BackendHealth {
    let (postgres, redis) = tokio::join!(
        tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(db)),
        tokio::time::timeout(timeout, cache.ping()),
    );
    BackendHealth { postgres: matches!(postgres, Ok(Ok(_))), redis: matches!(redis, Ok(Ok(_))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_names_what_did_not_answer() {
        let all = BackendHealth { postgres: true, redis: true };
        assert!(all.all_ok() && all.failing().is_empty());
        assert_eq!(BackendHealth { postgres: false, redis: true }.failing(), ["PostgreSQL"]);
        assert_eq!(BackendHealth { postgres: false, redis: false }.failing(), ["PostgreSQL", "Redis"]);
    }
}
