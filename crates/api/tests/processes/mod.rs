//! The binaries as processes, for tests that need what only a process has: its own signals, its exit code,
//! its logs, its OTLP export. Each stack gets its own database and Redis key prefix, on free ports, and is
//! killed when dropped.
#![allow(dead_code)] // each test file uses its own part of this harness

pub mod otlp;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

pub const TOKEN: &str = "process-test-admin-token-0123456789abcdef";
pub const QUOTE_KEY: &str = "process-test-quote-signing-key-0123456789";
pub const JWT_SECRET: &str = "process-test-jwt-hs256-secret-0123456789";

/// `http://` + the address the process `pid` listens on, once it does (`None` after 30 s): every program
/// a test starts binds port 0 and is found this way, so no port is handed over and raced for.
pub fn url_of_pid(pid: u32) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(port) = listening_port(pid) {
            return Some(format!("http://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The TCP port the process `pid` listens on, if it listens yet: its sockets (`/proc/{pid}/fd`) matched
/// against the listening ones of the network namespace (`/proc/net/tcp`, state `0A`).
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| Some(link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let listening =
            cols.get(3) == Some(&"0A") && cols.get(9).is_some_and(|i| inodes.iter().any(|n| n == i));
        listening.then(|| u16::from_str_radix(cols[1].rsplit(':').next()?, 16).ok()).flatten()
    })
}

/// Which binary serves on the address a setting names.
fn exe_of(var: &str) -> &'static str {
    match var {
        "API_ADDR" => "pricing-api",
        "WORKER_ADDR" => "pricing-worker",
        "LISTENER_ADDR" => "pricing-listener",
        other => panic!("{other} is not an address setting"),
    }
}

/// Started binaries, killed when dropped; the database is dropped with them.
pub struct Stack {
    children: Vec<(String, Child)>,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    pub api: String,
    pub database_url: String,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let database_url = self.database_url.clone();
        // Dropped on a thread of its own: a test's runtime may already be shutting down.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(drop_database(&database_url))
        })
        .join();
    }
}

fn binary(name: &str) -> String {
    let api = env!("CARGO_BIN_EXE_pricing-api");
    let path = Path::new(api).with_file_name(name);
    assert!(path.exists(), "{} is not built: build the workspace (scripts/test.sh does)", path.display());
    path.to_string_lossy().into_owned()
}

impl Stack {
    /// Starts `pricing-api` with `extra` settings (after the defaults below) and waits until it is ready.
    pub async fn start(name: &str, extra: &[(&str, String)]) -> Stack {
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/pricing".into());
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database_url = format!("{}/{name}_{id}", base.rsplit_once('/').unwrap().0);
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_KEY_PREFIX", format!("{name}:{id}")),
            // Each binary binds a port of its own choosing; `url_of` finds which.
            ("API_ADDR", "127.0.0.1:0".into()),
            ("WORKER_ADDR", "127.0.0.1:0".into()),
            ("LISTENER_ADDR", "127.0.0.1:0".into()),
            ("ADMIN_TOKEN", TOKEN.into()),
            ("QUOTE_SIGNING_KEY", QUOTE_KEY.into()),
            ("JWT_HS256_SECRET", JWT_SECRET.into()),
            ("ORDER_PROCESSING_DELAY_MS", "5".into()),
            ("LISTENER_BLOCK_MS", "200".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("RUST_LOG", "info,sqlx=warn".into()),
            // One address sends every request of a test: no rate limits.
            ("RATE_LIMIT_READS_PER_SEC", "0".into()),
            ("RATE_LIMIT_ORDERS_PER_SEC", "0".into()),
            ("RATE_LIMIT_ADMIN_PER_SEC", "0".into()),
            ("LOG_FORMAT", "json".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let log_dir = std::env::temp_dir().join(format!("{name}_{id}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut stack = Stack { children: vec![], env, log_dir, api: String::new(), database_url };
        stack.spawn("pricing-api");
        stack.api = stack.url_of("API_ADDR");
        wait_for(&format!("{}/api/v1/health/ready", stack.api)).await;
        stack
    }

    /// Starts one more process of the stack (`pricing-worker`, `pricing-listener`).
    pub fn spawn(&mut self, exe: &str) {
        let log = std::fs::File::create(self.log_dir.join(exe)).unwrap();
        let child = Command::new(binary(exe))
            .stdout(log)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .spawn()
            .expect("start a binary");
        self.children.push((exe.to_string(), child));
    }

    /// The value of a setting the stack's processes run with.
    pub fn setting(&self, var: &str) -> String {
        self.env.iter().rev().find(|(k, _)| k == var).expect("a set setting").1.clone()
    }

    /// `http://` + the address the binary serving a setting's address (`API_ADDR`, `WORKER_ADDR`,
    /// `LISTENER_ADDR`) bound, once it listens (waits up to 30 s).
    pub fn url_of(&self, var: &str) -> String {
        let exe = exe_of(var);
        let pid = self.children.iter().rev().find(|(name, _)| name == exe).expect("a started process").1.id();
        url_of_pid(pid).unwrap_or_else(|| panic!("{exe} never listened: {}", self.log(exe)))
    }

    /// What the process has logged so far (one JSON object per line).
    pub fn log(&self, exe: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(exe)).unwrap_or_default()
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, exe: &str, signal: &str) {
        let pid = self.child(exe).id();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal} {exe}");
    }

    /// Waits for the process to exit on its own; `None` if it is still running after `timeout`.
    pub async fn exit_of(&mut self, exe: &str, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.children.iter_mut().find(|(name, _)| name == exe).map(|(_, c)| c).unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn child(&self, exe: &str) -> &Child {
        self.children.iter().find(|(name, _)| name == exe).map(|(_, c)| c).expect("a started process")
    }

    pub async fn create_product(&self, stock: i32) -> i64 {
        let product: Value = reqwest::Client::new()
            .post(format!("{}/api/v1/products", self.api))
            .bearer_auth(TOKEN)
            .json(&json!({ "name": "Process test", "price": 10.0, "stock": stock }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        product["id"].as_i64().unwrap()
    }
}

pub async fn wait_for(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered 200");
}

async fn drop_database(database_url: &str) {
    use sqlx::Connection;
    let (server, name) = database_url.rsplit_once('/').unwrap();
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
    }
}
