//! The batcher's figures as Prometheus metrics (`memtrace_ingest_*`),
//! refreshed from [`IngestMetrics`] when `/metrics` is scraped.

use super::IngestMetrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Registered metric handles.
#[derive(Debug, Default, Clone)]
pub struct IngestGauges {
    batches: Counter,
    rows_written: Counter,
    arc_errors: Counter,
    rows_failed: Counter,
    rejected_full: Counter,
    rows_unflushed: Counter,
    queued_rows: Gauge,
}

fn catch_up(c: &Counter, value: u64) {
    c.inc_by(value.saturating_sub(c.get()));
}

impl IngestGauges {
    /// Adds the metrics to `registry` under `memtrace_ingest_`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("memtrace_ingest");
        sub.register("batches", "write batches Arc stored", self.batches.clone());
        sub.register(
            "rows_written",
            "memory rows Arc stored",
            self.rows_written.clone(),
        );
        sub.register(
            "arc_errors",
            "write batches that failed at Arc after retries",
            self.arc_errors.clone(),
        );
        sub.register(
            "rows_failed",
            "memory rows whose batch failed (answered with an error)",
            self.rows_failed.clone(),
        );
        sub.register(
            "rejected_full",
            "writes refused because the org's queue was full (429)",
            self.rejected_full.clone(),
        );
        sub.register(
            "rows_unflushed",
            "memory rows failed because the shutdown grace ran out",
            self.rows_unflushed.clone(),
        );
        sub.register(
            "queued_rows",
            "memory rows admitted and not yet answered",
            self.queued_rows.clone(),
        );
    }

    /// Brings the metrics up to `m`.
    pub fn refresh(&self, m: &IngestMetrics) {
        catch_up(&self.batches, m.batches);
        catch_up(&self.rows_written, m.rows_written);
        catch_up(&self.arc_errors, m.arc_errors);
        catch_up(&self.rows_failed, m.rows_failed);
        catch_up(&self.rejected_full, m.rejected_full);
        catch_up(&self.rows_unflushed, m.rows_unflushed);
        self.queued_rows
            .set(i64::try_from(m.queued_rows).unwrap_or(i64::MAX));
    }
}
