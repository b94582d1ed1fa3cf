//! Latency samples of reads: a [`Sampler`] bounds a measurement in count
//! and time, [`Latencies`] keeps what it measured.

use super::{Bounds, micros, percentile_ms};
use std::time::{Duration, Instant};

/// Latencies of one kind of request.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    samples_us: Vec<u32>,
    /// Requests that failed (not in the samples).
    pub errors: u64,
}

impl Latencies {
    pub fn push(&mut self, took: Duration) {
        self.samples_us.push(micros(took));
    }

    /// Successful samples.
    pub fn len(&self) -> usize {
        self.samples_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples_us.is_empty()
    }

    /// The `p`-th percentile (0..=100) in milliseconds; 0 without samples.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        percentile_ms(&mut self.samples_us, p)
    }
}

/// Hands out at most `max_requests` turns, until `duration` has passed.
#[derive(Debug)]
pub struct Sampler {
    left: u64,
    deadline: Instant,
}

impl Sampler {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            left: bounds.max_requests,
            deadline: Instant::now() + bounds.duration,
        }
    }

    /// Whether another turn is allowed (and takes it).
    pub fn turn(&mut self) -> bool {
        if self.left == 0 || Instant::now() >= self.deadline {
            return false;
        }
        self.left -= 1;
        true
    }
}
