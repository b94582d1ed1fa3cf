//! [`SqlStore`]'s runtime settings and audit trail (the `Store` impl in
//! `sql/mod.rs` delegates here). Same SQL subset as `sql/queries.rs`.
//!
//! Serialising audit appends: every transaction that appends first takes a
//! transaction-scoped advisory lock on PostgreSQL, then updates the single
//! `audit_head` row before reading it. The update is the transaction's first
//! write, so on SQLite it takes the database write lock (a deferred
//! transaction that read first could fail with SQLITE_BUSY_SNAPSHOT instead
//! of waiting), and on PostgreSQL it also row-locks the head. Two appends,
//! from any connection or replica, can therefore never read the same head.
//! Changes of orgs, keys and bindings (`sql/queries.rs`) take the same lock
//! and append their entry in their own transaction.

use super::{Backend, SqlStore};
use crate::store::audit_chain::{AuditEntry, AuditHead, AuditRecord, GENESIS_HASH, head_mac};
use crate::store::settings_audit::{AuditFilter, SettingChange, SettingRow};
use crate::store::{StoreError, StoreResult};
use memtrace_common::clock::now_ms;
use memtrace_common::envelope::AuditKey;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

/// Key of the PostgreSQL advisory lock that serialises audit appends
/// ("memtrace" in ASCII).
pub const AUDIT_LOCK_KEY: i64 = 0x6d65_6d74_7261_6365;

const AUDIT_COLUMNS: &str =
    "seq, at_ms, actor, action, target, outcome, details_json, prev_hash, hash, version, kek_id";

fn setting_row(row: &AnyRow) -> StoreResult<SettingRow> {
    Ok(SettingRow {
        key: row.try_get("key")?,
        org_id: row.try_get("org_id")?,
        value_json: row.try_get("value_json")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn audit_entry(row: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        outcome: row.try_get("outcome")?,
        details_json: row.try_get("details_json")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        version: row.try_get("version")?,
        kek_id: row.try_get("kek_id")?,
    })
}

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'`.
fn like_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

enum Param {
    Text(String),
    Int(i64),
}

impl SqlStore {
    /// Serialises this transaction with every other audit append (see the
    /// module docs). Must be the transaction's first statement.
    pub(super) async fn lock_audit(&self, tx: &mut Transaction<'static, Any>) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(AUDIT_LOCK_KEY)
                .fetch_one(&mut **tx)
                .await?;
        }
        let touched = sqlx::query("UPDATE audit_head SET touched_at = $1 WHERE id = 1")
            .bind(now_ms())
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if touched != 1 {
            return Err(StoreError::Corrupt("audit_head row is missing".into()));
        }
        Ok(())
    }

    /// Chains `records` keyed under `key` after the current head, inserts
    /// them and moves the head (with its MAC). Requires [`Self::lock_audit`]
    /// earlier in the same transaction.
    pub(super) async fn append_locked(
        tx: &mut Transaction<'static, Any>,
        records: &[AuditRecord],
        key: &AuditKey,
    ) -> StoreResult<Vec<AuditEntry>> {
        Self::append_entries(tx, records, Some(key)).await
    }

    /// [`Self::append_locked`]; `key` is `None` only for tests that write
    /// unkeyed entries the way control planes before version 2 did.
    async fn append_entries(
        tx: &mut Transaction<'static, Any>,
        records: &[AuditRecord],
        key: Option<&AuditKey>,
    ) -> StoreResult<Vec<AuditEntry>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut **tx)
            .await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut prev: Vec<u8> = head.try_get("hash")?;
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            seq += 1;
            let entry = match key {
                Some(key) => AuditEntry::chain(seq, prev, record, key),
                None => AuditEntry::chain_unkeyed(seq, prev, record),
            };
            sqlx::query(
                "INSERT INTO audit_log (seq, at_ms, actor, action, target, outcome, details_json, prev_hash, hash, version, kek_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(entry.seq)
            .bind(entry.at_ms)
            .bind(entry.actor.clone())
            .bind(entry.action.clone())
            .bind(entry.target.clone())
            .bind(entry.outcome.clone())
            .bind(entry.details_json.clone())
            .bind(entry.prev_hash.clone())
            .bind(entry.hash.clone())
            .bind(entry.version)
            .bind(entry.kek_id.clone())
            .execute(&mut **tx)
            .await?;
            prev = entry.hash.clone();
            entries.push(entry);
        }
        let mac = key.map(|key| head_mac(key, seq, &prev).to_vec());
        sqlx::query(
            "UPDATE audit_head SET seq = $1, hash = $2, kek_id = $3, mac = $4 WHERE id = 1",
        )
        .bind(seq)
        .bind(prev)
        .bind(key.map(|k| k.kek_id().to_owned()))
        .bind(mac)
        .execute(&mut **tx)
        .await?;
        Ok(entries)
    }

    /// Compare-and-swap of each change inside the transaction.
    async fn apply_changes_locked(
        tx: &mut Transaction<'static, Any>,
        changes: &[SettingChange],
    ) -> StoreResult<()> {
        for change in changes {
            let current: Option<String> =
                sqlx::query("SELECT value_json FROM settings WHERE key = $1 AND org_id = $2")
                    .bind(change.key.clone())
                    .bind(change.org_id.clone())
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.try_get("value_json"))
                    .transpose()?;
            if current != change.expected {
                return Err(StoreError::Conflict(format!(
                    "setting {} changed concurrently",
                    change.key
                )));
            }
            match &change.new {
                Some(value) => {
                    sqlx::query(
                        "INSERT INTO settings (key, org_id, value_json, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (key, org_id) DO UPDATE SET value_json = excluded.value_json, updated_at = excluded.updated_at",
                    )
                    .bind(change.key.clone())
                    .bind(change.org_id.clone())
                    .bind(value.clone())
                    .bind(change.at_ms)
                    .execute(&mut **tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM settings WHERE key = $1 AND org_id = $2")
                        .bind(change.key.clone())
                        .bind(change.org_id.clone())
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn cfg_list_settings(&self) -> StoreResult<Vec<SettingRow>> {
        let rows = sqlx::query(
            "SELECT key, org_id, value_json, updated_at FROM settings ORDER BY key, org_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(setting_row).collect()
    }

    pub(super) async fn cfg_get_setting(
        &self,
        key: &str,
        org_id: &str,
    ) -> StoreResult<Option<SettingRow>> {
        let row = sqlx::query(
            "SELECT key, org_id, value_json, updated_at FROM settings WHERE key = $1 AND org_id = $2",
        )
        .bind(key)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(setting_row).transpose()
    }

    pub(super) async fn cfg_apply_setting_changes(
        &self,
        changes: &[SettingChange],
        audit: &[AuditRecord],
        key: &AuditKey,
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut tx = self.begin_write().await?;
        self.lock_audit(&mut tx).await?;
        Self::apply_changes_locked(&mut tx, changes).await?;
        let entries = Self::append_locked(&mut tx, audit, key).await?;
        tx.commit().await?;
        Ok(entries)
    }

    pub(super) async fn cfg_seed_settings(
        &self,
        marker: &str,
        changes: &[SettingChange],
        audit: &[AuditRecord],
        key: &AuditKey,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        self.lock_audit(&mut tx).await?;
        let inserted = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(marker)
        .bind(now_ms().to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        Self::apply_changes_locked(&mut tx, changes).await?;
        Self::append_locked(&mut tx, audit, key).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn cfg_delete_org_settings(
        &self,
        org_id: &str,
    ) -> StoreResult<Vec<SettingRow>> {
        if org_id.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = Self::delete_org_settings_in(&mut tx, org_id).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Deletes every override of `org_id` inside `tx`; returns the removed rows.
    pub(super) async fn delete_org_settings_in(
        tx: &mut Transaction<'static, Any>,
        org_id: &str,
    ) -> StoreResult<Vec<SettingRow>> {
        let rows = sqlx::query(
            "SELECT key, org_id, value_json, updated_at FROM settings WHERE org_id = $1 ORDER BY key",
        )
        .bind(org_id)
        .fetch_all(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM settings WHERE org_id = $1")
            .bind(org_id)
            .execute(&mut **tx)
            .await?;
        rows.iter().map(setting_row).collect()
    }

    pub(super) async fn cfg_append_audit(
        &self,
        record: &AuditRecord,
        key: &AuditKey,
    ) -> StoreResult<AuditEntry> {
        let mut tx = self.begin_write().await?;
        self.lock_audit(&mut tx).await?;
        let entry = Self::append_locked(&mut tx, std::slice::from_ref(record), key)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("audit append produced no entry".into()))?;
        tx.commit().await?;
        Ok(entry)
    }

    pub(super) async fn cfg_get_audit(&self, seq: i64) -> StoreResult<Option<AuditEntry>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(audit_entry).transpose()
    }

    pub(super) async fn cfg_list_audit(
        &self,
        filter: &AuditFilter,
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        let next = |params: &mut Vec<Param>, p: Param| {
            params.push(p);
            format!("${}", params.len())
        };
        if let Some(prefix) = filter.action_prefix.as_deref().filter(|p| !p.is_empty()) {
            let p = next(
                &mut params,
                Param::Text(format!("{}%", like_escape(prefix))),
            );
            clauses.push(format!("action LIKE {p} ESCAPE '\\'"));
        }
        if let Some(key) = filter.key.as_deref().filter(|k| !k.is_empty()) {
            let exact = next(&mut params, Param::Text(key.to_owned()));
            let any_org = next(&mut params, Param::Text(format!("%/{}", like_escape(key))));
            clauses.push(format!(
                "(target = {exact} OR target LIKE {any_org} ESCAPE '\\')"
            ));
        }
        if let Some(org) = filter.org_id.as_deref().filter(|o| !o.is_empty()) {
            let exact = next(&mut params, Param::Text(org.to_owned()));
            let settings = next(&mut params, Param::Text(format!("{}/%", like_escape(org))));
            clauses.push(format!(
                "(target = {exact} OR target LIKE {settings} ESCAPE '\\')"
            ));
        }
        if let Some(actor) = filter.actor.as_deref().filter(|a| !a.is_empty()) {
            let p = next(&mut params, Param::Text(actor.to_owned()));
            clauses.push(format!("actor = {p}"));
        }
        if let Some(outcome) = filter.outcome.as_deref().filter(|o| !o.is_empty()) {
            let p = next(&mut params, Param::Text(outcome.to_owned()));
            clauses.push(format!("outcome = {p}"));
        }
        if let Some(before) = filter.before_seq {
            let p = next(&mut params, Param::Int(before));
            clauses.push(format!("seq < {p}"));
        }
        let limit = next(&mut params, Param::Int(i64::from(filter.limit.max(1))));
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log{filter_sql} ORDER BY seq DESC LIMIT {limit}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for param in params {
            query = match param {
                Param::Text(v) => query.bind(v),
                Param::Int(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(audit_entry).collect()
    }

    pub(super) async fn cfg_audit_range(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after_seq)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_entry).collect()
    }

    pub(super) async fn cfg_audit_head(&self) -> StoreResult<AuditHead> {
        let row = sqlx::query("SELECT seq, hash, kek_id, mac FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => AuditHead {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
                kek_id: row.try_get("kek_id")?,
                mac: row.try_get("mac")?,
            },
            None => AuditHead {
                seq: 0,
                hash: GENESIS_HASH.to_vec(),
                kek_id: None,
                mac: None,
            },
        })
    }

    /// Appends `records` as unkeyed (version 1) entries, the way control
    /// planes before the keyed chain did: for tests of databases from then.
    #[cfg(any(test, feature = "conformance"))]
    pub async fn append_unkeyed_for_tests(
        &self,
        records: &[AuditRecord],
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut tx = self.begin_write().await?;
        self.lock_audit(&mut tx).await?;
        let entries = Self::append_entries(&mut tx, records, None).await?;
        tx.commit().await?;
        Ok(entries)
    }

    /// Rewrites stored audit entries (by seq) and the head in place, after
    /// dropping the append-only triggers: what an attacker with write access
    /// to the database can do, for tests that check verification finds it.
    #[cfg(any(test, feature = "conformance"))]
    pub async fn overwrite_audit_for_tests(
        &self,
        entries: &[AuditEntry],
        head: &AuditHead,
    ) -> StoreResult<()> {
        let drop_triggers = match self.backend {
            Backend::Sqlite => {
                "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete"
            }
            Backend::Postgres => "DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log",
        };
        self.execute_raw_for_tests(drop_triggers).await?;
        let mut tx = self.begin_write().await?;
        for e in entries {
            sqlx::query(
                "UPDATE audit_log SET at_ms = $1, actor = $2, action = $3, target = $4, outcome = $5, \
                 details_json = $6, prev_hash = $7, hash = $8, version = $9, kek_id = $10 WHERE seq = $11",
            )
            .bind(e.at_ms)
            .bind(e.actor.clone())
            .bind(e.action.clone())
            .bind(e.target.clone())
            .bind(e.outcome.clone())
            .bind(e.details_json.clone())
            .bind(e.prev_hash.clone())
            .bind(e.hash.clone())
            .bind(e.version)
            .bind(e.kek_id.clone())
            .bind(e.seq)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE audit_head SET seq = $1, hash = $2, kek_id = $3, mac = $4 WHERE id = 1",
        )
        .bind(head.seq)
        .bind(head.hash.clone())
        .bind(head.kek_id.clone())
        .bind(head.mac.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs raw SQL against the database, for tests that tamper with rows
    /// the way an attacker with database access could.
    #[cfg(any(test, feature = "conformance"))]
    pub async fn execute_raw_for_tests(&self, sql: &str) -> StoreResult<u64> {
        Ok(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

#[cfg(test)]
mod tests;
