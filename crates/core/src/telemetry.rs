//! Process set-up shared by every binary: logging with `RUST_LOG`-style filtering, human-readable or JSON
//! lines. `init` returns a guard the binary holds until it exits, so whatever telemetry needs flushing at
//! exit (the exporters the observability work adds) is flushed in one place.

use tracing_subscriber::{fmt, EnvFilter};

/// Held by `main` until the process ends.
#[must_use = "hold the guard until the process exits"]
pub struct TelemetryGuard {
    service_name: &'static str,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        tracing::debug!(service = self.service_name, "telemetry shut down");
    }
}

/// Sets up logging for `service_name` (e.g. `pricing-api`). Safe to call more than once (tests do): only
/// the first call installs the subscriber.
pub fn init(service_name: &'static str, filter: &str, format: &str) -> TelemetryGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    let _ = if format == "json" { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    tracing::debug!(service = service_name, version = env!("CARGO_PKG_VERSION"), "telemetry ready");
    TelemetryGuard { service_name }
}
