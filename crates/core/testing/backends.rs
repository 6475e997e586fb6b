//! Real PostgreSQL and Redis for one test that calls a binary's functions directly (a batch applied, an
//! order processed) rather than through a running process: a database of its own (created, migrated, and
//! dropped when the test ends) and a Redis key prefix of its own, so tests run in parallel without seeing
//! each other. The api's `spawn_app` does the same for whole processes; this file is for the worker's and
//! the listener's own tests, which include it with `#[path]` (like `cli_checks.rs`), because test crates
//! cannot share a module otherwise.

// Each crate that includes this file uses a different part of it.
#![allow(dead_code)]

use std::time::Duration;

use pricing_core::{
    cache::Cache,
    db::Commits,
    jobs::{OrderQueue, TaskQueue},
    Backends, Settings,
};
use sqlx::PgPool;

/// Settings for one test, built explicitly (`Settings::from_vars`): only where PostgreSQL and Redis are
/// (`DATABASE_URL`, `REDIS_URL`, `REDIS_CLUSTER_NODES`) comes from whoever runs the tests; the timings the tested functions
/// read are set here.
pub fn test_settings() -> Settings {
    let servers: Vec<(&str, String)> = ["DATABASE_URL", "REDIS_URL", "REDIS_CLUSTER_NODES"]
        .into_iter()
        .filter_map(|v| Some((v, std::env::var(v).ok()?)))
        .collect();
    let servers: Vec<(&str, &str)> = servers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut s = Settings::from_vars(&servers).expect("settings (DATABASE_URL, REDIS_URL)");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let server =
        s.database_url.rsplit_once('/').map(|(server, _)| server.to_string()).expect("a database url");
    s.database_url = format!("{server}/test_{id}");
    s.redis_key_prefix = format!("test:{id}");
    s.database_max_connections = 5;
    s.database_sale_connections = 2;
    s.database_statement_timeout = Duration::from_secs(5);
    s.database_lock_timeout = Duration::from_secs(2);
    s.order_processing_delay = Duration::from_millis(5);
    s.order_failure_rate = 0.0;
    s.order_max_attempts = 3;
    s.order_stale_after = Duration::from_secs(30);
    s.recalc_batch_size = 100;
    s.recalc_lock_ttl = Duration::from_secs(5);
    s.recalc_max_attempts = 3;
    s.market_events_max_len = 10_000;
    s.listener_batch_size = 100;
    s.listener_block = Duration::from_millis(100);
    s.listener_claim_idle = Duration::from_secs(1);
    s.listener_resend_after = Duration::from_secs(1);
    s.log_filter = "error".into();
    s
}

/// One test's connections, with the settings they were made from.
pub struct TestBackends {
    pub settings: Settings,
    pub db: PgPool,
    pub cache: Cache,
    pub orders: OrderQueue,
    pub tasks: TaskQueue,
}

impl TestBackends {
    pub async fn connect() -> Self {
        Self::connect_with(|_| {}).await
    }

    /// Connects with `test_settings` changed by `configure`: creates and migrates the test's database.
    pub async fn connect_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings();
        configure(&mut settings);
        let Backends { db, cache, orders, tasks } = Backends::connect(&settings, 1, Commits::Durable)
            .await
            .expect("PostgreSQL and Redis are up (scripts/services.sh)");
        Self { settings, db, cache, orders, tasks }
    }
}

impl Drop for TestBackends {
    /// Drops the test's database (closing its connections) on a thread of its own: `Drop` cannot await.
    /// It waits for that a short while so a run leaves no databases behind, but not without bound: a
    /// connection the blocked runtime was opening would hold the drop up until PostgreSQL gives up on it.
    fn drop(&mut self) {
        let Some((server, name)) = self.settings.database_url.rsplit_once('/') else { return };
        let (admin_url, name) = (format!("{server}/postgres"), name.to_string());
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name.replace('"', "\"\""));
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let result = runtime.block_on(async move {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await?;
                admin.close().await
            });
            if let Err(e) = result {
                eprintln!("could not drop the test database {name}: {e}");
            }
            let _ = done.send(());
        });
        let _ = dropped.recv_timeout(Duration::from_secs(2));
    }
}
