//! `pricing-listener`: applies market events until Ctrl-C or SIGTERM.

/// mimalloc instead of glibc's malloc: per-request allocations cost less and freed memory goes back to the
/// OS sooner (measured with `bench/run.sh`: allocator time and the api's peak RSS).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use pricing_core::{cli, shutdown, telemetry};
use pricing_listener::Listener;

/// The Pricing Engine's market-event listener: reads the event stream with a consumer group, applies each
/// event once, and serves /health and /metrics on LISTENER_ADDR.
#[derive(Debug, Parser)]
#[command(name = "pricing-listener", version)]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _cli: Cli = cli::parse();
    let settings = cli::settings();
    let _telemetry = telemetry::init("pricing-listener", &settings);
    // Listening for SIGTERM before the connections are made: a stop during start-up is a clean exit too.
    let shutdown = shutdown::signal();
    Listener::build(settings).await?.run_until_stopped(shutdown).await
}
