//! Erasures in SQL: the rows an erasure covers, as one predicate, rendered
//! once for two uses — hidden from every read (`NOT (...)` on alias `v`)
//! while the erasure is in progress, and the `where` the control plane
//! erases and verifies with (unqualified columns, its own org filter added).
//!
//! Time comparisons are written on `epoch_us(time)` (Arc) / `time`
//! (embedded) against integer microseconds, never as `time > '…'`: Arc
//! prunes Parquet files by the first `time > '…'` / `time < '…'` it finds
//! in a statement, and a bound inside `NOT (...)` must not prune anything.

use super::{QueryBuilder, in_list};
use crate::erasure::{Erasure, Scope};
use memtrace_common::legacy::is_legacy_id;
use std::fmt::Write as _;

/// How many bytes of a read's SQL the org's erasures in progress may take
/// (a new erasure that would push its org past it waits, 429, until
/// earlier ones finish): every read of up to 5,600 bytes fits Arc's 10,000
/// beside them — reads are a few hundred bytes unless they carry many long
/// filter values; the longest a request can build takes 8.4 KB, and such a
/// read is refused (429) while the erasures in progress would push it past
/// Arc's limit (`tests::the_largest_read_with_the_erasure_budget_fits`).
pub const ERASURE_SQL_BUDGET: usize = 4_400;

impl QueryBuilder {
    /// The rows `scope` covers up to `as_of` (µs), on columns prefixed with
    /// `alias` (`"v."`, or `""` for the control plane's `where`).
    pub fn erasure_cover(&self, scope: &Scope, as_of: i64, alias: &str) -> String {
        let d = &self.dialect;
        let time = d.micros(&format!("{alias}time"));
        let mut p: Vec<String> = Vec::new();
        match scope {
            Scope::WholeOrg => return "1 = 1".into(),
            // without the column no row has an expiry
            Scope::Expired if !self.present.expires_at => return "1 = 0".into(),
            Scope::Expired => p.push(format!(
                "COALESCE({alias}{}, 0) BETWEEN 1 AND {as_of}",
                super::EXPIRES_AT
            )),
            Scope::Ids(ids) | Scope::Superseded(ids) => {
                let lits: Vec<String> = ids.iter().map(|id| self.lit(id.as_str())).collect();
                let derived = ids.iter().any(|id| is_legacy_id(id.as_str()));
                if alias.is_empty() || !derived || !self.legacy_rows() {
                    // the eraser's `where` names `id` only: it adds the
                    // derived ids' rows itself, on columns the original's
                    // files have (see the control plane's plan)
                    if alias.is_empty() || self.present.id {
                        p.push(in_list_at(alias, "id", &lits));
                    } else {
                        p.push("1 = 0".into());
                    }
                } else {
                    p.push(format!("{} IN ({})", self.id_expr(), lits.join(", ")));
                }
            }
            Scope::Filter(f) => {
                if let Some(agent) = &f.agent_id {
                    p.push(format!("{alias}agent_id = {}", self.lit(agent.as_str())));
                }
                if let Some(session) = &f.session_id {
                    p.push(format!(
                        "{alias}session_id = {}",
                        self.lit(session.as_str())
                    ));
                }
                if !f.memory_types.is_empty() {
                    let lits: Vec<String> = f
                        .memory_types
                        .iter()
                        .map(|t| self.lit(t.as_str()))
                        .collect();
                    p.push(in_list_at(alias, "memory_type", &lits));
                }
                if !f.event_types.is_empty() {
                    let lits: Vec<String> =
                        f.event_types.iter().map(|t| self.lit(t.as_str())).collect();
                    p.push(in_list_at(alias, "event_type", &lits));
                }
                for tag in &f.tags {
                    p.push(format!(
                        "instr(',' || {alias}tags_csv || ',', {}) > 0",
                        self.lit(&format!(",{tag},"))
                    ));
                }
                if let Some(since) = f.since {
                    p.push(format!("{time} > {since}"));
                }
                if let Some(until) = f.until {
                    p.push(format!("{time} < {until}"));
                }
            }
        }
        p.push(format!("{time} <= {as_of}"));
        p.join(" AND ")
    }

    /// How many distinct memories `scope` covers up to `as_of` among the
    /// rows reads show (a delete's dry run): one column `n`.
    pub fn count_covered(&self, scope: &Scope, as_of: i64) -> super::Sql {
        let mut sql = format!(
            "SELECT COUNT(DISTINCT {}) AS n FROM {} AS v WHERE v.org_id = {}",
            self.id_expr(),
            self.dialect.table_ref(&self.memories),
            self.lit(self.org.as_str()),
        );
        if let Some(is_memory) = self.is_memory() {
            let _ = write!(sql, " AND {is_memory}");
        }
        let _ = write!(sql, " AND {}", self.erasure_cover(scope, as_of, "v."));
        self.push_erasure_hides(&mut sql);
        super::Sql(sql)
    }

    /// The org's erasure receipts delivered into its store, newest first,
    /// at most `limit`: `time, id, receipt_json`; only `erasure_id`'s when
    /// given (the caller checked its form).
    pub fn erasure_receipts(&self, erasure_id: Option<&str>, limit: u32) -> super::Sql {
        let mut sql = format!(
            "SELECT v.time AS time, v.id AS id, v.receipt_json AS receipt_json FROM {} AS v \
             WHERE v.org_id = {}",
            self.dialect.table_ref(&super::Ident::receipts_table()),
            self.lit(self.org.as_str()),
        );
        if let Some(id) = erasure_id {
            let _ = write!(sql, " AND v.id = {}", self.lit(id));
        }
        let _ = write!(sql, " ORDER BY v.time DESC LIMIT {limit}");
        super::Sql(sql)
    }

    /// `erasure`'s cover for the record a worker writes (unqualified).
    pub fn erasure_predicate(&self, erasure: &Erasure) -> String {
        self.erasure_cover(&erasure.scope, erasure.as_of, "")
    }

    /// The predicates (alias `v`) hiding the rows of the erasures in
    /// progress: one `NOT (...)` per erasure.
    pub(super) fn erasure_hides(&self) -> impl Iterator<Item = String> + '_ {
        self.erasures
            .iter()
            .map(|e| format!("NOT ({})", self.erasure_cover(&e.scope, e.as_of, "v.")))
    }

    /// Bytes the hiding predicates of `erasures` add to a read.
    pub fn erasure_sql_len(&self, erasures: &[&Erasure]) -> usize {
        erasures
            .iter()
            .map(|e| self.erasure_cover(&e.scope, e.as_of, "v.").len() + " AND NOT ()".len())
            .sum()
    }

    /// The hiding predicates for the `memory_versions` table: deletes only
    /// (the versions an update superseded are what that table keeps).
    pub(super) fn deletion_hides(&self) -> impl Iterator<Item = String> + '_ {
        self.erasures
            .iter()
            .filter(|e| !matches!(e.scope, Scope::Superseded(_)))
            .map(|e| format!("NOT ({})", self.erasure_cover(&e.scope, e.as_of, "v.")))
    }

    /// `AND`-joined hiding predicates appended to `sql` (nothing without
    /// erasures).
    pub(super) fn push_erasure_hides(&self, sql: &mut String) {
        for hide in self.erasure_hides() {
            let _ = write!(sql, " AND {hide}");
        }
    }
}

/// `in_list` on a prefix that may be empty (`"v."` or `""`).
fn in_list_at(alias: &str, column: &str, lits: &[String]) -> String {
    match alias.strip_suffix('.') {
        Some(a) => in_list(a, column, lits),
        None => match lits {
            [one] => format!("{column} = {one}"),
            _ => format!("{column} IN ({})", lits.join(", ")),
        },
    }
}
