//! Everything the api, the worker and the tests share: configuration, domain types, the PostgreSQL
//! repositories, the Redis cache and its keys, job definitions and telemetry. No HTTP lives here.

pub mod backends;
pub mod cache;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod lock;
pub mod money;
pub mod pricing;
pub mod telemetry;

pub use backends::Backends;
pub use config::Settings;
pub use error::{Error, Result};
