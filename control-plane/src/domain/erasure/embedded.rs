//! Erasure in the embedded store (single node, `memtracectl dev`: the
//! control plane runs in the worker's process with the worker's config):
//! one SQLite file per org, `<[worker] embedded_dir>/<org>.db`, holding the
//! memory table (`[arc] measurement`), `agents` and `sessions`. Writes
//! there commit before they are acknowledged (no ingest buffer), so one
//! delete and a count suffice. An org without a file never wrote anything:
//! nothing to erase. Only used when `[worker] embedded_dir` is set and
//! exists; otherwise an org without an Arc binding is blocked.
//!
//! Erased content must not linger in the file: deletes run with
//! `secure_delete` (freed pages are overwritten with zeros), the WAL is
//! checkpointed and truncated, and the file is vacuumed. An org's deletion
//! then removes its file (and its `-wal` / `-shm`).

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

/// A table that does not exist, or lacks `expires_at` (a file the worker
/// has not opened since the column exists): no row of it is covered.
fn no_table(error: &sqlx::Error) -> bool {
    let text = error.to_string();
    text.contains("no such table") || super::expiry::missing_expiry_column(&text)
}

/// The org's file, opened in sqlite `mode` (`ro`, `rw`, `rwc`).
pub(crate) async fn open(file: &Path, mode: &str) -> Result<AnyConnection, String> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode={mode}", file.display());
    AnyConnection::connect(&url)
        .await
        .map_err(|e| format!("open {}: {e}", file.display()))
}

/// The count statement of `table`'s rows matching `where_`, and its
/// answer (no table: 0).
async fn count_in(
    conn: &mut AnyConnection,
    table: &str,
    where_: &str,
) -> Result<(String, u64), String> {
    let sql = format!(
        "SELECT COUNT(*) AS n FROM {} WHERE {where_}",
        quote_table(table)
    );
    let n = match sqlx::query(AssertSqlSafe(sql.clone()))
        .fetch_one(conn)
        .await
    {
        Ok(row) => u64::try_from(row.try_get::<i64, _>("n").unwrap_or(0)).unwrap_or(0),
        Err(e) if no_table(&e) => 0,
        Err(e) => return Err(format!("count {table}: {e}")),
    };
    Ok((sql, n))
}

/// How many rows of `table` in `file` match `where_` (no file, no table:
/// 0).
pub(crate) async fn count(file: &Path, table: &str, where_: &str) -> Result<u64, String> {
    if !file.exists() {
        return Ok(0);
    }
    let mut conn = open(file, "ro").await?;
    let (_, n) = count_in(&mut conn, table, where_).await?;
    let _ = conn.close().await;
    Ok(n)
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
    let mut conn = open(file, "rw").await?;
    for pragma in ["PRAGMA busy_timeout = 5000", "PRAGMA secure_delete = ON"] {
        sqlx::query(pragma)
            .execute(&mut conn)
            .await
            .map_err(|e| format!("{pragma}: {e}"))?;
    }
    for (table, where_) in tables {
        let sql = format!("DELETE FROM {} WHERE {where_}", quote_table(table));
        let n = match sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await {
            Ok(done) => done.rows_affected(),
            Err(e) if no_table(&e) => 0,
            Err(e) => return Err(format!("delete from {table}: {e}")),
        };
        removed.insert(table.clone(), n);
    }
    if removed.values().any(|n| *n > 0) {
        // no copy of the erased rows in the WAL or in free pages
        for statement in ["PRAGMA wal_checkpoint(TRUNCATE)", "VACUUM"] {
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .map_err(|e| format!("{statement}: {e}"))?;
        }
    }
    for (table, where_) in tables {
        let (sql, n) = count_in(&mut conn, table, where_).await?;
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

/// Removes an org's file and its WAL and shared-memory files (absent ones
/// are fine).
pub(crate) fn remove_files(file: &Path) -> Result<(), String> {
    let mut paths = vec![file.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        paths.push(PathBuf::from(name));
    }
    for path in paths {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove {}: {e}", path.display())),
        }
    }
    Ok(())
}
