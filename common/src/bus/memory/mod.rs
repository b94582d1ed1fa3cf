//! [`MemoryBus`]: the state bus inside one process.
//!
//! It models the slice of etcd that [`StateBus`] promises, so code tested
//! against it behaves the same against [`super::etcd::EtcdBus`]:
//!
//! - **Revisions.** The store starts at revision 1 with no keys, as a fresh
//!   etcd does, so the first write produces revision 2. Every [`StateBus::apply`]
//!   that changes something adds exactly one revision; one that changes nothing
//!   (no ops, or only deletes of missing keys) returns the current revision.
//! - **Limits.** At most [`MAX_TXN_OPS`](super::etcd::MAX_TXN_OPS) ops and
//!   about [`MAX_REQUEST_BYTES`](super::etcd::MAX_REQUEST_BYTES) of keys and
//!   values per apply, no empty and no duplicate keys — etcd's defaults, so
//!   callers learn to chunk against both buses.
//! - **History and compaction.** The events of the last
//!   [`MemoryLimits::history_events`] events (whole revisions) are kept for
//!   watches from older revisions; older history is compacted automatically.
//!   After a compaction at revision `C`, a watch from `start <= C` gets
//!   [`BusError::Compacted`] from its first [`Watch::next`] (etcd still accepts
//!   `start == C`; refusing it is the stricter, safe side).
//! - **Watches.** Each watch has its own queue: history from its start
//!   revision first, then live events, all events of one revision in one
//!   [`WatchMessage::Events`] in op order. A watch that falls more than
//!   [`MemoryLimits::watch_queue`] messages behind is ended: it drains what was
//!   queued and then gets `WatchEnded("lagged")`, so it never misses an event
//!   silently. [`Watch::request_progress`] queues a
//!   [`WatchMessage::Progress`] with the current revision behind everything
//!   already queued.
//! - **Leases.** A leased key is deleted (one Delete event) when the lease is
//!   revoked or not renewed within its ttl. Expiry is checked on every
//!   operation and by one tokio timer task per live lease. Dropping a
//!   [`LeasedKey`] handle does not revoke it: the key lives until the ttl
//!   runs out, as with etcd.
//!
//! Test controls: [`MemoryBus::break_watches`] ends every open watch,
//! [`MemoryBus::set_unavailable`] makes every call fail with
//! [`BusError::Unavailable`] (and ends open watches), [`MemoryBus::watch_count`]
//! shows leaked watches.
//!
//! Layout: this module holds the public types and the [`StateBus`] impl;
//! `state` the key space (revisions, history, watcher fan-out, request
//! limits), `watch` the [`Watch`] handle, `lease` leased keys and their
//! expiry timers.

mod lease;
mod state;
mod watch;

#[cfg(test)]
mod tests;

use super::{BusError, Guard, KeyValue, LeasedKey, Op, PrefixRead, StateBus, Watch, WatchMessage};
use crate::bus::etcd::validate_ops;
use async_trait::async_trait;
use lease::MemoryLeasedKey;
use state::{State, Watcher, filter};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use watch::MemoryWatch;

/// Bounds of a [`MemoryBus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Events kept for watches from older revisions (default 10 000).
    pub history_events: usize,
    /// Messages a watch may have pending before it is ended as lagged
    /// (default 1 024), on top of the history it replays when opened.
    pub watch_queue: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            history_events: 10_000,
            watch_queue: 1_024,
        }
    }
}

/// An in-process [`StateBus`]; clones share one key space.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryBus {
    /// An empty key space at revision 1 with [`MemoryLimits::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty key space with explicit bounds.
    pub fn with_limits(limits: MemoryLimits) -> Self {
        let bus = Self::default();
        bus.inner.lock().limits = limits;
        bus
    }

    /// Ends every open watch: its next [`Watch::next`] returns
    /// `WatchEnded`, as when an etcd connection breaks.
    pub fn break_watches(&self) {
        self.inner.lock().end_all_watches("watch broken by test");
    }

    /// While `true`, every call fails with [`BusError::Unavailable`] and open
    /// watches end with `WatchEnded`. Leases keep ticking meanwhile.
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut state = self.inner.lock();
        state.unavailable = unavailable;
        if unavailable {
            state.end_all_watches("state bus unavailable");
        }
    }

    /// Open [`Watch`] handles (ended ones included until dropped).
    pub fn watch_count(&self) -> usize {
        self.inner.lock().watchers.len()
    }

    /// The revision history was compacted at (0 = never).
    pub fn compacted_revision(&self) -> i64 {
        self.inner.lock().compacted
    }

    /// Locks the state after expiring due leases; fails while unavailable.
    fn available(&self) -> Result<MutexGuard<'_, State>, BusError> {
        let mut state = self.inner.lock();
        state.expire_due(Instant::now());
        state.check_available()?;
        Ok(state)
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("MemoryBus")
            .field("revision", &state.revision)
            .field("keys", &state.kvs.len())
            .field("compacted", &state.compacted)
            .field("watches", &state.watchers.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateBus for MemoryBus {
    async fn load(&self, prefix: &str) -> Result<PrefixRead, BusError> {
        let state = self.available()?;
        let kvs = state
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| KeyValue {
                key: k.clone(),
                value: e.value.clone(),
                mod_revision: e.mod_revision,
            })
            .collect();
        Ok(PrefixRead {
            kvs,
            revision: state.revision,
        })
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Box<dyn Watch>, BusError> {
        let mut state = self.available()?;
        let start = if start_revision <= 0 {
            state.revision + 1
        } else {
            start_revision
        };
        let mut queue = VecDeque::new();
        let mut end = None;
        if start <= state.compacted {
            let error = BusError::Compacted {
                requested: start,
                compact_revision: state.compacted,
            };
            end = Some((error, false));
        } else {
            for (revision, events) in state.history.iter().filter(|(r, _)| *r >= start) {
                let mine = filter(events, prefix);
                if !mine.is_empty() {
                    queue.push_back(WatchMessage::Events {
                        revision: *revision,
                        events: mine,
                    });
                }
            }
        }
        let id = state.next_watch_id;
        state.next_watch_id += 1;
        let notify = Arc::new(Notify::new());
        let limit = state.limits.watch_queue + queue.len();
        let watcher = Watcher {
            prefix: prefix.to_string(),
            start,
            queue,
            limit,
            end,
            notify: notify.clone(),
        };
        state.watchers.insert(id, watcher);
        Ok(Box::new(MemoryWatch {
            inner: self.inner.clone(),
            id,
            notify,
        }))
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<i64, BusError> {
        validate_ops(&ops)?;
        let mut state = self.available()?;
        let changes = changes_of(ops);
        Ok(state.commit(changes))
    }

    async fn apply_guarded(&self, guards: &[Guard], ops: Vec<Op>) -> Result<Option<i64>, BusError> {
        if guards.len() + ops.len() > crate::bus::etcd::MAX_TXN_OPS {
            return Err(BusError::Rejected(format!(
                "{} guards and {} ops exceed {} per transaction",
                guards.len(),
                ops.len(),
                crate::bus::etcd::MAX_TXN_OPS
            )));
        }
        validate_ops(&ops)?;
        let mut state = self.available()?;
        let holds = guards
            .iter()
            .all(|g| state.kvs.get(&g.key).map_or(0, |e| e.mod_revision) == g.mod_revision);
        if !holds {
            return Ok(None);
        }
        let changes = changes_of(ops);
        Ok(Some(state.commit(changes)))
    }

    async fn current_revision(&self) -> Result<i64, BusError> {
        Ok(self.available()?.revision)
    }

    async fn incarnation(&self) -> Result<u64, BusError> {
        Ok(self.available()?.incarnation)
    }

    async fn compact(&self, revision: i64) -> Result<(), BusError> {
        let mut state = self.available()?;
        if revision > state.revision {
            return Err(BusError::Rejected(format!(
                "cannot compact at future revision {revision} (current {})",
                state.revision
            )));
        }
        // Compacting at or below the last compaction is a no-op.
        while state.history.front().is_some_and(|(r, _)| *r <= revision) {
            if let Some((_, evs)) = state.history.pop_front() {
                state.history_events -= evs.len();
            }
        }
        state.compacted = state.compacted.max(revision);
        Ok(())
    }

    async fn lease_put(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Box<dyn LeasedKey>, BusError> {
        if ttl.is_zero() {
            return Err(BusError::Rejected("lease ttl must be positive".into()));
        }
        validate_ops(&[Op::Put {
            key: key.to_string(),
            value: value.clone(),
        }])?;
        let mut state = self.available()?;
        let lease_id = self.put_leased(&mut state, key, value.clone(), ttl);
        drop(state);
        Ok(Box::new(MemoryLeasedKey {
            bus: self.clone(),
            key: key.to_string(),
            value,
            ttl,
            lease_id,
            revoked: false,
        }))
    }
}

/// Our ops as the in-process state's changes (puts without a lease).
fn changes_of(ops: Vec<Op>) -> Vec<state::Change> {
    ops.into_iter()
        .map(|op| match op {
            Op::Put { key, value } => (key, Some((value, None))),
            Op::Delete { key } => (key, None),
        })
        .collect()
}
