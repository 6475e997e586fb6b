//! The one shutdown signal every binary uses: Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send)
//! cancels a token that the process's `run_until_stopped` watches. Tests cancel the token themselves.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first Ctrl-C or SIGTERM. The SIGTERM handler is in place when this returns, so
/// call it first thing: a stop that arrives during start-up is then a clean exit, not a kill.
pub fn signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    tokio::spawn(async move {
        let term = async {
            match term {
                Ok(mut s) => {
                    s.recv().await;
                }
                // Without a SIGTERM handler, Ctrl-C still works.
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("shutdown requested: finishing the work in hand");
        cancel.cancel();
    });
    token
}

/// Runs `work` (a process's loops, which end on their own after `shutdown`) but gives up on it once
/// `shutdown` has been cancelled for `grace` (`SHUTDOWN_TIMEOUT_SECS`), so a stuck step cannot keep a stopping
/// process alive. Returns `work`'s output, or `None` when it was cut off.
pub async fn within_grace<T>(
    shutdown: &CancellationToken,
    grace: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        done = work => Some(done),
        _ = deadline => {
            tracing::warn!(
                timeout_secs = grace.as_secs_f64(),
                "work still in hand after SHUTDOWN_TIMEOUT_SECS: exiting without it (it is picked up again from PostgreSQL)"
            );
            None
        }
    }
}
