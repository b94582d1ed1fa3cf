//! Bounded retries of Arc calls on the shared jittered exponential
//! schedule ([`memtrace_common::backoff`]).

use super::error::ArcError;
use memtrace_common::backoff;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How often and how long to retry a retryable [`ArcError`].
///
/// Attempt `n` (1-based) that fails retryably is followed by a sleep drawn
/// uniformly from `[d/2, d]` with `d = min(max, base × 2^(n-1))`, unless
/// `max_attempts` is reached or the sleep would end past `max_elapsed`
/// (counted from the first attempt). With each attempt bounded by the
/// client's request timeout, a call lasts at most about
/// `max_elapsed + request timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, first included (0 is treated as 1).
    pub max_attempts: u32,
    /// The first backoff's upper bound.
    pub base: Duration,
    /// No single backoff is longer.
    pub max: Duration,
    /// No retry starts after this much time since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 100 ms doubling up to 2 s, 10 s in all.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// A single attempt.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff after failed attempt `attempt` (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        backoff::ceiling(self.base, self.max, attempt)
    }

    /// The jittered backoff after failed attempt `attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        backoff::jitter(self.ceiling(attempt))
    }

    /// Runs `op` until it succeeds, fails non-retryably, or the policy is
    /// spent; returns the last outcome. `what` names the call in logs.
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T, ArcError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ArcError>>,
    {
        let started = Instant::now();
        let max_attempts = self.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.retryable() || attempt >= max_attempts {
                return Err(err);
            }
            let delay = self.backoff(attempt);
            if started.elapsed() + delay > self.max_elapsed {
                tracing::warn!(call = what, attempt, error = %err, "arc retry budget spent");
                return Err(err);
            }
            tracing::warn!(
                call = what,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %err,
                "arc call failed, retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_and_jitters() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(60),
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(3), Duration::from_millis(400));
        assert_eq!(p.ceiling(5), Duration::from_millis(1000));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_millis(1000));
        for attempt in 1..8 {
            let d = p.backoff(attempt);
            let c = p.ceiling(attempt);
            assert!(d >= c / 2 && d <= c, "{d:?} vs {c:?}");
        }
    }
}
