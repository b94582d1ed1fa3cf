//! [`MemoryBus`]: the state bus inside one process.
//!
//! It models the slice of etcd that [`StateBus`] promises, so code tested
//! against it behaves the same against [`super::etcd::EtcdBus`]:
//!
//! - **Revisions.** The store starts at revision 1 with no keys, as a fresh
//!   etcd does, so the first write produces revision 2. Every [`StateBus::apply`]
//!   that changes something adds exactly one revision; one that changes nothing
//!   (no ops, or only deletes of missing keys) returns the current revision.
//! - **Limits.** At most [`MAX_TXN_OPS`] ops and about [`MAX_REQUEST_BYTES`]
//!   of keys and values per apply, no empty and no duplicate keys — etcd's
//!   defaults, so callers learn to chunk against both buses.
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

use super::etcd::{MAX_REQUEST_BYTES, MAX_TXN_OPS};
use super::{BusError, Event, KeyValue, LeasedKey, Op, Snapshot, StateBus, Watch, WatchMessage};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

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

struct State {
    kvs: BTreeMap<String, Entry>,
    revision: i64,
    /// History holds every revision above this one.
    compacted: i64,
    history: VecDeque<(i64, Vec<Event>)>,
    history_events: usize,
    watchers: HashMap<u64, Watcher>,
    next_watch_id: u64,
    leases: HashMap<i64, Lease>,
    next_lease_id: i64,
    unavailable: bool,
    limits: MemoryLimits,
    /// Random per instance: a new bus is a new incarnation.
    incarnation: u64,
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

struct Entry {
    value: Vec<u8>,
    mod_revision: i64,
    lease: Option<i64>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
}

struct Watcher {
    prefix: String,
    start: i64,
    queue: VecDeque<WatchMessage>,
    /// Queue length beyond which the watcher is ended as lagged.
    limit: usize,
    /// Why the watch ended; `drain` = deliver what is queued first.
    end: Option<(BusError, bool)>,
    notify: Arc<Notify>,
}

impl Watcher {
    fn end(&mut self, error: BusError, drain: bool) {
        if self.end.is_none() {
            self.end = Some((error, drain));
            self.notify.notify_one();
        }
    }
}

/// One write: the value (and lease) to put, or `None` to delete.
type Change = (String, Option<(Vec<u8>, Option<i64>)>);

impl State {
    fn check_available(&self) -> Result<(), BusError> {
        if self.unavailable {
            Err(BusError::Unavailable("memory bus set unavailable".into()))
        } else {
            Ok(())
        }
    }

    /// Applies `changes` as one revision and tells the watchers; returns the
    /// revision (unchanged when nothing changed).
    fn commit(&mut self, changes: Vec<Change>) -> i64 {
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
    fn expire_due(&mut self, now: Instant) {
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
    fn drop_lease(&mut self, id: i64) {
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

    fn grant(&mut self, ttl: Duration) -> (i64, Instant) {
        let id = self.next_lease_id;
        self.next_lease_id += 1;
        let deadline = Instant::now() + ttl;
        self.leases.insert(id, Lease { ttl, deadline });
        (id, deadline)
    }

    fn end_all_watches(&mut self, reason: &str) {
        for watcher in self.watchers.values_mut() {
            watcher.end(BusError::WatchEnded(reason.into()), false);
        }
    }
}

fn filter(events: &[Event], prefix: &str) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.key().starts_with(prefix))
        .cloned()
        .collect()
}

/// Rejects what etcd would reject with its default limits.
fn validate(ops: &[Op]) -> Result<(), BusError> {
    if ops.len() > MAX_TXN_OPS {
        return Err(BusError::Rejected(format!(
            "{} ops in one transaction, at most {MAX_TXN_OPS} allowed; split the write",
            ops.len()
        )));
    }
    let mut keys = HashSet::with_capacity(ops.len());
    let mut bytes = 0usize;
    for op in ops {
        let key = match op {
            Op::Put { key, value } => {
                bytes += key.len() + value.len();
                key
            }
            Op::Delete { key } => {
                bytes += key.len();
                key
            }
        };
        if key.is_empty() {
            return Err(BusError::Rejected("empty key".into()));
        }
        if !keys.insert(key.as_str()) {
            return Err(BusError::Rejected(format!(
                "duplicate key {key:?} in one transaction"
            )));
        }
    }
    if bytes > MAX_REQUEST_BYTES {
        return Err(BusError::Rejected(format!(
            "transaction of {bytes} bytes exceeds the {MAX_REQUEST_BYTES}-byte request limit"
        )));
    }
    Ok(())
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

    /// Grants a lease, puts `key` under it and starts its expiry timer.
    fn put_leased(&self, state: &mut State, key: &str, value: Vec<u8>, ttl: Duration) -> i64 {
        let (id, deadline) = state.grant(ttl);
        state.commit(vec![(key.to_string(), Some((value, Some(id))))]);
        spawn_expiry(Arc::downgrade(&self.inner), id, deadline);
        id
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

/// Sleeps until the lease's deadline and expires it, following renewals;
/// stops once the lease is gone or the bus was dropped. Without a tokio
/// runtime only the lazy expiry on each operation applies.
fn spawn_expiry(inner: Weak<Inner>, id: i64, deadline: Instant) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut deadline = deadline;
        loop {
            tokio::time::sleep_until(deadline).await;
            let Some(inner) = inner.upgrade() else { return };
            let mut state = inner.lock();
            state.expire_due(Instant::now());
            match state.leases.get(&id) {
                Some(lease) => deadline = lease.deadline,
                None => return,
            }
        }
    });
}

#[async_trait]
impl StateBus for MemoryBus {
    async fn load(&self, prefix: &str) -> Result<Snapshot, BusError> {
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
        Ok(Snapshot {
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
        validate(&ops)?;
        let mut state = self.available()?;
        let changes = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => (key, Some((value, None))),
                Op::Delete { key } => (key, None),
            })
            .collect();
        Ok(state.commit(changes))
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
        validate(&[Op::Put {
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

/// A watch on a [`MemoryBus`]; removes itself from the bus when dropped.
struct MemoryWatch {
    inner: Arc<Inner>,
    id: u64,
    notify: Arc<Notify>,
}

#[async_trait]
impl Watch for MemoryWatch {
    async fn next(&mut self) -> Result<WatchMessage, BusError> {
        loop {
            {
                let mut state = self.inner.lock();
                let Some(watcher) = state.watchers.get_mut(&self.id) else {
                    return Err(BusError::WatchEnded("watch closed".into()));
                };
                if let Some((error, drain)) = &watcher.end
                    && (!*drain || watcher.queue.is_empty())
                {
                    let error = error.clone();
                    watcher.queue.clear();
                    return Err(error);
                }
                if let Some(message) = watcher.queue.pop_front() {
                    return Ok(message);
                }
            }
            // `notify_one` stores a permit, so a wake-up between the check
            // above and this await is not lost.
            self.notify.notified().await;
        }
    }

    async fn request_progress(&mut self) -> Result<(), BusError> {
        let mut state = self.inner.lock();
        let revision = state.revision;
        let Some(watcher) = state.watchers.get_mut(&self.id) else {
            return Err(BusError::WatchEnded("watch closed".into()));
        };
        if let Some((error, _)) = &watcher.end {
            return Err(error.clone());
        }
        // Repeated requests collapse into one pending notification.
        if let Some(WatchMessage::Progress { revision: pending }) = watcher.queue.back_mut() {
            *pending = revision;
        } else {
            watcher.queue.push_back(WatchMessage::Progress { revision });
        }
        watcher.notify.notify_one();
        Ok(())
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.inner.lock().watchers.remove(&self.id);
    }
}

/// A key under a lease on a [`MemoryBus`].
struct MemoryLeasedKey {
    bus: MemoryBus,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    lease_id: i64,
    revoked: bool,
}

impl MemoryLeasedKey {
    fn check_not_revoked(&self) -> Result<(), BusError> {
        if self.revoked {
            Err(BusError::Rejected(format!(
                "lease of {:?} was revoked",
                self.key
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl LeasedKey for MemoryLeasedKey {
    async fn keep_alive(&mut self) -> Result<(), BusError> {
        self.check_not_revoked()?;
        let mut state = self.bus.available()?;
        if let Some(lease) = state.leases.get_mut(&self.lease_id) {
            lease.deadline = Instant::now() + lease.ttl;
            return Ok(());
        }
        tracing::info!(key = %self.key, "memory bus lease had expired, granting a new one");
        self.lease_id = self
            .bus
            .put_leased(&mut state, &self.key, self.value.clone(), self.ttl);
        Ok(())
    }

    async fn update(&mut self, value: Vec<u8>) -> Result<(), BusError> {
        self.check_not_revoked()?;
        validate(&[Op::Put {
            key: self.key.clone(),
            value: value.clone(),
        }])?;
        let mut state = self.bus.available()?;
        if state.leases.contains_key(&self.lease_id) {
            state.commit(vec![(
                self.key.clone(),
                Some((value.clone(), Some(self.lease_id))),
            )]);
        } else {
            self.lease_id = self
                .bus
                .put_leased(&mut state, &self.key, value.clone(), self.ttl);
        }
        self.value = value;
        Ok(())
    }

    async fn revoke(&mut self) -> Result<(), BusError> {
        let mut state = self.bus.available()?;
        state.drop_lease(self.lease_id);
        self.revoked = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::conformance;

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: b"v".to_vec(),
        }
    }

    #[tokio::test]
    async fn conformance_suite() {
        let bus = MemoryBus::new();
        conformance::run_all(&bus, "/conf/").await;
        assert_eq!(bus.watch_count(), 0, "watches leaked");
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_conformance() {
        conformance::lease_expiry(&MemoryBus::new(), "/exp/", Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn revisions_start_at_one_like_etcd() {
        let bus = MemoryBus::new();
        assert_eq!(bus.current_revision().await, Ok(1));
        assert_eq!(bus.apply(vec![put("/a")]).await, Ok(2));
        assert_eq!(
            bus.apply(vec![Op::Delete {
                key: "/missing".into()
            }])
            .await,
            Ok(2)
        );
        let dup = bus.apply(vec![put("/a"), put("/a")]).await;
        assert!(matches!(dup, Err(BusError::Rejected(_))), "{dup:?}");
        let big = bus
            .apply(vec![Op::Put {
                key: "/big".into(),
                value: vec![0; MAX_REQUEST_BYTES],
            }])
            .await;
        assert!(matches!(big, Err(BusError::Rejected(_))), "{big:?}");
    }

    #[tokio::test]
    async fn a_lagging_watch_drains_then_ends() {
        let bus = MemoryBus::with_limits(MemoryLimits {
            history_events: 100,
            watch_queue: 3,
        });
        let mut watch = bus.watch("/", 2).await.expect("watch");
        for i in 0..5 {
            bus.apply(vec![put(&format!("/k{i}"))])
                .await
                .expect("apply");
        }
        let mut delivered = Vec::new();
        let error = loop {
            match watch.next().await {
                Ok(WatchMessage::Events { revision, .. }) => delivered.push(revision),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(
            delivered,
            vec![2, 3, 4],
            "what was queued is delivered first"
        );
        assert_eq!(error, BusError::WatchEnded("lagged".into()));
        // Resuming from the last revision + 1 loses nothing.
        let mut resumed = bus.watch("/", 5).await.expect("watch");
        for expected in [5, 6] {
            assert!(
                matches!(resumed.next().await, Ok(WatchMessage::Events { revision, .. }) if revision == expected)
            );
        }
    }

    #[tokio::test]
    async fn history_beyond_the_cap_is_compacted() {
        let bus = MemoryBus::with_limits(MemoryLimits {
            history_events: 4,
            watch_queue: 16,
        });
        for i in 0..6 {
            bus.apply(vec![put(&format!("/k{i}"))])
                .await
                .expect("apply");
        }
        assert_eq!(bus.compacted_revision(), 3);
        let mut old = bus.watch("/", 3).await.expect("watch");
        assert_eq!(
            old.next().await,
            Err(BusError::Compacted {
                requested: 3,
                compact_revision: 3
            })
        );
        let mut kept = bus.watch("/", 4).await.expect("watch");
        assert!(matches!(
            kept.next().await,
            Ok(WatchMessage::Events { revision: 4, .. })
        ));
    }

    #[tokio::test]
    async fn break_watches_ends_open_watches() {
        let bus = MemoryBus::new();
        let mut watch = bus.watch("/", 0).await.expect("watch");
        bus.apply(vec![put("/a")]).await.expect("apply");
        bus.break_watches();
        assert!(matches!(watch.next().await, Err(BusError::WatchEnded(_))));
        assert!(matches!(
            watch.request_progress().await,
            Err(BusError::WatchEnded(_))
        ));
        drop(watch);
        assert_eq!(bus.watch_count(), 0);
    }

    #[tokio::test]
    async fn unavailable_fails_every_call() {
        let bus = MemoryBus::new();
        let mut leased = bus
            .lease_put("/w", b"v".to_vec(), Duration::from_secs(10))
            .await
            .expect("lease");
        let mut watch = bus.watch("/", 0).await.expect("watch");
        bus.set_unavailable(true);
        let down = |r: Result<(), BusError>| matches!(r, Err(BusError::Unavailable(_)));
        assert!(down(bus.load("/").await.map(drop)));
        assert!(down(bus.watch("/", 0).await.map(drop)));
        assert!(down(bus.apply(vec![put("/a")]).await.map(drop)));
        assert!(down(bus.current_revision().await.map(drop)));
        assert!(down(bus.compact(1).await));
        assert!(down(
            bus.lease_put("/x", Vec::new(), Duration::from_secs(1))
                .await
                .map(drop)
        ));
        assert!(down(leased.keep_alive().await));
        assert!(matches!(watch.next().await, Err(BusError::WatchEnded(_))));
        bus.set_unavailable(false);
        assert_eq!(bus.load("/").await.map(|s| s.kvs.len()), Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_lease_is_deleted_by_the_timer() {
        let bus = MemoryBus::new();
        let _leased = bus
            .lease_put("/w", b"v".to_vec(), Duration::from_secs(2))
            .await
            .expect("lease");
        let mut watch = bus.watch("/", 0).await.expect("watch");
        // Nothing else touches the bus: only the timer task can expire it.
        let message = tokio::time::timeout(Duration::from_secs(3), watch.next()).await;
        assert!(
            matches!(&message, Ok(Ok(WatchMessage::Events { events, .. })) if matches!(&events[..], [Event::Delete { .. }])),
            "{message:?}"
        );
    }
}
