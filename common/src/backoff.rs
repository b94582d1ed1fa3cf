//! Jittered exponential backoff, the one schedule every retry loop uses:
//! connecting the database or etcd at startup, re-registering a worker,
//! re-watching the state bus, retrying an Arc call.
//!
//! The ceiling starts at `initial` and doubles after each failure up to
//! `max`; each delay is drawn uniformly from `[ceiling / 2, ceiling]`, so
//! replicas that failed together do not retry together.

use rand::Rng as _;
use std::time::Duration;

/// The delay ceiling after `failures` failed attempts (1-based; 0 counts as
/// 1): `initial × 2^(failures − 1)`, at most `max`.
pub fn ceiling(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    initial.saturating_mul(1u32 << exp).min(max)
}

/// A delay drawn uniformly from `[ceiling / 2, ceiling]`.
pub fn jitter(ceiling: Duration) -> Duration {
    let half = ceiling / 2;
    let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
    half + Duration::from_micros(rand::rng().random_range(0..=spread))
}

/// A retry loop's schedule: [`Backoff::next_delay`] after each failure,
/// [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max` (`max` below `initial` is
    /// raised to it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The jittered delay to wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        jitter(ceiling(self.initial, self.max, self.failures))
    }

    /// After a success: the next failure waits about `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_max() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let got: Vec<u128> = (0..8)
            .map(|n| ceiling(initial, max, n).as_millis())
            .collect();
        assert_eq!(got, [100, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(ceiling(initial, max, u32::MAX), max);
    }

    #[test]
    fn delays_stay_within_half_and_full_ceiling_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut ceil = Duration::from_millis(200);
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(delay >= ceil / 2 && delay <= ceil, "{delay:?} vs {ceil:?}");
            ceil = (ceil * 2).min(Duration::from_secs(5));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn a_max_below_initial_is_raised() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
        let delay = backoff.next_delay();
        assert!(delay >= Duration::from_millis(500) && delay <= Duration::from_secs(1));
    }
}
