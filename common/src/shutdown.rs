//! The shutdown signal: SIGTERM (what Kubernetes sends) or SIGINT. Servers
//! take the signal as an injected future so tests can trigger it.

use std::future::Future;
use std::pin::Pin;

/// An injected shutdown trigger.
pub type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Resolves on the first SIGTERM or SIGINT.
pub fn os_signal() -> ShutdownSignal {
    Box::pin(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                    }
                }
                _ => {
                    tracing::warn!("cannot install signal handlers; falling back to ctrl-c");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    })
}

/// A trigger/signal pair for tests and embedders.
pub fn manual() -> (tokio::sync::oneshot::Sender<()>, ShutdownSignal) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (
        tx,
        Box::pin(async move {
            let _ = rx.await;
        }),
    )
}
