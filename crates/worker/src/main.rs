//! `pricing-worker`: processes orders and recalculations, and sweeps for lost ones, until Ctrl-C or SIGTERM.

/// mimalloc instead of glibc's malloc: per-request allocations cost less and freed memory goes back to the
/// OS sooner (measured with `bench/run.sh`: allocator time and the api's peak RSS).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use pricing_core::{cli, shutdown, telemetry};
use pricing_worker::Worker;

/// The Pricing Engine's background worker: order processing, bulk price recalculations, and the sweeper
/// that re-enqueues from PostgreSQL what a queue lost.
#[derive(Debug, Parser)]
#[command(name = "pricing-worker", version)]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _cli: Cli = cli::parse();
    let settings = cli::settings();
    let _telemetry = telemetry::init("pricing-worker", &settings);
    // Listening for SIGTERM before the connections are made: a stop during start-up is a clean exit too.
    let shutdown = shutdown::signal();
    Worker::build(settings).await?.run_until_stopped(shutdown).await
}
