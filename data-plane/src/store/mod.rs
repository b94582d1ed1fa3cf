//! The storage contract of one tenant: where an org's memories, agents and
//! sessions live. Two adapters implement [`TenantStore`]:
//!
//! - `arc` (production): memories go through the per-tenant group-commit
//!   [`Batcher`](crate::ingest::Batcher) into the org's Arc database; agent
//!   and session state rows are written straight to their own measurements;
//!   reads are SQL sent to Arc's query endpoint.
//! - `embedded` (single node, no Arc): one SQLite file per org.
//!
//! Everything above this contract (validation, ids, dedup, context, stats,
//! the REST and gRPC adapters) is written once. Reads are SQL produced by
//! the [`QueryBuilder`](crate::query::QueryBuilder) for the store's
//! [`Dialect`]; writes are append-only rows. Agents and sessions are state
//! rows: every change appends a full new row, and the latest row per id
//! wins ([`QueryBuilder::latest_state`](crate::query::QueryBuilder::latest_state)).
//!
//! The same behavioural suite (`tests/tests/tenant_store.rs`) runs against
//! both adapters.

use crate::arcdb::ArcError;
use crate::ingest::IngestError;
use crate::query::{Dialect, Sql};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

pub mod arc_store;
pub mod embedded;

pub use arc_store::ArcStore;
pub use embedded::{EmbeddedStore, EmbeddedStores};

/// Agent state rows (one measurement / table per org).
pub const AGENTS_TABLE: &str = "agents";
/// Session state rows (one measurement / table per org).
pub const SESSIONS_TABLE: &str = "sessions";
/// The superseded versions of updated memories (the memory columns): a
/// memory's history is this table's rows of its id and its current row.
pub const VERSIONS_TABLE: &str = "memory_versions";
/// Signed erasure receipts the control plane delivered into the org's own
/// store (`time`, `id` = erasure id, `org_id`, `receipt_json`), so tenants
/// fetch them through the data API.
pub const RECEIPTS_TABLE: &str = "erasure_receipts";

/// Columns of an agent state row besides `time` (µs) and `id`; every value
/// is a string (empty for "none"). `deleted` is `"1"` on the tombstone row
/// written by a delete, `"0"` otherwise; `created_at` is RFC 3339.
pub const AGENT_COLUMNS: [&str; 6] = [
    "org_id",
    "name",
    "description",
    "config_json",
    "created_at",
    "deleted",
];

/// Columns of a session state row besides `time` (µs) and `id`; strings,
/// times RFC 3339 (`closed_at` empty while open).
pub const SESSION_COLUMNS: [&str; 7] = [
    "org_id",
    "agent_id",
    "status",
    "metadata_json",
    "created_at",
    "updated_at",
    "closed_at",
];

/// Which state table a [`StateRow`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateTable {
    Agents,
    Sessions,
}

impl StateTable {
    /// The measurement / table name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Agents => AGENTS_TABLE,
            Self::Sessions => SESSIONS_TABLE,
        }
    }

    /// The columns besides `time` and `id`, in order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Agents => &AGENT_COLUMNS,
            Self::Sessions => &SESSION_COLUMNS,
        }
    }
}

/// One appended version of an agent or a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// Version time, µs since the epoch (strictly increasing per id within
    /// a worker, so the newest version wins).
    pub time: i64,
    pub id: String,
    /// One value per column of the table's `columns()`, in that order.
    pub values: Vec<String>,
}

/// A read's answer: column names and row-major JSON values. `time` comes
/// back as Arc renders it (RFC 3339 string) or as integer µs (embedded);
/// [`time_micros`] reads both.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// The engine's own timing, when it sent one (Arc does).
    pub execution_time_ms: Option<f64>,
}

impl Rows {
    /// The position of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Rows as column → value maps.
    pub fn into_maps(self) -> Vec<serde_json::Map<String, Value>> {
        let columns = self.columns;
        self.rows
            .into_iter()
            .map(|row| columns.iter().cloned().zip(row).collect())
            .collect()
    }
}

/// Everything a store can fail with; mapped to HTTP/gRPC codes once, by the
/// service layer's error type.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The org's write queue is full: retry later (429 / RESOURCE_EXHAUSTED).
    #[error("write queue of the org is full, retry after {retry_after:?}")]
    Busy { retry_after: Duration },
    /// The write or read was refused by, or failed at, the backend.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The backend is unreachable or timed out (503).
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The worker is shutting down (503).
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// The request itself is too large for the store.
    #[error("{0}")]
    TooLarge(String),
    /// The read named an optional memory column (`id`, `expires_at`) none
    /// of the memory table's files has (Arc: written only before it
    /// existed): the caller retries without it.
    #[error("the memory table has no {0} column yet")]
    MissingColumn(&'static str),
}

impl From<IngestError> for StoreError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::QueueFull { retry_after, .. } => Self::Busy { retry_after },
            IngestError::TooLarge { .. } => Self::TooLarge(e.to_string()),
            IngestError::ShuttingDown | IngestError::Unflushed => Self::ShuttingDown,
            IngestError::Arc(a) => a.into(),
            IngestError::OrgClosed { .. } => Self::Unavailable(
                "the org's arc binding was removed while the write was queued".into(),
            ),
            other => Self::Backend(other.to_string()),
        }
    }
}

impl From<ArcError> for StoreError {
    fn from(e: ArcError) -> Self {
        if let ArcError::ReplyTooLarge { .. } = e {
            return Self::TooLarge(e.to_string());
        }
        if let ArcError::ReplyBudget = e {
            return Self::Busy {
                retry_after: Duration::from_secs(1),
            };
        }
        if e.retryable() {
            Self::Unavailable(e.to_string())
        } else {
            Self::Backend(e.to_string())
        }
    }
}

/// One memory as a store writes it (the `TenantStore` contract's row; Arc
/// encodes it in `arcdb::encode`). Strings are stored as given (empty for
/// "none"); `time` is microseconds since the Unix epoch. The org id is
/// shared by every row of a request, and the memory type and an empty
/// metadata object are usually constants, so none of them costs an
/// allocation per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryRow {
    pub time: i64,
    pub id: String,
    pub org_id: Arc<str>,
    pub agent_id: String,
    pub session_id: String,
    pub memory_type: Cow<'static, str>,
    pub event_type: String,
    pub content: String,
    pub metadata_json: Cow<'static, str>,
    pub tags_csv: String,
    pub dedup_key: String,
    pub importance: f64,
    pub parent_id: String,
    /// When the memory expires (µs since the epoch); 0: never.
    pub expires_at: i64,
}

/// One org's storage. Cheap to clone behind an `Arc`; every method is
/// scoped to the org the store was opened for.
#[async_trait::async_trait]
pub trait TenantStore: Send + Sync {
    /// The SQL dialect reads must be built for.
    fn dialect(&self) -> Dialect;

    /// The memory measurement / table name.
    fn memories_table(&self) -> &str;

    /// Appends memory rows; returns once they are durable (Arc answered 2xx
    /// for the batch holding them, or the SQLite transaction committed).
    async fn append_memories(&self, rows: &[MemoryRow]) -> Result<(), StoreError>;

    /// Appends superseded memory versions to [`VERSIONS_TABLE`]; returns
    /// once they are durable (one direct write, not group-committed:
    /// updates are rare next to creates).
    async fn append_versions(&self, rows: &[MemoryRow]) -> Result<(), StoreError>;

    /// Appends one state row to `table`; returns once it is durable.
    async fn append_state(&self, table: StateTable, row: StateRow) -> Result<(), StoreError>;

    /// Runs a read built by the query builder for [`Self::dialect`]. A
    /// table that does not exist yet reads as empty, not as an error.
    async fn query(&self, sql: &Sql) -> Result<Rows, StoreError>;
}

/// A row's `time` as µs since the epoch, from either engine's rendering
/// (integer µs, or an RFC 3339 / `YYYY-MM-DD HH:MM:SS[.ffffff]` UTC string).
pub fn time_micros(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => crate::query::UnixMicros::parse_rfc3339(s)
            .or_else(|| crate::query::UnixMicros::parse_rfc3339(&s.replacen(' ', "T", 1)))
            .or_else(|| {
                crate::query::UnixMicros::parse_rfc3339(&format!("{}Z", s.replacen(' ', "T", 1)))
            })
            .map(|t| t.0),
        _ => None,
    }
}
