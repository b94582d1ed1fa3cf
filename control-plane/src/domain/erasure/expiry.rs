//! Expiry: memories created with a `ttl` or `expires_at` are hidden from
//! every read by the workers once they expire; this sweep (with the
//! retention sweep, every `[control_plane] erasure_retention_sweep_ms`)
//! erases them with the same machinery as a tenant's delete. For each live
//! org with no expiry job still unfinished, one count query asks whether
//! any memory has expired; only then is an erasure of the memories expired
//! at "now" (`expires_at` set and at or before it, in the memory table and
//! in `memory_versions`) recorded, published, run, verified and receipted;
//! the actor is `system:expiry`.
//!
//! A store whose files all predate the `expires_at` column has no expired
//! memory: Arc's binder error (and SQLite's "no such column") count as 0,
//! for the sweep's count and a job's verification alike.

use super::new_erasure_id;
use super::{arc, embedded};
use crate::domain::ControlPlane;
use crate::error::Result;
use crate::store::{ErasureJobRow, NewErasure};
use serde_json::json;

/// Who expiry erasures are requested by.
pub const EXPIRY_ACTOR: &str = "system:expiry";

/// The memory column holding a memory's expiry (µs, 0: never).
pub(crate) const EXPIRES_AT: &str = "expires_at";

/// The rows expired at `now` (µs), unqualified columns.
pub(crate) fn expired_predicate(now: i64) -> String {
    format!("COALESCE({EXPIRES_AT}, 0) BETWEEN 1 AND {now}")
}

/// Whether an engine's error says the table has no `expires_at` column at
/// all (every file predates it): no row of it can have expired.
pub(crate) fn missing_expiry_column(text: &str) -> bool {
    text.contains(EXPIRES_AT)
        && (text.contains("no such column")
            || (text.contains("Binder Error")
                && (text.contains("not found") || text.contains("does not have a column"))))
}

impl ControlPlane {
    /// One expiry sweep; logs what it could not do.
    pub(crate) async fn sweep_expiry(&self) {
        match self.sweep_expiry_now().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(orgs = n, "expiry erasures requested"),
            Err(error) => tracing::warn!(%error, "expiry sweep failed; retried at the next"),
        }
    }

    async fn sweep_expiry_now(&self) -> Result<usize> {
        let mut requested = 0;
        for summary in self.store.list_orgs().await? {
            let org_id = summary.org.id;
            if self.has_unfinished(&org_id, EXPIRY_ACTOR).await? {
                continue;
            }
            let now_ms = memtrace_common::clock::now_ms();
            let job = expiry_job(&org_id, summary.has_arc_binding, now_ms);
            match self.count_expired(&job).await {
                Ok(0) => continue,
                Ok(_) => {}
                Err(detail) => {
                    tracing::warn!(org_id = %org_id, %detail, "expired memories not counted; retried at the next sweep");
                    continue;
                }
            }
            if self.request_sweep_erasure(&job).await? {
                requested += 1;
            }
        }
        Ok(requested)
    }

    /// How many memory rows `job` (an expiry job) would erase now.
    async fn count_expired(&self, job: &ErasureJobRow) -> std::result::Result<u64, String> {
        let where_ = arc::where_clause(&job.org_id, Some(&job.memory_predicate));
        let target = self
            .erasure_target(job)
            .await
            .map_err(|o| format!("{o:?}"))?;
        match target {
            Some(target) => {
                let sql = arc::count_sql(&target.database, &target.measurement, &where_);
                arc::count(&self.erasure.http, &target, &sql)
                    .await
                    .map_err(|f| format!("{f:?}"))
            }
            None => {
                let settings = &self.erasure.settings;
                let Some(dir) = settings.embedded_dir.as_ref().filter(|d| d.is_dir()) else {
                    return Ok(0);
                };
                let file = embedded::org_file(dir, &job.org_id);
                embedded::count(&file, &settings.embedded_measurement, &where_).await
            }
        }
    }
}

/// The erasure of `org_id`'s memories expired at `now_ms`.
pub(crate) fn expiry_job(org_id: &str, on_arc: bool, now_ms: i64) -> ErasureJobRow {
    let now = now_ms.saturating_mul(1000);
    NewErasure {
        id: new_erasure_id(),
        org_id: org_id.to_owned(),
        scope_json: json!({"expired": true}).to_string(),
        memory_predicate: expired_predicate(now),
        store: if on_arc { "arc" } else { "embedded" }.into(),
        as_of_micros: now,
        requested_by: EXPIRY_ACTOR.into(),
        requested_at_micros: now,
    }
    .into_job(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predicate_and_the_missing_column_answers() {
        assert_eq!(
            expired_predicate(42),
            "COALESCE(expires_at, 0) BETWEEN 1 AND 42"
        );
        let job = expiry_job("org_a", true, 5);
        assert_eq!(job.memory_predicate, expired_predicate(5_000));
        assert_eq!(job.as_of_micros, 5_000);
        assert_eq!(job.requested_by, EXPIRY_ACTOR);
        assert!(super::super::arc::contained(&job.memory_predicate));
        assert!(missing_expiry_column(
            "Binder Error: Referenced column \"expires_at\" not found in FROM clause!"
        ));
        assert!(missing_expiry_column(
            "Binder Error: Table \"memories\" does not have a column named \"expires_at\""
        ));
        assert!(missing_expiry_column("no such column: expires_at"));
        assert!(!missing_expiry_column(
            "Binder Error: Referenced column \"x\" not found"
        ));
        assert!(!missing_expiry_column(
            "Binder Error: Cannot compare values of type VARCHAR and BIGINT (expires_at)"
        ));
    }
}
