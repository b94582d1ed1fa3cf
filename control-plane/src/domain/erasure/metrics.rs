//! Erasure jobs as Prometheus metrics (fixed label sets):
//!
//! - `memtrace_erasures{state}`: jobs in the database per state
//!   (`requested`, `running`, `blocked`, `done`, `failed`), as of the
//!   runner's last count;
//! - `memtrace_erasure_outcomes_total{outcome}`: job runs that ended
//!   `done`, `blocked`, `failed` (rows still found after every round, or
//!   an error Arc will not recover from by itself) or `retry` (Arc
//!   unreachable or 5xx);
//! - `memtrace_erasure_records_refused_total`: bus records under
//!   `erasures/` that failed authentication or did not decode, never
//!   adopted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub(crate) const STATES: [&str; 5] = ["requested", "running", "blocked", "done", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The families (cheap to clone: shared).
#[derive(Clone, Debug, Default)]
pub struct ErasureMetrics {
    jobs: Family<StateLabel, Gauge>,
    outcomes: Family<OutcomeLabel, Counter>,
    refused: Counter,
}

impl ErasureMetrics {
    /// Adds the families to `registry` under `memtrace_`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace");
        sub.register(
            "erasures",
            "erasure jobs in the database by state",
            self.jobs.clone(),
        );
        sub.register(
            "erasure_outcomes",
            "erasure job runs by outcome (done, blocked, failed, retry)",
            self.outcomes.clone(),
        );
        sub.register(
            "erasure_records_refused",
            "erasure records on the state bus refused (unauthenticated or undecodable)",
            self.refused.clone(),
        );
        for state in STATES {
            let _ = self.jobs.get_or_create(&StateLabel { state });
        }
        for outcome in ["done", "blocked", "failed", "retry"] {
            let _ = self.outcomes.get_or_create(&OutcomeLabel { outcome });
        }
    }

    pub(crate) fn set_counts(&self, counts: &[(&'static str, i64)]) {
        for (state, n) in counts {
            self.jobs.get_or_create(&StateLabel { state }).set(*n);
        }
    }

    pub(crate) fn outcome(&self, outcome: &'static str) {
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn refused(&self) {
        self.refused.inc();
    }
}
