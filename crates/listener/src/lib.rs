//! `pricing-listener`: market events from the Redis stream `{prefix}:market_events`, read with a consumer
//! group and applied exactly once (PostgreSQL records each `event_id`). Several listeners share the work;
//! one that dies leaves its entries pending for another to claim. It also moves events that other services
//! only `PUBLISH` on the channel into the stream, re-appends events Redis lost, and serves `/health` and
//! `/metrics` on `LISTENER_ADDR`.

pub mod apply;
pub mod bridge;
pub mod consumer;
pub mod http;
pub mod resend;
pub mod startup;
pub mod state;

pub use startup::Listener;
pub use state::ListenerState;
