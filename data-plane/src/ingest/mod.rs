//! Per-tenant group commit into Arc: a write is acknowledged only after Arc
//! answered 2xx for the batch holding it: nothing acknowledged is ever
//! lost to a worker crash, since nothing is acknowledged from memory.
//!
//! - [`Batcher::submit`] admits a request's rows into its org's bounded
//!   queue all at once (a semaphore of `max_queued_events` permits per org)
//!   or refuses at once with [`IngestError::QueueFull`] (→ 429 +
//!   `Retry-After` / `RESOURCE_EXHAUSTED`); nothing is dropped, nothing grows
//!   without bound. It returns an [`Ack`], a future that resolves when the
//!   batch holding those rows was stored (or failed).
//! - One flusher task per active org ([`flusher`]) closes a batch on
//!   `batch_size` rows, on `max_batch_bytes` (encoded-size estimate) or
//!   `linger` after its first row, with settings read afresh at every batch
//!   start; at most `arc.max_inflight_writes` Arc writes per org run at once, so a
//!   slow Arc backs pressure up into the queue, not into memory. Idle
//!   flushers exit; permits are released when a batch completes.
//! - [`Batcher::close`] stops admission, flushes what is queued, waits up to
//!   a grace period and fails (never silently loses) what is left.
//!
//! ```text
//! let batcher = Batcher::new(client, move |org| (eff.write(Some(org)), eff.limits(Some(org))), RetryPolicy::default());
//! let ack = batcher.submit("org_a", route, rows)?;   // QueueFull → 429
//! ack.await?;                                        // stored in Arc
//! let unflushed = batcher.close(Duration::from_secs(10)).await;
//! ```

mod batcher;
mod flusher;
mod prom;
mod queue;

pub use batcher::{Batcher, SettingsFn};
pub use prom::IngestGauges;
pub use queue::DEFAULT_IN_FLIGHT;

use crate::arcdb::ArcError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// Everything that can go wrong on the ingest path, at admission
/// ([`SubmitError`]) or while waiting for Arc ([`WriteError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The org's queue has no room for these rows now: retry later.
    #[error("write queue of org {org_id} is full, retry after {retry_after:?}")]
    QueueFull {
        org_id: String,
        retry_after: Duration,
    },
    /// More rows in one request than the org's whole queue holds.
    #[error("request of {rows} rows exceeds the queue capacity of {capacity}")]
    TooLarge { rows: u64, capacity: u64 },
    /// The batcher is closing and takes no more writes.
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// The batch was not written before the shutdown grace ran out (it may
    /// or may not have reached Arc; a retry with the same ids is collapsed).
    #[error("the worker shut down before the write was confirmed by arc")]
    Unflushed,
    /// The org's route was removed (org deleted or unbound) while queued.
    #[error("org {org_id} no longer has an arc route")]
    OrgClosed { org_id: String },
    /// Arc refused the batch, or failed after the retries.
    #[error(transparent)]
    Arc(#[from] ArcError),
    /// Arc answered that the body is not valid MessagePack: the usual cause
    /// is an Arc build that cannot decompress the org's
    /// `arc.write_compression` (builds before zstd bodies refuse them).
    #[error(
        "arc refused the {compression}-compressed write body ({message}); if this arc build \
         does not accept {compression} bodies, set arc.write_compression for the org \
         (e.g. 'memtracectl config set arc.write_compression gzip --org {org_id}')"
    )]
    BodyRefused {
        org_id: String,
        compression: &'static str,
        message: String,
    },
    /// The batch body could not be built.
    #[error("write batch could not be encoded: {0}")]
    Encode(String),
    /// The batch's task ended without answering (a bug, reported rather
    /// than silently acknowledged).
    #[error("the write was abandoned without an answer")]
    Abandoned,
}

/// What [`Batcher::submit`] can refuse with.
pub type SubmitError = IngestError;
/// What an [`Ack`] can resolve to.
pub type WriteError = IngestError;

/// Resolves once Arc stored the batch holding the submitted rows (`Ok`) or
/// the batch failed (the same error for every request in it).
#[derive(Debug)]
#[must_use = "an ack tells whether arc stored the rows"]
pub struct Ack {
    rx: oneshot::Receiver<Result<(), WriteError>>,
}

impl Ack {
    pub(crate) fn new(rx: oneshot::Receiver<Result<(), WriteError>>) -> Self {
        Self { rx }
    }

    /// An ack that is already resolved (empty requests).
    pub(crate) fn ready(result: Result<(), WriteError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Self { rx }
    }
}

impl Future for Ack {
    type Output = Result<(), WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(IngestError::Abandoned)))
    }
}

/// Cheap counters of one [`Batcher`], and the shape of its batches.
#[derive(Debug)]
pub(crate) struct Counters {
    pub batches: AtomicU64,
    pub rows_written: AtomicU64,
    pub arc_errors: AtomicU64,
    pub rows_failed: AtomicU64,
    pub rejected_full: AtomicU64,
    pub rows_unflushed: AtomicU64,
    /// Rows per batch sent to Arc (one observation per batch, not per row).
    pub batch_rows: prometheus_client::metrics::histogram::Histogram,
    /// A batch's time from its encoding to Arc's last answer (retries
    /// included): what its writers wait for beyond the linger.
    pub batch_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        Self {
            batches: AtomicU64::default(),
            rows_written: AtomicU64::default(),
            arc_errors: AtomicU64::default(),
            rows_failed: AtomicU64::default(),
            rejected_full: AtomicU64::default(),
            rows_unflushed: AtomicU64::default(),
            // 1 … 65,536 rows
            batch_rows: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            // 1 ms … ~33 s
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self, queued_rows: u64) -> IngestMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestMetrics {
            batches: get(&self.batches),
            rows_written: get(&self.rows_written),
            arc_errors: get(&self.arc_errors),
            rows_failed: get(&self.rows_failed),
            rejected_full: get(&self.rejected_full),
            rows_unflushed: get(&self.rows_unflushed),
            queued_rows,
        }
    }
}

/// A snapshot of a [`Batcher`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestMetrics {
    /// Batches Arc stored (2xx).
    pub batches: u64,
    /// Rows in those batches.
    pub rows_written: u64,
    /// Batches that failed at Arc (after retries).
    pub arc_errors: u64,
    /// Rows whose batch failed (Arc error, org closed, shutdown).
    pub rows_failed: u64,
    /// Submits refused with [`IngestError::QueueFull`].
    pub rejected_full: u64,
    /// Rows failed because the shutdown grace ran out.
    pub rows_unflushed: u64,
    /// Rows admitted and not yet answered, over every org.
    pub queued_rows: u64,
}
