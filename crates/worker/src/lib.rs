//! The background worker: processes orders from the Redis queue (apalis) and sweeps PostgreSQL for orders
//! the queue lost. `Worker::build` + `run_until_stopped` run it, from `main` or in-process from tests.

pub mod orders;
pub mod startup;
pub mod sweeper;

pub use startup::Worker;
