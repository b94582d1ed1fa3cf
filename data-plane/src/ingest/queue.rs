//! One org's queue: the admission semaphore, the queued requests
//! ([`Pending`]) with their waiters, and the batch being assembled.

use super::{Counters, IngestError, WriteError};
use crate::arcdb::MemoryBatch;
use crate::snapshot::ArcRoute;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Arc writes of one org in flight at once when its setting is unknown
/// (`arc.max_inflight_writes` defaults to the same).
pub const DEFAULT_IN_FLIGHT: u32 = 2;

/// Queue capacity used when `max_queued_events` is 0 (never unbounded).
pub(crate) const DEFAULT_MAX_QUEUED: u64 = 10_000;

/// The largest semaphore we ask tokio for.
const MAX_PERMITS: u64 = 1 << 28;

/// State of one active org shared by `submit` and its flusher.
#[derive(Debug)]
pub(crate) struct OrgState {
    pub org_id: Arc<str>,
    /// One permit per queued or in-flight row.
    pub permits: Arc<Semaphore>,
    /// Current size of `permits`.
    pub capacity: AtomicU64,
    /// One permit per Arc write the org may have in flight.
    pub in_flight: Arc<Semaphore>,
    /// The org's `arc.max_inflight_writes` in force.
    pub slots: AtomicU64,
    /// Slots to forget as running writes finish (a lowered limit): the
    /// semaphore holds `slots + slot_debt` permits.
    pub slot_debt: AtomicU64,
    /// Set when the org's route is removed: queued rows are failed.
    pub closed: AtomicBool,
    /// Duration of the last Arc write, for `Retry-After`.
    pub last_write_ms: AtomicU64,
    /// The last linger seen, for `Retry-After`.
    pub linger_ms: AtomicU64,
}

impl OrgState {
    pub fn new(org_id: &str, max_queued: u64) -> Self {
        let capacity = effective_capacity(max_queued);
        Self {
            org_id: Arc::from(org_id),
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity: AtomicU64::new(capacity),
            in_flight: Arc::new(Semaphore::new(DEFAULT_IN_FLIGHT as usize)),
            slots: AtomicU64::new(u64::from(DEFAULT_IN_FLIGHT)),
            slot_debt: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            last_write_ms: AtomicU64::new(0),
            linger_ms: AtomicU64::new(0),
        }
    }

    /// Applies a new `max_queued_events`: growth at once, shrinking as far
    /// as free permits allow (the rest as rows complete, next time).
    pub fn resize(&self, max_queued: u64) {
        let want = effective_capacity(max_queued);
        let have = self.capacity.load(Ordering::Acquire);
        if want > have {
            self.permits.add_permits((want - have) as usize);
            self.capacity.store(want, Ordering::Release);
        } else if want < have {
            let forgotten = self.permits.forget_permits((have - want) as usize) as u64;
            self.capacity.store(have - forgotten, Ordering::Release);
        }
    }

    /// Applies a new `arc.max_inflight_writes` (at least 1): more slots at
    /// once (a waiting write starts), fewer at once as far as free slots
    /// allow and otherwise as running writes finish (their slots are
    /// forgotten instead of freed, see [`Slot`]), so no new write starts
    /// until fewer than the new limit run.
    pub fn resize_slots(&self, max_inflight: u32) {
        let want = u64::from(max_inflight.clamp(1, 64));
        let have = self.slots.swap(want, Ordering::AcqRel);
        if want > have {
            // cancel what is still owed before adding slots
            let mut grow = want - have;
            let mut debt = self.slot_debt.load(Ordering::Acquire);
            while grow > 0 && debt > 0 {
                let pay = debt.min(grow);
                match self.slot_debt.compare_exchange(
                    debt,
                    debt - pay,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        grow -= pay;
                        debt -= pay;
                    }
                    Err(now) => debt = now,
                }
            }
            if grow > 0 {
                self.in_flight.add_permits(grow as usize);
            }
        } else if want < have {
            let cut = have - want;
            let forgotten = self.in_flight.forget_permits(cut as usize) as u64;
            self.slot_debt.fetch_add(cut - forgotten, Ordering::AcqRel);
        }
    }

    /// Gives a finished write's slot back, or forgets it while a lowered
    /// limit is still owed slots.
    fn release_slot(&self, permit: OwnedSemaphorePermit) {
        let mut debt = self.slot_debt.load(Ordering::Acquire);
        while debt > 0 {
            match self.slot_debt.compare_exchange(
                debt,
                debt - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    permit.forget();
                    return;
                }
                Err(now) => debt = now,
            }
        }
        drop(permit);
    }

    /// Whether an Arc write of the org is in flight (the semaphore holds
    /// `slots` plus what is owed).
    pub fn writing(&self) -> bool {
        let total = self.slots.load(Ordering::Acquire) + self.slot_debt.load(Ordering::Acquire);
        (self.in_flight.available_permits() as u64) < total
    }

    /// Rows queued or in flight.
    pub fn depth(&self) -> u64 {
        let cap = self.capacity.load(Ordering::Acquire);
        cap.saturating_sub(self.permits.available_permits() as u64)
    }
}

/// A running Arc write's slot: given back (or forgotten, see
/// [`OrgState::resize_slots`]) when the write ends, however it ends.
pub(crate) struct Slot {
    org: Arc<OrgState>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    pub fn new(org: Arc<OrgState>, permit: OwnedSemaphorePermit) -> Self {
        Self {
            org,
            permit: Some(permit),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.org.release_slot(permit);
        }
    }
}

fn effective_capacity(max_queued: u64) -> u64 {
    let n = if max_queued == 0 {
        DEFAULT_MAX_QUEUED
    } else {
        max_queued
    };
    n.min(MAX_PERMITS)
}

/// The submitter's side of one request: answered exactly once; dropping
/// it unanswered resolves the [`Ack`](super::Ack) to `Abandoned`.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub rows: u64,
    tx: Option<oneshot::Sender<Result<(), WriteError>>>,
    _permit: OwnedSemaphorePermit,
    pending_rows: Arc<AtomicU64>,
    /// The submitting request's span (none while trace export is off): its
    /// batch's span is its child or links to it.
    pub span: tracing::Span,
}

impl Waiter {
    pub fn new(
        rows: u64,
        tx: oneshot::Sender<Result<(), WriteError>>,
        permit: OwnedSemaphorePermit,
        pending_rows: Arc<AtomicU64>,
    ) -> Self {
        pending_rows.fetch_add(rows, Ordering::AcqRel);
        Self {
            rows,
            tx: Some(tx),
            _permit: permit,
            pending_rows,
            span: if memtrace_common::telemetry::traces::enabled() {
                tracing::Span::current()
            } else {
                tracing::Span::none()
            },
        }
    }

    /// Answers the submitter (who may have gone away: that is fine).
    pub fn finish(mut self, result: Result<(), WriteError>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(result);
        }
        // `self` drops here: permits back, depth down.
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.pending_rows.fetch_sub(self.rows, Ordering::AcqRel);
    }
}

/// One admitted request on its way to the flusher: its rows, already
/// encoded as columns.
#[derive(Debug)]
pub(crate) struct Pending {
    pub route: Arc<ArcRoute>,
    pub data: MemoryBatch,
    pub waiter: Waiter,
}

impl Pending {
    pub fn rows(&self) -> u64 {
        self.data.len() as u64
    }

    /// Encoded bytes of the rows' values.
    pub fn bytes(&self) -> u64 {
        self.data.payload_len() as u64
    }
}

/// True when two routes write to the same place with the same key.
pub(crate) fn same_route(a: &Arc<ArcRoute>, b: &Arc<ArcRoute>) -> bool {
    Arc::ptr_eq(a, b)
        || (a.url == b.url
            && a.database == b.database
            && a.measurement == b.measurement
            && a.binding_id == b.binding_id
            && a.api_key.as_deref() == b.api_key.as_deref())
}

/// A batch being assembled for one route.
#[derive(Debug)]
pub(crate) struct Batch {
    pub route: Arc<ArcRoute>,
    pub data: MemoryBatch,
    /// Rows and encoded bytes of `data`, kept apart because `data` is moved
    /// out to be encoded while the counts are still reported.
    pub rows: u64,
    pub bytes: u64,
    pub waiters: Vec<Waiter>,
}

impl Batch {
    /// A batch starting with `first`, with room for `capacity` rows of
    /// `first`'s average size (so the columns rarely grow while it fills).
    pub fn new(first: Pending, capacity: usize) -> Self {
        let (rows, bytes) = (first.rows(), first.bytes());
        let mut data = first.data;
        data.reserve_rows(capacity.saturating_sub(data.len()));
        Self {
            route: first.route,
            rows,
            bytes,
            data,
            waiters: vec![first.waiter],
        }
    }

    pub fn add(&mut self, p: Pending) {
        self.rows += p.rows();
        self.bytes += p.bytes();
        self.data.append(p.data);
        self.waiters.push(p.waiter);
    }

    /// Answers every waiter with `result`; failures are counted.
    pub fn finish(self, counters: &Counters, result: Result<(), WriteError>) {
        finish_all(self.waiters, counters, result);
    }
}

/// Answers `waiters` with `result` (failures counted in `rows_failed`,
/// shutdown failures in `rows_unflushed` too).
pub(crate) fn finish_all(
    waiters: Vec<Waiter>,
    counters: &Counters,
    result: Result<(), WriteError>,
) {
    if let Err(e) = &result {
        let rows: u64 = waiters.iter().map(|w| w.rows).sum();
        Counters::add(&counters.rows_failed, rows);
        if matches!(e, IngestError::Unflushed) {
            Counters::add(&counters.rows_unflushed, rows);
        }
    }
    for w in waiters {
        w.finish(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_the_slots_takes_effect_as_running_writes_finish() {
        let org = Arc::new(OrgState::new("o", 10));
        org.resize_slots(4);
        let running: Vec<Slot> = (0..4)
            .map(|_| {
                Slot::new(
                    org.clone(),
                    org.in_flight.clone().try_acquire_owned().unwrap(),
                )
            })
            .collect();
        assert!(org.writing());
        org.resize_slots(1);
        let mut running = running.into_iter();
        for _ in 0..3 {
            drop(running.next());
            assert_eq!(org.in_flight.available_permits(), 0, "owed, not freed");
        }
        assert!(org.writing());
        drop(running.next());
        assert_eq!(org.in_flight.available_permits(), 1);
        assert!(!org.writing());
        // raising while owed cancels the debt first
        let slot = Slot::new(
            org.clone(),
            org.in_flight.clone().try_acquire_owned().unwrap(),
        );
        org.resize_slots(1);
        org.resize_slots(3);
        drop(slot);
        assert_eq!(org.in_flight.available_permits(), 3);
        assert!(!org.writing());
    }

    #[test]
    fn resize_grows_at_once_and_shrinks_within_free_permits() {
        let s = OrgState::new("o", 10);
        assert_eq!(s.capacity.load(Ordering::Relaxed), 10);
        s.resize(15);
        assert_eq!(s.permits.available_permits(), 15);
        let held = s.permits.clone().try_acquire_many_owned(12);
        assert!(held.is_ok());
        s.resize(5);
        // Only 3 were free: capacity 12 until the held ones return.
        assert_eq!(s.capacity.load(Ordering::Relaxed), 12);
        assert_eq!(s.depth(), 12);
        drop(held);
        s.resize(5);
        assert_eq!(s.capacity.load(Ordering::Relaxed), 5);
        assert_eq!(OrgState::new("o", 0).permits.available_permits(), 10_000);
    }
}
