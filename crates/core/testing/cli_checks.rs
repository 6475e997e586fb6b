//! Checks every binary's command line the same way, run against the built executable as a process. Each
//! binary crate includes this file in its own `tests/cli.rs` (`#[path]`), because only a crate's own tests
//! see its executable (`CARGO_BIN_EXE_...`).

use std::process::{Command, Output};

/// A database name no process has any reason to create: if it exists after a run, the run touched
/// PostgreSQL.
pub fn untouched_database_url() -> (String, String) {
    let name = format!("cli_check_{}", std::process::id());
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/pricing".into());
    let server = base.rsplit_once('/').map(|(s, _)| s.to_string()).expect("a database url");
    (format!("{server}/{name}"), name)
}

/// Runs `exe args...` with `DATABASE_URL` pointing at a database that must stay uncreated.
pub fn run(exe: &str, args: &[&str]) -> Output {
    let (url, _) = untouched_database_url();
    Command::new(exe).args(args).env("DATABASE_URL", url).output().expect("the binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `--help` prints usage and the environment it reads; `--version` the version; both exit 0.
pub fn help_and_version_work(exe: &str, name: &str) {
    let help = run(exe, &["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    let text = stdout(&help);
    assert!(text.contains("Usage:") && text.contains(name), "{text}");
    assert!(text.contains("DATABASE_URL") && text.contains("README"), "help names the settings: {text}");
    let version = run(exe, &["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(stdout(&version).trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
}

/// A bad command line exits 2 with one line on stderr naming `wanted`.
pub fn refused(exe: &str, args: &[&str], wanted: &str) {
    let out = run(exe, args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line, got {err:?}");
    assert!(err.contains(wanted), "{args:?}: {err:?} should name {wanted:?}");
    assert!(stdout(&out).is_empty());
}

/// Whether the check database exists (it never should).
pub async fn database_exists() -> bool {
    use sqlx::Connection;
    let (url, name) = untouched_database_url();
    let admin = format!("{}/postgres", url.rsplit_once('/').unwrap().0);
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL is up (scripts/services.sh)");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Bad settings, each with what its error must name: the variable and the range or rule it broke.
pub const BAD_SETTINGS: &[(&str, &str, &str)] = &[
    ("LISTENER_BATCH_SIZE", "0", "must be between 1 and 10000"),
    ("REDIS_CLUSTER_NODES", "127.0.0.1:7100", "not a redis://host:port URL"),
    ("REDIS_KEY_PREFIX", "{tag}", "without braces"),
    ("RECALC_BATCH_SIZE", "-5", "must be between 1 and 100000"),
    ("TASKS_RETENTION_DAYS", "-1", "is invalid"),
    ("MARKET_EVENTS_RETENTION_DAYS", "5000", "must be between 0 and 3650"),
    ("RETENTION_BATCH_SIZE", "0", "must be between 1 and 100000"),
    ("RETENTION_INTERVAL_SECS", "0", "must be between 1 and 86400"),
    ("ORDER_MAX_ATTEMPTS", "0", "must be between 1 and 100"),
    ("RECALC_MAX_ATTEMPTS", "1000", "must be between 1 and 100"),
    ("ORDER_FAILURE_RATE", "1.5", "must be between 0 and 1"),
    ("WORKER_CONCURRENCY", "0", "must be between 1 and 100000"),
    ("DATABASE_MAX_CONNECTIONS", "many", "is invalid"),
    ("MEMBER_DISCOUNT", "1.5", "must be between 0 and 0.99"),
    ("RECALC_LOCK_TTL_MS", "10", "must be between 300 and 3600000"),
    ("DATABASE_SALE_CONNECTIONS", "500", "DATABASE_MAX_CONNECTIONS"),
    ("PRICE_FLOOR_RATIO", "1.5", "must be between 0.01 and 1"),
    ("SWEEP_INTERVAL_MS", "60000", "ORDER_STALE_AFTER_SECS"),
    ("LISTENER_BLOCK_MS", "20000", "LISTENER_CLAIM_IDLE_MS"),
    ("LOCATION_MULTIPLIERS", "NY=abc", "LOCATION_MULTIPLIERS"),
    ("RUST_LOG", "info,[=", "RUST_LOG"),
    ("OTEL_TRACES_FILTER", "info,[=", "OTEL_TRACES_FILTER"),
    // A setting's old name (before its unit was in it) is still read.
    ("CACHE_TTL", "0", "must be between 1 and 31536000"),
];

/// Each bad setting stops the binary with status 2 and a message naming it and what it accepts, before
/// anything is created or changed.
pub fn bad_settings_are_refused(exe: &str) {
    for (name, value, wanted) in BAD_SETTINGS {
        let (url, _) = untouched_database_url();
        let out =
            Command::new(exe).env("DATABASE_URL", url).env(name, value).output().expect("the binary runs");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {err}");
        assert!(err.contains(name) && err.contains(wanted), "{name}={value}: {err:?} should name {wanted:?}");
    }
}
