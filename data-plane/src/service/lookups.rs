//! Coalesced dedup lookups: the keys that concurrent writes of one org could
//! not settle from the in-memory index are looked up in the store together,
//! one round at a time, instead of one store query per request. While a
//! round runs, new requests queue their keys; the next round takes all of
//! them. A round is driven by a spawned task (so no request waits on
//! others' rounds, and a request that goes away cannot stall the org), and
//! each request gets back only the keys it asked about.
//!
//! Failing open is the caller's runner's business (the original memtrace
//! wrote when it could not check): a runner answers the keys it found.

use crate::query::DedupKey;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// Looks keys up in one org's store; answers the ones found.
pub trait KeyLookup: Send + Sync + 'static {
    fn find(
        &self,
        keys: Vec<DedupKey>,
    ) -> Pin<Box<dyn Future<Output = HashSet<String>> + Send + '_>>;
}

type Waiter = (Vec<DedupKey>, oneshot::Sender<HashSet<String>>);

#[derive(Default)]
struct OrgRounds {
    running: bool,
    pending: Vec<Waiter>,
}

/// Per-org coalescing of dedup lookups (see the module docs).
#[derive(Default)]
pub struct LookupCoalescer {
    orgs: Mutex<HashMap<String, OrgRounds>>,
}

impl std::fmt::Debug for LookupCoalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupCoalescer").finish_non_exhaustive()
    }
}

/// Most keys one round takes (the rest wait for the next round), so one
/// round's store queries stay bounded.
pub const MAX_ROUND_KEYS: usize = 4_000;

impl LookupCoalescer {
    fn orgs(&self) -> std::sync::MutexGuard<'_, HashMap<String, OrgRounds>> {
        self.orgs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keys among `keys` that `runner` finds, looked up together with
    /// the concurrent requests of the same org.
    pub async fn lookup(
        self: &Arc<Self>,
        org: &str,
        keys: Vec<DedupKey>,
        runner: Arc<dyn KeyLookup>,
    ) -> HashSet<String> {
        if keys.is_empty() {
            return HashSet::new();
        }
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut orgs = self.orgs();
            let rounds = orgs.entry(org.to_owned()).or_default();
            rounds.pending.push((keys, tx));
            !std::mem::replace(&mut rounds.running, true)
        };
        if start {
            tokio::spawn(self.clone().drive(org.to_owned(), runner));
        }
        // A dropped sender means the driving task died: fail open.
        rx.await.unwrap_or_default()
    }

    /// Runs rounds for `org` until nothing is pending.
    async fn drive(self: Arc<Self>, org: String, runner: Arc<dyn KeyLookup>) {
        loop {
            let round = {
                let mut orgs = self.orgs();
                let Some(rounds) = orgs.get_mut(&org) else {
                    return;
                };
                if rounds.pending.is_empty() {
                    orgs.remove(&org);
                    return;
                }
                take_round(&mut rounds.pending)
            };
            let mut union: Vec<DedupKey> = Vec::new();
            let mut seen = HashSet::new();
            for (keys, _) in &round {
                for k in keys {
                    if seen.insert(k.as_str().to_owned()) {
                        union.push(k.clone());
                    }
                }
            }
            let found = runner.find(union).await;
            for (keys, tx) in round {
                let mine = keys
                    .iter()
                    .filter(|k| found.contains(k.as_str()))
                    .map(|k| k.as_str().to_owned())
                    .collect();
                let _ = tx.send(mine);
            }
        }
    }
}

/// Takes waiters from the front while their keys fit in one round (at least
/// one waiter).
fn take_round(pending: &mut Vec<Waiter>) -> Vec<Waiter> {
    let mut total = 0;
    let mut n = 0;
    for (keys, _) in pending.iter() {
        if n > 0 && total + keys.len() > MAX_ROUND_KEYS {
            break;
        }
        total += keys.len();
        n += 1;
    }
    pending.drain(..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Finds keys ending in "0"; counts calls; each call takes a while.
    struct Slow {
        calls: AtomicUsize,
    }

    impl KeyLookup for Slow {
        fn find(
            &self,
            keys: Vec<DedupKey>,
        ) -> Pin<Box<dyn Future<Output = HashSet<String>> + Send + '_>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                keys.iter()
                    .map(|k| k.as_str().to_owned())
                    .filter(|k| k.ends_with('0'))
                    .collect()
            })
        }
    }

    fn keys(range: std::ops::Range<usize>) -> Vec<DedupKey> {
        range
            .map(|i| DedupKey::parse(&format!("key{i}")).unwrap_or_else(|_| unreachable!()))
            .collect()
    }

    #[tokio::test]
    async fn concurrent_requests_share_rounds_and_get_their_own_answers() {
        let c = Arc::new(LookupCoalescer::default());
        let slow = Arc::new(Slow {
            calls: AtomicUsize::new(0),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for r in 0..50usize {
            let (c, slow) = (c.clone(), slow.clone());
            tasks.spawn(async move {
                let found = c.lookup("org_a", keys(r * 10..r * 10 + 10), slow).await;
                (r, found)
            });
        }
        while let Some(res) = tasks.join_next().await {
            let (r, found) = res.unwrap_or_else(|_| unreachable!());
            let want: HashSet<String> = [format!("key{}", r * 10)].into();
            assert_eq!(found, want, "request {r} gets exactly its own found key");
        }
        let calls = slow.calls.load(Ordering::SeqCst);
        assert!(
            calls <= 3,
            "50 concurrent requests coalesced into {calls} rounds"
        );
        assert!(c.orgs().is_empty(), "an idle org leaves nothing behind");
    }

    #[test]
    fn a_round_is_bounded_but_never_empty() {
        let mut pending: Vec<Waiter> = (0..3)
            .map(|_| (keys(0..MAX_ROUND_KEYS - 1), oneshot::channel().0))
            .collect();
        assert_eq!(take_round(&mut pending).len(), 1);
        assert_eq!(pending.len(), 2);
        let mut big: Vec<Waiter> = vec![(keys(0..MAX_ROUND_KEYS + 5), oneshot::channel().0)];
        assert_eq!(take_round(&mut big).len(), 1);
    }
}
