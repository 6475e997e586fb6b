//! `pricing-api serve` (the default) runs the HTTP server; `pricing-api seed --products N [--stock S]`
//! creates demo products `P-100`, `P-101`, ... idempotently.

use anyhow::Context;
use pricing_api::Application;
use pricing_core::{db, telemetry, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(&settings.log_filter, &settings.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => {
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Some("seed") => {
            let products = flag(&args, "--products")?.unwrap_or(1000);
            let stock = flag(&args, "--stock")?.unwrap_or(10_000);
            let pool = db::connect(&settings).await?;
            db::migrate(&pool).await?;
            let created = db::products::seed(&pool, products, i32::try_from(stock)?).await?;
            tracing::info!(created, requested = products, "seeded demo products (existing SKUs left alone)");
            Ok(())
        }
        Some(other) => {
            anyhow::bail!("unknown command {other:?}; use `serve` or `seed --products N [--stock S]`")
        }
    }
}

fn flag(args: &[String], name: &str) -> anyhow::Result<Option<i64>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let value = args.get(i + 1).with_context(|| format!("{name} needs a value"))?;
            Ok(Some(value.parse().with_context(|| format!("{name} must be an integer"))?))
        }
    }
}

/// Ctrl-C or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
