//! Every Arc call as Prometheus metrics, kept by the shared [`ArcClient`]
//! (one set per worker, over every tenant's Arc):
//!
//! - `memtrace_arc_request_duration_seconds{op}`: each attempt's time,
//!   answered or not (`op` = `write`, `query`);
//! - `memtrace_arc_request_errors_total{op, kind}`: failed attempts by kind
//!   (`connect`, `timeout`, `transport`, `rejected` (4xx), `server` (5xx),
//!   `decode`, `invalid_target`, `reply_too_large`, `reply_budget`);
//! - `memtrace_arc_write_bytes`: the size of each write body sent.
//!
//! Labels come from fixed sets: no org, URL or database (a worker may hold
//! thousands of tenants).
//!
//! [`ArcClient`]: super::ArcClient

use super::error::{ArcError, Transport};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// What an Arc call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Query,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Query => "query",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: &'static str,
    kind: &'static str,
}

fn durations() -> Histogram {
    // 1 ms … ~33 s: a real Arc answers SQL in 50–150 ms
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every kind label [`kind`] gives.
const KINDS: [&str; 9] = [
    "connect",
    "timeout",
    "transport",
    "rejected",
    "server",
    "decode",
    "invalid_target",
    "reply_too_large",
    "reply_budget",
];

/// The kind label of a failed attempt.
pub fn kind(error: &ArcError) -> &'static str {
    match error {
        ArcError::Unreachable { kind, .. } => match kind {
            Transport::Connect => "connect",
            Transport::Timeout => "timeout",
            Transport::Other => "transport",
        },
        ArcError::Rejected { .. } | ArcError::DeleteBlocked { .. } => "rejected",
        ArcError::Server { .. } => "server",
        ArcError::Decode(_) => "decode",
        ArcError::InvalidTarget(_) => "invalid_target",
        ArcError::ReplyTooLarge { .. } => "reply_too_large",
        ArcError::ReplyBudget => "reply_budget",
    }
}

/// The families (cheap to clone: shared counters).
#[derive(Clone, Debug)]
pub struct ArcMetrics {
    durations: Family<OpLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    write_bytes: Histogram,
}

impl Default for ArcMetrics {
    fn default() -> Self {
        Self {
            durations: Family::new_with_constructor(durations),
            errors: Family::default(),
            // 1 KiB … 64 MiB
            write_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 9)),
        }
    }
}

impl ArcMetrics {
    /// Adds the families to `registry` under `memtrace_arc_`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace_arc");
        sub.register(
            "request_duration_seconds",
            "time of each arc request attempt, answered or not, by operation",
            self.durations.clone(),
        );
        sub.register(
            "request_errors",
            "arc request attempts that failed, by operation and kind",
            self.errors.clone(),
        );
        sub.register(
            "write_bytes",
            "size of each write body sent to arc (after compression)",
            self.write_bytes.clone(),
        );
        // exported from the start (empty), so dashboards have their series
        for op in [Op::Write, Op::Query] {
            let op = op.as_str();
            let _ = self.durations.get_or_create(&OpLabels { op });
            for kind in KINDS {
                let _ = self.errors.get_or_create(&ErrorLabels { op, kind });
            }
        }
    }

    /// Records one attempt of `op` that took `elapsed`.
    pub fn observe<T>(&self, op: Op, elapsed: Duration, result: &Result<T, ArcError>) {
        let op = op.as_str();
        self.durations
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
        if let Err(error) = result {
            self.errors
                .get_or_create(&ErrorLabels {
                    op,
                    kind: kind(error),
                })
                .inc();
        }
    }

    /// Records the size of a write body.
    pub fn write_body(&self, bytes: usize) {
        self.write_bytes.observe(bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(m: &ArcMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        text
    }

    #[test]
    fn attempts_and_errors_are_counted_by_operation_and_kind() {
        let m = ArcMetrics::default();
        m.observe(
            Op::Write,
            Duration::from_millis(60),
            &Ok::<(), ArcError>(()),
        );
        m.observe::<()>(
            Op::Query,
            Duration::from_millis(120),
            &Err(ArcError::Server {
                status: 503,
                message: "busy".into(),
            }),
        );
        m.observe::<()>(
            Op::Query,
            Duration::from_secs(5),
            &Err(ArcError::Unreachable {
                kind: Transport::Timeout,
                detail: "slow".into(),
            }),
        );
        m.write_body(4096);
        let text = rendered(&m);
        assert!(
            text.contains(r#"memtrace_arc_request_duration_seconds_count{op="write"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memtrace_arc_request_duration_seconds_count{op="query"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memtrace_arc_request_errors_total{op="query",kind="server"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memtrace_arc_request_errors_total{op="query",kind="timeout"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memtrace_arc_request_errors_total{op="write",kind="server"} 0"#),
            "every kind exported from the start: {text}"
        );
        assert!(text.contains("memtrace_arc_write_bytes_count 1"), "{text}");
    }
}
