//! The memory reads. Two shapes, both one scan of the memory table:
//!
//! - **newest** ([`QueryBuilder::newest_memories`]): the rows a user would
//!   ask Arc for directly — the org's rows matching the filters, newest
//!   first, `LIMIT n` — and nothing else, so DuckDB runs it as a top-N with
//!   late materialisation, at the cost of the plain query. The caller
//!   collapses duplicates in that newest-first prefix
//!   (`service::collapse`), which is exact because whether a row is hidden
//!   depends only on rows newer than it.
//! - **collapsed** ([`QueryBuilder::collapsed_page`],
//!   [`QueryBuilder::agent_stats`]): the collapse written in SQL with two
//!   window functions over the matching rows, for what a prefix cannot
//!   answer (oldest-first pages, deep offsets, counts over everything).
//!   An export page ([`QueryBuilder::export_page`]) is the same shape paged
//!   by keyset on (time, id) instead of an offset.
//!
//! The collapse (one rule, both shapes): among the rows matching a read's
//! filters, (1) of the rows sharing an `id` only the newest is kept (a
//! retried write stored twice); (2) a kept row with a non-empty
//! `dedup_key` is hidden when the next newer kept row with the same key
//! was written less than the dedup window after it — the later of two
//! duplicates is the one shown. Ties in `time` are ordered by `id`.

use super::{MEMORY_COLUMNS, QueryBuilder, Sql, in_list, qualified};
use crate::query::dialect::like_contains;
use crate::query::params::{ExportQuery, MemoryFilter, MemoryPage};
use crate::query::time::{TimeBound, UnixMicros};
use crate::query::validate::{AgentId, Ident, MemoryId};
use memtrace_common::legacy::is_legacy_id;
use std::fmt::Write as _;
use std::time::Duration;

/// Most rows a newest-first prefix is read with; pages that need more
/// (deep offsets) use the collapsed shape.
pub const PREFIX_MAX_ROWS: u32 = 2_000;

/// Columns the stats read: what the collapse and the counts need.
const STATS_COLUMNS: [&str; 5] = ["time", "id", "dedup_key", "memory_type", "event_type"];

impl QueryBuilder {
    /// The newest `fetch` rows matching `f`, newest first, as stored (no
    /// collapse): the newest-first prefix of a read.
    pub fn newest_memories(&self, f: &MemoryFilter, fetch: u32, now: UnixMicros) -> Sql {
        let mut sql = format!(
            "SELECT {} FROM {} AS v WHERE v.org_id = {}",
            self.source_columns(&MEMORY_COLUMNS),
            self.dialect.table_ref(&self.memories),
            self.lit(self.org.as_str()),
        );
        if let Some(is_memory) = self.is_memory() {
            let _ = write!(sql, " AND {is_memory}");
        }
        for p in self.predicates(f, now) {
            let _ = write!(sql, " AND {p}");
        }
        let _ = write!(sql, " ORDER BY v.time DESC LIMIT {fetch}");
        Sql(sql)
    }

    /// One page, collapsed in SQL: `page.limit + 1` rows from `page.offset`
    /// (the extra row says whether a further page exists). `key_window`
    /// `None` collapses retried ids only (dedup off).
    pub fn collapsed_page(
        &self,
        page: &MemoryPage,
        key_window: Option<Duration>,
        now: UnixMicros,
    ) -> Sql {
        let dir = page.order.sql();
        let tiebreak = if page.importance_tiebreak {
            "kept.importance DESC, "
        } else {
            ""
        };
        Sql(format!(
            "SELECT {} FROM ({}) AS kept ORDER BY kept.time {dir}, {tiebreak}kept.id {dir} \
             LIMIT {} OFFSET {}",
            qualified("kept", &MEMORY_COLUMNS),
            self.collapsed(&MEMORY_COLUMNS, &page.filter, key_window, now),
            u64::from(page.limit) + 1,
            page.offset,
        ))
    }

    /// One export page, collapsed in SQL, oldest first: `q.limit + 1`
    /// visible memories (the extra one says a further page exists) after
    /// `q.after` in (time, id) order. Keyset paging: the cursor's time is
    /// also the scan's lower bound (`v.time > cursor - 1µs`, through
    /// [`Self::predicates`], so Arc prunes files by it and the erasure and
    /// retention predicates apply), which leaves the collapse exact for the
    /// rows it keeps (whether a row is hidden depends only on newer rows);
    /// the (time, id) comparison on the collapsed rows is written on
    /// microseconds, which Arc's pruner does not read. Cost per page does
    /// not grow with the export's depth.
    pub fn export_page(
        &self,
        q: &ExportQuery,
        key_window: Option<Duration>,
        now: UnixMicros,
    ) -> Sql {
        let mut filter = q.filter.clone();
        if let Some(after) = &q.after {
            filter.since = Some(TimeBound::At(UnixMicros(after.micros).minus(1)));
        }
        let mut sql = format!(
            "SELECT {} FROM ({}) AS kept",
            qualified("kept", &MEMORY_COLUMNS),
            self.collapsed(&MEMORY_COLUMNS, &filter, key_window, now),
        );
        if let Some(after) = &q.after {
            let time = self.dialect.micros("kept.time");
            let _ = write!(
                sql,
                " WHERE {time} > {m} OR ({time} = {m} AND kept.id > {id})",
                m = after.micros,
                id = self.lit(after.id.as_str()),
            );
        }
        let _ = write!(
            sql,
            " ORDER BY kept.time ASC, kept.id ASC LIMIT {}",
            u64::from(q.limit) + 1
        );
        Sql(sql)
    }

    /// One memory by id: its newest version. A derived id (`lg_…`, a
    /// row the original wrote, or an update of one) is matched on
    /// [`Self::id_expr`]; other ids on the `id` column, which a table the
    /// original alone wrote lacks (nothing matches there).
    pub fn get(&self, id: &MemoryId, now: UnixMicros) -> Sql {
        let lit = self.lit(id.as_str());
        let matches = if self.legacy_rows() && is_legacy_id(id.as_str()) {
            format!("{} = {lit}", self.id_expr())
        } else if self.present.id {
            format!("v.id = {lit}")
        } else {
            "1 = 0".into()
        };
        let mut sql = format!(
            "SELECT {} FROM {} AS v WHERE v.org_id = {} AND {matches}",
            self.source_columns(&MEMORY_COLUMNS),
            self.dialect.table_ref(&self.memories),
            self.lit(self.org.as_str()),
        );
        if let Some(cutoff) = self.retention_cutoff(now) {
            let _ = write!(sql, " AND v.time > {}", self.dialect.time_literal(cutoff));
        }
        if let Some(unexpired) = self.unexpired(now) {
            let _ = write!(sql, " AND {unexpired}");
        }
        self.push_erasure_hides(&mut sql);
        sql.push_str(" ORDER BY v.time DESC LIMIT 1");
        Sql(sql)
    }

    /// The superseded versions of memory `id` (from `memory_versions`),
    /// newest first, at most `limit`: its history besides its current row.
    pub fn superseded_versions(&self, id: &MemoryId, limit: u32, now: UnixMicros) -> Sql {
        let versions = Ident::versions_table();
        let mut sql = format!(
            "SELECT {} FROM {} AS v WHERE v.org_id = {} AND v.id = {}",
            self.source_columns(&MEMORY_COLUMNS),
            self.dialect.table_ref(&versions),
            self.lit(self.org.as_str()),
            self.lit(id.as_str()),
        );
        if let Some(cutoff) = self.retention_cutoff(now) {
            let _ = write!(sql, " AND v.time > {}", self.dialect.time_literal(cutoff));
        }
        for hide in self.deletion_hides() {
            let _ = write!(sql, " AND {hide}");
        }
        let _ = write!(sql, " ORDER BY v.time DESC LIMIT {limit}");
        Sql(sql)
    }

    /// An agent's memory counts over its collapsed memories, one row per
    /// `memory_type`: `memory_type, memory_count, memories_24h, errors_24h`
    /// (event type `error`) and `last_active` (its newest memory's time).
    /// No row at all for an agent without memories. Totals are the sums.
    pub fn agent_stats(
        &self,
        agent: &AgentId,
        key_window: Option<Duration>,
        now: UnixMicros,
    ) -> Sql {
        const DAY_MICROS: i64 = 24 * 3_600_000_000;
        let day = self.dialect.time_literal(now.minus(DAY_MICROS));
        let filter = MemoryFilter {
            agent_id: Some(agent.clone()),
            ..MemoryFilter::default()
        };
        // The 24-hour bound stays in the select list: Arc prunes files by
        // the first `time > '…'` of a query's WHERE, which would cut the
        // all-time count.
        Sql(format!(
            "SELECT d.memory_type AS memory_type, COUNT(*) AS memory_count, \
             COUNT(CASE WHEN d.time > {day} THEN 1 END) AS memories_24h, \
             COUNT(CASE WHEN d.time > {day} AND d.event_type = {error} THEN 1 END) AS errors_24h, \
             MAX(d.time) AS last_active \
             FROM ({rows}) AS d GROUP BY d.memory_type ORDER BY d.memory_type",
            error = self.lit("error"),
            rows = self.collapsed(&STATS_COLUMNS, &filter, key_window, now),
        ))
    }

    /// The visible rows matching `f` (see the module docs), `columns` of
    /// them (which must include `time`, `id` and `dedup_key`), not ordered.
    fn collapsed(
        &self,
        columns: &[&str],
        f: &MemoryFilter,
        key_window: Option<Duration>,
        now: UnixMicros,
    ) -> String {
        let versions = self.versions(&self.memories, columns, &self.predicates(f, now));
        let Some(window) = key_window else {
            return format!(
                "SELECT {} FROM ({versions}) AS versions WHERE versions.version = 1",
                qualified("versions", columns)
            );
        };
        let window = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
        let d = &self.dialect;
        format!(
            "SELECT {} FROM (SELECT {}, LEAD(versions.time) OVER (PARTITION BY versions.dedup_key \
             ORDER BY versions.time, versions.id) AS next_time FROM ({versions}) AS versions \
             WHERE versions.version = 1) AS latest WHERE latest.dedup_key = '' \
             OR latest.next_time IS NULL OR {} - {} >= {window}",
            qualified("latest", columns),
            qualified("versions", columns),
            d.micros("latest.next_time"),
            d.micros("latest.time"),
        )
    }

    /// Rows at or before this are past the org's retention.
    fn retention_cutoff(&self, now: UnixMicros) -> Option<UnixMicros> {
        self.retention.map(|r| now.minus(r))
    }

    /// The predicates of `f` on alias `v`.
    fn predicates(&self, f: &MemoryFilter, now: UnixMicros) -> Vec<String> {
        let d = &self.dialect;
        let mut p = Vec::new();
        if let Some(agent) = &f.agent_id {
            p.push(format!("v.agent_id = {}", self.lit(agent.as_str())));
        }
        if let Some(session) = &f.session_id {
            p.push(format!("v.session_id = {}", self.lit(session.as_str())));
        }
        // one lower bound, the later of `since` and the retention's cutoff
        let since = f.since.map(|s| s.resolve(now));
        let lower = match (since, self.retention_cutoff(now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(lower) = lower {
            p.push(format!("v.time > {}", d.time_literal(lower)));
        }
        if let Some(until) = f.until {
            p.push(format!("v.time < {}", d.time_literal(until.resolve(now))));
        }
        if !f.memory_types.is_empty() {
            let lits: Vec<String> = f
                .memory_types
                .iter()
                .map(|t| self.lit(t.as_str()))
                .collect();
            p.push(in_list("v", "memory_type", &lits));
        }
        if !f.event_types.is_empty() {
            let lits: Vec<String> = f.event_types.iter().map(|t| self.lit(t.as_str())).collect();
            p.push(in_list("v", "event_type", &lits));
        }
        for tag in &f.tags {
            p.push(format!(
                "instr(',' || v.tags_csv || ',', {}) > 0",
                self.lit(&format!(",{tag},"))
            ));
        }
        if let Some(content) = &f.content_contains {
            p.push(format!(
                "lower(v.content) LIKE lower({}) ESCAPE '!'",
                self.lit(&like_contains(content.as_str()))
            ));
        }
        if let Some(min) = f.min_importance.filter(|x| x.is_finite() && *x > 0.0) {
            p.push(format!("v.importance >= {min:?}"));
        }
        p.extend(self.unexpired(now));
        p.extend(self.erasure_hides());
        p
    }
}
