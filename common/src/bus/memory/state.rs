//! The key space of a [`MemoryBus`](super::MemoryBus): keys with their
//! revisions and leases, the revision counter, the event history kept for
//! watches from older revisions (and its compaction), the per-watch queues
//! every commit fans out to, lease bookkeeping, and the etcd request limits
//! every write is checked against.

use super::MemoryLimits;
use crate::bus::{BusError, Event, KeyValue, WatchMessage};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(super) struct State {
    pub(super) kvs: BTreeMap<String, Entry>,
    pub(super) revision: i64,
    /// History holds every revision above this one.
    pub(super) compacted: i64,
    pub(super) history: VecDeque<(i64, Vec<Event>)>,
    pub(super) history_events: usize,
    pub(super) watchers: HashMap<u64, Watcher>,
    pub(super) next_watch_id: u64,
    pub(super) leases: HashMap<i64, Lease>,
    pub(super) next_lease_id: i64,
    pub(super) unavailable: bool,
    pub(super) limits: MemoryLimits,
    /// Random per instance: a new bus is a new incarnation.
    pub(super) incarnation: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            kvs: BTreeMap::new(),
            revision: 1,
            compacted: 0,
            history: VecDeque::new(),
            history_events: 0,
            watchers: HashMap::new(),
            next_watch_id: 1,
            leases: HashMap::new(),
            next_lease_id: 1,
            unavailable: false,
            limits: MemoryLimits::default(),
            incarnation: rand::random::<u64>().max(1),
        }
    }
}

pub(super) struct Entry {
    pub(super) value: Vec<u8>,
    pub(super) mod_revision: i64,
    pub(super) lease: Option<i64>,
}

pub(super) struct Lease {
    pub(super) ttl: Duration,
    pub(super) deadline: Instant,
}

pub(super) struct Watcher {
    pub(super) prefix: String,
    pub(super) start: i64,
    pub(super) queue: VecDeque<WatchMessage>,
    /// Queue length beyond which the watcher is ended as lagged.
    pub(super) limit: usize,
    /// Why the watch ended; `drain` = deliver what is queued first.
    pub(super) end: Option<(BusError, bool)>,
    pub(super) notify: Arc<Notify>,
}

impl Watcher {
    pub(super) fn end(&mut self, error: BusError, drain: bool) {
        if self.end.is_none() {
            self.end = Some((error, drain));
            self.notify.notify_one();
        }
    }
}

/// One write: the value (and lease) to put, or `None` to delete.
pub(super) type Change = (String, Option<(Vec<u8>, Option<i64>)>);

impl State {
    pub(super) fn check_available(&self) -> Result<(), BusError> {
        if self.unavailable {
            Err(BusError::Unavailable("memory bus set unavailable".into()))
        } else {
            Ok(())
        }
    }

    /// Applies `changes` as one revision and tells the watchers; returns the
    /// revision (unchanged when nothing changed).
    pub(super) fn commit(&mut self, changes: Vec<Change>) -> i64 {
        let revision = self.revision + 1;
        let mut events = Vec::with_capacity(changes.len());
        for (key, change) in changes {
            match change {
                Some((value, lease)) => {
                    let entry = Entry {
                        value: value.clone(),
                        mod_revision: revision,
                        lease,
                    };
                    self.kvs.insert(key.clone(), entry);
                    events.push(Event::Put(KeyValue {
                        key,
                        value,
                        mod_revision: revision,
                    }));
                }
                None => {
                    if self.kvs.remove(&key).is_some() {
                        events.push(Event::Delete {
                            key,
                            mod_revision: revision,
                        });
                    }
                }
            }
        }
        if events.is_empty() {
            return self.revision;
        }
        self.revision = revision;
        for watcher in self.watchers.values_mut() {
            if watcher.end.is_some() || revision < watcher.start {
                continue;
            }
            let mine = filter(&events, &watcher.prefix);
            if mine.is_empty() {
                continue;
            }
            if watcher.queue.len() >= watcher.limit {
                tracing::warn!(prefix = %watcher.prefix, revision, "memory bus watch lagged, ending it");
                watcher.end(BusError::WatchEnded("lagged".into()), true);
                continue;
            }
            watcher.queue.push_back(WatchMessage::Events {
                revision,
                events: mine,
            });
            watcher.notify.notify_one();
        }
        self.history_events += events.len();
        self.history.push_back((revision, events));
        while self.history_events > self.limits.history_events {
            let Some((old, evs)) = self.history.pop_front() else {
                break;
            };
            self.history_events -= evs.len();
            self.compacted = old;
        }
        revision
    }

    /// Expires every lease whose deadline passed, deleting its keys.
    pub(super) fn expire_due(&mut self, now: Instant) {
        let due: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            tracing::debug!(lease_id = id, "memory bus lease expired");
            self.drop_lease(id);
        }
    }

    /// Removes a lease and deletes its keys in one revision.
    pub(super) fn drop_lease(&mut self, id: i64) {
        if self.leases.remove(&id).is_none() {
            return;
        }
        let keys: Vec<Change> = self
            .kvs
            .iter()
            .filter(|(_, e)| e.lease == Some(id))
            .map(|(k, _)| (k.clone(), None))
            .collect();
        self.commit(keys);
    }

    pub(super) fn grant(&mut self, ttl: Duration) -> (i64, Instant) {
        let id = self.next_lease_id;
        self.next_lease_id += 1;
        let deadline = lease_deadline(ttl);
        self.leases.insert(id, Lease { ttl, deadline });
        (id, deadline)
    }

    pub(super) fn end_all_watches(&mut self, reason: &str) {
        for watcher in self.watchers.values_mut() {
            watcher.end(BusError::WatchEnded(reason.into()), false);
        }
    }
}

pub(super) fn filter(events: &[Event], prefix: &str) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.key().starts_with(prefix))
        .cloned()
        .collect()
}

/// Longest lease the memory bus keeps (a huge TTL would overflow `Instant`).
const MAX_LEASE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// When a lease of `ttl` granted or renewed now expires (TTL clamped).
pub(super) fn lease_deadline(ttl: Duration) -> Instant {
    Instant::now() + ttl.min(MAX_LEASE_TTL)
}

#[cfg(test)]
mod lease_deadline_tests {
    use super::*;

    #[test]
    fn a_huge_ttl_is_clamped_instead_of_overflowing() {
        let far = lease_deadline(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(300 * 24 * 3600));
        let near = lease_deadline(Duration::from_secs(3));
        assert!(near <= Instant::now() + Duration::from_secs(3));
    }
}
