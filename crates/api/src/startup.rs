//! Building the api from settings: connections, migrations, the router, and serving until shutdown.

use std::sync::Arc;

use pricing_core::{
    cache::Cache,
    catalogue::Catalogue,
    events::EventStream,
    jobs::{OrderQueue, TaskQueue},
    orders::OrderService,
    pricing::PricingService,
    Backends, Settings,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::util::MapRequestLayer;
use tower::Layer;

use crate::{
    admission::Admission,
    auth::{Identity, TokenVerifier},
};

/// What every handler can reach. Handlers take it by value (axum clones the state for every request), so
/// it is one `Arc`: cloning the fields themselves (the queues carry their configuration's strings) cost
/// allocations on every request.
#[derive(Clone)]
pub struct ApiContext(Arc<Context>);

impl std::ops::Deref for ApiContext {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.0
    }
}

pub struct Context {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub cache: Cache,
    pub order_queue: OrderQueue,
    pub task_queue: TaskQueue,
    pub events: EventStream,
    pub pricing: Arc<PricingService>,
    pub orders: Arc<OrderService>,
    pub catalogue: Arc<Catalogue>,
    /// The admin token and the shoppers' token keys (`auth`).
    pub identity: Identity,
    /// Load shedding and rate limits (`admission`).
    pub admission: Admission,
}

pub struct Application {
    listener: TcpListener,
    context: ApiContext,
}

impl Application {
    /// Checks the secrets (a missing one stops the api, unless `APP_ENV=development`), connects to
    /// PostgreSQL (creating the database if needed, then migrating) and Redis, and binds the listening
    /// socket (`API_ADDR`; port 0 picks a free one, as the tests do).
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        settings.secrets.require(settings.app_env)?;
        let identity = Identity {
            admin_token: settings.secrets.admin_token.clone().expect("required above"),
            tokens: TokenVerifier::new(&settings.secrets)?,
        };
        pricing_core::prometheus::install();
        let Backends { db, cache, orders: order_queue, tasks: task_queue } =
            Backends::connect(&settings, 4, pricing_core::db::Commits::Durable).await?;
        let listener = TcpListener::bind(settings.api_addr).await?;
        let settings_edge = settings.edge.clone();
        let settings = Arc::new(settings);
        let pricing = PricingService::new(db.clone(), cache.clone(), settings.clone())?;
        let orders = OrderService::new(
            db.clone(),
            cache.clone(),
            pricing.clone(),
            order_queue.clone(),
            settings.clone(),
        );
        let catalogue = Catalogue::new(db.clone(), cache.clone(), pricing.clone(), settings.clone());
        let events = EventStream::new(cache.clone(), settings.market_events_max_len);
        let context = ApiContext(Arc::new(Context {
            settings,
            db,
            cache,
            order_queue,
            task_queue,
            events,
            pricing,
            orders,
            catalogue,
            identity,
            admission: Admission::new(&settings_edge),
        }));
        Ok(Self { listener, context })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn context(&self) -> &ApiContext {
        &self.context
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and finishes the requests in flight, for
    /// at most `SHUTDOWN_TIMEOUT_SECS`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.listener.local_addr()?, "pricing-api listening");
        let grace = self.context.settings.shutdown_timeout;
        let edge = self.context.settings.edge.clone();
        let forget = {
            let (context, shutdown) = (self.context.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
                while shutdown.run_until_cancelled(every.tick()).await.is_some() {
                    context.admission.forget_idle_clients();
                }
            })
        };
        // Trailing slashes are trimmed before routing, so `/api/v1/products/` is `/api/v1/products`.
        let app = MapRequestLayer::new(crate::routes::trim_trailing_slash)
            .layer(crate::routes::router(self.context));
        let server = crate::server::serve(self.listener, app, &edge, shutdown.clone());
        pricing_core::shutdown::within_grace(&shutdown, grace, server).await;
        forget.abort();
        tracing::info!("pricing-api stopped");
        Ok(())
    }
}
