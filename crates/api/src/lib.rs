//! The HTTP api: catalogue, orders, health. It answers from PostgreSQL and the Redis cache and never does
//! slow work inline: order processing is put on a queue for `pricing-worker`.

pub mod admission;
pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod request_trace;
pub mod routes;
pub mod server;
pub mod startup;

pub use error::ApiError;
pub use startup::{ApiContext, Application};
