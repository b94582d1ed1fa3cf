//! Erasure jobs for [`SqlStore`]: the `ers_*` methods the
//! [`Store`](crate::store::Store) impl delegates to. Claims are a
//! compare-and-set on `claimed_by`/`claimed_until`, so two replicas on one
//! PostgreSQL never run one job at once; progress is written only by the
//! claim's holder.

use super::SqlStore;
use crate::store::{ErasureFilter, ErasureJobRow, PinnedTarget, StoreResult};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

pub(super) const ERASURE_COLUMNS: &str = "id, org_id, scope_json, memory_predicate, store, \
     as_of_micros, requested_by, requested_at_micros, state, detail, attempts, next_attempt_at, \
     claimed_by, claimed_until, target_json, pinned_binding_id, pinned_url, pinned_database, \
     pinned_measurement, pinned_key_envelope, rows_removed_json, verification_json, \
     receipt_json, created_at, started_at, finished_at";

/// States a job is still to be run in.
const UNFINISHED: &str = "state IN ('requested', 'running', 'blocked', 'failed')";

fn erasure(row: &AnyRow) -> StoreResult<ErasureJobRow> {
    let binding_id: Option<String> = row.try_get("pinned_binding_id")?;
    let pinned = match binding_id {
        Some(binding_id) => Some(PinnedTarget {
            binding_id,
            url: row
                .try_get::<Option<String>, _>("pinned_url")?
                .unwrap_or_default(),
            database: row
                .try_get::<Option<String>, _>("pinned_database")?
                .unwrap_or_default(),
            measurement: row
                .try_get::<Option<String>, _>("pinned_measurement")?
                .unwrap_or_default(),
            api_key_envelope: row.try_get("pinned_key_envelope")?,
        }),
        None => None,
    };
    Ok(ErasureJobRow {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        scope_json: row.try_get("scope_json")?,
        memory_predicate: row.try_get("memory_predicate")?,
        store: row.try_get("store")?,
        as_of_micros: row.try_get("as_of_micros")?,
        requested_by: row.try_get("requested_by")?,
        requested_at_micros: row.try_get("requested_at_micros")?,
        state: row.try_get("state")?,
        detail: row.try_get("detail")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        claimed_by: row.try_get("claimed_by")?,
        claimed_until: row.try_get("claimed_until")?,
        target_json: row.try_get("target_json")?,
        pinned,
        rows_removed_json: row.try_get("rows_removed_json")?,
        verification_json: row.try_get("verification_json")?,
        receipt_json: row.try_get("receipt_json")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

impl SqlStore {
    /// Inserts `row` unless its id exists, inside `tx`; whether it inserted.
    pub(super) async fn ers_insert_in(
        tx: &mut Transaction<'static, Any>,
        row: &ErasureJobRow,
    ) -> StoreResult<bool> {
        let sql = format!(
            "INSERT INTO erasures ({ERASURE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26) \
             ON CONFLICT (id) DO NOTHING"
        );
        let pinned = row.pinned.as_ref();
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(row.id.clone())
            .bind(row.org_id.clone())
            .bind(row.scope_json.clone())
            .bind(row.memory_predicate.clone())
            .bind(row.store.clone())
            .bind(row.as_of_micros)
            .bind(row.requested_by.clone())
            .bind(row.requested_at_micros)
            .bind(row.state.clone())
            .bind(row.detail.clone())
            .bind(row.attempts)
            .bind(row.next_attempt_at)
            .bind(row.claimed_by.clone())
            .bind(row.claimed_until)
            .bind(row.target_json.clone())
            .bind(pinned.map(|p| p.binding_id.clone()))
            .bind(pinned.map(|p| p.url.clone()))
            .bind(pinned.map(|p| p.database.clone()))
            .bind(pinned.map(|p| p.measurement.clone()))
            .bind(pinned.and_then(|p| p.api_key_envelope.clone()))
            .bind(row.rows_removed_json.clone())
            .bind(row.verification_json.clone())
            .bind(row.receipt_json.clone())
            .bind(row.created_at)
            .bind(row.started_at)
            .bind(row.finished_at)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Pins `target` into every unfinished job of `org_id` without one,
    /// inside `tx`.
    pub(super) async fn ers_pin_in(
        tx: &mut Transaction<'static, Any>,
        org_id: &str,
        target: &PinnedTarget,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE erasures SET pinned_binding_id = $1, pinned_url = $2, pinned_database = $3, \
             pinned_measurement = $4, pinned_key_envelope = $5 \
             WHERE org_id = $6 AND pinned_binding_id IS NULL AND {UNFINISHED}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(target.binding_id.clone())
            .bind(target.url.clone())
            .bind(target.database.clone())
            .bind(target.measurement.clone())
            .bind(target.api_key_envelope.clone())
            .bind(org_id.to_owned())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(super) async fn ers_insert(&self, row: &ErasureJobRow) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = Self::ers_insert_in(&mut tx, row).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    pub(super) async fn ers_get(&self, id: &str) -> StoreResult<Option<ErasureJobRow>> {
        let sql = format!("SELECT {ERASURE_COLUMNS} FROM erasures WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(erasure).transpose()
    }

    pub(super) async fn ers_list(&self, filter: &ErasureFilter) -> StoreResult<Vec<ErasureJobRow>> {
        let sql = format!(
            "SELECT {ERASURE_COLUMNS} FROM erasures \
             WHERE ($1 = '' OR org_id = $1) AND ($2 = '' OR state = $2) \
             ORDER BY requested_at_micros DESC, id DESC LIMIT {}",
            super::super::MAX_ERASURES_LISTED
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.org_id.clone().unwrap_or_default())
            .bind(filter.state.clone().unwrap_or_default())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(erasure).collect()
    }

    pub(super) async fn ers_has_unfinished(
        &self,
        org_id: &str,
        requested_by: &str,
    ) -> StoreResult<bool> {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM (SELECT id FROM erasures \
             WHERE org_id = $1 AND requested_by = $2 AND {UNFINISHED} LIMIT 1) AS u"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(requested_by)
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n > 0)
    }

    pub(super) async fn ers_count(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM erasures GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    pub(super) async fn ers_due(&self, now: i64, limit: u32) -> StoreResult<Vec<ErasureJobRow>> {
        let sql = format!(
            "SELECT {ERASURE_COLUMNS} FROM erasures \
             WHERE {UNFINISHED} AND next_attempt_at <= $1 \
             AND (claimed_until IS NULL OR claimed_until <= $1) \
             ORDER BY next_attempt_at, id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(erasure).collect()
    }

    pub(super) async fn ers_claim(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> StoreResult<Option<ErasureJobRow>> {
        let sql = format!(
            "UPDATE erasures SET claimed_by = $1, claimed_until = $2 \
             WHERE id = $3 AND {UNFINISHED} \
             AND (claimed_until IS NULL OR claimed_until <= $4 OR claimed_by = $1)"
        );
        let claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner.to_owned())
            .bind(until)
            .bind(id.to_owned())
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if claimed == 0 {
            return Ok(None);
        }
        Ok(self
            .ers_get(id)
            .await?
            .filter(|row| row.claimed_by.as_deref() == Some(owner)))
    }

    pub(super) async fn ers_save(&self, row: &ErasureJobRow, owner: &str) -> StoreResult<bool> {
        // The pinned target is written only by org deletion and key
        // rotation; a save clears it once the job is done and otherwise
        // leaves it as it is (a running job must not undo a pin or a rewrap).
        let written = sqlx::query(
            "UPDATE erasures SET state = $1, detail = $2, attempts = $3, next_attempt_at = $4, \
             claimed_by = $5, claimed_until = $6, target_json = $7, rows_removed_json = $8, \
             verification_json = $9, receipt_json = $10, started_at = $11, finished_at = $12, \
             pinned_binding_id = CASE WHEN $1 = 'done' THEN NULL ELSE pinned_binding_id END, \
             pinned_url = CASE WHEN $1 = 'done' THEN NULL ELSE pinned_url END, \
             pinned_database = CASE WHEN $1 = 'done' THEN NULL ELSE pinned_database END, \
             pinned_measurement = CASE WHEN $1 = 'done' THEN NULL ELSE pinned_measurement END, \
             pinned_key_envelope = CASE WHEN $1 = 'done' THEN NULL ELSE pinned_key_envelope END \
             WHERE id = $13 AND claimed_by = $14",
        )
        .bind(row.state.clone())
        .bind(row.detail.clone())
        .bind(row.attempts)
        .bind(row.next_attempt_at)
        .bind(row.claimed_by.clone())
        .bind(row.claimed_until)
        .bind(row.target_json.clone())
        .bind(row.rows_removed_json.clone())
        .bind(row.verification_json.clone())
        .bind(row.receipt_json.clone())
        .bind(row.started_at)
        .bind(row.finished_at)
        .bind(row.id.clone())
        .bind(owner.to_owned())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(written == 1)
    }

    pub(super) async fn ers_swap_envelope(
        &self,
        id: &str,
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE erasures SET pinned_key_envelope = $1 \
             WHERE id = $2 AND pinned_key_envelope = $3",
        )
        .bind(new.to_vec())
        .bind(id.to_owned())
        .bind(old.to_vec())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}
