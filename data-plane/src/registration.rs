//! A worker's registration: `workers/<id>` under a lease (TTL ~10 s, renewed
//! every TTL/3), carrying its address, version, start time and the revision
//! of the newest published change it applied — so the control plane can tell
//! when a change has reached every worker. The record is rewritten only when
//! that revision (or the rejected count) changes, never on every heartbeat of
//! another worker.

use crate::snapshot::SnapshotHandle;
use memtrace_common::backoff::Backoff;
use memtrace_common::bus::{LeasedKey, StateBus};
use memtrace_common::clock::now_ms;
use memtrace_common::state::{RECORD_SCHEMA, StateKeys};
use memtrace_proto::state::v1::WorkerRecord;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Who this worker is.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub worker_id: String,
    pub address: String,
    pub version: String,
    pub started_at_ms: i64,
}

fn record(identity: &WorkerIdentity, handle: &SnapshotHandle) -> (Vec<u8>, (i64, u64)) {
    let snapshot = handle.load();
    let state = (snapshot.applied_revision, handle.rejected_total());
    let record = WorkerRecord {
        schema: RECORD_SCHEMA,
        worker_id: identity.worker_id.clone(),
        address: identity.address.clone(),
        version: identity.version.clone(),
        started_at_ms: identity.started_at_ms,
        applied_revision: state.0,
        reported_at_ms: now_ms(),
        rejected_records: state.1,
    };
    (record.encode_to_vec(), state)
}

/// Longest a shutdown waits for the lease to be revoked.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps the registration alive until `stop` is cancelled, then revokes the
/// lease (so the worker leaves `memtracectl workers` and the live-worker
/// count at once, instead of after its TTL). `tick` is how often the applied
/// revision is checked (and at most how late a change is reported); the
/// lease is renewed every `ttl / 3`.
pub async fn run(
    bus: Arc<dyn StateBus>,
    keys: StateKeys,
    identity: WorkerIdentity,
    handle: Arc<SnapshotHandle>,
    ttl: Duration,
    tick: Duration,
    stop: CancellationToken,
) {
    let key = keys.worker(&identity.worker_id);
    let renew_every = ttl / 3;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let (value, mut reported) = record(&identity, &handle);
        let mut lease: Box<dyn LeasedKey> = match bus.lease_put(&key, value, ttl).await {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(%error, "worker registration failed; retrying");
                // A shutdown during the backoff ends the task at once.
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
        };
        backoff.reset();
        tracing::info!(worker_id = %identity.worker_id, applied_revision = reported.0, "worker registered");
        let mut last_renew = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick.min(renew_every)) => {}
                () = stop.cancelled() => {
                    match tokio::time::timeout(REVOKE_TIMEOUT, lease.revoke()).await {
                        Ok(Ok(())) => tracing::info!(worker_id = %identity.worker_id, "worker registration revoked"),
                        Ok(Err(error)) => tracing::warn!(%error, "worker registration revoke failed; it lapses with its lease"),
                        Err(_) => tracing::warn!("worker registration revoke timed out; it lapses with its lease"),
                    }
                    return;
                }
            }
            let (value, state) = record(&identity, &handle);
            let result = if state != reported {
                reported = state;
                lease.update(value).await
            } else if last_renew.elapsed() >= renew_every {
                lease.keep_alive().await
            } else {
                continue;
            };
            match result {
                Ok(()) => last_renew = tokio::time::Instant::now(),
                Err(error) => {
                    tracing::warn!(%error, "worker registration lost; registering again");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::bus::memory::MemoryBus;

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_the_retry_backoff_ends_the_task_at_once() {
        let bus = MemoryBus::new();
        bus.set_unavailable(true);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::new(bus),
            StateKeys::new("/m/v1/"),
            WorkerIdentity {
                worker_id: "w-a".into(),
                address: "127.0.0.1:1".into(),
                version: "test".into(),
                started_at_ms: 1,
            },
            Arc::new(SnapshotHandle::default()),
            Duration::from_secs(3),
            Duration::from_millis(100),
            stop.clone(),
        ));
        // Failures back off (jittered) within 0.2, 0.4, 0.8, 1.6, 3.2 and
        // then 5 s ceilings, retrying at once in between: at 8 s the task is
        // inside one of its backoffs.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(!task.is_finished());
        let asked = tokio::time::Instant::now();
        stop.cancel();
        assert!(task.await.is_ok());
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "stopped after {:?} of backoff",
            asked.elapsed()
        );
    }
}
