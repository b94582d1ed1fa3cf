//! Retention: memories older than an org's `memories.retention_days` are
//! hidden from every read by the workers at once; this sweep (every
//! `[control_plane] erasure_retention_sweep_ms`, default hourly) erases
//! them with the same machinery as a tenant's delete. For each live org
//! with a retention and no retention job still unfinished, it records a
//! filter erasure of the memories written up to the cutoff (`now −
//! retention`), published like any erasure record, run, verified and
//! receipted; the actor is `system:retention`.

use super::new_erasure_id;
use crate::domain::ControlPlane;
use crate::domain::config::effective_from_rows;
use crate::error::Result;
use crate::store::{ErasureJobRow, NewErasure};
use serde_json::json;

/// Who retention erasures are requested by.
pub const RETENTION_ACTOR: &str = "system:retention";

impl ControlPlane {
    /// One retention sweep; logs what it could not do.
    pub(crate) async fn sweep_retention(&self) {
        match self.sweep_retention_now().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(orgs = n, "retention erasures requested"),
            Err(error) => tracing::warn!(%error, "retention sweep failed; retried at the next"),
        }
    }

    async fn sweep_retention_now(&self) -> Result<usize> {
        let (effective, _) = effective_from_rows(&self.store.list_settings().await?);
        let now_ms = memtrace_common::clock::now_ms();
        let mut requested = 0;
        for summary in self.store.list_orgs().await? {
            let org_id = summary.org.id;
            let Some(retention) = effective.retention(Some(&org_id)) else {
                continue;
            };
            if self.has_unfinished(&org_id, RETENTION_ACTOR).await? {
                continue;
            }
            let retention_micros = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_mul(1000).saturating_sub(retention_micros);
            let job = retention_job(&org_id, summary.has_arc_binding, cutoff, now_ms);
            if self.request_sweep_erasure(&job).await? {
                requested += 1;
            }
        }
        Ok(requested)
    }

    /// Whether `org_id` has a job requested by `actor` (a sweep) that is
    /// not done: a sweep requests one at a time per org.
    pub(super) async fn has_unfinished(&self, org_id: &str, actor: &str) -> Result<bool> {
        Ok(self.store.has_unfinished_erasure(org_id, actor).await?)
    }

    /// Records a sweep's job and publishes it (the runner republishes it
    /// when that fails); false when the id was taken already.
    pub(super) async fn request_sweep_erasure(&self, job: &ErasureJobRow) -> Result<bool> {
        if !self.store.insert_erasure(job).await? {
            return Ok(false);
        }
        if let Err(error) = self.publish_erasure(job).await {
            tracing::warn!(org_id = %job.org_id, requested_by = %job.requested_by, %error, "erasure not published; the runner republishes it");
        }
        Ok(true)
    }
}

/// The erasure of `org_id`'s memories written at or before `cutoff` (µs),
/// its predicate in the dialect of the org's store.
pub(crate) fn retention_job(org_id: &str, on_arc: bool, cutoff: i64, now_ms: i64) -> ErasureJobRow {
    let time = if on_arc { "epoch_us(time)" } else { "time" };
    NewErasure {
        id: new_erasure_id(),
        org_id: org_id.to_owned(),
        scope_json: json!({"filter": {
            "agent_id": "",
            "session_id": "",
            "memory_types": [],
            "event_types": [],
            "tags": [],
            "since_micros": 0,
            "until_micros": cutoff.saturating_add(1),
        }})
        .to_string(),
        memory_predicate: format!("{time} <= {cutoff}"),
        store: if on_arc { "arc" } else { "embedded" }.into(),
        as_of_micros: cutoff,
        requested_by: RETENTION_ACTOR.into(),
        requested_at_micros: now_ms.saturating_mul(1000),
    }
    .into_job(now_ms)
}
