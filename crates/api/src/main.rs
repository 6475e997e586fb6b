//! `pricing-api [serve]` runs the HTTP server; `pricing-api seed --products N [--stock S]` creates demo
//! products `P-100`, `P-101`, ... idempotently.

/// mimalloc instead of glibc's malloc: per-request allocations cost less and freed memory goes back to the
/// OS sooner (measured with `bench/run.sh`: allocator time and the api's peak RSS).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use pricing_api::Application;
use pricing_core::{cli, db, shutdown, telemetry, Settings};

/// The Pricing Engine's HTTP api: catalogue, quotes, orders, tasks, health and metrics.
#[derive(Debug, Parser)]
#[command(name = "pricing-api", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP api on API_ADDR (the default command).
    Serve,
    /// Create demo products P-100, P-101, ... (existing SKUs are left alone), then exit.
    Seed {
        /// How many demo products.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
        products: i64,
        /// The stock each one starts with.
        #[arg(long, default_value_t = 10_000, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(0..))]
        stock: i32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = cli::parse();
    let settings = Settings::from_env()?;
    let _telemetry = telemetry::init("pricing-api", &settings.log_filter, &settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Listening for SIGTERM before the connections are made: a stop during start-up is a clean exit.
            let shutdown = shutdown::signal();
            Application::build(settings).await?.run_until_stopped(shutdown).await
        }
        Command::Seed { products, stock } => {
            let pool = db::connect(&settings, db::Commits::Durable).await?;
            db::migrate(&pool).await?;
            let created = db::products::seed(&pool, products, stock).await?;
            tracing::info!(created, requested = products, "seeded demo products (existing SKUs left alone)");
            Ok(())
        }
    }
}
