//! `spawn_app()`: a fresh database and Redis prefix per test, the api on port 0, and helpers to start and
//! stop a worker, call the api and wait for a condition by polling (never by sleeping a fixed time).

use std::{future::Future, time::Duration};

use pricing_api::Application;
use std::sync::Arc;

use pricing_core::{cache::Cache, pricing::PricingService, Settings};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-of-at-least-32-bytes";
/// The HS256 secret shoppers' test tokens are signed with.
pub const JWT_SECRET: &str = "test-jwt-secret-of-at-least-32-bytes!";
pub const QUOTE_KEY: &str = "test-quote-signing-key-of-32-bytes!!";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: PgPool,
    pub cache: Cache,
    pub pricing: Arc<PricingService>,
    pub settings: Settings,
    shutdown: CancellationToken,
    worker: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// Where the running worker serves `/health` and `/metrics`.
    pub worker_port: Option<u16>,
    listeners: Vec<RunningListener>,
}

/// A `pricing-listener` started in-process by a test.
pub struct RunningListener {
    pub port: u16,
    pub state: Arc<pricing_listener::startup::ListenerState>,
    token: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl RunningListener {
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Settings for one test: its own database and key prefix, fast timings. Built explicitly: only where
/// PostgreSQL and Redis are comes from whoever runs the tests (`DATABASE_URL`, `REDIS_URL`), nothing else
/// of their environment.
pub fn test_settings() -> Settings {
    let servers: Vec<(&str, String)> = ["DATABASE_URL", "REDIS_URL", "REDIS_CLUSTER_NODES"]
        .into_iter()
        .filter_map(|v| Some((v, std::env::var(v).ok()?)))
        .collect();
    let servers: Vec<(&str, &str)> = servers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut s = Settings::from_vars(&servers).expect("settings");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let base = s.database_url.rsplit_once('/').map(|(b, _)| b.to_string()).expect("database url");
    s.database_url = format!("{base}/test_{id}");
    s.redis_key_prefix = format!("test:{id}");
    s.api_addr = "127.0.0.1:0".parse().unwrap();
    s.worker_addr = "127.0.0.1:0".parse().unwrap();
    s.listener_addr = "127.0.0.1:0".parse().unwrap();
    s.secrets = pricing_core::config::Secrets {
        admin_token: Some(ADMIN_TOKEN.into()),
        quote_signing_keys: vec![QUOTE_KEY.into()],
        jwt_hs256_secret: Some(JWT_SECRET.into()),
        jwt_leeway: Duration::from_secs(30),
        ..Default::default()
    };
    s.database_max_connections = 10;
    s.order_processing_delay = Duration::from_millis(5);
    s.order_stale_after = Duration::from_secs(2);
    s.sweep_interval = Duration::from_millis(200);
    s.listener_block = Duration::from_millis(200);
    s.listener_claim_idle = Duration::from_millis(1_000);
    s.listener_resend_after = Duration::from_millis(1_000);
    // One address sends every test's requests: rate limits are off unless a test turns one on.
    let off = pricing_core::config::RateLimit { per_second: 0, burst: 0 };
    (s.edge.reads, s.edge.orders, s.edge.admin) = (off, off, off);
    s.log_filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into());
    s
}

/// Logging for the whole test binary, set up once and kept until it exits.
fn init_telemetry(settings: &Settings) {
    static TELEMETRY: std::sync::OnceLock<pricing_core::telemetry::TelemetryGuard> =
        std::sync::OnceLock::new();
    TELEMETRY.get_or_init(|| pricing_core::telemetry::init("pricing-tests", settings));
}

/// The api with dynamic pricing held still (no location, demand or scarcity adjustment), so every line
/// sells at its catalogue price and totals are exact.
pub async fn spawn_app_at_list_prices() -> TestApp {
    spawn_app_with(|s| {
        s.location_multipliers = String::new();
        s.scarcity_threshold = 0;
        s.demand_saturation_orders = u64::MAX;
    })
    .await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Points a test at one Redis (a proxy it can cut, or an address nothing answers on), also in the cluster
/// pass (`scripts/test-cluster.sh`): what such a test checks is how one server's outage is handled.
pub fn use_single_redis(s: &mut Settings, url: String) {
    s.redis_url = url;
    s.redis_cluster_nodes.clear();
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    configure(&mut settings);
    init_telemetry(&settings);
    let app = Application::build(settings.clone()).await.expect("build app");
    let port = app.port();
    let db = app.context().db.clone();
    let cache = app.context().cache.clone();
    let pricing = app.context().pricing.clone();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = app.run_until_stopped(stop).await;
    });
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap(),
        db,
        cache,
        pricing,
        settings,
        shutdown,
        worker: None,
        worker_port: None,
        listeners: Vec::new(),
    }
}

impl Drop for TestApp {
    /// Stops what the test started and drops its database, so a long run leaves none behind.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some((token, _)) = &self.worker {
            token.cancel();
        }
        for listener in &self.listeners {
            listener.token.cancel();
        }
        drop_database(&self.settings.database_url);
    }
}

/// Drops a test's database (closing its connections), on its own thread and runtime, without waiting for
/// it: `Drop` cannot await, and blocking the test's runtime would freeze a connection the app may be opening
/// at that moment, which PostgreSQL then waits for (up to `authentication_timeout`) before it can drop the
/// database. The process may end before the last few drops finish; everything else is cleaned up.
fn drop_database(database_url: &str) {
    let Some((server, name)) = database_url.rsplit_once('/') else { return };
    let (admin_url, name) = (format!("{server}/postgres"), name.to_string());
    let url = database_url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dropped = runtime.block_on(async move {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name.replace('"', "\"\""));
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await?;
            admin.close().await
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the test database {url}: {e}");
        }
    });
}

impl TestApp {
    /// Starts `pricing-worker` in-process against this test's database and prefix.
    pub async fn start_worker(&mut self) {
        self.start_worker_with(|_| {}).await
    }

    pub async fn start_worker_with(&mut self, configure: impl FnOnce(&mut Settings)) {
        assert!(self.worker.is_none(), "worker already running");
        let mut settings = self.settings.clone();
        settings.worker_addr = "127.0.0.1:0".parse().unwrap();
        configure(&mut settings);
        let worker = pricing_worker::Worker::build(settings).await.expect("build worker");
        self.worker_port = Some(worker.port());
        let token = CancellationToken::new();
        let handle = tokio::spawn({
            let token = token.clone();
            async move {
                worker.run_until_stopped(token).await.expect("worker run");
            }
        });
        self.worker = Some((token, handle));
    }

    /// Stops the worker and waits until it has finished its jobs in flight.
    pub async fn stop_worker(&mut self) {
        if let Some((token, handle)) = self.worker.take() {
            token.cancel();
            handle.await.expect("worker task");
        }
    }

    /// Starts a `pricing-listener` in-process against this test's database and prefix; returns its index.
    pub async fn start_listener(&mut self) -> usize {
        self.start_listener_with(|_| {}).await
    }

    pub async fn start_listener_with(&mut self, configure: impl FnOnce(&mut Settings)) -> usize {
        let mut settings = self.settings.clone();
        settings.listener_addr = "127.0.0.1:0".parse().unwrap();
        configure(&mut settings);
        let listener = pricing_listener::Listener::build(settings).await.expect("build listener");
        let (port, state, token) = (listener.port(), listener.state(), CancellationToken::new());
        let handle = tokio::spawn({
            let token = token.clone();
            async move { listener.run_until_stopped(token).await.expect("listener run") }
        });
        self.listeners.push(RunningListener { port, state, token, handle });
        self.listeners.len() - 1
    }

    pub fn listener(&self, index: usize) -> &RunningListener {
        &self.listeners[index]
    }

    /// Stops a listener the way SIGTERM does: it finishes the batch in hand.
    pub async fn stop_listener(&mut self, index: usize) {
        let listener = &mut self.listeners[index];
        listener.token.cancel();
        (&mut listener.handle).await.expect("listener task");
    }

    /// Kills a listener the way SIGKILL does: mid-batch, nothing acknowledged that was not yet.
    pub fn kill_listener(&mut self, index: usize) {
        self.listeners[index].handle.abort();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.expect("request")
    }

    /// A shopper's bearer token (HS256, valid for an hour), with the `member` claim if `member`.
    pub fn shopper_token(&self, sub: &str, member: bool) -> String {
        shopper_token(sub, member)
    }

    /// `POST` as a shopper (`Authorization: Bearer <their JWT>`).
    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(token).json(body).send().await.expect("request")
    }

    /// `GET` as a shopper.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request")
    }

    /// `GET` with the admin token (admins reach every order).
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.admin(reqwest::Method::GET, path, None).await
    }

    /// `POST` with the admin token and an empty JSON body.
    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.admin(reqwest::Method::POST, path, Some(&json!({}))).await
    }

    /// Creates a product through the api and returns its JSON.
    pub async fn create_product(&self, name: &str, price: f64, stock: i32) -> Value {
        let res = self
            .admin(
                reqwest::Method::POST,
                "/api/v1/products",
                Some(&json!({ "name": name, "price": price, "stock": stock })),
            )
            .await;
        assert_eq!(res.status(), 201, "create product");
        res.json().await.unwrap()
    }

    pub async fn order(&self, product_id: i64, quantity: i32) -> reqwest::Response {
        self.post("/api/v1/orders", &json!({ "product_id": product_id, "quantity": quantity })).await
    }

    pub async fn stock_of(&self, product_id: i64) -> i32 {
        sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
            .bind(product_id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub async fn order_status(&self, order_id: i64) -> String {
        sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Every Redis key of this test.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut conn = self.cache.conn().await.unwrap();
        let mut keys: Vec<String> =
            redis::cmd("KEYS").arg(self.cache.keys.all()).query_async(&mut conn).await.unwrap();
        keys.sort();
        keys
    }

    /// Deletes every Redis key of this test: what a Redis restart without persistence does to it.
    pub async fn wipe_redis(&self) {
        let mut conn = self.cache.conn().await.unwrap();
        let keys = self.redis_keys().await;
        for chunk in keys.chunks(1000) {
            let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await.unwrap();
        }
    }
}

/// A shopper's token signed with [`JWT_SECRET`], valid for an hour.
pub fn shopper_token(sub: &str, member: bool) -> String {
    let claims = pricing_api::auth::ShopperClaims {
        sub: sub.into(),
        exp: jsonwebtoken::get_current_timestamp() + 3600,
        nbf: None,
        iss: None,
        aud: None,
        member,
        location: None,
        roles: vec![],
    };
    pricing_api::auth::jwt::sign_hs256(JWT_SECRET, &claims).unwrap()
}

/// Polls `check` every 50 ms until it returns true, failing the test after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
