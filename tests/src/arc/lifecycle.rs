//! Taking the stand-in down and back: nothing listening on its port
//! (connections refused, open ones closed unanswered), the same port again,
//! and a restart that loses the unflushed buffer as Arc without its WAL
//! does.

use super::{ArcStandIn, server};
use std::time::{Duration, Instant};

impl ArcStandIn {
    /// Stops listening and closes every open connection, answering
    /// nothing more: connections to the port are refused (nothing listens
    /// on it) until [`ArcStandIn::come_back`]. The stored rows, buffers,
    /// tokens, faults and counters stay.
    pub fn go_down(&self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }

    /// Whether the stand-in is listening.
    pub fn is_up(&self) -> bool {
        self.task.lock().is_ok_and(|t| t.is_some())
    }

    /// Listens on the same port again after [`ArcStandIn::go_down`] (a
    /// no-op while up). Retries the bind for a second: the aborted accept
    /// loop releases the port asynchronously.
    pub async fn come_back(&self) -> anyhow::Result<()> {
        if self.is_up() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "stand-in port not free yet");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let task = tokio::spawn(server::serve(listener, server::router(self.shared.clone())));
        if let Ok(mut t) = self.task.lock() {
            *t = Some(task);
        }
        Ok(())
    }

    /// Arc restarting without its WAL: down (connections closed, new ones
    /// refused), every row not flushed yet lost ([`ArcStandIn::crash_unflushed`]),
    /// and up again on the same port after `down_for`. Returns the rows lost.
    pub async fn restart(&self, down_for: Duration) -> anyhow::Result<u64> {
        self.go_down();
        let lost = self.crash_unflushed()?;
        tokio::time::sleep(down_for).await;
        self.come_back().await?;
        Ok(lost)
    }
}
