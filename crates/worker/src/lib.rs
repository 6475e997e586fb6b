//! The background worker: processes orders and bulk price recalculations from the Redis queues (apalis),
//! and sweeps PostgreSQL for orders and tasks the queues lost. `Worker::build` + `run_until_stopped` run it, from `main` or in-process from tests.

pub mod http;
pub mod orders;
pub mod recalculate;
pub mod startup;
pub mod sweeper;

pub use startup::Worker;
