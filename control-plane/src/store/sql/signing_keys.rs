//! Signing keys (erasure receipts, agent tokens: one table per
//! [`KeyFamily`], the same shape) for [`SqlStore`]: the `sk_*` methods the
//! [`Store`](crate::store::Store) impl delegates to. A new version is
//! inserted inside an audited transaction (it holds the audit lock, so
//! inserts are serialised across replicas) only when it is the next one,
//! and with `ON CONFLICT DO NOTHING` besides, so "the first key" is stored
//! once however many replicas create it at once.

use super::SqlStore;
use super::queries::Tx;
use crate::store::{KeyFamily, SigningKeyRow, StoreResult};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLUMNS: &str = "version, key_id, public_key, private_envelope, created_at, retired_at";

fn receipt_key(row: &AnyRow) -> StoreResult<SigningKeyRow> {
    Ok(SigningKeyRow {
        version: row.try_get("version")?,
        key_id: row.try_get("key_id")?,
        public_key: row.try_get("public_key")?,
        private_envelope: row.try_get("private_envelope")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

impl SqlStore {
    pub(super) async fn sk_list(&self, family: KeyFamily) -> StoreResult<Vec<SigningKeyRow>> {
        let table = family.table();
        let sql = format!("SELECT {COLUMNS} FROM {table} ORDER BY version");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(receipt_key).collect()
    }

    /// Inserts `row` if it is the next version and retires the older ones;
    /// `false` (nothing written) otherwise. Runs in the caller's audited
    /// transaction.
    pub(super) async fn sk_insert_next(
        tx: &mut Tx,
        family: KeyFamily,
        row: &SigningKeyRow,
    ) -> StoreResult<bool> {
        let table = family.table();
        let sql = format!("SELECT MAX(version) AS v FROM {table}");
        let highest: Option<i64> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut **tx)
            .await?
            .try_get("v")?;
        if row.version != highest.unwrap_or(0) + 1 {
            return Ok(false);
        }
        let sql = format!(
            "INSERT INTO {table} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT DO NOTHING"
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(row.version)
            .bind(row.key_id.clone())
            .bind(row.public_key.clone())
            .bind(row.private_envelope.clone())
            .bind(row.created_at)
            .bind(row.retired_at)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if inserted != 1 {
            return Ok(false);
        }
        let sql =
            format!("UPDATE {table} SET retired_at = $1 WHERE version < $2 AND retired_at IS NULL");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(row.created_at)
            .bind(row.version)
            .execute(&mut **tx)
            .await?;
        Ok(true)
    }

    pub(super) async fn sk_swap_envelope(
        &self,
        family: KeyFamily,
        version: i64,
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        let sql = format!(
            "UPDATE {} SET private_envelope = $1 WHERE version = $2 AND private_envelope = $3",
            family.table()
        );
        let n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(new.to_vec())
            .bind(version)
            .bind(old.to_vec())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
}
