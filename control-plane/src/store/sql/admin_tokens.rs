//! Admin tokens for [`SqlStore`]: the `adm_*` methods the
//! [`Store`](crate::store::Store) impl delegates to. Revocation is the one
//! read-then-write: whether a token is the last active admin-role token is
//! decided inside the revoking transaction, which is serialised with every
//! other revocation (an advisory lock on PostgreSQL, the write lock taken at
//! `BEGIN IMMEDIATE` on SQLite). Without that, two replicas revoking the last
//! two admin tokens at once would each see the other's token still active.
//! Creation and revocation append their audit entry in their own
//! transaction, like every other audited change.

use super::queries::commit_audited;
use super::rows::{ADMIN_TOKEN_COLUMNS, admin_token, is_unique_violation};
use super::{Backend, SqlStore};
use crate::store::{AdminTokenRevocation, AdminTokenRow, AuditWith, StoreError, StoreResult};
use sqlx::Row;

/// Key of the PostgreSQL advisory lock that serialises revocations
/// ("mtadmins" in ASCII).
const REVOCATION_LOCK_KEY: i64 = 0x6d74_6164_6d69_6e73;

/// Admin-role tokens neither revoked nor expired at `$1`.
const ACTIVE_ADMINS: &str = "role = 'admin' AND revoked_at IS NULL \
     AND (expires_at IS NULL OR expires_at > $1)";

impl SqlStore {
    pub(super) async fn adm_active_count(&self, now: i64) -> StoreResult<u64> {
        let sql = format!("SELECT COUNT(*) AS n FROM admin_tokens WHERE {ACTIVE_ADMINS}");
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    pub(super) async fn adm_insert(
        &self,
        row: &AdminTokenRow,
        audit: Option<AuditWith<'_, AdminTokenRow>>,
    ) -> StoreResult<()> {
        let mut tx = match audit {
            Some(_) => self.begin_audited().await?,
            None => self.begin_write().await?,
        };
        let sql = format!(
            "INSERT INTO admin_tokens ({ADMIN_TOKEN_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(row.id.clone())
            .bind(row.token_hash.clone())
            .bind(row.fingerprint.clone())
            .bind(row.name.clone())
            .bind(row.role.clone())
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(row.last_used_at)
            .bind(row.revoked_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("admin token {} already registered", row.id))
                } else {
                    e.into()
                }
            })?;
        match audit {
            Some(audit) => commit_audited(tx, audit, row).await,
            None => Ok(tx.commit().await?),
        }
    }

    pub(super) async fn adm_get(&self, id: &str) -> StoreResult<Option<AdminTokenRow>> {
        let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(admin_token).transpose()
    }

    pub(super) async fn adm_list(&self) -> StoreResult<Vec<AdminTokenRow>> {
        let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(admin_token).collect()
    }

    pub(super) async fn adm_revoke(
        &self,
        id: &str,
        revoked_at: i64,
        force: bool,
        audit: AuditWith<'_, AdminTokenRow>,
    ) -> StoreResult<AdminTokenRevocation> {
        // the audit lock first, as every audited change takes it
        let mut tx = self.begin_audited().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(REVOCATION_LOCK_KEY)
                .fetch_one(&mut *tx)
                .await?;
        }
        let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE id = $1");
        let Some(found) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(AdminTokenRevocation::NotFound);
        };
        let mut row = admin_token(&found)?;
        if row.revoked_at.is_some() {
            return Ok(AdminTokenRevocation::AlreadyRevoked(row));
        }
        let active_admin = row.role == "admin" && row.expires_at.is_none_or(|at| at > revoked_at);
        if active_admin && !force {
            let sql = format!(
                "SELECT COUNT(*) AS n FROM admin_tokens WHERE {ACTIVE_ADMINS} AND id <> $2"
            );
            let others: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(revoked_at)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if others == 0 {
                return Ok(AdminTokenRevocation::LastAdmin(row));
            }
        }
        sqlx::query("UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(revoked_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        row.revoked_at = Some(revoked_at);
        commit_audited(tx, audit, &row).await?;
        Ok(AdminTokenRevocation::Revoked(row))
    }

    pub(super) async fn adm_touch(&self, used: &[(String, i64)]) -> StoreResult<()> {
        if used.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (id, at) in used {
            sqlx::query(
                "UPDATE admin_tokens SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
