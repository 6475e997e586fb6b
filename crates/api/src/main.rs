//! `pricing-api [serve]` runs the HTTP server; `pricing-api seed --products N [--stock S]` creates demo
//! products `P-100`, `P-101`, ... idempotently; `pricing-api token --sub ID [--member]` prints a shopper's
//! JWT signed with the configured `JWT_HS256_SECRET`, for trying the api.

/// mimalloc instead of glibc's malloc: per-request allocations cost less and freed memory goes back to the
/// OS sooner (measured with `bench/run.sh`: allocator time and the api's peak RSS).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use pricing_api::{
    auth::{jwt::sign_hs256, ShopperClaims},
    Application,
};
use pricing_core::{cli, db, shutdown, telemetry, Settings};
use secrecy::ExposeSecret;

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
    /// Print a shopper's JWT signed with JWT_HS256_SECRET (or JWT_HS256_SECRET_FILE), then exit.
    Token {
        /// The shopper's id (the `sub` claim).
        #[arg(long)]
        sub: String,
        /// Grant the member price (the `member` claim).
        #[arg(long)]
        member: bool,
        /// The shopper's default ship-to region (the `location` claim).
        #[arg(long)]
        location: Option<String>,
        /// Grant the admin operations (`roles: ["admin"]`).
        #[arg(long)]
        admin: bool,
        /// How long the token is valid.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
        ttl_secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = cli::parse();
    let settings = cli::settings();
    if let Some(Command::Token { sub, member, location, admin, ttl_secs }) = cli.command {
        // Only the token on standard output, so `$(pricing-api token ...)` captures it.
        let secret = settings.secrets.jwt_hs256_secret.as_ref().ok_or_else(|| {
            anyhow::anyhow!("JWT_HS256_SECRET (or JWT_HS256_SECRET_FILE) is not set: `token` signs with it")
        })?;
        let claims = ShopperClaims {
            sub,
            exp: jsonwebtoken::get_current_timestamp() + ttl_secs,
            nbf: None,
            iss: settings.secrets.jwt_issuer.clone(),
            aud: settings.secrets.jwt_audience.clone(),
            member,
            location,
            roles: if admin { vec!["admin".into()] } else { vec![] },
        };
        println!("{}", sign_hs256(secret.expose_secret(), &claims)?);
        return Ok(());
    }
    let _telemetry = telemetry::init("pricing-api", &settings);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Listening for SIGTERM before the connections are made: a stop during start-up is a clean exit.
            let shutdown = shutdown::signal();
            Application::build(settings).await?.run_until_stopped(shutdown).await
        }
        Command::Seed { products, stock } => {
            // A bulk insert of millions of rows may take longer than any request's statement.
            let settings = Settings { database_statement_timeout: std::time::Duration::ZERO, ..settings };
            let pool = db::connect(&settings, db::Commits::Durable).await?;
            db::migrate(&pool).await?;
            let created = db::products::seed(&pool, products, stock).await?;
            tracing::info!(created, requested = products, "seeded demo products (existing SKUs left alone)");
            Ok(())
        }
        Command::Token { .. } => unreachable!("handled before telemetry starts"),
    }
}
