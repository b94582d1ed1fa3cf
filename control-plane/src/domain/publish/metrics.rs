//! Publication and reconciliation as Prometheus metrics (fixed label sets):
//!
//! - `memtrace_publications_total{outcome}`: admin changes published
//!   (`ok`) or left to the reconciler because the bus failed (`deferred`);
//! - `memtrace_reconcile_passes_total{outcome}`: reconciliation passes that
//!   found the bus in step (`clean`), repaired it (`repaired`) or failed
//!   (`failed`: the bus unreachable, or changed concurrently by another
//!   replica; retried);
//! - `memtrace_reconcile_repairs_total{op}`: keys a pass had to write
//!   (`put`) or remove (`delete`) — non-zero after a bus outage, a wipe or a
//!   restore; steadily rising otherwise means something else writes the
//!   prefix;
//! - `memtrace_state_bus_errors_total`: failed calls to the bus (a
//!   publication's or a pass's writes, the reconciler's probes): etcd
//!   unreachable or hung.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepairOp {
    op: &'static str,
}

/// The families (cheap to clone: shared counters).
#[derive(Clone, Debug, Default)]
pub struct PublishMetrics {
    publications: Family<Outcome, Counter>,
    passes: Family<Outcome, Counter>,
    repairs: Family<RepairOp, Counter>,
    bus_errors: Counter,
}

impl PublishMetrics {
    /// Adds the families to `registry` under `memtrace_`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace");
        sub.register(
            "publications",
            "admin changes published to the state bus (ok) or deferred to the reconciler",
            self.publications.clone(),
        );
        sub.register(
            "reconcile_passes",
            "reconciliation passes by outcome (clean, repaired, failed)",
            self.passes.clone(),
        );
        sub.register(
            "reconcile_repairs",
            "state bus keys a reconciliation pass wrote (put) or removed (delete)",
            self.repairs.clone(),
        );
        sub.register(
            "state_bus_errors",
            "failed calls to the state bus (publications, reconciliation writes, probes)",
            self.bus_errors.clone(),
        );
        // every label value exported at 0 from the start
        for outcome in ["ok", "deferred"] {
            let _ = self.publications.get_or_create(&Outcome { outcome });
        }
        for outcome in ["clean", "repaired", "failed"] {
            let _ = self.passes.get_or_create(&Outcome { outcome });
        }
        for op in ["put", "delete"] {
            let _ = self.repairs.get_or_create(&RepairOp { op });
        }
    }

    pub(crate) fn published(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "deferred" };
        self.publications.get_or_create(&Outcome { outcome }).inc();
    }

    pub(crate) fn pass(&self, result: Result<(usize, usize), ()>) {
        let outcome = match result {
            Ok((0, 0)) => "clean",
            Ok((puts, deletes)) => {
                self.repairs
                    .get_or_create(&RepairOp { op: "put" })
                    .inc_by(puts as u64);
                self.repairs
                    .get_or_create(&RepairOp { op: "delete" })
                    .inc_by(deletes as u64);
                "repaired"
            }
            Err(()) => "failed",
        };
        self.passes.get_or_create(&Outcome { outcome }).inc();
    }

    pub(crate) fn bus_error(&self) {
        self.bus_errors.inc();
    }
}
