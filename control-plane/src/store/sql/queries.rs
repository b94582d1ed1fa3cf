//! [`Store`] for [`SqlStore`]: the queries and transactions for meta, orgs
//! and their tombstones, arc bindings and api keys. Admin tokens delegate to
//! the `adm_*` methods in `admin_tokens`, settings and the audit log to the
//! `cfg_*` methods in `config`.
//!
//! Every change of an org, a key or a binding is one transaction that first
//! takes the audit lock (`lock_audit`, which must be its first statement),
//! makes the change and appends its audit entry (`append_locked`): the change
//! and its entry commit together or not at all.

use super::SqlStore;
use super::rows::{
    API_KEY_COLUMNS, ARC_BINDING_COLUMNS, ORG_SUMMARY_SELECT, api_key, arc_binding,
    is_unique_violation, org_summary,
};
use crate::store::audit_chain::{AuditEntry, AuditHead, AuditRecord};
use crate::store::settings_audit::{AuditFilter, SettingChange, SettingRow};
use crate::store::{
    AdminTokenRevocation, AdminTokenRow, ApiKeyRow, ArcBindingRow, AuditWith, ErasureFilter,
    ErasureJobRow, KeyFamily, OrgDeletion, OrgRow, OrgSummary, PinnedTarget, SigningKeyRow, Store,
    StoreError, StoreResult, TombstoneRow,
};
use async_trait::async_trait;
use memtrace_common::clock::now_ms;
use memtrace_common::envelope::AuditKey;
use sqlx::{Any, Row, Transaction};

pub(super) type Tx = Transaction<'static, Any>;

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn applied_migration(&self) -> StoreResult<Option<i64>> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("v")?)
    }

    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn meta_put(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn active_admin_count(&self, now: i64) -> StoreResult<u64> {
        self.adm_active_count(now).await
    }

    async fn insert_admin_token(
        &self,
        row: &AdminTokenRow,
        audit: Option<AuditWith<'_, AdminTokenRow>>,
    ) -> StoreResult<()> {
        self.adm_insert(row, audit).await
    }

    async fn get_admin_token(&self, id: &str) -> StoreResult<Option<AdminTokenRow>> {
        self.adm_get(id).await
    }

    async fn list_admin_tokens(&self) -> StoreResult<Vec<AdminTokenRow>> {
        self.adm_list().await
    }

    async fn revoke_admin_token(
        &self,
        id: &str,
        revoked_at: i64,
        force: bool,
        audit: AuditWith<'_, AdminTokenRow>,
    ) -> StoreResult<AdminTokenRevocation> {
        self.adm_revoke(id, revoked_at, force, audit).await
    }

    async fn touch_admin_tokens(&self, used: &[(String, i64)]) -> StoreResult<()> {
        self.adm_touch(used).await
    }

    async fn insert_org(&self, row: &OrgRow, audit: AuditWith<'_, OrgRow>) -> StoreResult<()> {
        let mut tx = self.begin_audited().await?;
        let result = sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(row.id.clone())
            .bind(row.name.clone())
            .bind(row.created_at)
            .execute(&mut *tx)
            .await;
        match result {
            Ok(_) => {
                sqlx::query("DELETE FROM org_tombstones WHERE org_id = $1")
                    .bind(row.id.clone())
                    .execute(&mut *tx)
                    .await?;
                commit_audited(tx, audit, row).await
            }
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "an org with id {:?} or name {:?} already exists",
                row.id, row.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_org(&self, id: &str) -> StoreResult<Option<OrgSummary>> {
        let sql = format!("{ORG_SUMMARY_SELECT} WHERE o.id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(org_summary).transpose()
    }

    async fn list_orgs(&self) -> StoreResult<Vec<OrgSummary>> {
        let sql = format!("{ORG_SUMMARY_SELECT} ORDER BY o.created_at, o.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(org_summary).collect()
    }

    async fn delete_org(
        &self,
        id: &str,
        deleted_at: i64,
        erasure: Option<&ErasureJobRow>,
        audit: AuditWith<'_, OrgDeletion>,
    ) -> StoreResult<Option<OrgDeletion>> {
        let mut tx = self.begin_audited().await?;
        let Some(row) = sqlx::query("SELECT id, name, created_at FROM orgs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let org = OrgRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        };
        if let Some(job) = erasure {
            let sql = format!("SELECT {ARC_BINDING_COLUMNS} FROM arc_bindings WHERE org_id = $1");
            let binding = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .as_ref()
                .map(arc_binding)
                .transpose()?;
            let pinned = binding.map(|b| PinnedTarget {
                binding_id: b.id,
                url: b.url,
                database: b.database,
                measurement: b.measurement,
                api_key_envelope: b.api_key_envelope,
            });
            let mut job = job.clone();
            if job.pinned.is_none() {
                job.pinned = pinned.clone();
            }
            Self::ers_insert_in(&mut tx, &job).await?;
            if let Some(pinned) = &pinned {
                Self::ers_pin_in(&mut tx, id, pinned).await?;
            }
        }
        let arc = sqlx::query("DELETE FROM arc_bindings WHERE org_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let key_rows = sqlx::query("SELECT id FROM api_keys WHERE org_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        let api_key_ids = key_rows
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("DELETE FROM api_keys WHERE org_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let settings_removed = Self::delete_org_settings_in(&mut tx, id).await?;
        sqlx::query("DELETE FROM orgs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO org_tombstones (org_id, name, deleted_at) VALUES ($1, $2, $3) \
             ON CONFLICT (org_id) DO UPDATE SET name = excluded.name, deleted_at = excluded.deleted_at",
        )
        .bind(org.id.clone())
        .bind(org.name.clone())
        .bind(deleted_at)
        .execute(&mut *tx)
        .await?;
        let deletion = OrgDeletion {
            org,
            arc_binding_removed: arc > 0,
            api_keys_removed: u32::try_from(api_key_ids.len()).unwrap_or(u32::MAX),
            api_key_ids,
            settings_removed,
        };
        commit_audited(tx, audit, &deletion).await?;
        Ok(Some(deletion))
    }

    async fn list_tombstones(&self) -> StoreResult<Vec<TombstoneRow>> {
        let rows =
            sqlx::query("SELECT org_id, name, deleted_at FROM org_tombstones ORDER BY org_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TombstoneRow {
                    org_id: r.try_get("org_id")?,
                    name: r.try_get("name")?,
                    deleted_at: r.try_get("deleted_at")?,
                })
            })
            .collect()
    }

    async fn list_all_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key).collect()
    }

    async fn put_arc_binding(
        &self,
        row: &ArcBindingRow,
        replace: bool,
        audit: AuditWith<'_, ArcBindingRow>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_audited().await?;
        require_org(&mut tx, &row.org_id).await?;
        let existing = sqlx::query("SELECT id FROM arc_bindings WHERE org_id = $1")
            .bind(row.org_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() {
            if !replace {
                return Err(StoreError::Conflict(format!(
                    "org {:?} already has an arc binding",
                    row.org_id
                )));
            }
            sqlx::query("DELETE FROM arc_bindings WHERE org_id = $1")
                .bind(row.org_id.clone())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO arc_bindings (id, org_id, url, database_name, measurement, api_key_envelope, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(row.id.clone())
        .bind(row.org_id.clone())
        .bind(row.url.clone())
        .bind(row.database.clone())
        .bind(row.measurement.clone())
        .bind(row.api_key_envelope.clone())
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(&mut *tx)
        .await?;
        commit_audited(tx, audit, row).await
    }

    async fn get_arc_binding(&self, org_id: &str) -> StoreResult<Option<ArcBindingRow>> {
        let sql = format!("SELECT {ARC_BINDING_COLUMNS} FROM arc_bindings WHERE org_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(arc_binding).transpose()
    }

    async fn delete_arc_binding(
        &self,
        org_id: &str,
        audit: AuditWith<'_, ArcBindingRow>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_audited().await?;
        let sql = format!("SELECT {ARC_BINDING_COLUMNS} FROM arc_bindings WHERE org_id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let removed = arc_binding(&row)?;
        sqlx::query("DELETE FROM arc_bindings WHERE org_id = $1")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        commit_audited(tx, audit, &removed).await?;
        Ok(true)
    }

    async fn list_arc_bindings(&self) -> StoreResult<Vec<ArcBindingRow>> {
        let sql = format!("SELECT {ARC_BINDING_COLUMNS} FROM arc_bindings ORDER BY org_id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(arc_binding).collect()
    }

    async fn swap_arc_envelope(
        &self,
        id: &str,
        old: &[u8],
        new: &[u8],
        updated_at: i64,
    ) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE arc_bindings SET api_key_envelope = $1, updated_at = $2 \
             WHERE id = $3 AND api_key_envelope = $4",
        )
        .bind(new.to_vec())
        .bind(updated_at)
        .bind(id)
        .bind(old.to_vec())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn insert_api_key(
        &self,
        row: &ApiKeyRow,
        audit: AuditWith<'_, ApiKeyRow>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_audited().await?;
        require_org(&mut tx, &row.org_id).await?;
        let same_name: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys WHERE org_id = $1 AND name = $2 AND revoked_at IS NULL",
        )
        .bind(row.org_id.clone())
        .bind(row.name.clone())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if same_name > 0 {
            return Err(StoreError::Conflict(format!(
                "org {:?} already has an active api key named {:?}",
                row.org_id, row.name
            )));
        }
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, key_hash, scopes, created_at, expires_at, last_used_at, revoked_at, \
             legacy_bcrypt_hash, legacy_prefix) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(row.id.clone())
        .bind(row.org_id.clone())
        .bind(row.name.clone())
        .bind(row.key_hash.clone())
        .bind(row.scopes.clone())
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.last_used_at)
        .bind(row.revoked_at)
        .bind(row.legacy.as_ref().map(|l| l.bcrypt_hash.clone()))
        .bind(row.legacy.as_ref().map(|l| l.prefix.clone()))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            // a concurrent create of the same name won (api_keys_active_name),
            // or an imported key has this one's id
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "api key {:?} exists, or org {:?} already has an active api key named {:?}",
                    row.id, row.org_id, row.name
                ))
            } else {
                e.into()
            }
        })?;
        commit_audited(tx, audit, row).await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRow>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key).transpose()
    }

    async fn list_api_keys(
        &self,
        org_id: &str,
        include_revoked: bool,
    ) -> StoreResult<Vec<ApiKeyRow>> {
        let sql = if include_revoked {
            format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_at, id"
            )
        } else {
            format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND revoked_at IS NULL ORDER BY created_at, id"
            )
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key).collect()
    }

    async fn revoke_api_key(
        &self,
        id: &str,
        revoked_at: i64,
        audit: AuditWith<'_, ApiKeyRow>,
    ) -> StoreResult<Option<ApiKeyRow>> {
        let mut tx = self.begin_audited().await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(revoked_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let row = api_key(&row)?;
        commit_audited(tx, audit, &row).await?;
        Ok(Some(row))
    }

    async fn list_settings(&self) -> StoreResult<Vec<SettingRow>> {
        self.cfg_list_settings().await
    }

    async fn get_setting(&self, key: &str, org_id: &str) -> StoreResult<Option<SettingRow>> {
        self.cfg_get_setting(key, org_id).await
    }

    async fn apply_setting_changes(
        &self,
        changes: &[SettingChange],
        audit: &[AuditRecord],
        key: &AuditKey,
    ) -> StoreResult<Vec<AuditEntry>> {
        self.cfg_apply_setting_changes(changes, audit, key).await
    }

    async fn seed_settings(
        &self,
        marker: &str,
        changes: &[SettingChange],
        audit: &[AuditRecord],
        key: &AuditKey,
    ) -> StoreResult<bool> {
        self.cfg_seed_settings(marker, changes, audit, key).await
    }

    async fn delete_org_settings(&self, org_id: &str) -> StoreResult<Vec<SettingRow>> {
        self.cfg_delete_org_settings(org_id).await
    }

    async fn insert_erasure(&self, row: &ErasureJobRow) -> StoreResult<bool> {
        self.ers_insert(row).await
    }

    async fn get_erasure(&self, id: &str) -> StoreResult<Option<ErasureJobRow>> {
        self.ers_get(id).await
    }

    async fn list_erasures(&self, filter: &ErasureFilter) -> StoreResult<Vec<ErasureJobRow>> {
        self.ers_list(filter).await
    }

    async fn has_unfinished_erasure(&self, org_id: &str, requested_by: &str) -> StoreResult<bool> {
        self.ers_has_unfinished(org_id, requested_by).await
    }

    async fn count_erasures(&self) -> StoreResult<Vec<(String, i64)>> {
        self.ers_count().await
    }

    async fn due_erasures(&self, now: i64, limit: u32) -> StoreResult<Vec<ErasureJobRow>> {
        self.ers_due(now, limit).await
    }

    async fn claim_erasure(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> StoreResult<Option<ErasureJobRow>> {
        self.ers_claim(id, owner, now, until).await
    }

    async fn save_erasure(&self, row: &ErasureJobRow, owner: &str) -> StoreResult<bool> {
        self.ers_save(row, owner).await
    }

    async fn swap_erasure_envelope(&self, id: &str, old: &[u8], new: &[u8]) -> StoreResult<bool> {
        self.ers_swap_envelope(id, old, new).await
    }

    async fn append_audit(&self, record: &AuditRecord, key: &AuditKey) -> StoreResult<AuditEntry> {
        self.cfg_append_audit(record, key).await
    }

    async fn get_audit(&self, seq: i64) -> StoreResult<Option<AuditEntry>> {
        self.cfg_get_audit(seq).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        self.cfg_list_audit(filter).await
    }

    async fn audit_range(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.cfg_audit_range(after_seq, limit).await
    }

    async fn audit_head(&self) -> StoreResult<AuditHead> {
        self.cfg_audit_head().await
    }

    async fn list_signing_keys(&self, family: KeyFamily) -> StoreResult<Vec<SigningKeyRow>> {
        self.sk_list(family).await
    }

    async fn insert_signing_key(
        &self,
        family: KeyFamily,
        row: &SigningKeyRow,
        audit: AuditWith<'_, SigningKeyRow>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_audited().await?;
        if !Self::sk_insert_next(&mut tx, family, row).await? {
            return Ok(false);
        }
        commit_audited(tx, audit, row).await?;
        Ok(true)
    }

    async fn swap_signing_key_envelope(
        &self,
        family: KeyFamily,
        version: i64,
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        self.sk_swap_envelope(family, version, old, new).await
    }
}

impl SqlStore {
    /// A write transaction that holds the audit lock, for a change that
    /// appends its audit entry before it commits.
    pub(super) async fn begin_audited(&self) -> StoreResult<Tx> {
        let mut tx = self.begin_write().await?;
        self.lock_audit(&mut tx).await?;
        Ok(tx)
    }
}

/// Appends the change's audit entry (built from `done`) and commits the
/// change with it; an entry that cannot be appended rolls the change back.
pub(super) async fn commit_audited<T>(
    mut tx: Tx,
    audit: AuditWith<'_, T>,
    done: &T,
) -> StoreResult<()> {
    let record = (audit.record)(done);
    SqlStore::append_locked(&mut tx, std::slice::from_ref(&record), audit.key).await?;
    tx.commit().await?;
    Ok(())
}

/// Refuses (Conflict) a row for an org that does not exist, inside `tx`.
async fn require_org(tx: &mut Tx, org_id: &str) -> StoreResult<()> {
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM orgs WHERE id = $1")
        .bind(org_id.to_owned())
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "org {org_id:?} does not exist"
        )));
    }
    Ok(())
}
