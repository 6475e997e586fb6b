//! `pricing-worker`: processes orders and sweeps for lost ones until Ctrl-C or SIGTERM.

use pricing_core::{telemetry, Settings};
use pricing_worker::Worker;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(&settings.log_filter, &settings.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            tracing::info!("shutting down: finishing the orders in flight");
            shutdown.cancel();
        }
    });
    Worker::build(settings).await?.run_until_stopped(shutdown).await
}
