//! Reconciliation: make the bus hold exactly what the database says. The bus
//! is a cache of the database — it may be empty (fresh etcd), stale (missed
//! publications while etcd was down) or wiped (etcd restored or replaced).

use crate::domain::ControlPlane;
use crate::error::{ControlPlaneError, Result};
use memtrace_common::bus::Op;
use std::collections::BTreeMap;

/// What one reconciliation pass changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconcileReport {
    pub puts: usize,
    pub deletes: usize,
    /// The revision of the last write, `None` when nothing changed.
    pub revision: Option<i64>,
}

impl ControlPlane {
    /// One full pass under the publication lock.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let _guard = self.publisher.lock().await;
        let (desired, keep) = self.desired_state().await?;
        let bus = self.publisher.bus();
        let mut actual: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for prefix in self.reconciled_prefixes() {
            let snapshot = bus.load(&prefix).await.map_err(|e| {
                ControlPlaneError::Unavailable(format!("cannot read the state bus: {e}"))
            })?;
            actual.extend(snapshot.kvs.into_iter().map(|kv| (kv.key, kv.value)));
        }
        let mut ops = Vec::new();
        for (key, value) in &desired {
            if actual.get(key) != Some(&self.publisher.sign(key, value)) {
                ops.push(Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
        }
        let puts = ops.len();
        for key in actual.keys() {
            if !desired.contains_key(key) && !keep.contains(key) {
                ops.push(Op::Delete { key: key.clone() });
            }
        }
        let deletes = ops.len() - puts;
        if ops.is_empty() {
            return Ok(ReconcileReport::default());
        }
        let revision = self.publisher.apply_locked(ops).await;
        if revision.is_none() {
            return Err(ControlPlaneError::Unavailable(
                "state bus refused the reconciliation writes".into(),
            ));
        }
        tracing::info!(puts, deletes, revision = ?revision, "state bus reconciled with the database");
        Ok(ReconcileReport {
            puts,
            deletes,
            revision,
        })
    }

    /// The prefixes whose complete content `desired_state` describes.
    fn reconciled_prefixes(&self) -> Vec<String> {
        let keys = self.state_keys();
        vec![
            format!("{}orgs/", keys.prefix()),
            format!("{}arc/", keys.prefix()),
            format!("{}keys/", keys.prefix()),
            format!("{}config/", keys.prefix()),
        ]
    }
}
