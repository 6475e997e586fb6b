//! Integration tests: each test spawns the api (and the worker where it needs one) in-process on a random
//! port, against the real PostgreSQL and Redis, with its own database and its own Redis key prefix.

mod access;
mod edge;
mod flash_sale;
mod health;
mod helpers;
mod idempotency;
mod internal_errors;
mod limits;
mod market_events;
mod market_events_listeners;
mod observability;
mod openapi;
mod orders;
mod orders_lifecycle;
mod overload;
mod pricing;
mod processing;
mod products;
mod products_reads;
mod recalculation;
mod redis_outage;
mod robustness;
mod seen_price;
mod trace_context;
