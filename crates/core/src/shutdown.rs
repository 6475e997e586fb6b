//! The one shutdown signal every binary uses: Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send)
//! cancels a token that the process's `run_until_stopped` watches. Tests cancel the token themselves.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first Ctrl-C or SIGTERM.
pub fn signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
