//! The read-side SQL builder: every read the worker sends to a tenant's
//! store, produced as one SQL string from validated inputs.
//!
//! Two engines run these strings: Arc (DuckDB over Parquet, `time` is a
//! `TIMESTAMP`) and the embedded single-node SQLite store (`time` is an
//! `INTEGER` of microseconds). A [`Dialect`] changes only how a table, a time
//! and a string literal are written; filters, de-duplication, ordering and
//! paging are one code path ([`QueryBuilder`]).
//!
//! Pieces:
//! - [`validate`]: newtypes whose constructors enforce the original
//!   memtrace's rules (ids, types, tags, limits, order, identifiers) and name
//!   the field and the rule on failure ([`QueryError`], a 400 for the API).
//! - [`time`]: `since`/`until` (`Nh`, `Nd`, `Nm`, RFC 3339 / ISO 8601,
//!   `now`), resolved in Rust against an injected "now" ([`UnixMicros`]).
//! - [`params`]: the request shapes (list, search, session context) parsed
//!   from raw API values into validated queries.
//! - [`build`]: the SQL itself.
//!
//! # Shapes
//!
//! See [`build`]: memory reads are one scan each — a newest-first prefix
//! (the plain query a user would send Arc, collapsed in the worker) or the
//! collapse written in SQL with window functions for what a prefix cannot
//! answer; state rows (agents, sessions) pick their newest row per id with
//! a window too. Every memory read also hides what the org's erasures in
//! progress cover (one `NOT (...)` each, `build::erasures`) and what is
//! past the org's retention (one lower time bound). Rows without an `id`
//! (written before ids existed) are not returned.
//!
//! # Arc specifics (see the [`Dialect`] docs)
//!
//! Arc rewrites `FROM db.m` with a regular expression before DuckDB sees the
//! SQL, guards it with keyword regexes and prunes partitions from the first
//! `WHERE`'s `time > '...'` (applied to every table of the query, which is
//! why bounds go into the inner `WHERE` and why the stats query keeps its
//! 24-hour bound in the select list). So on Arc: tables are written `db.m` (unquoted;
//! quoted names are masked as strings by Arc and never rewritten), time
//! literals are `'YYYY-MM-DD HH:MM:SS.ffffff'` strings (DuckDB casts them to
//! `TIMESTAMP`, Arc's pruner reads them), string literals never end in a
//! backslash (Arc's literal masker reads `\'` as an escaped quote) and are
//! split at whitespace so data such as `drop table` cannot trip Arc's guard,
//! and `LIKE` escapes with `!`, never `\`.

pub mod build;
pub mod dialect;
pub mod params;
pub mod time;
pub mod validate;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tokenize;

pub use build::{
    ARC_MAX_SQL_LEN, ERASURE_SQL_BUDGET, EXPIRES_AT, MEMORY_COLUMNS, PREFIX_MAX_ROWS, QueryBuilder,
    Sql, StateQuery,
};
pub use dialect::Dialect;
pub use memtrace_common::names::OrgId;
pub use params::{
    ContextQuery, EXPORT_DEFAULT_LIMIT, EXPORT_MAX_LIMIT, ExportCursor, ExportParams, ExportQuery,
    ListParams, ListQuery, MemoryFilter, MemoryPage, SearchParams, SearchQuery,
};
pub use time::{TimeBound, UnixMicros};
pub use validate::{
    AgentId, ContentPattern, DedupKey, EventType, Ident, Limit, MAX_OFFSET, MemoryId, MemoryType,
    Order, SessionId, StateId, Tag, parse_offset,
};

/// Why a read request was refused: the field and the rule it broke. Every
/// variant is a client error (HTTP 400); the original answered 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A value broke a format or range rule.
    #[error("invalid {field}: {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    /// A list had more entries than one query may carry.
    #[error("too many {field}: at most {max}")]
    TooMany { field: &'static str, max: usize },
}

impl From<memtrace_common::names::NameError> for QueryError {
    fn from(e: memtrace_common::names::NameError) -> Self {
        Self::Invalid {
            field: e.field,
            rule: e.rule,
        }
    }
}

impl QueryError {
    /// The request field at fault (`agent_id`, `since`, `tags`, ...).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Invalid { field, .. } | Self::TooMany { field, .. } => field,
        }
    }

    pub(crate) fn invalid(field: &'static str, rule: &'static str) -> Self {
        Self::Invalid { field, rule }
    }

    /// The same error, charged to the request field `field` (a list field
    /// such as `memory_types` whose elements follow `memory_type`'s rule).
    pub(crate) fn in_field(self, field: &'static str) -> Self {
        match self {
            Self::Invalid { rule, .. } => Self::Invalid { field, rule },
            Self::TooMany { max, .. } => Self::TooMany { field, max },
        }
    }
}
