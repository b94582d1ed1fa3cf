//! [`EmbeddedStore`]: one org's [`TenantStore`] in its own SQLite file
//! (`<dir>/<org_id>.db`, WAL, `synchronous = FULL`), for single-node
//! deployments without Arc; [`EmbeddedStores`] opens and caches them.
//!
//! Tables, created on open: the memories table (columns exactly
//! [`MEMORY_COLUMNS`]; `time` INTEGER µs, `importance` REAL, the rest TEXT),
//! `agents` and `sessions` (`time`, `id`, then their state columns as
//! TEXT). Writes insert in one transaction and return once it committed;
//! reads run builder SQL for [`Dialect::Embedded`] and come back as JSON
//! values (INTEGER and REAL → number, TEXT → string, NULL → null).

use super::{RECEIPTS_TABLE, Rows, StateRow, StateTable, StoreError, TenantStore, VERSIONS_TABLE};
use crate::query::{Dialect, EXPIRES_AT, Ident, MEMORY_COLUMNS, OrgId, Sql};
use crate::store::MemoryRow;
use serde_json::Value;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous, SqliteValueRef,
};
use sqlx::{
    AssertSqlSafe, Column as _, Decode, Executor as _, Row as _, SqlSafeStr as _, Statement as _,
    TypeInfo as _, ValueRef as _,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections per org file.
pub const MAX_CONNECTIONS: u32 = 4;
/// How long a statement waits for SQLite's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Org files kept open by default by [`EmbeddedStores`].
pub const DEFAULT_MAX_OPEN: usize = 256;

/// One org's SQLite file.
#[derive(Debug)]
pub struct EmbeddedStore {
    org_id: String,
    memories: Ident,
    path: PathBuf,
    pool: SqlitePool,
}

impl EmbeddedStore {
    /// Opens (creating if missing) the file at `path` for `org_id`, with the
    /// memories table named `memories_table` (the original's default is
    /// `events`), and creates the tables and indexes that do not exist.
    pub async fn open(path: &Path, org_id: &str, memories_table: &str) -> Result<Self, StoreError> {
        let memories = memories_ident(memories_table)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| db_error(&format!("open {}", path.display()), e))?;
        let store = Self {
            org_id: org_id.to_owned(),
            memories,
            path: path.to_owned(),
            pool,
        };
        store.create_schema().await?;
        tracing::debug!(org_id, "embedded store opened");
        Ok(store)
    }

    /// The org this store belongs to.
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn create_schema(&self) -> Result<(), StoreError> {
        let m = self.memories.as_str();
        let memory_table = |name: &str| {
            let mut create =
                format!("CREATE TABLE IF NOT EXISTS \"{name}\" (time INTEGER NOT NULL");
            for c in &MEMORY_COLUMNS[1..] {
                if *c == "importance" {
                    create.push_str(", importance REAL NOT NULL DEFAULT 0");
                } else if *c == EXPIRES_AT {
                    create.push_str(", expires_at INTEGER NOT NULL DEFAULT 0");
                } else {
                    let _ = write!(create, ", {c} TEXT NOT NULL DEFAULT ''");
                }
            }
            create.push(')');
            create
        };
        let mut statements = vec![
            memory_table(m),
            memory_table(VERSIONS_TABLE),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{VERSIONS_TABLE}_id\" ON \"{VERSIONS_TABLE}\" (id)"
            ),
            format!("CREATE INDEX IF NOT EXISTS \"{m}_org_time\" ON \"{m}\" (org_id, time)"),
            format!("CREATE INDEX IF NOT EXISTS \"{m}_id\" ON \"{m}\" (id)"),
            format!("CREATE INDEX IF NOT EXISTS \"{m}_dedup_key\" ON \"{m}\" (dedup_key)"),
        ];
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS \"{RECEIPTS_TABLE}\" (time INTEGER NOT NULL, \
             id TEXT NOT NULL, org_id TEXT NOT NULL, receipt_json TEXT NOT NULL)"
        ));
        for table in [StateTable::Agents, StateTable::Sessions] {
            let t = table.name();
            let mut create = format!(
                "CREATE TABLE IF NOT EXISTS \"{t}\" (time INTEGER NOT NULL, id TEXT NOT NULL"
            );
            for c in table.columns() {
                let _ = write!(create, ", {c} TEXT NOT NULL DEFAULT ''");
            }
            create.push(')');
            statements.push(create);
            statements.push(format!(
                "CREATE INDEX IF NOT EXISTS \"{t}_id_time\" ON \"{t}\" (id, time)"
            ));
        }
        let mut tx = self.pool.begin().await.map_err(|e| db_error("schema", e))?;
        for sql in statements {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("schema", e))?;
        }
        // memory tables created before `expires_at` existed gain it
        for table in [m, VERSIONS_TABLE] {
            let has: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{EXPIRES_AT}'"
            )))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error("schema", e))?;
            if has == 0 {
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER TABLE \"{table}\" ADD COLUMN {EXPIRES_AT} INTEGER NOT NULL DEFAULT 0"
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("schema", e))?;
            }
        }
        tx.commit().await.map_err(|e| db_error("schema", e))
    }
}

impl EmbeddedStore {
    /// Inserts memory rows into `table` in one transaction.
    async fn insert_memory_rows(&self, table: &str, rows: &[MemoryRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO \"{table}\" ({}) VALUES (?{})",
            MEMORY_COLUMNS.join(", "),
            ", ?".repeat(MEMORY_COLUMNS.len() - 1)
        );
        let n = rows.len();
        let mut tx = self.pool.begin().await.map_err(|e| db_error("write", e))?;
        for r in rows {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(r.time)
                .bind(r.id.as_str())
                .bind(&*r.org_id)
                .bind(r.agent_id.as_str())
                .bind(r.session_id.as_str())
                .bind(&*r.memory_type)
                .bind(r.event_type.as_str())
                .bind(r.content.as_str())
                .bind(&*r.metadata_json)
                .bind(r.tags_csv.as_str())
                .bind(r.dedup_key.as_str())
                .bind(r.importance)
                .bind(r.parent_id.as_str())
                .bind(r.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("write", e))?;
        }
        tx.commit().await.map_err(|e| db_error("write", e))?;
        tracing::debug!(
            org_id = self.org_id,
            table,
            rows = n,
            "embedded memories written"
        );
        Ok(())
    }
}

/// The memories table name: a table identifier that is not a state table.
fn memories_ident(name: &str) -> Result<Ident, StoreError> {
    if memtrace_common::names::RESERVED_MEASUREMENTS.contains(&name) {
        return Err(StoreError::Backend(
            "invalid memories table: must not be agents, sessions, memory_versions or \
             erasure_receipts"
                .into(),
        ));
    }
    Ident::table(name).map_err(|e| StoreError::Backend(format!("invalid memories table: {e}")))
}

/// A sqlx error as a store error: pool and I/O trouble is `Unavailable`,
/// everything else (SQL refused, constraint) `Backend`.
fn db_error(what: &str, e: sqlx::Error) -> StoreError {
    let busy = matches!(&e, sqlx::Error::Database(d) if d.message().contains("locked"));
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(format!("embedded store {what}: {e}"))
        }
        _ if busy => StoreError::Unavailable(format!("embedded store {what}: {e}")),
        _ => StoreError::Backend(format!("embedded store {what}: {e}")),
    }
}

/// One result value as JSON, by the value's own SQLite type.
fn json_value(v: SqliteValueRef<'_>) -> Result<Value, sqlx::error::BoxDynError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let kind = v.type_info().name().to_owned();
    Ok(match kind.as_str() {
        "INTEGER" | "BOOLEAN" => Value::from(<i64 as Decode<Sqlite>>::decode(v)?),
        "REAL" | "NUMERIC" => serde_json::Number::from_f64(<f64 as Decode<Sqlite>>::decode(v)?)
            .map_or(Value::Null, Value::Number),
        "BLOB" => Value::String(
            String::from_utf8_lossy(&<Vec<u8> as Decode<Sqlite>>::decode(v)?).into_owned(),
        ),
        _ => Value::String(<String as Decode<Sqlite>>::decode(v)?),
    })
}

#[async_trait::async_trait]
impl TenantStore for EmbeddedStore {
    fn dialect(&self) -> Dialect {
        Dialect::Embedded
    }

    fn memories_table(&self) -> &str {
        self.memories.as_str()
    }

    async fn append_memories(&self, rows: &[MemoryRow]) -> Result<(), StoreError> {
        self.insert_memory_rows(self.memories.as_str(), rows).await
    }

    async fn append_versions(&self, rows: &[MemoryRow]) -> Result<(), StoreError> {
        self.insert_memory_rows(VERSIONS_TABLE, rows).await
    }

    async fn append_state(&self, table: StateTable, row: StateRow) -> Result<(), StoreError> {
        let columns = table.columns();
        if row.values.len() != columns.len() {
            return Err(StoreError::Backend(format!(
                "{} row has {} values for {} columns",
                table.name(),
                row.values.len(),
                columns.len()
            )));
        }
        let sql = format!(
            "INSERT INTO \"{}\" (time, id, {}) VALUES (?, ?{})",
            table.name(),
            columns.join(", "),
            ", ?".repeat(columns.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(row.time).bind(row.id);
        for v in row.values {
            q = q.bind(v);
        }
        let mut tx = self.pool.begin().await.map_err(|e| db_error("write", e))?;
        q.execute(&mut *tx)
            .await
            .map_err(|e| db_error("write", e))?;
        tx.commit().await.map_err(|e| db_error("write", e))
    }

    async fn query(&self, sql: &Sql) -> Result<Rows, StoreError> {
        let found = sqlx::query(AssertSqlSafe(sql.as_str()))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("read", e))?;
        let mut out = Rows::default();
        let Some(first) = found.first() else {
            // No rows: the column names come from the prepared statement.
            let stmt = (&self.pool)
                .prepare(AssertSqlSafe(sql.as_str().to_owned()).into_sql_str())
                .await
                .map_err(|e| db_error("read", e))?;
            out.columns = stmt.columns().iter().map(|c| c.name().to_owned()).collect();
            return Ok(out);
        };
        out.columns = first
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        for row in &found {
            let mut values = Vec::with_capacity(out.columns.len());
            for i in 0..out.columns.len() {
                let raw = row.try_get_raw(i).map_err(|e| db_error("read", e))?;
                let value = json_value(raw).map_err(|e| {
                    StoreError::Backend(format!("embedded store read: column {i}: {e}"))
                })?;
                values.push(value);
            }
            out.rows.push(values);
        }
        Ok(out)
    }
}

/// Opens org stores under one directory and keeps at most `max_open` of
/// them open, closing the least recently used (a store still held by a
/// caller stays usable until dropped).
#[derive(Debug)]
pub struct EmbeddedStores {
    dir: PathBuf,
    memories: Ident,
    max_open: usize,
    open: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    tick: u64,
    stores: HashMap<String, (Arc<EmbeddedStore>, u64)>,
}

impl EmbeddedStores {
    /// Org files go to `dir` (created on first open); `memories_table` is
    /// the memories table of every org (the original's default: `events`).
    pub fn new(dir: impl Into<PathBuf>, memories_table: &str) -> Result<Self, StoreError> {
        Ok(Self {
            dir: dir.into(),
            memories: memories_ident(memories_table)?,
            max_open: DEFAULT_MAX_OPEN,
            open: Mutex::new(Lru::default()),
        })
    }

    /// Keeps at most `max_open` (at least 1) org files open.
    pub fn with_max_open(mut self, max_open: usize) -> Self {
        self.max_open = max_open.max(1);
        self
    }

    /// The file of `org_id` (which must be a valid org id: it becomes a
    /// file name, so no separators, dots or traversal are possible).
    pub fn path_of(&self, org_id: &str) -> Result<PathBuf, StoreError> {
        let org = OrgId::parse(org_id).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(self.dir.join(format!("{}.db", org.as_str())))
    }

    /// Org files open now.
    pub fn open_count(&self) -> usize {
        self.lock().stores.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store of `org_id`, opened (and its file created) on first use.
    pub async fn open(&self, org_id: &str) -> Result<Arc<EmbeddedStore>, StoreError> {
        // Only valid org ids are cached: a hit needs no validation or path.
        if let Some(store) = self.cached(org_id) {
            return Ok(store);
        }
        let path = self.path_of(org_id)?;
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "embedded store directory {}: {e}",
                self.dir.display()
            ))
        })?;
        let opened = Arc::new(EmbeddedStore::open(&path, org_id, self.memories.as_str()).await?);
        let mut lru = self.lock();
        lru.tick += 1;
        let tick = lru.tick;
        // Another caller may have opened it meanwhile: keep theirs.
        if let Some((store, used)) = lru.stores.get_mut(org_id) {
            *used = tick;
            return Ok(store.clone());
        }
        while lru.stores.len() >= self.max_open {
            let Some(oldest) = lru
                .stores
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            lru.stores.remove(&oldest);
            tracing::debug!(
                org_id = oldest,
                "embedded store closed (least recently used)"
            );
        }
        lru.stores.insert(org_id.to_owned(), (opened.clone(), tick));
        Ok(opened)
    }

    fn cached(&self, org_id: &str) -> Option<Arc<EmbeddedStore>> {
        let mut lru = self.lock();
        lru.tick += 1;
        let tick = lru.tick;
        lru.stores.get_mut(org_id).map(|(store, used)| {
            *used = tick;
            store.clone()
        })
    }
}
