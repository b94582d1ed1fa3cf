//! [`Batcher`]: admission into per-org bounded queues, org lifecycle and
//! shutdown. The batching itself is in [`flusher`](super::flusher).

use super::queue::{OrgState, Pending, Waiter};
use super::{Ack, Counters, IngestError, IngestMetrics, SubmitError};
use crate::arcdb::{ArcClient, MemoryBatch, RetryPolicy};
use crate::snapshot::ArcRoute;
use memtrace_common::settings::{TenantLimits, WriteSettings};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// An org's current write settings and limits (hot: read at every batch
/// start, and when an org becomes active). Must be cheap and not block.
pub type SettingsFn = Arc<dyn Fn(&str) -> (WriteSettings, TenantLimits) + Send + Sync>;

/// Flushers with nothing to do for this long exit (default).
const DEFAULT_IDLE: Duration = Duration::from_secs(30);
/// After the grace ran out, how long tasks get to fail their waiters.
const CANCEL_WAIT: Duration = Duration::from_secs(2);
/// Bounds of the `Retry-After` suggested with a full queue.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The sending half the batcher keeps per active org.
struct OrgHandle {
    state: Arc<OrgState>,
    tx: mpsc::UnboundedSender<Pending>,
}

#[derive(Default)]
struct Orgs {
    map: HashMap<String, OrgHandle>,
    shutting_down: bool,
}

/// What the batcher's tasks share.
pub(crate) struct Shared {
    pub client: ArcClient,
    pub settings: SettingsFn,
    pub retry: RetryPolicy,
    pub idle_ms: AtomicU64,
    orgs: Mutex<Orgs>,
    pub counters: Counters,
    /// Rows admitted and not answered yet (all orgs).
    pub pending_rows: Arc<AtomicU64>,
    /// Becomes true when the shutdown grace ran out: fail what is left.
    pub cancel: watch::Sender<bool>,
}

impl Shared {
    fn orgs(&self) -> MutexGuard<'_, Orgs> {
        self.orgs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by an idle flusher: removes its org if nothing is queued or
    /// in flight. `queued` is asked under the lock `submit` sends under, so
    /// no request can slip in between the check and the removal (it would
    /// be dropped with the flusher's queue). True when the flusher should
    /// exit.
    pub fn retire(&self, org: &Arc<OrgState>, queued: impl FnOnce() -> bool) -> bool {
        let mut orgs = self.orgs();
        if queued() || org.writing() {
            return false;
        }
        match orgs.map.get(&*org.org_id) {
            Some(h) if Arc::ptr_eq(&h.state, org) => {
                orgs.map.remove(&*org.org_id);
                tracing::debug!(org_id = %org.org_id, "idle ingest flusher exits");
                true
            }
            // Replaced or removed: our channel is closed anyway.
            _ => true,
        }
    }
}

/// Per-tenant group-commit batcher in front of Arc (cheap to clone).
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("active_orgs", &self.active_orgs())
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl Batcher {
    /// A batcher writing through `client`, with each org's settings from
    /// `settings` and Arc retries backing off per `retry` (the attempts are
    /// one more than the org's `arc.retry_max_attempts` retries).
    pub fn new(
        client: ArcClient,
        settings: impl Fn(&str) -> (WriteSettings, TenantLimits) + Send + Sync + 'static,
        retry: RetryPolicy,
    ) -> Self {
        let (cancel, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                client,
                settings: Arc::new(settings),
                retry,
                idle_ms: AtomicU64::new(DEFAULT_IDLE.as_millis() as u64),
                orgs: Mutex::new(Orgs::default()),
                counters: Counters::default(),
                pending_rows: Arc::new(AtomicU64::new(0)),
                cancel,
            }),
        }
    }

    /// How long a flusher with nothing queued lives on (default 30 s);
    /// applies to flushers as they next go idle.
    pub fn with_idle_timeout(self, idle: Duration) -> Self {
        let ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1);
        self.shared.idle_ms.store(ms, Ordering::Relaxed);
        self
    }

    /// Admits `rows` for `org_id` into the org's queue, all or nothing, and
    /// returns the [`Ack`] that resolves once Arc stored them. Never waits:
    /// a full queue is [`IngestError::QueueFull`] at once. Must be called
    /// within a Tokio runtime (the org's flusher is spawned on first use).
    pub fn submit(
        &self,
        org_id: &str,
        route: Arc<ArcRoute>,
        rows: MemoryBatch,
    ) -> Result<Ack, SubmitError> {
        let n = rows.len() as u64;
        let mut orgs = self.shared.orgs();
        if orgs.shutting_down {
            return Err(IngestError::ShuttingDown);
        }
        if n == 0 {
            return Ok(Ack::ready(Ok(())));
        }
        // The settings are read only when the org becomes active (cheap and
        // non-blocking by contract, so under the lock).
        let handle = orgs.map.entry(org_id.to_string()).or_insert_with(|| {
            let max_queued = (self.shared.settings)(org_id).1.max_queued_events;
            self.spawn_flusher(org_id, max_queued)
        });
        let state = &handle.state;
        let capacity = state.capacity.load(Ordering::Acquire);
        let too_large = IngestError::TooLarge { rows: n, capacity };
        let want = match u32::try_from(n) {
            Ok(w) if n <= capacity => w,
            _ => return Err(too_large),
        };
        let Ok(permit) = state.permits.clone().try_acquire_many_owned(want) else {
            Counters::add(&self.shared.counters.rejected_full, 1);
            tracing::debug!(org_id, rows = n, "ingest queue full");
            return Err(IngestError::QueueFull {
                org_id: org_id.to_string(),
                retry_after: retry_after(state),
            });
        };
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::new(n, tx, permit, self.shared.pending_rows.clone());
        let pending = Pending {
            route,
            data: rows,
            waiter,
        };
        if handle.tx.send(pending).is_err() {
            // The flusher is gone without retiring (it panicked): forget
            // it so the next submit starts a fresh one.
            tracing::error!(org_id, "ingest flusher vanished");
            orgs.map.remove(org_id);
            return Err(IngestError::Abandoned);
        }
        Ok(Ack::new(rx))
    }

    fn spawn_flusher(&self, org_id: &str, max_queued: u64) -> OrgHandle {
        let state = Arc::new(OrgState::new(org_id, max_queued));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(super::flusher::run(self.shared.clone(), state.clone(), rx));
        tracing::debug!(org_id, "ingest flusher started");
        OrgHandle { state, tx }
    }

    /// The org's route was removed: its queued rows are failed with
    /// [`IngestError::OrgClosed`] (batches already sent to Arc finish).
    /// False when the org had nothing active.
    pub fn close_org(&self, org_id: &str) -> bool {
        let Some(handle) = self.shared.orgs().map.remove(org_id) else {
            return false;
        };
        handle.state.closed.store(true, Ordering::Release);
        tracing::info!(org_id, "ingest queue of org closed");
        true
    }

    /// Stops admission ([`IngestError::ShuttingDown`]), flushes everything
    /// queued without waiting for linger, and waits up to `grace` for Arc.
    /// What is still unwritten then is failed to its waiters with
    /// [`IngestError::Unflushed`]; returns how many rows that was.
    pub async fn close(&self, grace: Duration) -> u64 {
        let handles = {
            let mut orgs = self.shared.orgs();
            orgs.shutting_down = true;
            std::mem::take(&mut orgs.map)
        };
        // Closing the channels makes every flusher flush at once.
        drop(handles);
        let pending = self.shared.pending_rows.load(Ordering::Acquire);
        tracing::info!(pending_rows = pending, "ingest batcher closing");
        if !self.wait_drained(grace).await {
            self.shared.cancel.send_replace(true);
            if !self.wait_drained(CANCEL_WAIT).await {
                tracing::error!(
                    pending_rows = self.shared.pending_rows.load(Ordering::Acquire),
                    "ingest rows still unanswered after shutdown"
                );
            }
        }
        let unflushed = self.shared.counters.rows_unflushed.load(Ordering::Relaxed);
        tracing::info!(unflushed_rows = unflushed, "ingest batcher closed");
        unflushed
    }

    /// Waits (bounded) until no admitted row is unanswered.
    async fn wait_drained(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.shared.pending_rows.load(Ordering::Acquire) == 0 {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(5))).await;
        }
    }

    /// Adds `memtrace_ingest_batch_rows` and `memtrace_ingest_batch_seconds`
    /// (histograms of the batches sent to Arc) to `registry`; the counters
    /// are exported through [`IngestGauges`](super::prom::IngestGauges).
    pub fn register_histograms(&self, registry: &mut prometheus_client::registry::Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace_ingest");
        let counters = &self.shared.counters;
        sub.register(
            "batch_rows",
            "memory rows per batch sent to arc (group commit)",
            counters.batch_rows.clone(),
        );
        sub.register(
            "batch_seconds",
            "time of a batch from its encoding to arc's answer, retries included",
            counters.batch_seconds.clone(),
        );
    }

    /// The counters, and the rows queued or in flight over every org.
    pub fn metrics(&self) -> IngestMetrics {
        let queued = self.shared.pending_rows.load(Ordering::Acquire);
        self.shared.counters.snapshot(queued)
    }

    /// Rows queued or in flight for `org_id`, if its flusher is active.
    pub fn queue_depth(&self, org_id: &str) -> Option<u64> {
        self.shared.orgs().map.get(org_id).map(|h| h.state.depth())
    }

    /// Orgs with a running flusher.
    pub fn active_orgs(&self) -> usize {
        self.shared.orgs().map.len()
    }

    /// Closes ([`close_org`](Self::close_org)) every active org for which
    /// `has_route` says its Arc route is gone (org deleted or unbound), so
    /// rows still queued for it are answered with an error instead of being
    /// written to an Arc the org no longer has. Returns how many closed.
    pub fn close_orgs_without_route(&self, has_route: impl Fn(&str) -> bool) -> usize {
        let gone: Vec<String> = self
            .shared
            .orgs()
            .map
            .keys()
            .filter(|org| !has_route(org))
            .cloned()
            .collect();
        gone.iter().filter(|org| self.close_org(org)).count()
    }
}

/// A guess at when room frees up: one linger plus one Arc write.
fn retry_after(state: &OrgState) -> Duration {
    let ms = state.linger_ms.load(Ordering::Relaxed) + state.last_write_ms.load(Ordering::Relaxed);
    Duration::from_millis(ms).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use memtrace_common::settings::EffectiveSettings;

    fn batcher() -> Batcher {
        let client = ArcClient::new(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let settings = EffectiveSettings::default();
        Batcher::new(
            client,
            move |org| (settings.write(Some(org)), settings.limits(Some(org))),
            RetryPolicy::default(),
        )
    }

    #[tokio::test]
    async fn retire_checks_the_queue_under_the_submit_lock() {
        let b = batcher();
        let handle = b.spawn_flusher("org_a", 10);
        let state = handle.state.clone();
        b.shared.orgs().map.insert("org_a".into(), handle);
        // A request queued meanwhile keeps the flusher; the check runs while
        // `submit` cannot send.
        let retired = b.shared.retire(&state, || {
            assert!(
                b.shared.orgs.try_lock().is_err(),
                "queued must be checked under the orgs lock"
            );
            true
        });
        assert!(!retired);
        assert_eq!(b.active_orgs(), 1);
        assert!(b.shared.retire(&state, || false));
        assert_eq!(b.active_orgs(), 0);
    }
}
