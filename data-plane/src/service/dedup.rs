//! The dedup index: recently seen dedup keys per org, so most duplicate
//! checks never reach the store. Entries are keys this worker wrote (or is
//! writing: a key is reserved before its write and released if the write
//! fails, which closes the race of two concurrent writes of one key) and
//! keys a store lookup found. Bounded: at most `capacity` keys over all
//! orgs, the oldest inserted evicted first; expired keys are dropped as met.
//!
//! Keys (`shared/reference/memtrace-original.md` §4): the client's
//! `dedup_key`, else the first 32 hex digits of
//! sha256(`agent_id|event_type|first N bytes of content`).

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

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
    let mut hex = hex::encode(h.finalize());
    hex.truncate(32);
    hex
}

type Key = (String, String);

/// Recently seen keys; see the module docs.
#[derive(Debug)]
pub struct DedupIndex {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// org → key → expiry, µs (nested so lookups by `&str` allocate nothing).
    live: HashMap<String, HashMap<String, i64>>,
    /// Keys held over all orgs.
    count: usize,
    /// Insertion order, for eviction.
    order: VecDeque<Key>,
}

impl Inner {
    fn expiry(&self, org: &str, key: &str) -> Option<i64> {
        self.live.get(org).and_then(|keys| keys.get(key)).copied()
    }

    fn remove(&mut self, org: &str, key: &str) -> bool {
        let Some(keys) = self.live.get_mut(org) else {
            return false;
        };
        let removed = keys.remove(key).is_some();
        if removed {
            self.count -= 1;
            if keys.is_empty() {
                self.live.remove(org);
            }
        }
        removed
    }
}

impl DedupIndex {
    /// The default bound: 250k keys (about 60 MB at worst, with 32-byte
    /// keys and short org ids held twice: in the map and the FIFO).
    pub const DEFAULT_CAPACITY: usize = 250_000;

    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
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

    /// Clears `keep[i]` for each key known (not expired at `now`) for
    /// `org`; one lock for the whole list.
    pub fn known(&self, org: &str, keys: &[String], now: i64, keep: &mut [bool]) {
        let inner = self.lock();
        let Some(live) = inner.live.get(org) else {
            return;
        };
        for (k, kept) in keys.iter().zip(keep.iter_mut()) {
            if *kept && live.get(k.as_str()).is_some_and(|exp| *exp > now) {
                *kept = false;
            }
        }
    }

    /// Reserves the keys whose `keep` is set; a key already known clears
    /// its `keep` instead (a duplicate). Atomic over the list.
    pub fn reserve_kept(
        &self,
        org: &str,
        keys: &[String],
        keep: &mut [bool],
        now: i64,
        expiry: i64,
    ) {
        let mut inner = self.lock();
        for (k, kept) in keys.iter().zip(keep.iter_mut()) {
            if !*kept {
                continue;
            }
            if inner.expiry(org, k).is_some_and(|exp| exp > now) {
                *kept = false;
            } else {
                self.insert_locked(&mut inner, org, k, expiry);
            }
        }
    }

    /// Records keys found in the store (known duplicates).
    pub fn remember(&self, org: &str, keys: &[String], expiry: i64) {
        let mut inner = self.lock();
        for k in keys {
            self.insert_locked(&mut inner, org, k, expiry);
        }
    }

    /// Forgets reservations whose write failed.
    pub fn release(&self, org: &str, keys: &[String]) {
        let mut inner = self.lock();
        for k in keys {
            inner.remove(org, k);
        }
    }

    /// Keys currently held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.lock().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_locked(&self, inner: &mut Inner, org: &str, key: &str, expiry: i64) {
        let keys = match inner.live.get_mut(org) {
            Some(keys) => keys,
            None => inner.live.entry(org.to_owned()).or_default(),
        };
        if let Some(exp) = keys.get_mut(key) {
            *exp = expiry;
        } else {
            keys.insert(key.to_owned(), expiry);
            inner.count += 1;
            inner.order.push_back((org.to_owned(), key.to_owned()));
        }
        while inner.count > self.capacity {
            match inner.order.pop_front() {
                Some((o, k)) => {
                    inner.remove(&o, &k);
                }
                None => break,
            }
        }
        // drop order entries of keys released or re-inserted long ago
        if inner.order.len() > self.capacity.saturating_mul(2) {
            let live = &inner.live;
            let mut seen = std::collections::HashSet::new();
            inner.order.retain(|(o, k)| {
                live.get(o).is_some_and(|keys| keys.contains_key(k))
                    && seen.insert((o.clone(), k.clone()))
            });
        }
    }
}

impl Default for DedupIndex {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_key_is_32_hex_and_uses_the_first_bytes_only() {
        let a = auto_key("a", "general", &"x".repeat(300), 200);
        assert_eq!(a.len(), 32);
        assert_eq!(a, auto_key("a", "general", &"x".repeat(250), 200));
        assert_ne!(a, auto_key("b", "general", &"x".repeat(300), 200));
    }

    #[test]
    fn reserve_release_expire_and_evict() {
        let idx = DedupIndex::new(2);
        let k = |s: &str| vec![s.to_owned()];
        assert_eq!(idx.reserve("o", &k("a"), 0, 100), vec![true]);
        assert_eq!(idx.reserve("o", &k("a"), 50, 100), vec![false]);
        assert_eq!(idx.reserve("p", &k("a"), 50, 100), vec![true], "per org");
        assert_eq!(idx.reserve("o", &k("a"), 100, 200), vec![true], "expired");
        idx.release("o", &k("a"));
        assert!(!idx.contains("o", "a", 0));
        idx.remember("o", &["b".into(), "c".into()], 100);
        assert!(idx.len() <= 2, "bounded");
        assert!(idx.contains("o", "c", 0));
    }

    #[test]
    fn known_and_reserve_kept_skip_what_is_already_refused() {
        let idx = DedupIndex::new(10);
        let keys: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        idx.remember("o", &keys[..1], 100);
        let mut keep = vec![true, false, true];
        idx.known("o", &keys, 50, &mut keep);
        assert_eq!(keep, [false, false, true], "a known, b already refused");
        idx.known("o", &keys, 150, &mut keep);
        assert_eq!(keep, [false, false, true], "never sets keep back");
        idx.reserve_kept("o", &keys, &mut keep, 50, 100);
        assert_eq!(keep, [false, false, true]);
        assert!(idx.contains("o", "c", 50), "c reserved");
        assert!(!idx.contains("o", "b", 50), "b was not kept: not reserved");
        let mut again = vec![true, true, true];
        idx.reserve_kept("o", &keys, &mut again, 50, 100);
        assert_eq!(again, [false, true, false], "a and c known; b reserved now");
        let mut other_org = vec![true; 3];
        idx.known("p", &keys, 50, &mut other_org);
        assert_eq!(other_org, [true; 3], "per org");
    }
}
