//! The bus side of erasure jobs: adopting records (authenticated with the
//! fleet keyring), publishing a job's state on its record and removing it,
//! every write guarded on the key's mod_revision so a concurrent change (a
//! worker's, another replica's) is never overwritten: the write is redone
//! from a fresh read instead.

use super::scope::{bus_state, job_from_record, record_of};
use crate::domain::ControlPlane;
use crate::error::{ControlPlaneError, Result};
use crate::store::{ErasureFilter, ErasureJobRow};
use memtrace_common::bus::{Guard, Op};
use memtrace_common::clock::now_ms;
use memtrace_common::state::{RECORD_SCHEMA, StateKey, open_record};
use memtrace_proto::state::v1::{ErasureRecord, ErasureState};
use prost::Message;
use std::collections::HashSet;

/// Guarded writes redone at most this often per call before giving up
/// (the next pass tries again).
const GUARD_ATTEMPTS: usize = 3;

impl ControlPlane {
    /// The record at `key` and its mod_revision; `Ok(None)` when absent,
    /// `Err` when the bus is unreadable. A record that does not open is
    /// returned as `(None, revision)`.
    async fn erasure_record_at(&self, key: &str) -> Result<Option<(Option<ErasureRecord>, i64)>> {
        let publisher = self.publisher();
        let read = publisher
            .bus()
            .load(key)
            .await
            .map_err(|e| publisher.unreadable(e))?;
        let Some(kv) = read.kvs.into_iter().find(|kv| kv.key == key) else {
            return Ok(None);
        };
        Ok(Some((
            self.open_erasure(&kv.key, &kv.value, kv.mod_revision),
            kv.mod_revision,
        )))
    }

    /// A record refused: logged and counted once per stored version (the
    /// runner reads the prefix every second).
    fn refuse(&self, key: &str, revision: i64, why: &str) {
        let first = self
            .erasure
            .refused_seen
            .lock()
            .map(|mut seen| {
                if seen.len() > 10_000 {
                    seen.clear();
                }
                seen.insert((key.to_owned(), revision))
            })
            .unwrap_or(true);
        if first {
            tracing::warn!(
                key,
                mod_revision = revision,
                why,
                "erasure record refused; not adopted"
            );
            self.erasure.metrics.refused();
        }
    }

    /// The authenticated, decoded record stored at `key` (`None`, logged
    /// and counted, when it does not verify or decode, or names another
    /// key than its own).
    fn open_erasure(&self, key: &str, value: &[u8], revision: i64) -> Option<ErasureRecord> {
        let keys = self.state_keys();
        let Some(StateKey::Erasure { org_id, erasure_id }) = keys.parse(key) else {
            self.refuse(key, revision, "not an erasure key");
            return None;
        };
        let path = keys.relative(key).unwrap_or(key);
        let bytes = match open_record(self.publisher().fleet(), path, value) {
            Ok(bytes) => bytes,
            Err(error) => {
                self.refuse(key, revision, &format!("failed authentication: {error}"));
                return None;
            }
        };
        match ErasureRecord::decode(bytes) {
            Ok(record)
                if record.schema == RECORD_SCHEMA
                    && record.org_id == org_id
                    && record.erasure_id == erasure_id =>
            {
                Some(record)
            }
            Ok(record) => {
                let why = format!("unknown schema {} or another key's ids", record.schema);
                self.refuse(key, revision, &why);
                None
            }
            Err(error) => {
                self.refuse(key, revision, &format!("does not decode: {error}"));
                None
            }
        }
    }

    /// Publishes `job`'s state on its record (created from the job when
    /// absent; a worker's record keeps its fields and gets the state and
    /// detail), or removes the record once the job is done.
    pub(crate) async fn publish_erasure(&self, job: &ErasureJobRow) -> Result<()> {
        let key = self.state_keys().erasure(&job.org_id, &job.id);
        for _ in 0..GUARD_ATTEMPTS {
            let current = self.erasure_record_at(&key).await?;
            let revision = current.as_ref().map_or(0, |(_, r)| *r);
            let op = match bus_state(&job.state) {
                None if current.is_none() => return Ok(()),
                None => Op::Delete { key: key.clone() },
                Some(state) => {
                    let mut record = match current.as_ref().and_then(|(r, _)| r.clone()) {
                        Some(record) => record,
                        None => record_of(job).unwrap_or_default(),
                    };
                    let state = if state == ErasureState::Requested {
                        // adopted: it is being taken up
                        ErasureState::Running
                    } else {
                        state
                    };
                    let unchanged = current
                        .as_ref()
                        .and_then(|(r, _)| r.as_ref())
                        .is_some_and(|r| r.state == state as i32 && r.detail == job.detail);
                    if unchanged {
                        return Ok(());
                    }
                    record.state = state as i32;
                    record.detail = job.detail.clone();
                    let bytes = record.encode_to_vec();
                    Op::Put {
                        key: key.clone(),
                        value: self.publisher().sign(&key, &bytes),
                    }
                }
            };
            let guard = Guard {
                key: key.clone(),
                mod_revision: revision,
            };
            match self
                .publisher()
                .bus()
                .apply_guarded(&[guard], vec![op])
                .await
            {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => continue,
                Err(error) => return Err(self.publisher().unreadable(error)),
            }
        }
        Err(ControlPlaneError::Unavailable(format!(
            "erasure record {key} kept changing; published on a later pass"
        )))
    }

    /// One adoption pass over `erasures/` (see the module docs).
    pub(crate) async fn adopt_erasures(&self) -> Result<()> {
        let publisher = self.publisher();
        let read = publisher
            .bus()
            .load(&self.state_keys().erasures_prefix())
            .await
            .map_err(|e| publisher.unreadable(e))?;
        let mut on_bus = HashSet::new();
        for kv in &read.kvs {
            let Some(record) = self.open_erasure(&kv.key, &kv.value, kv.mod_revision) else {
                continue;
            };
            on_bus.insert(record.erasure_id.clone());
            let job = match self.store.get_erasure(&record.erasure_id).await? {
                Some(job) => job,
                None => {
                    let job = job_from_record(&record, now_ms());
                    if self.store.insert_erasure(&job).await? {
                        tracing::info!(
                            erasure_id = %job.id,
                            org_id = %job.org_id,
                            requested_by = %job.requested_by,
                            "erasure adopted"
                        );
                    }
                    match self.store.get_erasure(&record.erasure_id).await? {
                        Some(job) => job,
                        None => continue,
                    }
                }
            };
            if job.org_id != record.org_id {
                tracing::warn!(erasure_id = %job.id, "erasure record names another org than its job; left alone");
                continue;
            }
            let shows_job = bus_state(&job.state).is_some_and(|s| {
                s != ErasureState::Requested
                    && record.state == s as i32
                    && record.detail == job.detail
            });
            if !shows_job && let Err(error) = self.publish_erasure(&job).await {
                tracing::warn!(erasure_id = %job.id, %error, "erasure record not updated; retrying");
            }
        }
        // jobs whose record is gone (etcd wiped): the database is the truth
        let mut jobs = Vec::new();
        for state in ["requested", "running", "blocked", "failed"] {
            let filter = ErasureFilter {
                org_id: None,
                state: Some(state.into()),
            };
            jobs.extend(self.store.list_erasures(&filter).await?);
        }
        for job in jobs.iter().filter(|j| !on_bus.contains(&j.id)) {
            tracing::info!(erasure_id = %job.id, org_id = %job.org_id, "erasure record missing on the state bus; republishing");
            if let Err(error) = self.publish_erasure(job).await {
                tracing::warn!(erasure_id = %job.id, %error, "erasure record not republished; retrying");
            }
        }
        Ok(())
    }
}
