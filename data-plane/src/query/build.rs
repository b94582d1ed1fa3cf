//! The SQL of every read. See the module docs of [`super`] for the shapes
//! and why they are written this way.

use super::OrgId;
use super::QueryError;
use super::dialect::{Dialect, like_contains};
use super::params::{ContextQuery, ListQuery, MemoryFilter, SearchQuery};
use super::time::UnixMicros;
use super::validate::{AgentId, DedupKey, Ident, Limit, MemoryId, Order, StateId};
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// The columns of a memory row, in the order every memory read returns them.
pub const MEMORY_COLUMNS: [&str; 13] = [
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
];

/// Arc refuses SQL longer than this many bytes (400).
pub const ARC_MAX_SQL_LEN: usize = 10_000;

/// Most dedup keys in one lookup query. Arc's SQL length cap binds first
/// for every real key: about 270 automatic (32-hex) keys fit one statement.
pub const DEDUP_BATCH_MAX_KEYS: usize = 1_000;

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
}

impl QueryBuilder {
    /// `memories` is the configured measurement (Arc) or table (embedded);
    /// every query also filters `org_id = org`.
    pub fn new(dialect: Dialect, org: OrgId, memories: Ident) -> Self {
        Self {
            dialect,
            org,
            memories,
        }
    }

    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// One page of memories, `limit + 1` rows (see [`ListQuery::has_more`]),
    /// ordered by time then id.
    pub fn list(&self, q: &ListQuery, now: UnixMicros) -> Sql {
        let mut sql = self.memory_rows(&q.filter, now);
        let _ = write!(
            sql,
            " ORDER BY {} LIMIT {} OFFSET {}",
            order_by(q.order, false),
            u64::from(q.limit.get()) + 1,
            q.offset
        );
        Sql(sql)
    }

    /// A search: ranked by time, ties by higher importance when asked.
    pub fn search(&self, q: &SearchQuery, now: UnixMicros) -> Sql {
        let mut sql = self.memory_rows(&q.filter, now);
        let _ = write!(
            sql,
            " ORDER BY {} LIMIT {}",
            order_by(q.order, q.importance_tiebreak),
            q.limit.get()
        );
        Sql(sql)
    }

    /// One memory by id (the original could not do this).
    pub fn get(&self, id: &MemoryId) -> Sql {
        let pred = |a: &str| vec![format!("{a}.id = {}", self.lit(id.as_str()))];
        let mut sql =
            self.latest_rows(&self.memories, &MEMORY_COLUMNS[2..], &pred("v"), &pred("m"));
        let _ = write!(sql, " ORDER BY {} LIMIT 1", order_by(Order::Desc, false));
        Sql(sql)
    }

    /// A session's context window, newest first.
    pub fn session_context(&self, q: &ContextQuery, now: UnixMicros) -> Sql {
        let mut sql = self.memory_rows(&q.filter(), now);
        let _ = write!(
            sql,
            " ORDER BY {} LIMIT {}",
            order_by(Order::Desc, false),
            Limit::CONTEXT.get()
        );
        Sql(sql)
    }

    /// An agent's memory counts, one row per `memory_type`: `memory_type,
    /// memory_count, memories_24h, errors_24h` (event type `error`) and
    /// `last_active` (its newest memory's time). No row at all for an agent
    /// without memories. Totals are the sums over rows.
    pub fn agent_stats(&self, agent: &AgentId, now: UnixMicros) -> Sql {
        const DAY_MICROS: i64 = 24 * 3_600_000_000;
        let day = self.dialect.time_literal(now.minus(DAY_MICROS));
        let pred = |a: &str| vec![format!("{a}.agent_id = {}", self.lit(agent.as_str()))];
        let rows = self.latest_rows(
            &self.memories,
            &["memory_type", "event_type"],
            &pred("v"),
            &pred("m"),
        );
        Sql(format!(
            "SELECT d.memory_type AS memory_type, COUNT(*) AS memory_count, \
             COUNT(CASE WHEN d.time > {day} THEN 1 END) AS memories_24h, \
             COUNT(CASE WHEN d.time > {day} AND d.event_type = {error} THEN 1 END) AS errors_24h, \
             MAX(d.time) AS last_active \
             FROM ({rows}) AS d GROUP BY d.memory_type ORDER BY d.memory_type",
            error = self.lit("error"),
        ))
    }

    /// Which of `keys` already exist for the org within `window` before now:
    /// one `SELECT DISTINCT dedup_key` per batch of at most
    /// [`DEDUP_BATCH_MAX_KEYS`] keys, each query within [`ARC_MAX_SQL_LEN`].
    /// Repeated keys are asked once; no keys, no queries.
    pub fn dedup_lookup(&self, keys: &[DedupKey], window: Duration, now: UnixMicros) -> Vec<Sql> {
        let window = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
        let prefix = format!(
            "SELECT DISTINCT v.dedup_key AS dedup_key FROM {} AS v WHERE v.org_id = {} \
             AND v.time > {} AND v.dedup_key IN (",
            self.dialect.table_ref(&self.memories),
            self.lit(self.org.as_str()),
            self.dialect.time_literal(now.minus(window)),
        );
        let mut batches = Vec::new();
        let mut list = String::new();
        let mut count = 0;
        let mut seen = HashSet::new();
        for key in keys.iter().filter(|k| seen.insert(k.as_str())) {
            let lit = self.lit(key.as_str());
            let full = prefix.len() + list.len() + 1 + lit.len() + 1 > ARC_MAX_SQL_LEN;
            if count > 0 && (count == DEDUP_BATCH_MAX_KEYS || full) {
                batches.push(Sql(format!("{prefix}{list})")));
                list.clear();
                count = 0;
            }
            if count > 0 {
                list.push(',');
            }
            list.push_str(&lit);
            count += 1;
        }
        if count > 0 {
            batches.push(Sql(format!("{prefix}{list})")));
        }
        batches
    }

    /// The latest row per id of an agent or session state table, newest
    /// first. Columns: `time, id`, then `q`'s columns.
    pub fn latest_state(&self, q: &StateQuery) -> Sql {
        let columns: Vec<&str> = q.columns.iter().map(Ident::as_str).collect();
        let ids = |a: &str| {
            let lits: Vec<String> = q.ids.iter().map(|id| self.lit(id.as_str())).collect();
            in_list(a, "id", &lits)
        };
        let mut inner = Vec::new();
        let mut outer = Vec::new();
        if !q.ids.is_empty() {
            inner.push(ids("v"));
            outer.push(ids("m"));
        }
        for (column, value) in &q.equals {
            outer.push(format!("m.{column} = {}", self.lit(value)));
        }
        let mut sql = self.latest_rows(&q.table, &columns, &inner, &outer);
        let _ = write!(sql, " ORDER BY {}", order_by(Order::Desc, false));
        if let Some(limit) = q.limit {
            let _ = write!(sql, " LIMIT {}", limit.get());
        }
        Sql(sql)
    }

    fn lit(&self, value: &str) -> String {
        self.dialect.string_literal(value)
    }

    /// Deduplicated memory rows matching `f`, not yet ordered.
    fn memory_rows(&self, f: &MemoryFilter, now: UnixMicros) -> String {
        let inner = self.predicates(f, "v", now, false);
        let outer = self.predicates(f, "m", now, true);
        self.latest_rows(&self.memories, &MEMORY_COLUMNS[2..], &inner, &outer)
    }

    /// The predicates of `f` on alias `a`; with `scan_only`, just the cheap
    /// selective ones worth repeating on the outer scan.
    fn predicates(
        &self,
        f: &MemoryFilter,
        a: &str,
        now: UnixMicros,
        scan_only: bool,
    ) -> Vec<String> {
        let d = &self.dialect;
        let mut p = Vec::new();
        if let Some(agent) = &f.agent_id {
            p.push(format!("{a}.agent_id = {}", self.lit(agent.as_str())));
        }
        if let Some(session) = &f.session_id {
            p.push(format!("{a}.session_id = {}", self.lit(session.as_str())));
        }
        if let Some(since) = f.since {
            p.push(format!("{a}.time > {}", d.time_literal(since.resolve(now))));
        }
        if let Some(until) = f.until {
            p.push(format!("{a}.time < {}", d.time_literal(until.resolve(now))));
        }
        if scan_only {
            return p;
        }
        if !f.memory_types.is_empty() {
            let lits: Vec<String> = f
                .memory_types
                .iter()
                .map(|t| self.lit(t.as_str()))
                .collect();
            p.push(in_list(a, "memory_type", &lits));
        }
        if !f.event_types.is_empty() {
            let lits: Vec<String> = f.event_types.iter().map(|t| self.lit(t.as_str())).collect();
            p.push(in_list(a, "event_type", &lits));
        }
        for tag in &f.tags {
            p.push(format!(
                "instr(',' || {a}.tags_csv || ',', {}) > 0",
                self.lit(&format!(",{tag},"))
            ));
        }
        if let Some(content) = &f.content_contains {
            p.push(format!(
                "lower({a}.content) LIKE lower({}) ESCAPE '!'",
                self.lit(&like_contains(content.as_str()))
            ));
        }
        if let Some(min) = f.min_importance.filter(|x| x.is_finite() && *x > 0.0) {
            p.push(format!("{a}.importance >= {min:?}"));
        }
        p
    }

    /// The latest row per `id` of `table` among the org's rows matching
    /// `inner` (alias `v`), re-read through `outer` (alias `m`), one row per
    /// id: `time, id, MAX(column)...`. Not ordered.
    fn latest_rows(
        &self,
        table: &Ident,
        columns: &[&str],
        inner: &[String],
        outer: &[String],
    ) -> String {
        let table = self.dialect.table_ref(table);
        let org = self.lit(self.org.as_str());
        let mut sql = String::from("SELECT latest.max_time AS time, m.id AS id");
        for c in columns {
            let _ = write!(sql, ", MAX(m.{c}) AS {c}");
        }
        let mut inner_where = format!("v.org_id = {org}");
        for p in inner {
            let _ = write!(inner_where, " AND {p}");
        }
        let mut outer_where = format!("m.org_id = {org}");
        for p in outer {
            let _ = write!(outer_where, " AND {p}");
        }
        let _ = write!(
            sql,
            " FROM {table} AS m JOIN (SELECT v.id AS id, MAX(v.time) AS max_time FROM {table} AS v \
             WHERE {inner_where} GROUP BY v.id) AS latest \
             ON m.id = latest.id AND m.time = latest.max_time \
             WHERE {outer_where} GROUP BY m.id, latest.max_time"
        );
        sql
    }
}

fn order_by(order: Order, importance_tiebreak: bool) -> String {
    let dir = order.sql();
    if importance_tiebreak {
        format!("latest.max_time {dir}, MAX(m.importance) DESC, m.id {dir}")
    } else {
        format!("latest.max_time {dir}, m.id {dir}")
    }
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
