//! Per-org request rate limiting on one worker. The fleet-wide limit of an
//! org (`limits.requests_per_second`, `limits.burst`, runtime settings) is
//! split evenly across the live workers: each worker enforces
//! `limit / live_workers` with a token bucket, so the org's total stays near
//! its limit whichever workers its traffic lands on (exact when the load
//! balancer spreads evenly). Settings and the worker count are read at each
//! check, so changes apply without restart.
//!
//! Only authenticated orgs get a bucket (the map is bounded by the orgs in
//! the snapshot); idle buckets are swept.

use memtrace_common::settings::TenantLimits;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buckets unused this long are dropped by the periodic sweep.
const IDLE: Duration = Duration::from_secs(120);
/// How often (at most) a check sweeps idle buckets.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Longest `Retry-After` suggested.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<String, Bucket>,
    swept: Instant,
}

/// Token buckets of every active org on this worker.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<Buckets>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }
}

/// This worker's share of an org's limit: `(tokens per second, burst)`, or
/// `None` when the org is unlimited.
pub fn share(limits: &TenantLimits, workers: u64) -> Option<(f64, f64)> {
    if limits.requests_per_second == 0 {
        return None;
    }
    let workers = workers.max(1) as f64;
    let rate = limits.requests_per_second as f64 / workers;
    let burst = if limits.burst == 0 {
        limits.requests_per_second
    } else {
        limits.burst
    } as f64
        / workers;
    Some((rate, burst.max(1.0)))
}

impl RateLimiter {
    /// Takes `cost` tokens (usually 1 per request) from `org_id`'s bucket,
    /// or says how long until they would be there.
    pub fn check(
        &self,
        org_id: &str,
        limits: &TenantLimits,
        workers: u64,
        cost: f64,
        now: Instant,
    ) -> Result<(), Duration> {
        let Some((rate, burst)) = share(limits, workers) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(buckets.swept) > SWEEP_EVERY {
            buckets
                .map
                .retain(|_, b| now.saturating_duration_since(b.updated) < IDLE);
            buckets.swept = now;
        }
        let bucket = buckets.map.entry(org_id.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        let cost = cost.min(burst);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return Ok(());
        }
        let wait = (cost - bucket.tokens) / rate;
        Err(Duration::from_secs_f64(wait.max(0.001)).min(MAX_RETRY_AFTER))
    }

    /// Orgs with a bucket.
    pub fn active(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}

/// Reads of each org in flight on this worker (`limits.max_concurrent_reads`,
/// hot): a read takes a [`ReadSlot`] for as long as it runs. Orgs with no
/// read in flight have no entry.
#[derive(Debug, Default)]
pub struct ReadSlots {
    inflight: std::sync::Arc<Mutex<HashMap<String, u64>>>,
}

/// One read of an org in flight; given back when dropped.
#[derive(Debug)]
pub struct ReadSlot {
    inflight: std::sync::Arc<Mutex<HashMap<String, u64>>>,
    org: String,
}

impl ReadSlots {
    /// A slot for a read of `org`, or `None` when `max` are in flight.
    pub fn try_take(&self, org: &str, max: u64) -> Option<ReadSlot> {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        let n = inflight.entry(org.to_owned()).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(ReadSlot {
            inflight: self.inflight.clone(),
            org: org.to_owned(),
        })
    }

    /// Reads of `org` in flight.
    pub fn in_flight(&self, org: &str) -> u64 {
        let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        inflight.get(org).copied().unwrap_or(0)
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = inflight.get_mut(&self.org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inflight.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: u64, burst: u64) -> TenantLimits {
        TenantLimits {
            requests_per_second: rps,
            burst,
            max_payload_bytes: 0,
            max_queued_events: 0,
            max_concurrent_reads: 8,
        }
    }

    #[test]
    fn unlimited_orgs_never_wait_and_get_no_bucket() {
        let r = RateLimiter::default();
        let t = Instant::now();
        for _ in 0..10_000 {
            assert!(r.check("org_a", &limits(0, 0), 1, 1.0, t).is_ok());
        }
        assert_eq!(r.active(), 0);
    }

    #[test]
    fn the_limit_is_split_across_live_workers() {
        let r = RateLimiter::default();
        let t = Instant::now();
        // 100/s with burst 100 over 4 workers: 25 at once here, then refusal
        let l = limits(100, 100);
        let admitted = (0..100)
            .filter(|_| r.check("org_a", &l, 4, 1.0, t).is_ok())
            .count();
        assert_eq!(admitted, 25);
        let wait = r.check("org_a", &l, 4, 1.0, t).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(41),
            "{wait:?}"
        );
        // 25 tokens/s: after 200 ms, 5 more
        let later = t + Duration::from_millis(200);
        let admitted = (0..100)
            .filter(|_| r.check("org_a", &l, 4, 1.0, later).is_ok())
            .count();
        assert_eq!(admitted, 5);
        // other orgs have their own bucket
        assert!(r.check("org_b", &l, 4, 1.0, later).is_ok());
    }

    #[test]
    fn fewer_workers_means_a_larger_share_at_once() {
        let r = RateLimiter::default();
        let t = Instant::now();
        let l = limits(10, 0);
        let one = (0..50)
            .filter(|_| r.check("org_a", &l, 1, 1.0, t).is_ok())
            .count();
        assert_eq!(one, 10, "burst defaults to the rate");
        assert_eq!(share(&l, 3), Some((10.0 / 3.0, 10.0 / 3.0)));
        assert_eq!(share(&limits(1, 1), 8), Some((0.125, 1.0)), "burst ≥ 1");
    }

    #[test]
    fn idle_buckets_are_swept() {
        let r = RateLimiter::default();
        let t = Instant::now();
        assert!(r.check("org_a", &limits(5, 5), 1, 1.0, t).is_ok());
        assert_eq!(r.active(), 1);
        let much_later = t + IDLE + SWEEP_EVERY + Duration::from_secs(1);
        assert!(r.check("org_b", &limits(5, 5), 1, 1.0, much_later).is_ok());
        assert_eq!(r.active(), 1, "org_a's idle bucket is gone");
    }

    #[test]
    fn reads_in_flight_are_bounded_per_org_and_given_back() {
        let slots = ReadSlots::default();
        let a1 = slots.try_take("org_a", 2).expect("first");
        let _a2 = slots.try_take("org_a", 2).expect("second");
        assert!(slots.try_take("org_a", 2).is_none(), "at the bound");
        assert!(
            slots.try_take("org_b", 2).is_some(),
            "other orgs unaffected"
        );
        drop(a1);
        assert_eq!(slots.in_flight("org_a"), 1);
        assert!(slots.try_take("org_a", 2).is_some(), "a slot came back");
        assert_eq!(slots.in_flight("org_b"), 0, "idle orgs leave no entry");
    }
}
