//! One settings struct, read from environment variables. Every variable and its default is listed in
//! `.env.example` and the README; the defaults work on a developer machine with local PostgreSQL and Redis.
//! The api's secrets (and how they may come from files) are in `secrets.rs`.

mod edge;
mod env;
mod limits;
mod retention;
mod secrets;

pub use edge::{Edge, RateLimit};
pub use limits::Limits;
pub use retention::Retention;
pub use secrets::{generate_secret, AppEnv, Secrets, MIN_SECRET_BYTES};

use std::{net::SocketAddr, time::Duration};

pub use env::RENAMED;
use env::{filter, key_prefix, list, millis, parse, ranged, redis_nodes, renamed, secs, var};

use rust_decimal::Decimal;

#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL connection string; the api creates the database when it is missing.
    pub database_url: String,
    /// Connections in each process's PostgreSQL pool.
    pub database_max_connections: u32,
    /// Every statement's time limit (`statement_timeout`), so nothing holds a connection without bound;
    /// zero turns it off (the `seed` command does, for its bulk insert).
    pub database_statement_timeout: Duration,
    /// How long a sale waits for its products' row locks (`lock_timeout`) before it gives up, selling nothing.
    pub database_lock_timeout: Duration,
    /// Connections the sales (and cancellations) may hold at once, of `DATABASE_MAX_CONNECTIONS`: the rest
    /// stay for reads, quotes and health checks while hot rows are locked.
    pub database_sale_connections: u32,
    pub redis_url: String,
    /// `REDIS_CLUSTER_NODES`: seed nodes (`redis://host:port`, comma-separated) of a Redis Cluster. Set, it
    /// selects cluster mode for all three binaries and `REDIS_URL` is not used.
    pub redis_cluster_nodes: Vec<String>,
    /// Every Redis key this service writes starts with this prefix (tests use one per test).
    pub redis_key_prefix: String,
    pub api_addr: SocketAddr,
    /// Where the worker serves `/health` and `/metrics`.
    pub worker_addr: SocketAddr,
    /// Lifetime of a cached product (`GET /products/{id}/cached`).
    pub cache_ttl: Duration,
    /// `APP_ENV`: `development` lets the api generate missing secrets; anything else requires them.
    pub app_env: AppEnv,
    /// The admin token, quote signing keys and shoppers' token keys (`secrets.rs`).
    pub secrets: Secrets,
    /// Orders processed at once by one worker process.
    pub worker_concurrency: usize,
    /// The simulated fulfilment step of each order.
    pub order_processing_delay: Duration,
    /// Probability (0..1) that a fulfilment try fails, for demos of retries and failures.
    pub order_failure_rate: f64,
    /// Fulfilment tries per order before it is marked `failed` (and deliveries counted in PostgreSQL).
    pub order_max_attempts: i32,
    /// An order left `pending`/`processing` this long is re-enqueued by the sweeper.
    pub order_stale_after: Duration,
    /// How often the sweeper looks for stale orders.
    pub sweep_interval: Duration,
    /// The sweeper keeps the Redis queue at most this deep; the rest waits, safe, in PostgreSQL.
    pub queue_max_backlog: usize,
    /// Lifetime of a product's cached pricing state (jittered by up to 10% so a bulk load does not expire at once).
    pub price_cache_ttl: Duration,
    /// How long an order's `Idempotency-Key` replays its order.
    pub idempotency_ttl: Duration,
    /// How long a price quote can be honoured by an order.
    pub quote_ttl: Duration,
    /// ISO currency code shown on quotes.
    pub currency: String,
    /// `CODE=MULTIPLIER,...`: the location part of a price; unlisted locations pay 1.0.
    pub location_multipliers: String,
    /// The location assumed when a quote request names none.
    pub default_location: String,
    /// Members' discount, e.g. 0.05 for 5%.
    pub member_discount: Decimal,
    /// Guardrails: a final price stays within [floor, ceiling] x the base price.
    pub price_floor_ratio: Decimal,
    pub price_ceiling_ratio: Decimal,
    /// The sliding window of order velocity, in minutes, and the orders in it at which demand peaks.
    pub demand_window_minutes: u32,
    pub demand_saturation_orders: u64,
    /// Below this stock the scarcity surcharge starts.
    pub scarcity_threshold: i32,
    /// Products per batch of the bulk recalculation.
    pub recalc_batch_size: i64,
    /// Lease of the recalculation lock; renewed every third of it while the job runs.
    pub recalc_lock_ttl: Duration,
    /// Attempts of a recalculation on transient errors (the lock is released between attempts).
    pub recalc_max_attempts: i32,
    /// The market events stream is trimmed to about this many entries (`XADD MAXLEN ~`).
    pub market_events_max_len: usize,
    /// Where the listener serves `/health` and `/metrics`.
    pub listener_addr: SocketAddr,
    /// Stream entries one listener reads (and applies in one transaction) at a time.
    pub listener_batch_size: usize,
    /// How long one blocking stream read waits for new entries.
    pub listener_block: Duration,
    /// An entry another listener read but did not acknowledge for this long is claimed (its reader died).
    pub listener_claim_idle: Duration,
    /// A `received` event not applied this long after it was appended is appended again (Redis lost it).
    pub listener_resend_after: Duration,
    /// Limits on what one request may ask (422 or 413 beyond them); see [`Limits`].
    pub limits: Limits,
    /// Connection timeouts and caps, load shedding and rate limits (`edge.rs`).
    pub edge: Edge,
    /// What the worker's retention jobs keep in PostgreSQL (`retention.rs`).
    pub retention: Retention,
    /// Browser origins allowed to call the api (CORS); empty: no CORS headers, browsers on other origins are refused.
    pub cors_origins: Vec<String>,
    /// After SIGTERM, how long a process finishes the work in hand before it exits anyway.
    pub shutdown_timeout: Duration,
    /// `RUST_LOG`-style filter.
    pub log_filter: String,
    /// `json` for one JSON object per line, anything else for human-readable logs.
    pub log_format: String,
    /// Which spans are exported (`OTEL_TRACES_FILTER`, `RUST_LOG` syntax), whatever the logs show.
    pub traces_filter: String,
    /// Old names of renamed settings found in the environment (still read), for a warning at start-up.
    pub deprecated: Vec<String>,
}

/// Every environment variable `from_env` reads. A test checks `.env.example` and `docker-compose.yml` list
/// each of them, so the documented configuration cannot drift from the code.
pub const ENV_VARS: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_STATEMENT_TIMEOUT_MS",
    "DATABASE_LOCK_TIMEOUT_MS",
    "DATABASE_SALE_CONNECTIONS",
    "REDIS_URL",
    "REDIS_CLUSTER_NODES",
    "REDIS_KEY_PREFIX",
    "API_ADDR",
    "WORKER_ADDR",
    "CACHE_TTL_SECS",
    "APP_ENV",
    "ADMIN_TOKEN",
    "ADMIN_TOKEN_FILE",
    "WORKER_CONCURRENCY",
    "ORDER_PROCESSING_DELAY_MS",
    "ORDER_FAILURE_RATE",
    "ORDER_MAX_ATTEMPTS",
    "ORDER_STALE_AFTER_SECS",
    "SWEEP_INTERVAL_MS",
    "QUEUE_MAX_BACKLOG",
    "PRICE_CACHE_TTL_SECS",
    "QUOTE_TTL_SECS",
    "QUOTE_SIGNING_KEY",
    "QUOTE_SIGNING_KEY_FILE",
    "JWT_HS256_SECRET",
    "JWT_HS256_SECRET_FILE",
    "JWT_PUBLIC_KEYS_FILE",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_LEEWAY_SECS",
    "IDEMPOTENCY_TTL_SECS",
    "CURRENCY",
    "LOCATION_MULTIPLIERS",
    "DEFAULT_LOCATION",
    "MEMBER_DISCOUNT",
    "PRICE_FLOOR_RATIO",
    "PRICE_CEILING_RATIO",
    "DEMAND_WINDOW_MINUTES",
    "DEMAND_SATURATION_ORDERS",
    "SCARCITY_THRESHOLD",
    "RECALC_BATCH_SIZE",
    "RECALC_LOCK_TTL_MS",
    "RECALC_MAX_ATTEMPTS",
    "MARKET_EVENTS_MAX_LEN",
    "LISTENER_ADDR",
    "LISTENER_BATCH_SIZE",
    "LISTENER_BLOCK_MS",
    "LISTENER_CLAIM_IDLE_MS",
    "LISTENER_RESEND_AFTER_MS",
    "MARKET_EVENTS_RETENTION_DAYS",
    "TASKS_RETENTION_DAYS",
    "RETENTION_INTERVAL_SECS",
    "RETENTION_BATCH_SIZE",
    "MAX_BODY_BYTES",
    "REQUEST_TIMEOUT_MS",
    "DATABASE_ACQUIRE_TIMEOUT_MS",
    "MAX_PAGE_SIZE",
    "MAX_ORDER_ITEMS",
    "MAX_ORDER_QUANTITY",
    "MAX_TEXT_LEN",
    "CORS_ORIGINS",
    "HTTP_HEADER_READ_TIMEOUT_MS",
    "HTTP_KEEPALIVE_TIMEOUT_SECS",
    "HTTP_MAX_CONNECTIONS",
    "HTTP_MAX_IN_FLIGHT",
    "RATE_LIMIT_READS_PER_SEC",
    "RATE_LIMIT_READS_BURST",
    "RATE_LIMIT_ORDERS_PER_SEC",
    "RATE_LIMIT_ORDERS_BURST",
    "RATE_LIMIT_ADMIN_PER_SEC",
    "RATE_LIMIT_ADMIN_BURST",
    "TRUSTED_PROXIES",
    "SHUTDOWN_TIMEOUT_SECS",
    "RUST_LOG",
    "LOG_FORMAT",
    "OTEL_TRACES_FILTER",
];

/// Location multipliers used when `LOCATION_MULTIPLIERS` is not set.
pub const DEFAULT_LOCATIONS: &str = "NY=1.10,CA=1.08,WA=1.05,MA=1.05,IL=1.02,TX=0.97,FL=0.98";

impl Settings {
    /// Reads every setting from the environment, falling back to the documented defaults.
    /// The settings `vars` give (and the defaults for the others), read as `from_env` reads the
    /// environment, which is not consulted: tests build their settings with it.
    pub fn from_vars(vars: &[(&str, &str)]) -> anyhow::Result<Self> {
        env::with_vars(vars, Self::from_env)
    }

    /// Every value is checked here, once: its range as it is read (`env::ranged`), then the relations
    /// between settings (`check`). An error names the variable and what it accepts; the binaries exit 2
    /// with it (`cli::settings`). Nothing downstream clamps a setting.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut settings = Self::read_env()?;
        settings.deprecated = env::deprecated_names_in_use();
        settings.limits.check()?;
        settings.check()?;
        Ok(settings)
    }

    /// The relations between settings. (The price floor is at most 1 and the ceiling at least 1, so their
    /// ranges already keep the floor under the ceiling.)
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=self.database_max_connections).contains(&self.database_sale_connections),
            "DATABASE_SALE_CONNECTIONS={} is out of range: it must be between 1 and DATABASE_MAX_CONNECTIONS ({})",
            self.database_sale_connections,
            self.database_max_connections
        );
        anyhow::ensure!(
            self.sweep_interval < self.order_stale_after,
            "SWEEP_INTERVAL_MS={} must be shorter than ORDER_STALE_AFTER_SECS={} (the sweeper looks for stale \
             orders at least once in that time)",
            self.sweep_interval.as_millis(),
            self.order_stale_after.as_secs()
        );
        anyhow::ensure!(
            self.listener_claim_idle > self.listener_block,
            "LISTENER_CLAIM_IDLE_MS={} must be longer than LISTENER_BLOCK_MS={} (a listener waiting for entries \
             is not silent)",
            self.listener_claim_idle.as_millis(),
            self.listener_block.as_millis()
        );
        crate::pricing::model::parse_location_multipliers(&self.location_multipliers).map_err(|e| {
            anyhow::anyhow!("LOCATION_MULTIPLIERS={:?} is invalid: {e}", self.location_multipliers)
        })?;
        Ok(())
    }

    fn read_env() -> anyhow::Result<Self> {
        Ok(Self {
            database_url: var("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/pricing"),
            database_max_connections: ranged("DATABASE_MAX_CONNECTIONS", 20, 1..=1_000)?,
            database_statement_timeout: millis("DATABASE_STATEMENT_TIMEOUT_MS", 5_000, 0..=3_600_000)?,
            database_lock_timeout: millis("DATABASE_LOCK_TIMEOUT_MS", 2_000, 0..=600_000)?,
            database_sale_connections: parse(
                "DATABASE_SALE_CONNECTIONS",
                (parse::<u32>("DATABASE_MAX_CONNECTIONS", 20)? / 2).max(1),
            )?,
            redis_url: var("REDIS_URL", "redis://127.0.0.1:6379"),
            redis_cluster_nodes: redis_nodes("REDIS_CLUSTER_NODES")?,
            redis_key_prefix: key_prefix("REDIS_KEY_PREFIX")?,
            api_addr: parse("API_ADDR", SocketAddr::from(([0, 0, 0, 0], 8000)))?,
            worker_addr: parse("WORKER_ADDR", SocketAddr::from(([0, 0, 0, 0], 8001)))?,
            cache_ttl: secs(renamed("CACHE_TTL_SECS"), 300, 1..=31_536_000)?,
            app_env: AppEnv::from_env()?,
            secrets: Secrets::from_env()?,
            worker_concurrency: ranged("WORKER_CONCURRENCY", 1024, 1..=100_000)?,
            order_processing_delay: millis("ORDER_PROCESSING_DELAY_MS", 100, 0..=600_000)?,
            order_failure_rate: ranged("ORDER_FAILURE_RATE", 0.0, 0.0..=1.0)?,
            order_max_attempts: ranged("ORDER_MAX_ATTEMPTS", 5, 1..=100)?,
            order_stale_after: secs("ORDER_STALE_AFTER_SECS", 30, 1..=86_400)?,
            sweep_interval: millis("SWEEP_INTERVAL_MS", 2000, 10..=3_600_000)?,
            queue_max_backlog: ranged("QUEUE_MAX_BACKLOG", 5000, 1..=10_000_000)?,
            price_cache_ttl: secs(renamed("PRICE_CACHE_TTL_SECS"), 60, 1..=31_536_000)?,
            quote_ttl: secs(renamed("QUOTE_TTL_SECS"), 300, 1..=31_536_000)?,
            idempotency_ttl: secs(renamed("IDEMPOTENCY_TTL_SECS"), 86_400, 1..=31_536_000)?,
            currency: var("CURRENCY", "USD"),
            location_multipliers: var("LOCATION_MULTIPLIERS", DEFAULT_LOCATIONS),
            default_location: var("DEFAULT_LOCATION", "US"),
            member_discount: ranged(
                "MEMBER_DISCOUNT",
                Decimal::new(5, 2),
                Decimal::ZERO..=Decimal::new(99, 2),
            )?,
            price_floor_ratio: ranged(
                "PRICE_FLOOR_RATIO",
                Decimal::new(5, 1),
                Decimal::new(1, 2)..=Decimal::ONE,
            )?,
            price_ceiling_ratio: ranged("PRICE_CEILING_RATIO", Decimal::TWO, Decimal::ONE..=Decimal::TEN)?,
            demand_window_minutes: ranged("DEMAND_WINDOW_MINUTES", 15, 1..=10_080)?,
            demand_saturation_orders: ranged("DEMAND_SATURATION_ORDERS", 100, 1..=100_000_000)?,
            scarcity_threshold: ranged("SCARCITY_THRESHOLD", 50, 0..=100_000_000)?,
            recalc_batch_size: ranged("RECALC_BATCH_SIZE", 2000, 1..=100_000)?,
            recalc_lock_ttl: millis("RECALC_LOCK_TTL_MS", 30_000, 300..=3_600_000)?,
            recalc_max_attempts: ranged("RECALC_MAX_ATTEMPTS", 5, 1..=100)?,
            market_events_max_len: ranged("MARKET_EVENTS_MAX_LEN", 100_000, 1..=100_000_000)?,
            listener_addr: parse("LISTENER_ADDR", SocketAddr::from(([0, 0, 0, 0], 8002)))?,
            listener_batch_size: ranged("LISTENER_BATCH_SIZE", 500, 1..=10_000)?,
            listener_block: millis("LISTENER_BLOCK_MS", 1_000, 1..=60_000)?,
            listener_claim_idle: millis("LISTENER_CLAIM_IDLE_MS", 15_000, 1..=86_400_000)?,
            listener_resend_after: millis("LISTENER_RESEND_AFTER_MS", 5_000, 1..=86_400_000)?,
            limits: Limits {
                max_body_bytes: parse("MAX_BODY_BYTES", 64 * 1024)?,
                request_timeout: Duration::from_millis(parse("REQUEST_TIMEOUT_MS", 10_000)?),
                database_acquire_timeout: Duration::from_millis(parse("DATABASE_ACQUIRE_TIMEOUT_MS", 5_000)?),
                max_page_size: parse("MAX_PAGE_SIZE", 100)?,
                max_order_items: parse("MAX_ORDER_ITEMS", 100)?,
                max_quantity: parse("MAX_ORDER_QUANTITY", 10_000)?,
                max_text_len: parse("MAX_TEXT_LEN", 255)?,
            },
            edge: Edge::from_env()?,
            retention: Retention::from_env()?,
            cors_origins: list("CORS_ORIGINS")
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            shutdown_timeout: secs(renamed("SHUTDOWN_TIMEOUT_SECS"), 25, 0..=3_600)?,
            log_filter: filter("RUST_LOG", "info,sqlx=warn")?,
            log_format: var("LOG_FORMAT", "text"),
            traces_filter: filter("OTEL_TRACES_FILTER", "info")?,
            deprecated: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn every_variable_read_is_documented_and_passed_by_compose() {
        let source = ["mod.rs", "secrets.rs", "edge.rs", "retention.rs"]
            .map(|f| repo_file(&format!("crates/core/src/config/{f}")))
            .concat();
        let example = repo_file(".env.example");
        let compose = repo_file("docker-compose.yml");
        for var in ENV_VARS {
            // `NAME_FILE` is read beside `NAME` (`secrets::secret_var`).
            let read_as = var.strip_suffix("_FILE").filter(|base| ENV_VARS.contains(base)).unwrap_or(var);
            assert!(source.matches(&format!("\"{read_as}\"")).count() >= 2, "{var} listed but not read");
            assert!(example.contains(&format!("\n{var}=")), ".env.example lacks {var}");
            assert!(compose.contains(&format!("{var}:")), "docker-compose.yml lacks {var}");
        }
    }

    #[test]
    fn the_defaults_are_valid_and_given_variables_are_read_and_checked() {
        let s = Settings::from_vars(&[]).unwrap();
        assert_eq!((s.worker_concurrency, s.order_max_attempts), (1024, 5));
        let s = Settings::from_vars(&[("ORDER_MAX_ATTEMPTS", "7"), ("CACHE_TTL", "9")]).unwrap();
        assert_eq!(s.order_max_attempts, 7);
        assert_eq!(s.cache_ttl, Duration::from_secs(9), "an old name is still read");
        assert_eq!(s.deprecated.len(), 1, "and warned about: {:?}", s.deprecated);
        let err = Settings::from_vars(&[("ORDER_MAX_ATTEMPTS", "0")]).unwrap_err().to_string();
        assert!(err.contains("ORDER_MAX_ATTEMPTS=0") && err.contains("between 1 and 100"), "{err}");
    }
}
