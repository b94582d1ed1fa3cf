//! Erasure in the embedded store (single node, `memtracectl dev`: the
//! control plane runs in the worker's process with the worker's config):
//! one SQLite file per org, `<[worker] embedded_dir>/<org>.db`, holding the
//! memory table (`[arc] measurement`), `agents` and `sessions`. Writes
//! there commit before they are acknowledged (no ingest buffer), so one
//! delete and a count suffice. An org without a file never wrote anything:
//! nothing to erase. Only used when `[worker] embedded_dir` is set and
//! exists; otherwise an org without an Arc binding is blocked.

use super::receipt::TableVerification;
use sqlx::{AnyConnection, AssertSqlSafe, Connection as _, Row as _};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where an org's embedded data would be, if this process can see it.
pub(crate) fn org_file(dir: &Path, org_id: &str) -> PathBuf {
    dir.join(format!("{org_id}.db"))
}

fn quote_table(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn no_table(error: &sqlx::Error) -> bool {
    error.to_string().contains("no such table")
}

/// What one embedded erasure did: rows deleted and what is left, per table.
pub(crate) struct EmbeddedErasure {
    pub removed: BTreeMap<String, u64>,
    pub verification: BTreeMap<String, TableVerification>,
}

/// Deletes `tables`' covered rows from `file` and counts what is left.
pub(crate) async fn erase(
    file: &Path,
    tables: &[(String, String)],
) -> Result<EmbeddedErasure, String> {
    let mut removed = BTreeMap::new();
    let mut verification = BTreeMap::new();
    if !file.exists() {
        for (table, where_) in tables {
            removed.insert(table.clone(), 0);
            verification.insert(
                table.clone(),
                TableVerification {
                    query: format!("(no embedded file {}) WHERE {where_}", file.display()),
                    remaining: 0,
                },
            );
        }
        return Ok(EmbeddedErasure {
            removed,
            verification,
        });
    }
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rw", file.display());
    let mut conn = AnyConnection::connect(&url)
        .await
        .map_err(|e| format!("open {}: {e}", file.display()))?;
    sqlx::query("PRAGMA busy_timeout = 5000")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("busy_timeout: {e}"))?;
    for (table, where_) in tables {
        let sql = format!("DELETE FROM {} WHERE {where_}", quote_table(table));
        let n = match sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await {
            Ok(done) => done.rows_affected(),
            Err(e) if no_table(&e) => 0,
            Err(e) => return Err(format!("delete from {table}: {e}")),
        };
        removed.insert(table.clone(), n);
    }
    for (table, where_) in tables {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {} WHERE {where_}",
            quote_table(table)
        );
        let n = match sqlx::query(AssertSqlSafe(sql.clone()))
            .fetch_one(&mut conn)
            .await
        {
            Ok(row) => u64::try_from(row.try_get::<i64, _>("n").unwrap_or(0)).unwrap_or(0),
            Err(e) if no_table(&e) => 0,
            Err(e) => return Err(format!("verify {table}: {e}")),
        };
        verification.insert(
            table.clone(),
            TableVerification {
                query: sql,
                remaining: n,
            },
        );
    }
    let _ = conn.close().await;
    Ok(EmbeddedErasure {
        removed,
        verification,
    })
}
