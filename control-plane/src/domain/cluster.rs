//! The fleet seen through the state bus: worker registrations and whether
//! each worker applied the newest published change (the revision of the
//! published marker that every publication transaction touches).

use super::ControlPlane;
use crate::error::Result;
use memtrace_common::state::RECORD_SCHEMA;
use memtrace_proto::state::v1::WorkerRecord;
use prost::Message;

/// One registered worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    pub record: WorkerRecord,
    pub in_sync: bool,
}

/// The bus and the workers on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub bus: &'static str,
    /// `Some(reason)` when the bus could not be read.
    pub bus_error: Option<String>,
    pub published_revision: i64,
    pub workers: Vec<WorkerStatus>,
}

impl ControlPlane {
    pub async fn cluster_status(&self, bus_kind: &'static str) -> Result<ClusterStatus> {
        let bus = self.publisher().bus();
        let keys = self.state_keys();
        let mut status = ClusterStatus {
            bus: bus_kind,
            bus_error: None,
            published_revision: 0,
            workers: Vec::new(),
        };
        let marker = match bus.load(&keys.published_marker()).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                status.bus_error = Some(error.to_string());
                return Ok(status);
            }
        };
        status.published_revision = marker
            .kvs
            .iter()
            .filter(|kv| kv.key == keys.published_marker())
            .map(|kv| kv.mod_revision)
            .max()
            .unwrap_or(0);
        let workers = match bus.load(&keys.workers_prefix()).await {
            Ok(snapshot) => snapshot.kvs,
            Err(error) => {
                status.bus_error = Some(error.to_string());
                return Ok(status);
            }
        };
        for kv in workers {
            match WorkerRecord::decode(kv.value.as_slice()) {
                Ok(record) if record.schema == RECORD_SCHEMA => status.workers.push(WorkerStatus {
                    in_sync: record.applied_revision >= status.published_revision,
                    record,
                }),
                _ => tracing::warn!(key = %kv.key, "unreadable worker registration skipped"),
            }
        }
        status
            .workers
            .sort_by(|a, b| a.record.worker_id.cmp(&b.record.worker_id));
        Ok(status)
    }
}
