//! Recording a tenant's delete on the state bus: the worker that took the
//! delete writes the erasure record (signed with the fleet key, as the
//! control plane signs what it publishes), then waits — bounded — until it
//! and every live worker have applied that revision, so the rows are hidden
//! on the whole fleet when the tenant gets the answer.

use super::Erasure;
use crate::snapshot::SnapshotHandle;
use memtrace_common::bus::{Op, StateBus};
use memtrace_common::fleet::FleetKeyring;
use memtrace_common::state::{StateKeys, sign_record};
use memtrace_proto::state::v1::WorkerRecord;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a delete waits for the fleet to apply it before answering
/// anyway (the record is durable; stragglers apply it when they catch up).
pub const PROPAGATION_WAIT: Duration = Duration::from_secs(5);

/// Writes erasure records for this worker.
pub struct ErasureRequests {
    bus: Arc<dyn StateBus>,
    keys: StateKeys,
    fleet: Arc<FleetKeyring>,
    snapshot: Arc<SnapshotHandle>,
}

/// Where a recorded erasure stands when the delete is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The bus revision that holds the record.
    pub revision: i64,
    /// Whether this worker and every live worker applied it in time.
    pub propagated: bool,
}

/// The bus could not take the record: nothing was recorded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the state bus did not take the erasure: {0}")]
pub struct NotRecorded(pub String);

impl ErasureRequests {
    pub fn new(
        bus: Arc<dyn StateBus>,
        keys: StateKeys,
        fleet: Arc<FleetKeyring>,
        snapshot: Arc<SnapshotHandle>,
    ) -> Self {
        Self {
            bus,
            keys,
            fleet,
            snapshot,
        }
    }

    /// Records `erasure` (its covered rows as `predicate`, in the dialect of
    /// `store`), then waits up to [`PROPAGATION_WAIT`] for the fleet.
    pub async fn record(
        &self,
        erasure: &Erasure,
        predicate: String,
        store: &str,
    ) -> Result<Recorded, NotRecorded> {
        let key = self.keys.erasure(&erasure.org_id, &erasure.id);
        let path = self.keys.relative(&key).unwrap_or(&key).to_owned();
        let bytes = erasure.to_record(predicate, store).encode_to_vec();
        let value = sign_record(self.fleet.active(), &path, &bytes);
        let revision = self
            .bus
            .apply(vec![Op::Put { key, value }])
            .await
            .map_err(|e| NotRecorded(e.to_string()))?;
        let propagated = self.wait_for_fleet(revision).await;
        if !propagated {
            tracing::warn!(
                org_id = %erasure.org_id,
                erasure_id = %erasure.id,
                revision,
                "erasure recorded, but not every worker applied it within {PROPAGATION_WAIT:?}"
            );
        }
        Ok(Recorded {
            revision,
            propagated,
        })
    }

    /// Whether this worker's snapshot and every live worker's registration
    /// reach `revision` before the wait ends.
    async fn wait_for_fleet(&self, revision: i64) -> bool {
        let deadline = Instant::now() + PROPAGATION_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            if self.snapshot.load().revision >= revision && self.fleet_applied(revision).await {
                return true;
            }
            if Instant::now() + pause > deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Every registered worker reports an applied revision of at least
    /// `revision` (a registration that cannot be read counts as behind).
    async fn fleet_applied(&self, revision: i64) -> bool {
        let Ok(read) = self.bus.load(&self.keys.workers_prefix()).await else {
            return false;
        };
        read.kvs.iter().all(|kv| {
            WorkerRecord::decode(kv.value.as_slice()).is_ok_and(|w| w.applied_revision >= revision)
        })
    }
}
