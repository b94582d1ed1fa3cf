//! Fault switches for reliability tests, toggled at runtime through a shared
//! [`Faults`] handle: error statuses, 401, stalls, slowness, and
//! connections closed (FIN) or reset (RST) unanswered, each aimed at writes,
//! queries, deletes or every route, for the next N requests or until cleared.
//!
//! ```ignore
//! let faults = arc.faults();
//! faults.inject(Fault::status(503).on(Target::Writes).times(2)); // next 2 writes → 503
//! faults.inject(Fault::slow(Duration::from_millis(200)));        // every request +200 ms
//! faults.clear();                                               // all off, stalls released
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `POST /api/v1/write/msgpack`.
    Writes,
    /// `POST /api/v1/query`.
    Queries,
    /// `POST /api/v1/delete`.
    Deletes,
    /// Every route above (writes, queries and deletes).
    Both,
}

/// What happens to a request a fault applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer this status (500, 503, …) without processing the request.
    Status(u16),
    /// Process the request (rows stored, query run, rows deleted), then answer this status
    /// instead: the client sees a failure for a write that did land, so a
    /// retry duplicates it (as with Arc's columnar writes).
    StatusAfterProcessing(u16),
    /// 401 `Invalid or expired token`, whatever the credentials.
    Unauthorized,
    /// Hold the request unanswered until [`Faults::release_stalls`] (then it
    /// is processed normally) or the stand-in's stall cap (then 503).
    Stall,
    /// Delay the request by this long, then process it normally.
    Slow(Duration),
    /// Close the connection without answering (an orderly FIN).
    DropConnection,
    /// Reset the connection without answering (SO_LINGER 0, then close:
    /// the peer gets an RST, as from a crashed host or a middlebox).
    ResetConnection,
    /// Process the request (rows stored or deleted), then reset the connection
    /// instead of answering: the client cannot tell whether it landed.
    ResetAfterProcessing,
}

/// One fault rule: what, on which requests, how many times.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: Target,
    /// Requests left to affect; `None` = every request until cleared.
    pub remaining: Option<u64>,
}

impl Fault {
    fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            target: Target::Both,
            remaining: None,
        }
    }

    pub fn status(code: u16) -> Self {
        Self::new(FaultKind::Status(code))
    }

    pub fn status_after_processing(code: u16) -> Self {
        Self::new(FaultKind::StatusAfterProcessing(code))
    }

    pub fn unauthorized() -> Self {
        Self::new(FaultKind::Unauthorized)
    }

    pub fn stall() -> Self {
        Self::new(FaultKind::Stall)
    }

    pub fn slow(delay: Duration) -> Self {
        Self::new(FaultKind::Slow(delay))
    }

    pub fn drop_connection() -> Self {
        Self::new(FaultKind::DropConnection)
    }

    pub fn reset_connection() -> Self {
        Self::new(FaultKind::ResetConnection)
    }

    pub fn reset_after_processing() -> Self {
        Self::new(FaultKind::ResetAfterProcessing)
    }

    /// Only writes, only queries, only deletes, or every route (the default).
    pub fn on(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Only the next `n` matching requests (default: all until cleared).
    pub fn times(mut self, n: u64) -> Self {
        self.remaining = Some(n);
        self
    }
}

/// What to do with one request: wait `delay`, then `action` (if any).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub delay: Duration,
    pub action: Option<FaultKind>,
}

/// The shared switchboard (cheap to clone).
#[derive(Clone, Default)]
pub struct Faults(Arc<Inner>);

#[derive(Default)]
struct Inner {
    rules: Mutex<Vec<Fault>>,
    release: Notify,
    stalled: AtomicUsize,
    applied: AtomicU64,
}

impl Faults {
    /// Adds a rule. Rules are consulted in insertion order: every matching
    /// `Slow` adds its delay, and the first other matching rule decides.
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut rules) = self.0.rules.lock() {
            rules.push(fault);
        }
    }

    /// Removes every rule and releases stalled requests.
    pub fn clear(&self) {
        if let Ok(mut rules) = self.0.rules.lock() {
            rules.clear();
        }
        self.release_stalls();
    }

    /// The rules still active (with their remaining counts).
    pub fn active(&self) -> Vec<Fault> {
        self.0.rules.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Lets every currently stalled request go on (processed normally).
    pub fn release_stalls(&self) {
        self.0.release.notify_waiters();
    }

    /// Requests being held by a stall right now.
    pub fn stalled(&self) -> usize {
        self.0.stalled.load(Ordering::SeqCst)
    }

    /// Requests a fault has been applied to so far.
    pub fn applied(&self) -> u64 {
        self.0.applied.load(Ordering::SeqCst)
    }

    /// Waits (up to `timeout`) until at least `n` requests are stalled.
    pub async fn wait_stalled(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.stalled() < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Consumes the rules matching a request to `target` (Writes/Queries/Deletes).
    pub(crate) fn take(&self, target: Target) -> Plan {
        let mut plan = Plan::default();
        let Ok(mut rules) = self.0.rules.lock() else {
            return plan;
        };
        let mut hit = false;
        for rule in rules.iter_mut() {
            let aimed = rule.target == Target::Both || rule.target == target;
            if !aimed || rule.remaining == Some(0) {
                continue;
            }
            match &rule.kind {
                FaultKind::Slow(d) => plan.delay += *d,
                _ if plan.action.is_some() => continue,
                kind => plan.action = Some(kind.clone()),
            }
            hit = true;
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
        }
        rules.retain(|r| r.remaining != Some(0));
        if hit {
            self.0.applied.fetch_add(1, Ordering::SeqCst);
        }
        plan
    }

    /// Holds the caller until released (true) or `max` elapses (false).
    pub(crate) async fn stall(&self, max: Duration) -> bool {
        // Register for the release before being counted as stalled, so a
        // release issued as soon as the count shows cannot be missed.
        let released = self.0.release.notified();
        let _count = StallGuard::new(&self.0.stalled);
        tokio::time::timeout(max, released).await.is_ok()
    }
}

/// Counts a stalled request for as long as it lives (also when the client
/// gives up and the handler is dropped).
struct StallGuard<'a>(&'a AtomicUsize);

impl<'a> StallGuard<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
