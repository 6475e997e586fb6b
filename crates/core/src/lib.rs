//! Everything the api, the worker and the tests share: configuration, domain types, the PostgreSQL
//! repositories, the Redis cache and its keys, job definitions, the catalogue and order use cases, and process set-up (telemetry, shutdown). No HTTP lives here.

#[macro_use]
mod text_enum;

pub mod backends;
pub mod cache;
pub mod catalogue;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod health;
pub mod jobs;
pub mod lock;
pub mod money;
pub mod orders;
pub mod pricing;
pub mod prometheus;
pub mod retry;
pub mod shutdown;
pub mod telemetry;

pub use backends::Backends;
pub use config::Settings;
pub use error::{Error, Result};
