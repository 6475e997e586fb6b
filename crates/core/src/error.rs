//! The core's one error type. Domain outcomes (not found, out of stock, price changed) are variants, so the
//! api maps each to its status code in one place; infrastructure failures keep their source for the logs.

use rust_decimal::Decimal;

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is an outage (a backing service down, overloaded or timing out: retrying later can
    /// succeed, 503) rather than a bug (a row that does not decode, a constraint no rule maps, a statement
    /// PostgreSQL refuses: retrying cannot help, 500). The one place that tells them apart.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Database(e) => is_database_outage(e),
            Error::Redis(e) => !matches!(
                e.kind(),
                redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Client
            ),
            Error::Queue(_) | Error::Unavailable(_) | Error::NotSold(_) | Error::OutcomeUnknown(_) => true,
            _ => false,
        }
    }

    /// What a client may read about a failure recorded for it (a task's `error`): a stable sentence naming
    /// the kind of failure, never the driver's text (which can hold hosts, queries or keys); the cause
    /// itself goes to the log.
    pub fn public_reason(&self) -> String {
        match self {
            Error::NotFound(m) | Error::Validation(m) | Error::Conflict(m) | Error::NotSold(m) => m.clone(),
            Error::Database(_) => "PostgreSQL was unavailable".into(),
            Error::Redis(_) | Error::Queue(_) => "Redis was unavailable".into(),
            Error::Unavailable(_) | Error::OutcomeUnknown(_) => "a backing service was unavailable".into(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Insufficient stock for product {product_id}. Available: {available}, Requested: {requested}")]
    InsufficientStock { product_id: i64, available: i32, requested: i32 },
    #[error("The order total changed: you were shown {shown}, the current total is {current}")]
    TotalChanged { shown: Decimal, current: Decimal, items: Vec<crate::domain::OrderItem> },
    #[error(
        "The price of product {product_id} changed: you were shown {shown}, the current price is {current}"
    )]
    UnitPriceChanged { product_id: i64, shown: Decimal, current: Decimal },
    #[error("{reason}; the current price of product {product_id} is {current_price}")]
    QuoteRejected { reason: String, product_id: i64, current_price: Decimal },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue error: {0}")]
    Queue(String),
    #[error("{0}")]
    Unavailable(String),
    /// An order refused before anything was sold (its time ran out, its rows stayed locked, every sale
    /// connection was busy): safe to show, and safe to retry.
    #[error("{0}")]
    NotSold(String),
    /// A sale whose commit was sent but whose outcome is not known (the connection broke during COMMIT):
    /// the client must retry with the same `Idempotency-Key`, which replays the real result.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A bug, passed on where the original error cannot be (one failed sale answers each of its orders):
    /// a 500, its text logged and never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// PostgreSQL errors that say the server or the way to it is down, overloaded or out of time.
fn is_database_outage(e: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match e {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed => true,
        E::Database(db) => db.code().is_some_and(|code| {
            // 08 connection exception, 53 insufficient resources, 57 operator intervention (statement
            // timeout 57014, shutdown 57P01-57P03), 40 transaction rollback (serialization failure,
            // deadlock: retryable), 55P03 lock not available (lock timeout).
            ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class)) || code == "55P03"
        }),
        _ => false,
    }
}
