//! The stand-in's storage: one in-memory SQLite database holding a table per
//! (database, measurement), named `"<database>.<measurement>"` (a quoted
//! identifier, so it cannot collide with anything a query writes unquoted).
//!
//! Columns are typed by their first non-nil value (`BIGINT`, `DOUBLE`,
//! `TEXT`, `BOOLEAN`; an all-nil column is `TEXT`, as in Arc) and added with
//! `ALTER TABLE … ADD COLUMN` as new ones appear. `time` is declared
//! `TIMESTAMP` and holds integer microseconds. Later ints/floats are coerced
//! to the column's type (a float into a `BIGINT` column is truncated); any
//! other type mismatch is refused with 400, which is stricter than Arc (Arc
//! would write a second Parquet file with the other type and may fail at
//! query time instead).
//!
//! Rows pass through each table's buffer ([`super::buffer`]): with the
//! visibility delay on they are inserted only when it flushes; counts and
//! listings (`row_count`, `tables`) show readable rows only. A table whose
//! rows are all still buffered reads as missing, as in Arc (no Parquet file
//! yet). Optional SQLite indexes ([`Store::open`]'s `indexes`) make the
//! stand-in's own engine faster on big tables; they change no answer and
//! no modelled cost.

use super::buffer::{Buffering, Chunks};
use super::cost::ScanShape;
use super::decode::{Batch, Cell};
use super::scan::{Columns, Scan};
use super::timefmt::rfc3339_nano;
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// Declared type of the `time` column; result columns with this declared
/// type are rendered as RFC 3339 strings.
const TIME_DECL: &str = "TIMESTAMP";

#[derive(Debug, Clone, Copy, PartialEq)]
enum ColType {
    Int,
    Float,
    Text,
    Bool,
}

impl ColType {
    fn decl(self) -> &'static str {
        match self {
            Self::Int => "BIGINT",
            Self::Float => "DOUBLE",
            Self::Text => "TEXT",
            Self::Bool => "BOOLEAN",
        }
    }

    fn of(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Null => None,
            Cell::Int(_) => Some(Self::Int),
            Cell::Float(_) => Some(Self::Float),
            Cell::Str(_) => Some(Self::Text),
            Cell::Bool(_) => Some(Self::Bool),
        }
    }

    /// Whether `cell` may be stored in a column of this type.
    fn fits(self, cell: &Cell) -> bool {
        matches!(
            (self, cell),
            (_, Cell::Null)
                | (Self::Int | Self::Float, Cell::Int(_) | Cell::Float(_))
                | (Self::Text, Cell::Str(_))
                | (Self::Bool, Cell::Bool(_))
        )
    }

    /// The SQL value for `cell` (which `fits`) in a column of this type.
    fn coerce(self, cell: &Cell) -> ValueRef<'_> {
        match (self, cell) {
            (Self::Int, Cell::Int(i)) => ValueRef::Integer(*i),
            (Self::Int, Cell::Float(f)) => ValueRef::Integer(*f as i64),
            (Self::Float, Cell::Int(i)) => ValueRef::Real(*i as f64),
            (Self::Float, Cell::Float(f)) => ValueRef::Real(*f),
            (Self::Text, Cell::Str(s)) => ValueRef::Text(s.as_bytes()),
            (Self::Bool, Cell::Bool(b)) => ValueRef::Integer(i64::from(*b)),
            _ => ValueRef::Null,
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    /// lower-cased name → (name as first written, type)
    cols: HashMap<String, (String, ColType)>,
    /// Readable (inserted) rows.
    rows: u64,
    chunks: Chunks,
    /// The chunks ("files") that hold inserted rows, by the SQLite rowid of
    /// their first row: rows are inserted chunk after chunk and SQLite gives
    /// each new row a rowid above every existing one, so a row belongs to
    /// the entry with the largest key at or below its rowid.
    files: BTreeMap<i64, FileRows>,
    /// The chunk the last inserted rows went to.
    last_file: Option<u64>,
}

/// One chunk's inserted rows.
#[derive(Debug, Clone, Copy)]
struct FileRows {
    chunk: u64,
    rows: u64,
}

/// What a delete found in a table and, unless it was a dry run, removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletion {
    /// Rows matched (and removed).
    pub rows: u64,
    /// Names of the chunks ("Parquet files") that held matching rows.
    pub files: Vec<String>,
    /// Of those, how many were left without rows (and removed).
    pub emptied: u64,
}

/// Why an insert failed, mapped to an HTTP status by the caller.
#[derive(Debug)]
pub enum StoreError {
    /// The stand-in's row cap was reached (507).
    Full(String),
    /// The batch does not fit the table's column types (400).
    Mismatch(String),
    /// SQLite refused (500).
    Internal(String),
}

/// A query's result, values already rendered the way Arc's JSON shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    pub columns: Vec<String>,
    pub data: Vec<Vec<Value>>,
}

pub struct Store {
    conn: Connection,
    tables: BTreeMap<(String, String), Table>,
    /// Readable rows over all tables.
    total_rows: u64,
    max_rows: u64,
    /// Lower-cased column names that get a SQLite index.
    indexes: HashSet<String>,
    buffering: Buffering,
    /// Visibility delay: rows readable only once their buffer flushed.
    hold: bool,
    /// Where flush ticks are counted from.
    epoch: Instant,
}

type Key = (String, String);

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The internal table name of `database`.`measurement`, quoted.
pub fn table_ident(database: &str, measurement: &str) -> String {
    quote_ident(&format!("{database}.{measurement}"))
}

impl Store {
    /// An empty store capped at `max_rows` rows; columns named in `indexes`
    /// get a SQLite index when they first appear.
    pub fn open(
        max_rows: u64,
        indexes: &[String],
        buffering: Buffering,
        hold: bool,
    ) -> Result<Self, String> {
        let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        // DuckDB's LIKE is case-sensitive; SQLite's is not unless asked.
        conn.execute_batch("PRAGMA case_sensitive_like = ON;")
            .map_err(|e| e.to_string())?;
        // DuckDB's epoch_us(TIMESTAMP): the µs since the epoch, which is
        // what `time` columns hold here already.
        conn.create_scalar_function(
            "epoch_us",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| match ctx.get_raw(0) {
                rusqlite::types::ValueRef::Integer(us) => Ok(Some(us)),
                rusqlite::types::ValueRef::Null => Ok(None),
                _ => Err(rusqlite::Error::UserFunctionError(
                    "epoch_us: expects a TIMESTAMP".into(),
                )),
            },
        )
        .map_err(|e| e.to_string())?;
        // DuckDB's sha256(VARCHAR): the lowercase hex of the SHA-256 of
        // the text's UTF-8 bytes.
        conn.create_scalar_function(
            "sha256",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| match ctx.get_raw(0) {
                rusqlite::types::ValueRef::Null => Ok(None),
                rusqlite::types::ValueRef::Text(t) => {
                    use sha2::Digest as _;
                    Ok(Some(hex::encode(sha2::Sha256::digest(t))))
                }
                _ => Err(rusqlite::Error::UserFunctionError(
                    "sha256: expects a VARCHAR".into(),
                )),
            },
        )
        .map_err(|e| e.to_string())?;
        // DuckDB's chr(INTEGER): the character of a code point.
        conn.create_scalar_function(
            "chr",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                let code: i64 = ctx.get(0)?;
                u32::try_from(code)
                    .ok()
                    .and_then(char::from_u32)
                    .map(String::from)
                    .ok_or_else(|| {
                        rusqlite::Error::UserFunctionError(
                            format!("chr: {code} is not a code point").into(),
                        )
                    })
            },
        )
        .map_err(|e| e.to_string())?;
        // No "double-quoted string literal" fallback: "x" is an identifier.
        for cfg in [
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DML,
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DDL,
        ] {
            conn.set_db_config(cfg, false).map_err(|e| e.to_string())?;
        }
        Ok(Self {
            conn,
            tables: BTreeMap::new(),
            total_rows: 0,
            max_rows,
            indexes: indexes.iter().map(|c| c.to_ascii_lowercase()).collect(),
            buffering,
            hold,
            epoch: Instant::now(),
        })
    }

    pub fn total_rows(&self) -> u64 {
        self.total_rows
    }

    /// Readable rows of `database`.`measurement`.
    pub fn row_count(&self, database: &str, measurement: &str) -> u64 {
        self.table(database, measurement).map_or(0, |t| t.rows)
    }

    /// Rows of `database`.`measurement` still held in its buffer.
    pub fn held_rows(&self, database: &str, measurement: &str) -> u64 {
        self.table(database, measurement)
            .map_or(0, |t| t.chunks.held_rows())
    }

    fn table(&self, database: &str, measurement: &str) -> Option<&Table> {
        self.tables
            .get(&(database.to_string(), measurement.to_string()))
    }

    /// (database, measurement) pairs that hold readable rows.
    pub fn tables(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .filter(|(_, t)| t.rows > 0)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn buffering(&self) -> (Buffering, bool) {
        (self.buffering, self.hold)
    }

    /// Changes the flush policy and the visibility delay; every buffer is
    /// flushed first, so no row changes mode half-way.
    pub fn set_buffering(&mut self, buffering: Buffering, hold: bool) -> Result<u64, StoreError> {
        let flushed = self.flush_all()?;
        self.buffering = buffering;
        self.hold = hold;
        Ok(flushed)
    }

    /// Writes out every buffer that is due at `now`.
    pub fn settle(&mut self, now: Instant) -> Result<(), StoreError> {
        let due: Vec<(Key, Vec<Batch>, u64)> = self
            .tables
            .iter_mut()
            .filter_map(|(k, t)| {
                let batches = t.chunks.take_due(now)?;
                Some((k.clone(), batches, t.chunks.last_flushed()))
            })
            .collect();
        for (key, batches, chunk) in due {
            self.append_all(&key, &batches, chunk)?;
        }
        Ok(())
    }

    /// Writes out every buffer now; returns the rows that became readable.
    pub fn flush_all(&mut self) -> Result<u64, StoreError> {
        let open: Vec<(Key, Vec<Batch>, u64)> = self
            .tables
            .iter_mut()
            .filter_map(|(k, t)| {
                let batches = t.chunks.close()?;
                Some((k.clone(), batches, t.chunks.last_flushed()))
            })
            .collect();
        let mut rows = 0;
        for (key, batches, chunk) in open {
            rows += batches.iter().map(|b| b.rows() as u64).sum::<u64>();
            self.append_all(&key, &batches, chunk)?;
        }
        Ok(rows)
    }

    /// Drops every held (unflushed) row, as Arc without WAL loses them in a
    /// crash; buffers due before `now` were flushed and survive. Returns the
    /// rows lost.
    pub fn crash_unflushed(&mut self, now: Instant) -> Result<u64, StoreError> {
        self.settle(now)?;
        Ok(self.tables.values_mut().map(|t| t.chunks.crash()).sum())
    }

    /// Accepts `batch` into `database`: its types are checked (and new
    /// columns added) now; its rows are inserted now or, with the
    /// visibility delay on, when its buffer flushes. All or nothing.
    pub fn write(&mut self, database: &str, batch: Batch, now: Instant) -> Result<(), StoreError> {
        self.settle(now)?;
        let rows = batch.rows() as u64;
        let held: u64 = self.tables.values().map(|t| t.chunks.held_rows()).sum();
        let stored = self.total_rows + held;
        if stored.saturating_add(rows) > self.max_rows {
            return Err(StoreError::Full(format!(
                "stand-in row cap reached ({stored} rows stored, cap {})",
                self.max_rows
            )));
        }
        let key = (database.to_string(), batch.measurement.clone());
        self.declare(&key, &batch)?;
        let (epoch, policy) = (self.epoch, self.buffering);
        let flush = if self.hold {
            let chunks = &mut self.tables.entry(key.clone()).or_default().chunks;
            chunks.add(epoch, now, policy, rows, Some(batch))
        } else {
            let open = self
                .tables
                .entry(key.clone())
                .or_default()
                .chunks
                .open_chunk();
            self.append_all(&key, std::slice::from_ref(&batch), open)?;
            let chunks = &mut self.tables.entry(key.clone()).or_default().chunks;
            chunks.add(epoch, now, policy, rows, None)
        };
        if let Some(batches) = flush {
            let chunk = self.tables.get(&key).map_or(0, |t| t.chunks.last_flushed());
            self.append_all(&key, &batches, chunk)?;
        }
        Ok(())
    }

    /// Checks `batch` against the table's column types and creates the
    /// table and any new column (the schema exists before rows are
    /// readable, so held batches are checked when they are accepted).
    fn declare(&mut self, key: &Key, batch: &Batch) -> Result<(), StoreError> {
        let (database, measurement) = (&key.0, &key.1);
        let existing = self.tables.get(key);
        // Types per batch column: the table's, else the first non-nil value's.
        let mut new_cols = Vec::new();
        for (name, values) in &batch.columns {
            let lower = name.to_ascii_lowercase();
            let ty = match existing.and_then(|t| t.cols.get(&lower)) {
                Some((_, ty)) => *ty,
                None => {
                    let ty = values.iter().find_map(ColType::of).unwrap_or(ColType::Text);
                    new_cols.push((lower, name.clone(), ty));
                    ty
                }
            };
            if let Some(bad) = values.iter().find(|c| !ty.fits(c)) {
                return Err(StoreError::Mismatch(format!(
                    "column {name:?} is {} but got {bad:?}",
                    ty.decl()
                )));
            }
        }
        let table = table_ident(database, measurement);
        let internal = |e: rusqlite::Error| StoreError::Internal(e.to_string());
        let create = existing.is_none();
        if create || !new_cols.is_empty() {
            let tx = self.conn.transaction().map_err(internal)?;
            if create {
                tx.execute_batch(&format!(
                    "CREATE TABLE {table} (\"time\" {TIME_DECL} NOT NULL)"
                ))
                .map_err(internal)?;
            }
            let index = |column: &str| {
                let name = quote_ident(&format!("{database}.{measurement}.{column}"));
                format!("CREATE INDEX {name} ON {table} ({})", quote_ident(column))
            };
            if create && self.indexes.contains("time") {
                tx.execute_batch(&index("time")).map_err(internal)?;
            }
            for (lower, name, ty) in &new_cols {
                tx.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {} {}",
                    quote_ident(name),
                    ty.decl()
                ))
                .map_err(internal)?;
                if self.indexes.contains(lower) {
                    tx.execute_batch(&index(name)).map_err(internal)?;
                }
            }
            tx.commit().map_err(internal)?;
        }
        let t = self.tables.entry(key.clone()).or_default();
        for (lower, name, ty) in new_cols {
            t.cols.insert(lower, (name, ty));
        }
        Ok(())
    }

    /// Inserts `batches` as rows of chunk number `chunk`.
    fn append_all(&mut self, key: &Key, batches: &[Batch], chunk: u64) -> Result<(), StoreError> {
        for b in batches {
            self.append(key, b, chunk)?;
        }
        Ok(())
    }

    /// Inserts the rows of a declared `batch` into chunk `chunk`; all or
    /// nothing.
    fn append(&mut self, key: &Key, batch: &Batch, chunk: u64) -> Result<(), StoreError> {
        let internal = |e: rusqlite::Error| StoreError::Internal(e.to_string());
        let Some(t) = self.tables.get(key) else {
            return Err(StoreError::Internal("append to an undeclared table".into()));
        };
        let types: Vec<ColType> = batch
            .columns
            .iter()
            .map(|(name, _)| {
                t.cols
                    .get(&name.to_ascii_lowercase())
                    .map_or(ColType::Text, |(_, ty)| *ty)
            })
            .collect();
        let table = table_ident(&key.0, &key.1);
        let tx = self.conn.transaction().map_err(internal)?;
        let mut first_rowid = None;
        let names: Vec<String> = std::iter::once("\"time\"".to_string())
            .chain(batch.columns.iter().map(|(n, _)| quote_ident(n)))
            .collect();
        let marks = vec!["?"; names.len()].join(",");
        {
            let mut stmt = tx
                .prepare(&format!(
                    "INSERT INTO {table} ({}) VALUES ({marks})",
                    names.join(",")
                ))
                .map_err(internal)?;
            for row in 0..batch.rows() {
                stmt.raw_bind_parameter(1, batch.time[row])
                    .map_err(internal)?;
                for (i, ((_, values), ty)) in batch.columns.iter().zip(&types).enumerate() {
                    let v = ty.coerce(&values[row]);
                    stmt.raw_bind_parameter(i + 2, ToSqlOutput::Borrowed(v))
                        .map_err(internal)?;
                }
                stmt.raw_execute().map_err(internal)?;
                if row == 0 {
                    first_rowid = Some(tx.last_insert_rowid());
                }
            }
        }
        tx.commit().map_err(internal)?;
        let rows = batch.rows() as u64;
        if let Some(t) = self.tables.get_mut(key) {
            t.rows += rows;
            if let Some(first) = first_rowid {
                // Entries keyed at or above `first` hold no rows any more
                // (their rows were deleted and SQLite reuses the rowids of
                // deleted top rows): drop them (this chunk's too: it is
                // entered again below, at its new first rowid).
                for f in t.files.split_off(&first).into_values() {
                    if f.chunk != chunk && t.chunks.is_flushed(f.chunk) {
                        t.chunks.remove_flushed(1);
                    }
                }
                let continuing = t.last_file == Some(chunk)
                    && t.files
                        .last_key_value()
                        .is_some_and(|(_, f)| f.chunk == chunk);
                if !continuing {
                    t.files.insert(first, FileRows { chunk, rows: 0 });
                }
                t.last_file = Some(chunk);
                if let Some((_, f)) = t.files.range_mut(..=first).next_back() {
                    f.rows += rows;
                }
            }
        }
        self.total_rows += rows;
        Ok(())
    }

    /// A name for the table's SQLite rowid that no column of it shadows
    /// (`None` for a table the store does not know).
    pub fn rowid_column(&self, database: &str, measurement: &str) -> Option<&'static str> {
        let t = self.table(database, measurement)?;
        ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|alias| !t.cols.contains_key(*alias))
    }

    /// Removes the rows with these rowids (found by a query selecting
    /// [`rowid_column`](Self::rowid_column)) from `database`.`measurement`;
    /// with `dry_run`, only counts them and the chunks holding them. A
    /// flushed chunk left without rows is removed, as Arc removes a
    /// rewritten file that would be empty.
    pub fn delete_rows(
        &mut self,
        database: &str,
        measurement: &str,
        rowids: &[i64],
        dry_run: bool,
    ) -> Result<Deletion, StoreError> {
        let key = (database.to_string(), measurement.to_string());
        let Some(t) = self.tables.get(&key) else {
            return Ok(Deletion::default());
        };
        let Some(alias) = self.rowid_column(database, measurement) else {
            return Err(StoreError::Internal(
                "every rowid alias is a column name".into(),
            ));
        };
        // rows per file (by its first rowid)
        let mut per_file: BTreeMap<i64, u64> = BTreeMap::new();
        for id in rowids {
            if let Some((start, _)) = t.files.range(..=*id).next_back() {
                *per_file.entry(*start).or_default() += 1;
            }
        }
        let files = per_file
            .keys()
            .filter_map(|start| t.files.get(start))
            .map(|f| format!("{measurement}_{:06}.parquet", f.chunk))
            .collect();
        let emptied: Vec<i64> = per_file
            .iter()
            .filter(|(start, n)| t.files.get(start).is_some_and(|f| f.rows <= **n))
            .map(|(start, _)| *start)
            .collect();
        let deletion = Deletion {
            rows: rowids.len() as u64,
            files,
            emptied: emptied.len() as u64,
        };
        if dry_run || rowids.is_empty() {
            return Ok(deletion);
        }
        let internal = |e: rusqlite::Error| StoreError::Internal(e.to_string());
        let table = table_ident(database, measurement);
        let tx = self.conn.transaction().map_err(internal)?;
        {
            let mut stmt = tx
                .prepare(&format!("DELETE FROM {table} WHERE {alias} = ?"))
                .map_err(internal)?;
            for id in rowids {
                stmt.execute([id]).map_err(internal)?;
            }
        }
        tx.commit().map_err(internal)?;
        let n = rowids.len() as u64;
        self.total_rows = self.total_rows.saturating_sub(n);
        if let Some(t) = self.tables.get_mut(&key) {
            t.rows = t.rows.saturating_sub(n);
            for (start, gone) in &per_file {
                if let Some(f) = t.files.get_mut(start) {
                    f.rows = f.rows.saturating_sub(*gone);
                }
            }
            let mut flushed_emptied = 0;
            for start in emptied {
                // the open buffer's chunk (visibility delay off) stays open
                let chunk = t.files.get(&start).map(|f| f.chunk);
                if chunk.is_some_and(|c| t.chunks.is_flushed(c)) {
                    t.files.remove(&start);
                    flushed_emptied += 1;
                }
            }
            t.chunks.remove_flushed(flushed_emptied);
        }
        Ok(deletion)
    }

    /// What `scan` reads, or `None` for a table the store does not know.
    /// `Some` with zero rows: the table's rows are all still buffered.
    pub fn scan_shape(&self, scan: &Scan) -> Option<ScanShape> {
        let t = self.table(&scan.database, &scan.measurement)?;
        let all = t.cols.len() as u64 + 1; // + time
        let columns = match &scan.columns {
            Columns::All => all,
            Columns::Named(words) => {
                let time = u64::from(words.contains("time"));
                let named = t.cols.keys().filter(|c| words.contains(*c)).count() as u64;
                (named + time).max(1)
            }
        };
        Some(ScanShape {
            rows: t.rows,
            columns,
            patterns: u64::from(scan.patterns),
            chunks: t.chunks.readable(),
        })
    }

    /// Runs one read-only statement (already rewritten to internal table
    /// names), returning at most `max_rows` rows.
    /// `time_aliases`: lower-cased result names to render as time anyway.
    pub fn query(
        &self,
        sql: &str,
        max_rows: usize,
        time_aliases: &HashSet<String>,
    ) -> Result<QueryOutput, QueryError> {
        let err = |e: rusqlite::Error| QueryError::Engine(e.to_string());
        let mut stmt = self.conn.prepare(sql).map_err(err)?;
        if !stmt.readonly() {
            return Err(QueryError::NotReadOnly);
        }
        let kinds: Vec<(String, Render)> = stmt
            .columns()
            .iter()
            .map(|c| {
                let kind = Render::of(c.name(), c.decl_type(), time_aliases);
                (c.name().to_string(), kind)
            })
            .collect();
        let mut rows = stmt.raw_query();
        let mut data = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            if data.len() >= max_rows {
                return Err(QueryError::TooLarge(max_rows));
            }
            let mut out = Vec::with_capacity(kinds.len());
            for (i, (_, kind)) in kinds.iter().enumerate() {
                out.push(kind.render(row.get_ref(i).map_err(err)?));
            }
            data.push(out);
        }
        Ok(QueryOutput {
            columns: kinds.into_iter().map(|(n, _)| n).collect(),
            data,
        })
    }
}

/// Why a query failed on the engine.
#[derive(Debug)]
pub enum QueryError {
    Engine(String),
    NotReadOnly,
    TooLarge(usize),
}

/// How a result column is shown in JSON.
#[derive(Debug, Clone, Copy)]
enum Render {
    Time,
    Bool,
    Plain,
}

impl Render {
    /// From the declared type of the source column (set when a result column
    /// is a plain column reference, aliased or not). Expressions lose it, so
    /// `min(time)`-like aggregates — by their alias, or by their name when
    /// unaliased — are rendered as time to match DuckDB's TIMESTAMP result.
    fn of(name: &str, decl: Option<&str>, time_aliases: &HashSet<String>) -> Self {
        match decl.map(str::to_ascii_uppercase).as_deref() {
            Some(TIME_DECL) => Self::Time,
            Some("BOOLEAN") => Self::Bool,
            Some(_) => Self::Plain,
            None => {
                let n = name.to_ascii_lowercase().replace([' ', '"'], "");
                let agg = ["min(", "max(", "first(", "last(", "any_value("]
                    .iter()
                    .any(|f| n.starts_with(f))
                    && (n.ends_with("(time)") || n.ends_with(".time)"));
                if agg || time_aliases.contains(&n) {
                    Self::Time
                } else {
                    Self::Plain
                }
            }
        }
    }

    fn render(self, v: ValueRef<'_>) -> Value {
        match (self, v) {
            (_, ValueRef::Null) => Value::Null,
            (Self::Time, ValueRef::Integer(i)) => Value::String(rfc3339_nano(i)),
            (Self::Time, ValueRef::Real(f)) => Value::String(rfc3339_nano(f as i64)),
            (Self::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
            (_, ValueRef::Integer(i)) => Value::from(i),
            (_, ValueRef::Real(f)) => go_float(f),
            (_, ValueRef::Text(t) | ValueRef::Blob(t)) => {
                Value::String(String::from_utf8_lossy(t).into_owned())
            }
        }
    }
}

/// A float the way Go's encoder writes it: NaN/±Inf as null (Arc's writer),
/// and integral values without a fraction (`3`, not `3.0`).
fn go_float(f: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if !f.is_finite() {
        Value::Null
    } else if f.fract() == 0.0 && f.abs() < EXACT {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}
