//! Serving connections with hyper-util's server builder and a timer, so a slow or silent client cannot hold a
//! connection: a connection's first byte and a request's whole header must arrive within
//! `HTTP_HEADER_READ_TIMEOUT_MS`, a keep-alive connection waiting for its next request is closed after
//! `HTTP_KEEPALIVE_TIMEOUT_SECS` (hyper measures both with one timer, so the shorter applies), and at most
//! `HTTP_MAX_CONNECTIONS` are open at once: beyond, a new connection is accepted and closed at once, so a
//! flood costs the process nothing it cannot give back. On shutdown it stops accepting and lets each
//! connection finish the request in hand (hyper-util's graceful shutdown).

use std::{net::SocketAddr, sync::Arc};

use std::convert::Infallible;

use axum::{extract::ConnectInfo, extract::Request, response::Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use pricing_core::config::Edge;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use pricing_core::prometheus::names;

/// Accepts and serves connections until `shutdown`, then waits for those open to finish their requests.
pub async fn serve<S>(listener: TcpListener, app: S, edge: &Edge, shutdown: CancellationToken)
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(edge.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper runs its header timer from the moment a connection waits for a request head, the next one on
    // a keep-alive connection included: so it bounds both, with the shorter of the two settings.
    let head_wait = edge.header_read_timeout.min(edge.keepalive_timeout);
    builder.http1().timer(TokioTimer::new()).header_read_timeout(head_wait);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(names::HTTP_CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone().map_request(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let (builder, watcher, first_byte) = (builder.clone(), graceful.watcher(), edge.header_read_timeout);
        metrics::gauge!(names::HTTP_CONNECTIONS_OPEN).increment(1.0);
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte (the protocol is sniffed before it), so a
            // connection that sends nothing is closed here.
            let mut byte = [0u8; 1];
            if matches!(tokio::time::timeout(first_byte, stream.peek(&mut byte)).await, Ok(Ok(1))) {
                let io = TokioIo::new(stream);
                let connection = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(app));
                let _ = watcher.watch(connection.into_owned()).await;
            }
            metrics::gauge!(names::HTTP_CONNECTIONS_OPEN).decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The peer's address, as the connection reports it (before any proxy's `X-Forwarded-For`).
pub fn peer_of(request: &Request) -> Option<SocketAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}
