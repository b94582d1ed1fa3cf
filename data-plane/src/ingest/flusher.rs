//! One org's flusher: takes admitted requests off the org's queue and closes
//! a batch as soon as nothing more is queued and an Arc write slot is free
//! (adaptive group commit: an idle org's write goes out at once, a busy
//! org's writes pile into the next batch while the slots are taken), or on
//! `batch_size` rows, `max_batch_bytes` (encoded values) or `linger` after its
//! first row; then hands it to a write task — at most
//! `arc.max_inflight_writes` at once (resized hot, see [`acquire_slot`]), so a slow Arc stops the
//! draining and the queue (then 429) takes the pressure.
//!
//! A request is never split: one that does not fit the open batch starts
//! the next one (alone it may exceed the limits). Requests for another
//! route (rebound org) start a new batch too.

use super::batcher::Shared;
use super::queue::{Batch, OrgState, Pending, Slot, finish_all, same_route};
use super::{Counters, IngestError};
use crate::arcdb::{ArcError, ArcTarget, Bytes, Compression, compress};
use memtrace_common::telemetry::traces;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

type Queue = mpsc::UnboundedReceiver<Pending>;

/// Batches above this many rows are encoded on a blocking thread.
const BLOCKING_ENCODE_ROWS: u64 = 500;

/// Most rows a batch's columns are sized for up front.
const MAX_PREALLOC_ROWS: u64 = 10_000;

/// Runs until the org's channel is closed and drained, the flusher retires
/// idle, or the shutdown grace runs out.
pub(crate) async fn run(shared: Arc<Shared>, org: Arc<OrgState>, mut rx: Queue) {
    let mut cancel = shared.cancel.subscribe();
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match next_first(&shared, &org, &mut rx, &mut cancel).await {
                Some(p) => p,
                None => break,
            },
        };
        let (ws, limits) = (shared.settings)(&org.org_id);
        org.resize(limits.max_queued_events);
        org.resize_slots(ws.max_inflight_writes);
        let linger_ms = u64::try_from(ws.linger.as_millis()).unwrap_or(u64::MAX);
        org.linger_ms.store(linger_ms, Ordering::Relaxed);
        let batch_size = ws.batch_size.max(1);
        let max_bytes = if ws.max_batch_bytes == 0 {
            u64::MAX
        } else {
            ws.max_batch_bytes
        };
        // the longest a batch stays open: the linger, and never longer than
        // the flush interval (the original's bound on how long a row waits)
        let open_for = if ws.flush_interval.is_zero() {
            ws.linger
        } else {
            ws.linger.min(ws.flush_interval)
        };
        let deadline = Instant::now() + open_for;
        // room for a full batch (bounded: a huge setting must not pre-allocate)
        let capacity = usize::try_from(batch_size.min(MAX_PREALLOC_ROWS)).unwrap_or(1);
        let mut batch = Batch::new(first, capacity);
        let mut cancelled = false;
        // Adaptive group commit: take everything already queued; then, if
        // Arc has a free write slot, send at once (lowest latency when
        // idle); while every slot is busy keep collecting, up to the size
        // caps or `linger` (the longest a batch stays open).
        let mut slot: Option<OwnedSemaphorePermit> = None;
        while batch.rows < batch_size && batch.bytes < max_bytes {
            let next = match rx.try_recv() {
                Ok(p) => p,
                Err(_) => {
                    if let Ok(p) = org.in_flight.clone().try_acquire_owned() {
                        slot = Some(p);
                        break;
                    }
                    tokio::select! {
                        biased;
                        _ = cancel.wait_for(|c| *c) => {
                            cancelled = true;
                            break;
                        }
                        p = rx.recv() => match p {
                            Some(p) => p,
                            // Closing: flush now rather than after linger.
                            None => break,
                        },
                        p = acquire_slot(&shared, &org) => {
                            slot = p.ok();
                            break;
                        }
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
            };
            let fits = batch.rows + next.rows() <= batch_size
                && batch.bytes.saturating_add(next.bytes()) <= max_bytes;
            if !fits || !same_route(&batch.route, &next.route) {
                carry = Some(next);
                break;
            }
            batch.add(next);
        }
        if cancelled {
            fail_rest(&shared, batch, carry.take(), &mut rx);
            break;
        }
        if org.closed.load(Ordering::Acquire) {
            let org_id = org.org_id.to_string();
            batch.finish(&shared.counters, Err(IngestError::OrgClosed { org_id }));
            continue;
        }
        let permit = match slot {
            Some(p) => Ok(p),
            None => tokio::select! {
                biased;
                _ = cancel.wait_for(|c| *c) => {
                    fail_rest(&shared, batch, carry.take(), &mut rx);
                    break;
                }
                p = acquire_slot(&shared, &org) => p,
            },
        };
        let Ok(permit) = permit else {
            batch.finish(&shared.counters, Err(IngestError::Abandoned));
            continue;
        };
        tracing::debug!(
            org_id = %org.org_id,
            rows = batch.rows,
            requests = batch.waiters.len(),
            "ingest batch closed"
        );
        tokio::spawn(write(
            shared.clone(),
            org.clone(),
            batch,
            (ws.retry_max_attempts, ws.compression),
            permit,
            cancel.clone(),
        ));
    }
}

/// The first request of the next batch; `None` when the flusher should
/// end (channel closed, idle and retired, or shutdown grace over).
async fn next_first(
    shared: &Shared,
    org: &Arc<OrgState>,
    rx: &mut Queue,
    cancel: &mut watch::Receiver<bool>,
) -> Option<Pending> {
    loop {
        let idle = Duration::from_millis(shared.idle_ms.load(Ordering::Relaxed));
        tokio::select! {
            biased;
            _ = cancel.wait_for(|c| *c) => {
                drain_fail(shared, rx);
                return None;
            }
            r = tokio::time::timeout(idle, rx.recv()) => match r {
                Ok(p) => return p,
                Err(_) if shared.retire(org, || !rx.is_empty()) => return None,
                // Writes in flight or a request just arrived: go on.
                Err(_) => {}
            },
        }
    }
}

/// Fails the open batch, the carried request and whatever is queued.
fn fail_rest(shared: &Shared, batch: Batch, carry: Option<Pending>, rx: &mut Queue) {
    batch.finish(&shared.counters, Err(IngestError::Unflushed));
    if let Some(p) = carry {
        finish_all(
            vec![p.waiter],
            &shared.counters,
            Err(IngestError::Unflushed),
        );
    }
    drain_fail(shared, rx);
}

/// Fails every queued request (only after the senders are gone, so this
/// ends).
fn drain_fail(shared: &Shared, rx: &mut Queue) {
    let mut waiters = Vec::new();
    while let Ok(p) = rx.try_recv() {
        waiters.push(p.waiter);
    }
    finish_all(waiters, &shared.counters, Err(IngestError::Unflushed));
}

/// Arc write attempts for the org's `arc.retry_max_attempts`, which counts
/// retries after the first attempt (0: a single attempt).
pub(crate) fn attempts(retries: u32) -> u32 {
    retries.saturating_add(1)
}

/// Encodes, sends (with `retries` and `compression`) and answers one
/// batch's waiters.
async fn write(
    shared: Arc<Shared>,
    org: Arc<OrgState>,
    mut batch: Batch,
    (retries, compression): (u32, Compression),
    in_flight: OwnedSemaphorePermit,
    mut cancel: watch::Receiver<bool>,
) {
    let _slot = Slot::new(org.clone(), in_flight);
    let started = Instant::now();
    let route = batch.route.clone();
    // Large batches are encoded and compressed off the async threads (a
    // few ms of CPU would stall every other request on that thread).
    let encoded = if batch.rows > BLOCKING_ENCODE_ROWS {
        let data = std::mem::take(&mut batch.data);
        let measurement = route.measurement.clone();
        tokio::task::spawn_blocking(move || compress(&data.encode(&measurement), compression))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("encode task failed: {e}"))))
    } else {
        compress(&batch.data.encode(&route.measurement), compression)
    };
    let body = match encoded {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::error!(org_id = %org.org_id, error = %e, "ingest batch encoding failed");
            batch.finish(&shared.counters, Err(IngestError::Encode(e.to_string())));
            return;
        }
    };
    let mut policy = shared.retry;
    policy.max_attempts = attempts(retries);
    let target = ArcTarget::from(&*route);
    let span = batch_span(&org.org_id, &batch);
    let send = shared
        .client
        .write_with_retry(&target, body, compression, &policy)
        .instrument(span);
    let result = tokio::select! {
        biased;
        _ = cancel.wait_for(|c| *c) => Err(IngestError::Unflushed),
        r = send => r.map_err(|e| refused_body(&org.org_id, compression, e)),
    };
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    org.last_write_ms.store(elapsed_ms, Ordering::Relaxed);
    let counters = &shared.counters;
    counters.batch_rows.observe(batch.rows as f64);
    counters
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(()) => {
            Counters::add(&counters.batches, 1);
            Counters::add(&counters.rows_written, batch.rows);
            tracing::debug!(org_id = %org.org_id, rows = batch.rows, elapsed_ms, "ingest batch stored");
        }
        Err(e) => {
            if matches!(e, IngestError::Arc(_)) {
                Counters::add(&counters.arc_errors, 1);
            }
            tracing::warn!(
                org_id = %org.org_id,
                rows = batch.rows,
                requests = batch.waiters.len(),
                elapsed_ms,
                error = %e,
                "ingest batch failed"
            );
        }
    }
    batch.finish(counters, result);
}

/// How often a write waiting for a slot re-reads `arc.max_inflight_writes`.
const SLOT_RECHECK: Duration = Duration::from_millis(200);

/// A write slot of `org`, waiting while all are busy; the org's
/// `arc.max_inflight_writes` is re-read every [`SLOT_RECHECK`] meanwhile,
/// so raising it lets a waiting batch start beside the running ones.
async fn acquire_slot(
    shared: &Shared,
    org: &OrgState,
) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
    loop {
        tokio::select! {
            p = org.in_flight.clone().acquire_owned() => return p,
            () = tokio::time::sleep(SLOT_RECHECK) => {
                org.resize_slots((shared.settings)(&org.org_id).0.max_inflight_writes);
            }
        }
    }
}

/// Links a batch span carries at most (one per request whose rows it holds).
const MAX_BATCH_LINKS: usize = 32;

/// The span of one batch's write (none while trace export is off): a child
/// of its first request's span, linked to the next ones'.
fn batch_span(org_id: &str, batch: &Batch) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: traces::TARGET,
        "ingest.batch",
        memtrace.org = org_id,
        memtrace.rows = batch.rows,
        memtrace.requests = batch.waiters.len(),
    );
    let mut waiters = batch.waiters.iter().map(|w| &w.span);
    if let Some(first) = waiters.next() {
        traces::set_parent(&span, first);
    }
    for other in waiters.take(MAX_BATCH_LINKS) {
        traces::add_link(&span, other);
    }
    span
}

/// Names `arc.write_compression` when Arc says a body is not MessagePack
/// (what a build that cannot read the compression answers).
fn refused_body(org_id: &str, compression: Compression, e: ArcError) -> IngestError {
    match e {
        ArcError::Rejected {
            status: 400,
            message,
        } if message.to_ascii_lowercase().contains("messagepack") => IngestError::BodyRefused {
            org_id: org_id.to_owned(),
            compression: compression.name(),
            message,
        },
        other => IngestError::Arc(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arcdb::RetryPolicy;
    use memtrace_common::settings::EffectiveSettings;

    #[test]
    fn the_retry_setting_counts_retries_after_the_first_attempt() {
        let default = EffectiveSettings::default().write(None).retry_max_attempts;
        assert_eq!(
            attempts(default),
            RetryPolicy::default().max_attempts,
            "the default 3 retries are the default policy's 4 attempts"
        );
        assert_eq!(attempts(0), 1, "no retries is one attempt");
    }
}
