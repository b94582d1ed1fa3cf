//! Bounded load loops for the benchmarks (`ingest-bench`, `read-bench`):
//! the direct ceiling (pre-encoded Arc batches posted straight to an Arc),
//! gRPC streaming writes into a worker, REST single-memory writes shaped
//! like the SDK's `remember`, and timed read samples. Every loop stops at a
//! request count or a duration, whichever comes first, and only ever
//! targets the address it is given: [`ensure_loopback`] refuses anything
//! but 127.0.0.1 / ::1 / localhost.
//!
//! Files: `direct` (posts to Arc), `grpc` (`StreamMemories`), `rest`
//! (`remember`), `sample` (latency samples of reads); this file holds the
//! run outcome, the bounds and the `/proc` readings.

mod direct;
mod grpc;
mod rest;
mod sample;

pub use direct::{DirectTarget, arc_rows, direct_arc};
pub use grpc::{
    AckSummary, BatchSource, BatchTemplate, OutcomeOnly, grpc_stream, grpc_stream_from,
};
pub use rest::rest_single;
pub use sample::{Latencies, Sampler};

use anyhow::Context;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The outcome of one load phase.
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// Events acknowledged as stored.
    pub events: u64,
    /// Requests (or batches) acknowledged.
    pub requests: u64,
    /// Requests refused or failed (429s included).
    pub errors: u64,
    /// Of `errors`, how many were 429 / RESOURCE_EXHAUSTED.
    pub throttled: u64,
    pub elapsed: Duration,
    /// Per-request latency in µs (REST) or per-batch ack latency (gRPC).
    pub latencies_us: Vec<u32>,
    /// Failed requests by HTTP status (0: no response).
    pub failures: std::collections::BTreeMap<u16, u64>,
}

impl Run {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0..=100) in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        percentile_ms(&mut self.latencies_us, p)
    }

    fn merge(&mut self, other: Run) {
        self.events += other.events;
        self.requests += other.requests;
        self.errors += other.errors;
        self.throttled += other.throttled;
        self.latencies_us.extend(other.latencies_us);
        for (status, n) in other.failures {
            *self.failures.entry(status).or_default() += n;
        }
    }
}

/// The `p`-th percentile (0..=100) of µs samples, in milliseconds (nearest
/// rank; 0 without samples). Sorts `samples`.
pub(crate) fn percentile_ms(samples: &mut [u32], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    f64::from(samples[rank.min(samples.len() - 1)]) / 1000.0
}

/// Bounds of one phase.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub duration: Duration,
    /// Most requests (or batches) over all tasks.
    pub max_requests: u64,
}

/// Refuses a load target that is not on this machine's loopback interface
/// (load and fault tests may only ever aim at 127.0.0.1 / ::1).
pub fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("load target {url:?}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    anyhow::ensure!(loopback, "load target {url} is not a loopback address");
    Ok(())
}

/// Claims one request of the shared budget; false when spent or late.
pub(crate) fn claim(budget: &AtomicU64, deadline: Instant) -> bool {
    Instant::now() < deadline
        && budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
}

pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// A memory's content: unique per (phase, task, seq, i) so dedup never
/// collapses benchmark events, about 120 bytes like a short agent
/// observation.
pub fn content(phase: &str, task: usize, seq: u64, i: usize) -> String {
    format!(
        "{phase} observation {task}-{seq}-{i}: the agent read the ticket, checked the deploy log and decided to roll back"
    )
}

pub(crate) async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Run>>,
    started: Instant,
) -> anyhow::Result<Run> {
    let mut total = Run::default();
    for t in tasks {
        total.merge(t.await.context("load task panicked")?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

pub(crate) fn with_key<T>(key: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().context("api key as metadata")?);
    Ok(request)
}

/// CPU time (user + system) process `pid` has used so far (Linux `/proc`,
/// in USER_HZ ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) may hold spaces: count from its `)`
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of the line are the 12th and 13th after `)`
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Resident set size of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The highest resident set size process `pid` has had, in KiB (Linux).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn loads_only_aim_at_loopback() {
        for ok in [
            "http://127.0.0.1:9100",
            "http://[::1]:80/x",
            "http://localhost:1",
        ] {
            assert!(ensure_loopback(ok).is_ok(), "{ok}");
        }
        for bad in ["http://10.0.0.1:9100", "http://example.com", "not a url"] {
            assert!(ensure_loopback(bad).is_err(), "{bad}");
        }
    }
}
