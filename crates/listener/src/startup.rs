//! Building the listener from settings and running its loops until shutdown: the stream consumer, the
//! channel bridge, the resend sweep, and the small HTTP server for `/health` and `/metrics`. Only this
//! module knows them all; each takes the shared `ListenerState` (`state.rs`).

use std::sync::Arc;

use pricing_core::{Backends, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{bridge, consumer::Consumer, http, resend};

/// Re-exported because the api's tests name the state by this path (`pricing_listener::ListenerState` is
/// the crate's own).
pub use crate::state::ListenerState;

pub struct Listener {
    state: Arc<ListenerState>,
    http: TcpListener,
}

impl Listener {
    /// Connects (PostgreSQL is migrated; Redis is connected lazily, so the listener starts, and reports
    /// itself unhealthy, while Redis is down) and binds `LISTENER_ADDR` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        pricing_core::prometheus::install();
        let Backends { db, cache, tasks, .. } =
            Backends::connect(&settings, 2, pricing_core::db::Commits::Durable).await?;
        let http = TcpListener::bind(settings.listener_addr).await?;
        let state = Arc::new(ListenerState::new(settings, db, cache, tasks));
        Ok(Self { state, http })
    }

    pub fn port(&self) -> u16 {
        self.http.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn state(&self) -> Arc<ListenerState> {
        self.state.clone()
    }

    /// Runs every loop until `shutdown` is cancelled; the consumer finishes the batch in hand first (for at
    /// most `SHUTDOWN_TIMEOUT_SECS`: a batch cut off is not acknowledged, so another listener claims it).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = &self.state.settings;
        tracing::info!(addr = %self.http.local_addr()?, batch = s.listener_batch_size, "pricing-listener started");
        let consumer = Consumer::new(self.state.clone())?;
        let tasks = [
            tokio::spawn(consumer.run(shutdown.clone())),
            tokio::spawn(bridge::run(self.state.clone(), shutdown.clone())),
            tokio::spawn(resend::run(self.state.clone(), shutdown.clone())),
            tokio::spawn(http::serve(self.http, self.state.clone(), shutdown.clone())),
        ];
        let grace = s.shutdown_timeout;
        let all = futures::future::join_all(tasks);
        if let Some(results) = pricing_core::shutdown::within_grace(&shutdown, grace, all).await {
            results.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        tracing::info!("pricing-listener stopped");
        Ok(())
    }
}
