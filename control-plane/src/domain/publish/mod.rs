//! Publication of control-plane state to the state bus (etcd, or the
//! in-process bus on a single node). The database is the source of truth;
//! every change is first committed there, then published as one bus
//! transaction. A failed publication never fails the admin call: the change
//! is saved, the caller gets no revision, and the reconciler republishes.
//!
//! Ordering: publications and reconciliation passes take one lock (per
//! process), and read the database inside it. Across replicas, both read the
//! bus first, then the database, and write a key only if it is unchanged on
//! the bus since: a publication that read the database before a concurrent
//! change loses its guard to that change's own publication and starts over
//! ([`fresh`], [`reconcile`]), so a newer state is never overwritten with an
//! older one.
//!
//! Pieces: [`Publisher`] (here: the bus, the key layout, the fleet key, the
//! lock and the deferred flag), [`records`] (rows → published records, and
//! the full desired state), [`fresh`] (an admin change's publication),
//! [`reconcile`] (one pass: make the bus hold
//! exactly the desired state), [`bus`] (connecting the bus, and the loop
//! that decides when a pass runs).

pub mod bus;
mod fresh;
pub mod metrics;
mod reconcile;
mod records;
#[cfg(test)]
mod tests;

pub use metrics::PublishMetrics;
pub use reconcile::ReconcileReport;

use super::ControlPlane;
use crate::error::ControlPlaneError;
use memtrace_common::bus::{BusError, Guard, Op, StateBus};
use memtrace_common::fleet::FleetKeyring;
use memtrace_common::state::{StateKeys, sign_record};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// etcd's default `--max-txn-ops`.
pub const MAX_OPS_PER_TXN: usize = 128;

/// Where and how state is published.
pub struct Publisher {
    bus: Arc<dyn StateBus>,
    keys: StateKeys,
    fleet: Arc<FleetKeyring>,
    lock: tokio::sync::Mutex<()>,
    /// Set when a publication failed: the reconciler runs a pass at once.
    deferred: AtomicBool,
    metrics: PublishMetrics,
}

/// A result together with the bus revision that published it (`None` when
/// publication was deferred to the reconciler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published<T> {
    pub value: T,
    pub revision: Option<i64>,
}

impl Publisher {
    pub fn new(bus: Arc<dyn StateBus>, keys: StateKeys, fleet: Arc<FleetKeyring>) -> Self {
        Self {
            bus,
            keys,
            fleet,
            lock: tokio::sync::Mutex::new(()),
            deferred: AtomicBool::new(false),
            metrics: PublishMetrics::default(),
        }
    }

    /// Counts into `metrics` (registered by the process's `/metrics`).
    pub fn with_metrics(mut self, metrics: PublishMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &PublishMetrics {
        &self.metrics
    }

    pub fn keys(&self) -> &StateKeys {
        &self.keys
    }

    pub fn bus(&self) -> &Arc<dyn StateBus> {
        &self.bus
    }

    pub fn fleet(&self) -> &FleetKeyring {
        &self.fleet
    }

    /// The stored form of `record` at `key`: authenticated under the
    /// active fleet key (`memtrace_common::state::sign_record`), so workers
    /// trust nothing in the bus that this control plane did not write.
    pub fn sign(&self, key: &str, record: &[u8]) -> Vec<u8> {
        let path = self.keys.relative(key).unwrap_or(key);
        sign_record(self.fleet.active(), path, record)
    }

    /// Whether a publication failed since the last call (and clears it).
    pub fn take_deferred(&self) -> bool {
        self.deferred.swap(false, Ordering::AcqRel)
    }

    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Publisher {
    /// Applies `ops`, each only if its guard holds (see the reconciler), in
    /// guarded transactions (each with the published marker); the last
    /// revision. A guard that failed is a [`ControlPlaneError::Unavailable`]
    /// "changed concurrently": the caller's next pass starts over; the
    /// transactions before it stay applied (each was consistent).
    pub(crate) async fn apply_guarded_locked(
        &self,
        ops: Vec<(Guard, Op)>,
    ) -> Result<Option<i64>, ControlPlaneError> {
        match self.try_apply_guarded_locked(ops).await {
            Ok(Some(revision)) => Ok(revision),
            Ok(None) => Err(ControlPlaneError::Unavailable(
                "the state bus changed concurrently (another replica published); reconciling again"
                    .into(),
            )),
            Err(error) => Err(ControlPlaneError::Unavailable(format!(
                "state bus refused the reconciliation writes: {error}"
            ))),
        }
    }

    /// [`Self::apply_guarded_locked`], telling a lost guard (`Ok(None)`)
    /// from a bus that refused or was unreachable (`Err`, publication
    /// deferred).
    pub(crate) async fn try_apply_guarded_locked(
        &self,
        ops: Vec<(Guard, Op)>,
    ) -> Result<Option<Option<i64>>, BusError> {
        let mut revision = None;
        // a guard per op, and the marker
        for chunk in ops.chunks((MAX_OPS_PER_TXN - 1) / 2) {
            let guards: Vec<Guard> = chunk.iter().map(|(g, _)| g.clone()).collect();
            let mut txn: Vec<Op> = chunk.iter().map(|(_, op)| self.signed(op)).collect();
            txn.push(Op::Put {
                key: self.keys.published_marker(),
                value: Vec::new(),
            });
            match self.bus.apply_guarded(&guards, txn).await {
                Ok(Some(r)) => revision = Some(r),
                Ok(None) => return Ok(None),
                Err(error) => {
                    self.defer();
                    self.metrics.bus_error();
                    return Err(error);
                }
            }
        }
        Ok(Some(revision))
    }

    /// A failed read of the bus, counted, as the error callers return.
    pub(crate) fn unreadable(&self, error: BusError) -> ControlPlaneError {
        self.metrics.bus_error();
        ControlPlaneError::Unavailable(format!("cannot read the state bus: {error}"))
    }

    /// Asks the reconciler for a pass at once (a publication did not happen).
    pub(crate) fn defer(&self) {
        self.deferred.store(true, Ordering::Release);
    }

    /// `op` with its record [signed](Self::sign) (markers carry no
    /// authority and are stored as they are).
    fn signed(&self, op: &Op) -> Op {
        match op {
            Op::Put { key, value } if *key != self.keys.reconciled_marker() => Op::Put {
                key: key.clone(),
                value: self.sign(key, value),
            },
            other => other.clone(),
        }
    }
}

impl ControlPlane {
    /// Publishes the database's current state of the keys `ops` write
    /// (what a change wrote, or something newer another replica wrote
    /// since); see `fresh`.
    pub async fn publish(&self, ops: Vec<Op>) -> Option<i64> {
        let keys: Vec<String> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            })
            .collect();
        self.publish_fresh(&keys).await
    }

    pub fn state_keys(&self) -> &StateKeys {
        self.publisher.keys()
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }
}
