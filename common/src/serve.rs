//! Serving a plane's one port until it is told to stop, then draining
//! within a grace period — the loop the control plane and the workers
//! share. gRPC and HTTP/1 (probes, REST) are served on the same listener,
//! in plaintext (the default) or, with a certificate, TLS only: ALPN offers
//! h2 and HTTP/1.1 and the protocol is then recognised as in plaintext
//! ([`crate::tls`]; the pair is re-read while serving).

use crate::requests::{RequestMetrics, RequestMetricsLayer};
use crate::tls::ServerTls;
use crate::tls::server::RELOAD_INTERVAL;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

type Served = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// How one port is served.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Names the server in logs (`control plane`, `worker`).
    pub name: &'static str,
    /// How long in-flight requests may run on after the stop.
    pub grace: Duration,
    /// HTTP/2 keepalive pings: interval and timeout (`None`: none sent).
    pub http2_keepalive: Option<(Duration, Duration)>,
    /// TLS on the port (`None`: plaintext).
    pub tls: Option<ServerTls>,
    /// Where every request is counted and timed.
    pub metrics: Arc<RequestMetrics>,
}

/// Serves `routes` on `listener` until `stop` is cancelled, then stops
/// accepting connections and lets in-flight requests finish for up to
/// `settings.grace`. Returns early if the server fails. Either way `stop`
/// is cancelled on return, so everything else watching it stops too.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    stop: CancellationToken,
    settings: ServeSettings,
) -> Result<(), tonic::transport::Error> {
    let ServeSettings {
        name,
        grace,
        http2_keepalive,
        tls,
        metrics,
    } = settings;
    let signal = {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            tracing::info!(
                server = name,
                "stopping: no new connections, draining in-flight requests"
            );
        }
    };
    let mut builder = Server::builder().accept_http1(true);
    if let Some((interval, timeout)) = http2_keepalive {
        builder = builder
            .http2_keepalive_interval(Some(interval))
            .http2_keepalive_timeout(Some(timeout));
    }
    let router = builder
        .layer(RequestMetricsLayer(metrics))
        .add_routes(routes);
    // The reloader of a TLS port ends with the server, even if this future
    // is dropped (the accept task ends when the server drops its stream).
    let tls_tasks = CancellationToken::new();
    let _end_tls_tasks = tls_tasks.clone().drop_guard();
    let (mut server, accept): (Served, _) = match tls {
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            (
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal)),
                None,
            )
        }
        Some(tls) => {
            let (incoming, accept) = crate::tls::incoming::accept(listener, tls.config(), name);
            tokio::spawn(tls.watch(name, RELOAD_INTERVAL, tls_tasks.clone()));
            (
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal)),
                Some(accept),
            )
        }
    };
    let served = tokio::select! {
        biased;
        result = &mut server => result,
        () = stop.cancelled() => match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    server = name,
                    grace_seconds = grace.as_secs(),
                    "grace period expired; closing remaining requests"
                );
                Ok(())
            }
        },
    };
    if let Some(accept) = accept {
        // the listener is closed once this returns, as with plaintext
        accept.abort();
        let _ = accept.await;
    }
    stop.cancel();
    served
}

/// Cancels `stop` when `signal` fires (SIGTERM, or an injected trigger);
/// ends at once if `stop` is cancelled first.
pub async fn cancel_on(signal: crate::shutdown::ShutdownSignal, stop: CancellationToken) {
    tokio::select! {
        () = signal => stop.cancel(),
        () = stop.cancelled() => {}
    }
}

/// Waits for `task` for up to `deadline`; a task still running then is
/// aborted and logged as such (background loops end on their own once
/// their cancellation token fires; this bounds a stuck one).
pub async fn join_within(task: tokio::task::JoinHandle<()>, deadline: Duration, what: &str) {
    let abort = task.abort_handle();
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) if error.is_panic() => {
            tracing::error!(task = what, "background task panicked");
        }
        Ok(Err(_)) => {}
        Err(_) => {
            tracing::warn!(
                task = what,
                deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                "background task did not stop in time; aborted"
            );
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bound() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.expect("bind")
    }

    fn settings(grace: Duration) -> ServeSettings {
        ServeSettings {
            name: "test",
            grace,
            http2_keepalive: None,
            tls: None,
            metrics: Arc::default(),
        }
    }

    #[tokio::test]
    async fn stops_when_cancelled_and_refuses_new_connections() {
        let listener = bound().await;
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(
            Routes::default(),
            listener,
            stop.clone(),
            settings(Duration::from_secs(5)),
        ));
        // serving: a connection is accepted
        let mut accepted = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                accepted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(accepted, "the server never accepted a connection");
        stop.cancel();
        let served = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("serve returned after the stop")
            .expect("task");
        assert!(served.is_ok());
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn cancel_on_forwards_the_signal() {
        let (trigger, signal) = crate::shutdown::manual();
        let stop = CancellationToken::new();
        let task = tokio::spawn(cancel_on(signal, stop.clone()));
        assert!(!stop.is_cancelled());
        trigger.send(()).expect("send");
        task.await.expect("task");
        assert!(stop.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn join_within_aborts_a_stuck_task() {
        let task = tokio::spawn(std::future::pending::<()>());
        let abort = task.abort_handle();
        join_within(task, Duration::from_secs(1), "stuck").await;
        tokio::task::yield_now().await;
        assert!(abort.is_finished());
    }
}
