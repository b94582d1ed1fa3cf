//! Reconciliation: make the bus hold exactly what the database says. The bus
//! is a cache of the database — it may be empty (fresh etcd), stale (missed
//! publications while etcd was down) or wiped (etcd restored or replaced).
//!
//! Several control-plane replicas may reconcile and publish at once; their
//! locks are per process. A pass therefore reads the bus first, then the
//! database, and writes each key only if it is unchanged since that bus
//! read (a guarded transaction). A change another replica commits after this
//! pass read the database is published after it too, so it fails this
//! pass's guard instead of being overwritten with the state read before it
//! (which could, for instance, undo a revocation).

use crate::domain::ControlPlane;
use crate::error::Result;
use memtrace_common::bus::{Guard, Op};
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
        // the bus before the database (module docs)
        let bus = self.publisher.bus();
        let mut actual: BTreeMap<String, (Vec<u8>, i64)> = BTreeMap::new();
        for prefix in self.reconciled_prefixes() {
            let snapshot = bus
                .load(&prefix)
                .await
                .map_err(|e| self.publisher.unreadable(e))?;
            actual.extend(
                snapshot
                    .kvs
                    .into_iter()
                    .map(|kv| (kv.key, (kv.value, kv.mod_revision))),
            );
        }
        // Written last, so it lands in the pass's last transaction: a bus
        // holding it holds the whole state (`StateKeys::reconciled_marker`).
        // A wiped etcd lacks it even after an admin change reached it first.
        let marker = self.state_keys().reconciled_marker();
        let marker_revision = bus
            .load(&marker)
            .await
            .map_err(|e| self.publisher.unreadable(e))?
            .kvs
            .into_iter()
            .find(|kv| kv.key == marker)
            .map(|kv| kv.mod_revision);
        let (desired, keep) = self.desired_state().await?;
        let as_read = |key: &str| Guard {
            key: key.to_owned(),
            mod_revision: actual.get(key).map_or(0, |(_, r)| *r),
        };
        let mut ops = Vec::new();
        for (key, value) in &desired {
            if actual.get(key).map(|(v, _)| v) != Some(&self.publisher.sign(key, value)) {
                let put = Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                ops.push((as_read(key), put));
            }
        }
        let puts = ops.len();
        for key in actual.keys() {
            if !desired.contains_key(key) && !keep.contains(key) {
                ops.push((as_read(key), Op::Delete { key: key.clone() }));
            }
        }
        let deletes = ops.len() - puts;
        if ops.is_empty() && marker_revision.is_some() {
            return Ok(ReconcileReport::default());
        }
        ops.push((
            Guard {
                key: marker.clone(),
                mod_revision: marker_revision.unwrap_or(0),
            },
            Op::Put {
                key: marker,
                value: Vec::new(),
            },
        ));
        let revision = self.publisher.apply_guarded_locked(ops).await?;
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
            format!("{}token_keys/", keys.prefix()),
            format!("{}receipt_keys/", keys.prefix()),
        ]
    }
}
