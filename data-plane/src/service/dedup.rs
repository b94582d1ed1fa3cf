//! The dedup index: recently written dedup keys per org, the worker's early
//! answer to a duplicate (409 / DUPLICATE) without any store round trip.
//! Entries are keys this worker wrote (or is writing: a key is reserved
//! before its write and released if the write fails, which closes the race
//! of two concurrent writes of one key). Best effort by design: what it
//! does not hold (another worker's writes, evicted keys, a restart) is
//! stored and collapsed by every read. Bounded: at most `capacity` keys over
//! all orgs, the oldest inserted evicted first, and at most a quarter of
//! them for one org (a busy org evicts its own oldest keys, never a quiet
//! org's); expired keys are replaced as met.
//!
//! Keys, as the original memtrace defines them: the client's `dedup_key`,
//! else the first 32 hex digits of
//! sha256(`agent_id|event_type|first N bytes of content`) (N = 200 by
//! default, `dedup.key_content_bytes`).
//!
//! This runs for every event written, so a key costs one allocation (its
//! text, held once) and one keyed hash per operation: per org, a hash table
//! of entries and, for eviction, a FIFO of (hash, insertion number) that
//! finds its entry again without holding another copy of the key.

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The automatic key of a memory (N = `content_bytes`, 200 by default; the
/// cut may split a UTF-8 character, exactly as the original's byte slice).
pub fn auto_key(agent_id: &str, event_type: &str, content: &str, content_bytes: usize) -> String {
    let bytes = content.as_bytes();
    let cut = &bytes[..bytes.len().min(content_bytes)];
    let mut h = Sha256::new();
    h.update(agent_id.as_bytes());
    h.update(b"|");
    h.update(event_type.as_bytes());
    h.update(b"|");
    h.update(cut);
    let digest = h.finalize();
    let mut key = String::with_capacity(32);
    for b in &digest[..16] {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    key
}

/// A key's text: inline up to 32 bytes (every automatic key), so a lookup
/// compares it without another memory access; longer ones on the heap.
#[derive(Debug)]
enum KeyText {
    Inline { len: u8, bytes: [u8; 32] },
    Heap(Box<str>),
}

impl KeyText {
    fn new(key: &str) -> Self {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= 32 => {
                let mut bytes = [0; 32];
                bytes[..key.len()].copy_from_slice(key.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(s) => s.as_bytes(),
        }
    }

    fn is(&self, key: &str) -> bool {
        self.as_bytes() == key.as_bytes()
    }
}

#[derive(Debug)]
struct Entry {
    key: KeyText,
    expiry: i64,
    /// Insertion number: which FIFO slot owns this entry.
    seq: u64,
}

/// A key reserved by [`DedupIndex::reserve_kept`]: enough to release it
/// again ([`DedupIndex::release`]) without holding another copy of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    hash: u64,
    seq: u64,
}

/// Recently seen keys; see the module docs.
#[derive(Debug)]
pub struct DedupIndex {
    capacity: usize,
    org_quota: usize,
    inner: Mutex<Inner>,
    metrics: DedupMetrics,
}

/// `memtrace_dedup_*`: what the index answered, over every org.
#[derive(Debug, Default, Clone)]
struct DedupMetrics {
    /// Keys found live in the index: the write was a duplicate.
    hits: Counter,
    /// Keys not found: reserved, the write goes ahead.
    misses: Counter,
    /// Duplicates of an earlier memory of the same request.
    in_request: Counter,
    /// Live keys evicted for room (a later duplicate of one is not seen
    /// here; reads still collapse it).
    evictions: Counter,
    /// Keys held.
    keys: Gauge,
}

#[derive(Debug, Default)]
struct Inner {
    hasher: DefaultHashBuilder,
    /// org → its keys (an org with no key has no entry).
    live: HashMap<Arc<str>, OrgKeys, DefaultHashBuilder>,
    /// Keys held over all orgs.
    count: usize,
    next_seq: u64,
    /// Live keys evicted for room, ever.
    evicted: u64,
}

/// One org's keys and their insertion order.
#[derive(Debug, Default)]
struct OrgKeys {
    table: HashTable<Entry>,
    /// (hash of the key, seq) in insertion order, for eviction. Slots of
    /// released keys go stale and are skipped (and compacted when many).
    order: VecDeque<(u64, u64)>,
}

impl OrgKeys {
    fn holds(&self, hash: u64, seq: u64) -> bool {
        self.table.find(hash, |e| e.seq == seq).is_some()
    }

    /// The insertion number of the oldest live key (stale slots dropped).
    fn oldest(&mut self) -> Option<u64> {
        while let Some(&(hash, seq)) = self.order.front() {
            if self.holds(hash, seq) {
                return Some(seq);
            }
            self.order.pop_front();
        }
        None
    }

    /// Evicts the oldest live key; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        if self.oldest().is_none() {
            return false;
        }
        let Some((hash, seq)) = self.order.pop_front() else {
            return false;
        };
        self.table
            .find_entry(hash, |e| e.seq == seq)
            .map(|entry| entry.remove())
            .is_ok()
    }

    /// Drops stale slots once they outnumber live keys.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.table.len() + 16 {
            let table = &self.table;
            self.order
                .retain(|(hash, seq)| table.find(*hash, |e| e.seq == *seq).is_some());
        }
    }
}

impl Inner {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key.as_bytes())
    }

    fn expiry(&self, org: &str, key: &str) -> Option<i64> {
        let hash = self.hash(key);
        let keys = self.live.get(org)?;
        keys.table.find(hash, |e| e.key.is(key)).map(|e| e.expiry)
    }

    /// Removes the entry of `org` with `hash` and insertion number `seq`.
    fn remove(&mut self, org: &str, hash: u64, seq: u64) -> bool {
        let Some(keys) = self.live.get_mut(org) else {
            return false;
        };
        let Ok(entry) = keys.table.find_entry(hash, |e| e.seq == seq) else {
            return false;
        };
        entry.remove();
        self.count -= 1;
        if keys.table.is_empty() {
            self.live.remove(org);
        } else {
            keys.compact();
        }
        true
    }

    /// For each key whose `keep` is set: sets its expiry, inserting it if
    /// absent, and returns its reservation; a key still live at `now`
    /// clears its `keep` instead (a duplicate). The org's table is looked
    /// up once. Beyond `quota` keys the org's own oldest are evicted; beyond
    /// `capacity` over all orgs, the oldest key of any org.
    fn reserve(
        &mut self,
        org: &str,
        keys: &[String],
        keep: &mut [bool],
        (now, expiry): (i64, i64),
        (capacity, quota): (usize, usize),
    ) -> Vec<Reserved> {
        let mut reserved = Vec::with_capacity(keys.len());
        let Inner {
            hasher,
            live,
            count,
            next_seq,
            evicted,
        } = self;
        let org_keys = match live.get_mut(org) {
            Some(k) => k,
            None => live.entry(Arc::from(org)).or_default(),
        };
        for (key, kept) in keys.iter().zip(keep.iter_mut()) {
            if !*kept {
                continue;
            }
            let hash = hasher.hash_one(key.as_bytes());
            if let Some(e) = org_keys.table.find_mut(hash, |e| e.key.is(key)) {
                if e.expiry > now {
                    *kept = false;
                } else {
                    e.expiry = expiry;
                    reserved.push(Reserved { hash, seq: e.seq });
                }
                continue;
            }
            let seq = *next_seq;
            *next_seq += 1;
            org_keys.table.insert_unique(
                hash,
                Entry {
                    key: KeyText::new(key),
                    expiry,
                    seq,
                },
                |e| hasher.hash_one(e.key.as_bytes()),
            );
            org_keys.order.push_back((hash, seq));
            *count += 1;
            reserved.push(Reserved { hash, seq });
            if org_keys.table.len() > quota && org_keys.evict_oldest() {
                *count -= 1;
                *evicted += 1;
            }
        }
        org_keys.compact();
        if org_keys.table.is_empty() {
            live.remove(org);
        }
        while self.count > capacity && self.evict_oldest_of_all() {}
        reserved
    }

    /// Evicts the oldest live key over all orgs; false when none is held.
    fn evict_oldest_of_all(&mut self) -> bool {
        let oldest = self
            .live
            .iter_mut()
            .filter_map(|(org, keys)| keys.oldest().map(|seq| (seq, org.clone())))
            .min_by_key(|(seq, _)| *seq);
        let Some((_, org)) = oldest else {
            return false;
        };
        let Some(keys) = self.live.get_mut(&org) else {
            return false;
        };
        let evicted = keys.evict_oldest();
        if evicted {
            self.count -= 1;
            self.evicted += 1;
        }
        if keys.table.is_empty() {
            self.live.remove(&org);
        }
        evicted
    }
}

impl DedupIndex {
    /// The default bound: 250k keys (about 30 MB at worst: a 32-byte key,
    /// its table entry and its FIFO slot).
    pub const DEFAULT_CAPACITY: usize = 250_000;

    /// The default share one org may hold: a quarter, so a busy org evicts
    /// its own oldest keys, not the others'.
    pub const DEFAULT_ORG_QUOTA: usize = Self::DEFAULT_CAPACITY / 4;

    /// An index of at most `capacity` keys, any org holding any share.
    pub fn new(capacity: usize) -> Self {
        Self::with_org_quota(capacity, capacity)
    }

    /// At most `capacity` keys, and `org_quota` of one org.
    pub fn with_org_quota(capacity: usize, org_quota: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            org_quota: org_quota.clamp(1, capacity.max(1)),
            inner: Mutex::new(Inner::default()),
            metrics: DedupMetrics::default(),
        }
    }

    /// Adds `memtrace_dedup_{hits,misses,in_request_duplicates,evictions}_total`
    /// and `memtrace_dedup_keys` to `registry`. There is no store-lookup
    /// family: the index is the only dedup lookup on the write path (no Arc
    /// round trip); what it misses, reads collapse.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace_dedup");
        let m = &self.metrics;
        sub.register(
            "hits",
            "dedup keys found live in the index: writes answered as duplicates",
            m.hits.clone(),
        );
        sub.register(
            "misses",
            "dedup keys not in the index: reserved and written",
            m.misses.clone(),
        );
        sub.register(
            "in_request_duplicates",
            "memories that repeated an earlier memory's dedup key in the same request",
            m.in_request.clone(),
        );
        sub.register(
            "evictions",
            "live dedup keys evicted for room (bounded index)",
            m.evictions.clone(),
        );
        sub.register("keys", "dedup keys held", m.keys.clone());
    }

    /// Counts `n` duplicates found within one request.
    pub fn count_in_request(&self, n: usize) {
        if n > 0 {
            self.metrics.in_request.inc_by(n as u64);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` is known (not expired at `now`) for `org`.
    pub fn contains(&self, org: &str, key: &str, now: i64) -> bool {
        self.lock().expiry(org, key).is_some_and(|exp| exp > now)
    }

    /// Reserves each key not already known; returns, per key, whether it was
    /// reserved (false = already known: a duplicate). Atomic over the list.
    pub fn reserve(&self, org: &str, keys: &[String], now: i64, expiry: i64) -> Vec<bool> {
        let mut reserved = vec![true; keys.len()];
        self.reserve_kept(org, keys, &mut reserved, now, expiry);
        reserved
    }

    /// Reserves the keys whose `keep` is set (until `expiry`); a key already
    /// known (not expired at `now`) clears its `keep` instead (a duplicate).
    /// Returns the reservations of the kept keys, in order. One lock for the
    /// whole list, so it is atomic over it.
    pub fn reserve_kept(
        &self,
        org: &str,
        keys: &[String],
        keep: &mut [bool],
        now: i64,
        expiry: i64,
    ) -> Vec<Reserved> {
        let asked = keep.iter().filter(|k| **k).count();
        let mut inner = self.lock();
        let evicted_before = inner.evicted;
        let reserved = inner.reserve(
            org,
            keys,
            keep,
            (now, expiry),
            (self.capacity, self.org_quota),
        );
        let (evicted, held) = (inner.evicted - evicted_before, inner.count);
        drop(inner);
        let m = &self.metrics;
        m.misses.inc_by(reserved.len() as u64);
        m.hits.inc_by((asked - reserved.len()) as u64);
        if evicted > 0 {
            m.evictions.inc_by(evicted);
        }
        m.keys.set(i64::try_from(held).unwrap_or(i64::MAX));
        reserved
    }

    /// Forgets reservations whose write failed (those evicted meanwhile are
    /// already gone).
    pub fn release(&self, org: &str, reserved: &[Reserved]) {
        let mut inner = self.lock();
        for r in reserved {
            inner.remove(org, r.hash, r.seq);
        }
        let held = inner.count;
        drop(inner);
        self.metrics
            .keys
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Keys currently held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.lock().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for DedupIndex {
    fn default() -> Self {
        Self::with_org_quota(Self::DEFAULT_CAPACITY, Self::DEFAULT_ORG_QUOTA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reserves `keys` of `org`, returning their reservations.
    fn take(idx: &DedupIndex, org: &str, keys: &[String], now: i64, expiry: i64) -> Vec<Reserved> {
        let mut keep = vec![true; keys.len()];
        let r = idx.reserve_kept(org, keys, &mut keep, now, expiry);
        assert_eq!(keep, vec![true; keys.len()], "all reserved");
        r
    }

    #[test]
    fn auto_key_is_32_hex_and_uses_the_first_bytes_only() {
        let a = auto_key("a", "general", &"x".repeat(300), 200);
        assert_eq!(a.len(), 32);
        assert_eq!(a, auto_key("a", "general", &"x".repeat(250), 200));
        assert_ne!(a, auto_key("b", "general", &"x".repeat(300), 200));
    }

    #[test]
    fn hits_misses_evictions_and_keys_are_counted() {
        let index = DedupIndex::new(2);
        let keys = |k: &[&str]| k.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(index.reserve("o", &keys(&["a", "b"]), 0, 10), [true, true]);
        assert_eq!(index.reserve("o", &keys(&["a", "c"]), 1, 10), [false, true]);
        index.count_in_request(2);
        let mut registry = Registry::default();
        index.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "memtrace_dedup_hits_total 1",
            "memtrace_dedup_misses_total 3",
            "memtrace_dedup_evictions_total 1",
            "memtrace_dedup_in_request_duplicates_total 2",
            "memtrace_dedup_keys 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn reserve_release_expire_and_evict() {
        let idx = DedupIndex::new(2);
        let k = |s: &str| vec![s.to_owned()];
        assert_eq!(idx.reserve("o", &k("a"), 0, 100), vec![true]);
        assert_eq!(idx.reserve("o", &k("a"), 50, 100), vec![false]);
        assert_eq!(idx.reserve("p", &k("a"), 50, 100), vec![true], "per org");
        let expired = take(&idx, "o", &k("a"), 100, 200);
        idx.release("o", &expired);
        assert!(!idx.contains("o", "a", 0));
        idx.reserve("o", &["b".into(), "c".into()], 0, 100);
        assert!(idx.len() <= 2, "bounded");
        assert!(idx.contains("o", "c", 0));
    }

    #[test]
    fn auto_key_matches_the_hex_of_sha256() {
        let full = hex::encode(Sha256::digest(b"agent_a|general|hello"));
        assert_eq!(auto_key("agent_a", "general", "hello", 200), full[..32]);
    }

    #[test]
    fn eviction_is_oldest_first_and_skips_released_keys() {
        let idx = DedupIndex::new(3);
        let one = |s: &str| vec![s.to_owned()];
        let a = take(&idx, "o", &one("a"), 0, 100);
        for k in ["b", "c"] {
            assert_eq!(idx.reserve("o", &one(k), 0, 100), [true]);
        }
        idx.release("o", &a);
        assert_eq!(idx.len(), 2);
        // room for one more without evicting; the next evicts the oldest live
        assert_eq!(idx.reserve("p", &one("d"), 0, 100), [true]);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.reserve("o", &one("e"), 0, 100), [true]);
        assert_eq!(idx.len(), 3);
        assert!(!idx.contains("o", "b", 0), "b was the oldest live key");
        for (org, k) in [("o", "c"), ("p", "d"), ("o", "e")] {
            assert!(idx.contains(org, k, 0), "{org}/{k}");
        }
        // re-reserving an expired key updates it in place
        assert_eq!(idx.reserve("o", &one("c"), 200, 300), [true]);
        assert_eq!(idx.len(), 3);
        assert!(idx.contains("o", "c", 250));
    }

    #[test]
    fn long_client_keys_are_held_exactly() {
        let idx = DedupIndex::new(10);
        let long = "k".repeat(200);
        let near = format!("{}x", "k".repeat(199));
        let keys = vec![long.clone(), "a".repeat(32), "a".repeat(33)];
        let reserved = take(&idx, "o", &keys, 0, 100);
        assert!(idx.contains("o", &long, 0));
        assert!(!idx.contains("o", &near, 0), "same length, other text");
        assert!(!idx.contains("o", &"a".repeat(31), 0));
        idx.release("o", &reserved[..1]);
        assert!(!idx.contains("o", &long, 0));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn stale_fifo_slots_stay_bounded() {
        let idx = DedupIndex::new(4);
        for i in 0..1_000 {
            let k = vec![format!("k{i}")];
            let r = take(&idx, "o", &k, 0, 100);
            idx.release("o", &r);
        }
        assert_eq!(idx.len(), 0);
        assert!(
            idx.lock().live.is_empty(),
            "empty orgs dropped, with their slots"
        );
    }

    #[test]
    fn reserve_kept_skips_what_is_already_refused() {
        let idx = DedupIndex::new(10);
        let keys: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        idx.reserve("o", &keys[..1], 0, 100);
        let mut keep = vec![true, false, true];
        let reserved = idx.reserve_kept("o", &keys, &mut keep, 50, 100);
        assert_eq!(keep, [false, false, true], "a known, b already refused");
        assert_eq!(reserved.len(), 1, "only c");
        assert!(idx.contains("o", "c", 50), "c reserved");
        assert!(!idx.contains("o", "b", 50), "b was not kept: not reserved");
        let mut again = vec![true, true, true];
        idx.reserve_kept("o", &keys, &mut again, 50, 100);
        assert_eq!(again, [false, true, false], "a and c known; b reserved now");
        let mut other_org = vec![true; 3];
        idx.reserve_kept("p", &keys, &mut other_org, 50, 100);
        assert_eq!(other_org, [true; 3], "per org");
        // a released reservation frees its key; one evicted meanwhile is a no-op
        idx.release("o", &reserved);
        assert!(!idx.contains("o", "c", 50));
        idx.release("o", &reserved);
        assert!(idx.contains("o", "a", 50) && idx.contains("o", "b", 50));
    }

    #[test]
    fn a_busy_org_evicts_its_own_keys_not_another_orgs() {
        let idx = DedupIndex::with_org_quota(100, 25);
        let quiet: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
        idx.reserve("quiet", &quiet, 0, 1_000);
        for i in 0..1_000 {
            idx.reserve("busy", &[format!("b{i}")], 0, 1_000);
        }
        for k in &quiet {
            assert!(idx.contains("quiet", k, 0), "{k} kept");
        }
        assert!(idx.contains("busy", "b999", 0), "the newest kept");
        assert!(
            !idx.contains("busy", "b974", 0),
            "beyond the quota: evicted"
        );
        assert_eq!(idx.len(), 10 + 25);
        // many orgs together stay within the capacity, oldest first
        for o in 0..10 {
            let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
            idx.reserve(&format!("org{o}"), &keys, 0, 1_000);
        }
        assert_eq!(idx.len(), 100);
        assert!(
            !idx.contains("quiet", "q0", 0),
            "the oldest key of all went first"
        );
        assert!(idx.contains("org9", "k19", 0));
    }
}
