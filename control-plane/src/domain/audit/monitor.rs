//! The audit chain, watched: every control plane walks the whole chain at
//! start and every [`VERIFY_INTERVAL`] (and whenever `memtracectl audit
//! verify` asks), and exports the result, so a rewritten chain pages an
//! operator instead of waiting for someone to run the command:
//!
//! - `memtrace_audit_chain_broken` 1 when the last walk found a break
//!   (an entry rewritten, removed or re-linked), else 0;
//! - `memtrace_audit_chain_unverifiable_entries`: entries under a master
//!   key this control plane does not hold (retired too early);
//! - `memtrace_audit_chain_entries`: entries checked by the last walk;
//! - `memtrace_audit_chain_verified_timestamp_seconds`: when it ended;
//! - `memtrace_audit_chain_verify_failures_total`: walks that could not
//!   run (the database unreachable).

use super::VerifyReport;
use crate::domain::ControlPlane;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the chain is walked (a walk reads every entry once).
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(600);

/// The gauges of the last walk (cheap to clone: shared).
#[derive(Clone, Debug, Default)]
pub struct AuditMetrics {
    broken: Gauge,
    unverifiable: Gauge,
    entries: Gauge,
    verified_at: Gauge<f64, AtomicU64>,
    failures: Counter,
}

impl AuditMetrics {
    /// Adds the gauges to `registry` under `memtrace_audit_chain_`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace_audit_chain");
        sub.register(
            "broken",
            "1 when the last walk of the audit chain found it broken (tampered with)",
            self.broken.clone(),
        );
        sub.register(
            "unverifiable_entries",
            "audit entries under a master key this control plane does not hold",
            self.unverifiable.clone(),
        );
        sub.register(
            "entries",
            "audit entries checked by the last walk",
            self.entries.clone(),
        );
        sub.register(
            "verified_timestamp_seconds",
            "when the last walk of the audit chain ended (unix seconds)",
            self.verified_at.clone(),
        );
        sub.register(
            "verify_failures",
            "walks of the audit chain that could not run (database unreachable)",
            self.failures.clone(),
        );
    }

    /// Records a finished walk.
    pub(crate) fn record(&self, report: &VerifyReport, now_ms: i64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.broken.set(i64::from(report.broken.is_some()));
        self.unverifiable
            .set(gauge(report.unverifiable.iter().map(|u| u.entries).sum()));
        self.entries.set(gauge(report.entries));
        self.verified_at.set(now_ms as f64 / 1000.0);
    }

    pub(crate) fn failed(&self) {
        self.failures.inc();
    }
}

/// Walks the chain now and every [`VERIFY_INTERVAL`] until `stop`.
pub async fn verify_audit_until(service: Arc<ControlPlane>, stop: CancellationToken) {
    loop {
        // verify_audit records into the metrics and logs a break
        if let Err(error) = service.verify_audit().await {
            tracing::warn!(%error, "audit chain verification could not run; retrying later");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(VERIFY_INTERVAL) => {}
        }
    }
    tracing::debug!("audit chain monitor stopped");
}
