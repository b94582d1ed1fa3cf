//! The SQL of every read. See the module docs of [`super`] for the shapes
//! and why they are written this way. Memory reads are in [`memories`];
//! here: the builder, the statement type and the state-row reads.

mod erasures;
mod memories;

pub use erasures::ERASURE_SQL_BUDGET;
pub use memories::PREFIX_MAX_ROWS;

use super::OrgId;
use super::QueryError;
use super::dialect::Dialect;
use super::validate::{Ident, Limit, StateId};
use memtrace_common::legacy::arc_legacy_id;
use std::collections::HashSet;
use std::fmt::{self, Write as _};

/// The columns of a memory row, in the order every memory read returns them.
/// `expires_at` (µs since the epoch, 0: never) is last: files Arc wrote
/// before it existed read it as NULL, and a measurement none of whose files
/// has it yet is read without it ([`QueryBuilder::without_expiry_column`]).
pub const MEMORY_COLUMNS: [&str; 14] = [
    "time",
    "id",
    "org_id",
    "agent_id",
    "session_id",
    "memory_type",
    "event_type",
    "content",
    "metadata_json",
    "tags_csv",
    "dedup_key",
    "importance",
    "parent_id",
    "expires_at",
];

/// The memory column holding a memory's expiry.
pub const EXPIRES_AT: &str = "expires_at";

/// Arc refuses SQL longer than this many bytes (400).
pub const ARC_MAX_SQL_LEN: usize = 10_000;

/// A finished SQL statement, built only by [`QueryBuilder`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sql(String);

impl Sql {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for Sql {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds the reads of one org against one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryBuilder {
    dialect: Dialect,
    org: OrgId,
    memories: Ident,
    /// The org's erasures in progress: every memory read hides their rows.
    erasures: Vec<std::sync::Arc<crate::erasure::Erasure>>,
    /// The org's retention (µs): every memory read hides older rows.
    retention: Option<i64>,
    /// Which optional columns the memory table has (see [`Present`]).
    present: Present,
}

/// The memory columns Arc may lack: a measurement none of whose Parquet
/// files has a column answers every read naming it with a binder error.
/// `id` is missing where only the original memtrace wrote; `expires_at`
/// where nothing wrote since expiry existed. Both are present unless a
/// read was refused for lacking one ([`QueryBuilder::without_column`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Present {
    id: bool,
    expires_at: bool,
}

impl QueryBuilder {
    /// `memories` is the configured measurement (Arc) or table (embedded);
    /// every query also filters `org_id = org`.
    pub fn new(dialect: Dialect, org: OrgId, memories: Ident) -> Self {
        Self {
            dialect,
            org,
            memories,
            erasures: Vec::new(),
            retention: None,
            present: Present {
                id: true,
                expires_at: true,
            },
        }
    }

    /// This builder for a memory table none of whose files has `column`
    /// (Arc answered a read naming it with a binder error): without
    /// `expires_at` it reads as 0 and no expiry is filtered (exact: no row
    /// there has one); without `id` every row is one the original wrote
    /// and reads with its derived id. Other names change nothing.
    pub fn without_column(mut self, column: &str) -> Self {
        match column {
            EXPIRES_AT => self.present.expires_at = false,
            "id" => self.present.id = false,
            _ => {}
        }
        self
    }

    /// Whether rows the original memtrace wrote (no `id`) can be in the
    /// memory table: Arc only.
    fn legacy_rows(&self) -> bool {
        matches!(self.dialect, Dialect::Arc { .. })
    }

    /// The id of a memory row on alias `v`: its `id`, or on Arc the id
    /// derived from a row the original wrote
    /// ([`memtrace_common::legacy`]).
    fn id_expr(&self) -> String {
        match (self.legacy_rows(), self.present.id) {
            (false, _) => "v.id".into(),
            (true, true) => format!("COALESCE(v.id, {})", arc_legacy_id("v.")),
            (true, false) => arc_legacy_id("v."),
        }
    }

    /// The predicate that a row of the memory table (alias `v`) is a
    /// memory: an id, or (Arc) none at all — a row the original wrote. The
    /// rows an empty id marks (the expiry column row) are never memories.
    fn is_memory(&self) -> Option<&'static str> {
        match (self.legacy_rows(), self.present.id) {
            (false, _) => Some("v.id <> ''"),
            (true, true) => Some("(v.id IS NULL OR v.id <> '')"),
            (true, false) => None,
        }
    }

    /// This builder hiding memories older than `retention` from every
    /// memory read (`memories.retention_days`).
    pub fn with_retention(mut self, retention: Option<std::time::Duration>) -> Self {
        self.retention = retention.map(|r| i64::try_from(r.as_micros()).unwrap_or(i64::MAX));
        self
    }

    /// This builder, hiding the rows of `erasures` (the org's erasures in
    /// progress) from every memory read.
    pub fn with_erasures(mut self, erasures: Vec<std::sync::Arc<crate::erasure::Erasure>>) -> Self {
        self.erasures = erasures;
        self
    }

    /// The org's erasures in progress this builder hides.
    pub fn erasures(&self) -> &[std::sync::Arc<crate::erasure::Erasure>] {
        &self.erasures
    }

    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// The latest row per id of an agent or session state table, newest
    /// first. Columns: `time, id`, then `q`'s columns. One scan: the
    /// newest version of each id is picked by a window over the org's rows
    /// (narrowed by `ids`); `equals` then filters those latest rows.
    pub fn latest_state(&self, q: &StateQuery) -> Sql {
        let mut columns = vec!["time", "id"];
        columns.extend(q.columns.iter().map(Ident::as_str));
        let mut narrow = Vec::new();
        if !q.ids.is_empty() {
            let lits: Vec<String> = q.ids.iter().map(|id| self.lit(id.as_str())).collect();
            narrow.push(in_list("v", "id", &lits));
        }
        let mut sql = format!(
            "SELECT {} FROM ({}) AS latest WHERE latest.version = 1",
            qualified("latest", &columns),
            self.versions(&q.table, &columns, &narrow),
        );
        for (column, value) in &q.equals {
            let _ = write!(sql, " AND latest.{column} = {}", self.lit(value));
        }
        let _ = write!(sql, " ORDER BY latest.time DESC, latest.id DESC");
        if let Some(limit) = q.limit {
            let _ = write!(sql, " LIMIT {}", limit.get());
        }
        Sql(sql)
    }

    fn lit(&self, value: &str) -> String {
        self.dialect.string_literal(value)
    }

    /// The org's rows of `table` matching `predicates` (alias `v`), each
    /// with `version`: 1 for the newest row of its id (ties, identical
    /// retried rows, broken arbitrarily), 2 for the next, and so on. Rows
    /// with an empty id are left out; in the memory table a row the
    /// original wrote counts under its derived id. One scan.
    fn versions(&self, table: &Ident, columns: &[&str], predicates: &[String]) -> String {
        let memory = *table == self.memories;
        let (id, is_row) = if memory {
            (self.id_expr(), self.is_memory())
        } else {
            ("v.id".to_owned(), Some("v.id <> ''"))
        };
        let select = if memory {
            self.source_columns(columns)
        } else {
            qualified("v", columns)
        };
        let mut sql = format!(
            "SELECT {select}, ROW_NUMBER() OVER (PARTITION BY {id} ORDER BY v.time DESC) AS version \
             FROM {} AS v WHERE v.org_id = {}",
            self.dialect.table_ref(table),
            self.lit(self.org.as_str()),
        );
        if let Some(is_row) = is_row {
            let _ = write!(sql, " AND {is_row}");
        }
        for p in predicates {
            let _ = write!(sql, " AND {p}");
        }
        sql
    }
}

impl QueryBuilder {
    /// `columns` of the memory table on alias `v` (as [`qualified`]), with
    /// `expires_at` as the literal 0 when the table lacks it and `id` as
    /// [`Self::id_expr`].
    fn source_columns(&self, columns: &[&str]) -> String {
        columns
            .iter()
            .map(|c| match *c {
                EXPIRES_AT if !self.present.expires_at => format!("0 AS {c}"),
                "id" => format!("{} AS id", self.id_expr()),
                _ => format!("v.{c} AS {c}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The predicate (alias `v`) hiding memories expired at `now`: none
    /// when the table lacks the column. Written on the integer column,
    /// never on `time`, so Arc's file pruning does not read it.
    fn unexpired(&self, now: super::time::UnixMicros) -> Option<String> {
        self.present
            .expires_at
            .then(|| format!("COALESCE(v.{EXPIRES_AT}, 0) NOT BETWEEN 1 AND {}", now.0))
    }
}

/// `a.c AS c, …`: every expression aliased, as both engines need.
fn qualified(alias: &str, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("{alias}.{c} AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn in_list(a: &str, column: &str, lits: &[String]) -> String {
    match lits {
        [one] => format!("{a}.{column} = {one}"),
        _ => format!("{a}.{column} IN ({})", lits.join(", ")),
    }
}

/// The latest row per id of an agent or session state table (columns
/// `time`, `id`, `org_id` required). `ids` narrow both scans; `equals`
/// filters apply to the latest row only, so a session whose newest row says
/// `closed` never matches `status = 'active'` through an older row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateQuery {
    table: Ident,
    columns: Vec<Ident>,
    ids: Vec<StateId>,
    equals: Vec<(Ident, String)>,
    limit: Option<Limit>,
}

impl StateQuery {
    pub const MAX_COLUMNS: usize = 32;
    pub const MAX_IDS: usize = 100;
    pub const MAX_EQUALS: usize = 8;
    /// Longest `equals` value, in bytes.
    pub const MAX_VALUE_BYTES: usize = 1024;

    /// Reads `columns` (besides `time` and `id`, always returned first).
    pub fn new(table: Ident, columns: Vec<Ident>) -> Result<Self, QueryError> {
        let mut seen = HashSet::new();
        for c in &columns {
            if matches!(c.as_str(), "time" | "id") || !seen.insert(c.as_str()) {
                return Err(QueryError::invalid(
                    "column",
                    "must be unique and not time or id (always returned)",
                ));
            }
        }
        if columns.len() > Self::MAX_COLUMNS {
            return Err(QueryError::TooMany {
                field: "columns",
                max: Self::MAX_COLUMNS,
            });
        }
        Ok(Self {
            table,
            columns,
            ids: Vec::new(),
            equals: Vec::new(),
            limit: None,
        })
    }

    /// Only these ids.
    pub fn with_ids(mut self, ids: impl IntoIterator<Item = StateId>) -> Result<Self, QueryError> {
        for id in ids {
            if !self.ids.contains(&id) {
                self.ids.push(id);
            }
        }
        if self.ids.len() > Self::MAX_IDS {
            return Err(QueryError::TooMany {
                field: StateId::FIELD,
                max: Self::MAX_IDS,
            });
        }
        Ok(self)
    }

    /// Only ids whose latest row has `column = value`.
    pub fn with_equal(mut self, column: Ident, value: &str) -> Result<Self, QueryError> {
        if value.len() > Self::MAX_VALUE_BYTES {
            return Err(QueryError::invalid(
                "filter",
                "value must be at most 1024 bytes",
            ));
        }
        if self.equals.len() == Self::MAX_EQUALS {
            return Err(QueryError::TooMany {
                field: "filters",
                max: Self::MAX_EQUALS,
            });
        }
        self.equals.push((column, value.to_owned()));
        Ok(self)
    }

    /// At most `limit` rows.
    pub fn with_limit(mut self, limit: Limit) -> Self {
        self.limit = Some(limit);
        self
    }
}
