//! The background worker: processes orders and price recalculations from the Redis queues (apalis), sweeps
//! PostgreSQL for orders and tasks the queues lost, deletes rows past their retention, and serves `/health`
//! and `/metrics` on `WORKER_ADDR`. `Worker::build` + `run_until_stopped` run it, from `main` or in-process
//! from tests.

pub mod http;
mod idle_poll;
pub mod orders;
pub mod recalculate;
pub mod retention;
pub mod startup;
pub mod sweeper;

pub use startup::Worker;
