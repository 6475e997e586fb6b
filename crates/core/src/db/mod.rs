//! PostgreSQL: the pool, creating the database and running migrations, and one repository module per table.
//! Queries are runtime-checked (`query_as` + `FromRow`) so the build needs no database.

#[macro_use]
mod columns;
pub mod idempotency;
pub mod market;
pub mod market_events;
pub mod orders;
pub mod products;
pub mod retention;
pub mod tasks;

use std::str::FromStr;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgPool,
};

use crate::Settings;

/// How a process's commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commits {
    /// Each commit waits for its WAL flush: what a client was told happened survives a crash (the api's
    /// orders, the listener's applied events).
    Durable,
    /// Commits do not wait for the flush (`synchronous_commit = off`): a PostgreSQL crash can undo the last
    /// few hundred milliseconds of them, each whole or not at all, never a client's order. For the worker,
    /// whose every transition is fenced and redone from PostgreSQL's state by the sweeper; it spares two WAL
    /// flushes per order.
    Relaxed,
}

/// Connects to the configured database, creating it first when it does not exist yet.
pub async fn connect(settings: &Settings, commits: Commits) -> anyhow::Result<PgPool> {
    let mut options = PgConnectOptions::from_str(&settings.database_url)?;
    create_database_if_missing(&options).await?;
    if commits == Commits::Relaxed {
        options = options.options([("synchronous_commit", "off")]);
    }
    // Bounded waits: no statement holds a connection longer than this (the sale sets a shorter one).
    let statement_timeout = settings.database_statement_timeout.as_millis().to_string();
    options = options.options([("statement_timeout", statement_timeout.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        .min_connections(1)
        .acquire_timeout(settings.limits.database_acquire_timeout)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Applies the migrations in `migrations/` (embedded at build time). Safe to run from several processes.
/// A migration may rewrite a large table: it runs on a connection without `DATABASE_STATEMENT_TIMEOUT_MS`
/// (`RESET` gives the connection its configured limit back before it returns to the pool).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SET statement_timeout = 0").execute(&mut *conn).await?;
    let migrated = sqlx::migrate!("../../migrations").run(&mut *conn).await;
    sqlx::query("RESET statement_timeout").execute(&mut *conn).await?;
    migrated?;
    Ok(())
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        // The name comes from our own configuration and is quoted above.
        match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {
            }
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Whether PostgreSQL gave up waiting: `lock_timeout` (55P03) or `statement_timeout` (57014). The
/// statement was rolled back; nothing it did stays.
pub fn is_timeout(err: &crate::Error) -> bool {
    match err {
        crate::Error::Database(sqlx::Error::Database(e)) => {
            matches!(e.code().as_deref(), Some("55P03") | Some("57014"))
        }
        _ => false,
    }
}

/// Postgres error codes we turn into client errors.
pub(crate) fn constraint_of(err: &sqlx::Error) -> Option<(&str, String)> {
    match err {
        sqlx::Error::Database(e) => {
            Some((e.constraint().unwrap_or_default(), e.code().map(|c| c.into_owned()).unwrap_or_default()))
        }
        _ => None,
    }
}
