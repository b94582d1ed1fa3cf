//! Agent and session state rows: reading the latest row per id from the
//! store, and the read-your-writes cache.
//!
//! Arc makes appended rows visible to queries only once its own buffer
//! flushed (up to a few seconds). So that a client that just created or
//! closed a session reads it back through the same worker, every state row
//! this worker appends is also kept in a small cache (per org and table,
//! bounded in rows and bytes over all orgs — [`StateCache::CAPACITY`],
//! [`StateCache::CAPACITY_BYTES`] — and per org to a quarter of each, so a
//! busy org evicts its own oldest rows, not another org's; each row kept
//! [`StateCache::TTL_MICROS`]); reads merge store and cache, newest row per
//! id winning. The window that remains: a write made through another
//! worker is seen here only after Arc flushed it.

use super::{OrgService, ServiceError};
use crate::query::{Ident, QueryBuilder, StateId, StateQuery, UnixMicros};
use crate::store::{Rows, StateRow, StateTable, TenantStore, time_micros};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Rows this worker appended recently; see the module docs.
#[derive(Debug, Default)]
pub struct StateCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// org → its rows (so a read touches only its own org's rows).
    orgs: HashMap<String, OrgRows>,
    /// Rows and bytes held over all orgs.
    count: usize,
    bytes: usize,
}

/// One org's cached rows, with their insertion order for eviction.
#[derive(Debug, Default)]
struct OrgRows {
    /// table → id → newest row.
    tables: HashMap<StateTable, HashMap<String, StateRow>>,
    /// (table, id, time) in insertion order; entries of rows since replaced
    /// go stale (their time no longer matches) and are skipped.
    order: VecDeque<(StateTable, String, i64)>,
    count: usize,
    bytes: usize,
}

/// What a row costs the cache (its text, plus a fixed overhead).
fn row_bytes(row: &StateRow) -> usize {
    64 + row.id.len() + row.values.iter().map(|v| v.len() + 24).sum::<usize>()
}

impl OrgRows {
    /// Evicts this org's oldest live row; the bytes and rows freed.
    fn evict_oldest(&mut self) -> Option<(usize, usize)> {
        while let Some((table, id, time)) = self.order.pop_front() {
            let Some(ids) = self.tables.get_mut(&table) else {
                continue;
            };
            if ids.get(&id).is_some_and(|r| r.time == time) {
                let row = ids.remove(&id)?;
                if ids.is_empty() {
                    self.tables.remove(&table);
                }
                let freed = row_bytes(&row);
                self.count -= 1;
                self.bytes -= freed;
                return Some((freed, 1));
            }
        }
        None
    }
}

impl CacheInner {
    /// Evicts the oldest row of `org`; false when it has none.
    fn evict_from(&mut self, org: &str) -> bool {
        let Some(rows) = self.orgs.get_mut(org) else {
            return false;
        };
        let freed = rows.evict_oldest();
        let empty = rows.count == 0;
        if empty {
            self.orgs.remove(org);
        }
        match freed {
            Some((bytes, n)) => {
                self.bytes -= bytes;
                self.count -= n;
                true
            }
            None => false,
        }
    }

    /// The org holding the most bytes (evicted from when the whole cache
    /// is over its bounds, so a quiet org keeps its rows).
    fn largest(&self) -> Option<String> {
        self.orgs
            .iter()
            .max_by_key(|(_, rows)| rows.bytes)
            .map(|(org, _)| org.clone())
    }
}

impl StateCache {
    /// Most rows kept over all orgs.
    pub const CAPACITY: usize = 10_000;
    /// Most bytes kept over all orgs.
    pub const CAPACITY_BYTES: usize = 16 << 20;
    /// What one org may hold: a quarter of each bound, so one busy org
    /// cannot evict the others' rows.
    pub const ORG_CAPACITY: usize = Self::CAPACITY / 4;
    pub const ORG_CAPACITY_BYTES: usize = Self::CAPACITY_BYTES / 4;
    /// How long a row is kept: well past Arc's flush interval.
    pub const TTL_MICROS: i64 = 5 * 60 * 1_000_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a row just appended.
    pub fn put(&self, org: &str, table: StateTable, row: StateRow) {
        let mut inner = self.lock();
        let size = row_bytes(&row);
        let rows = inner.orgs.entry(org.to_owned()).or_default();
        rows.order.push_back((table, row.id.clone(), row.time));
        let (mut added_rows, mut added_bytes) = (1isize, size as isize);
        if let Some(old) = rows
            .tables
            .entry(table)
            .or_default()
            .insert(row.id.clone(), row)
        {
            added_rows -= 1;
            added_bytes -= row_bytes(&old) as isize;
        }
        rows.count = rows.count.saturating_add_signed(added_rows);
        rows.bytes = rows.bytes.saturating_add_signed(added_bytes);
        // the org's own quota first: its oldest rows go
        while rows.count > Self::ORG_CAPACITY || rows.bytes > Self::ORG_CAPACITY_BYTES {
            let Some((bytes, n)) = rows.evict_oldest() else {
                break;
            };
            added_bytes -= bytes as isize;
            added_rows -= n as isize;
        }
        // stale order entries stay bounded
        if rows.order.len() > 2 * rows.count + 16 {
            let tables = &rows.tables;
            rows.order.retain(|(t, id, time)| {
                tables
                    .get(t)
                    .and_then(|ids| ids.get(id))
                    .is_some_and(|r| r.time == *time)
            });
        }
        inner.count = inner.count.saturating_add_signed(added_rows);
        inner.bytes = inner.bytes.saturating_add_signed(added_bytes);
        // then the whole cache: from whichever org holds the most
        while inner.count > Self::CAPACITY || inner.bytes > Self::CAPACITY_BYTES {
            let Some(largest) = inner.largest() else {
                break;
            };
            if !inner.evict_from(&largest) {
                break;
            }
        }
    }

    /// The cached rows of an org's table, not older than the TTL.
    pub fn rows(&self, org: &str, table: StateTable, now: i64) -> Vec<StateRow> {
        let inner = self.lock();
        inner
            .orgs
            .get(org)
            .and_then(|rows| rows.tables.get(&table))
            .map(|ids| {
                ids.values()
                    .filter(|r| r.time > now - Self::TTL_MICROS)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Rows held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.lock().count
    }

    /// Bytes held (as [`row_bytes`] counts them).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The value of `column` in a row of `table` ("" if unknown).
pub fn value<'a>(table: StateTable, row: &'a StateRow, column: &str) -> &'a str {
    table
        .columns()
        .iter()
        .position(|c| *c == column)
        .and_then(|i| row.values.get(i))
        .map(String::as_str)
        .unwrap_or("")
}

fn rows_to_state(table: StateTable, rows: Rows) -> Result<Vec<StateRow>, ServiceError> {
    rows.into_maps()
        .into_iter()
        .map(|m| {
            let time = m.get("time").and_then(time_micros).ok_or_else(|| {
                ServiceError::Internal("state row without a readable time".into())
            })?;
            let text = |c: &str| match m.get(c) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            Ok(StateRow {
                time,
                id: text("id"),
                values: table.columns().iter().map(|c| text(c)).collect(),
            })
        })
        .collect()
}

/// Reads the latest rows of `table`, merged with the cache, newest first.
/// `ids` narrows to those ids; `equals` keeps rows whose latest version has
/// every `column = value`.
impl OrgService {
    pub(super) async fn read_state(
        &self,
        table: StateTable,
        ids: &[StateId],
        equals: &[(&str, &str)],
    ) -> Result<Vec<StateRow>, ServiceError> {
        let now = UnixMicros::now().0;
        read_latest(
            &*self.store,
            &self.builder,
            &self.shared.state,
            self.org.as_str(),
            table,
            ids,
            equals,
            now,
        )
        .await
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_latest(
    store: &dyn TenantStore,
    builder: &QueryBuilder,
    cache: &StateCache,
    org: &str,
    table: StateTable,
    ids: &[StateId],
    equals: &[(&str, &str)],
    now: i64,
) -> Result<Vec<StateRow>, ServiceError> {
    let columns = table
        .columns()
        .iter()
        .map(|c| Ident::column(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let table_ident =
        Ident::table(table.name()).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let mut q = StateQuery::new(table_ident, columns)?.with_ids(ids.iter().cloned())?;
    for (column, v) in equals {
        let column = Ident::column(column).map_err(|e| ServiceError::Internal(e.to_string()))?;
        q = q.with_equal(column, v)?;
    }
    let stored = rows_to_state(table, store.query(&builder.latest_state(&q)).await?)?;
    let mut by_id: HashMap<String, StateRow> = HashMap::new();
    for row in stored.into_iter().chain(cache.rows(org, table, now)) {
        if !ids.is_empty() && !ids.iter().any(|i| i.as_str() == row.id) {
            continue;
        }
        match by_id.get(&row.id) {
            Some(have) if have.time >= row.time => {}
            _ => {
                by_id.insert(row.id.clone(), row);
            }
        }
    }
    let mut rows: Vec<StateRow> = by_id
        .into_values()
        .filter(|r| equals.iter().all(|(c, v)| value(table, r, c) == *v))
        .collect();
    rows.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_the_newest_row_and_expires() {
        let cache = StateCache::default();
        let row = |time, status: &str| StateRow {
            time,
            id: "sess_a".into(),
            values: vec![
                "o".into(),
                "agent".into(),
                status.into(),
                "{}".into(),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        cache.put("o", StateTable::Sessions, row(10, "active"));
        cache.put("o", StateTable::Sessions, row(20, "closed"));
        let rows = cache.rows("o", StateTable::Sessions, 30);
        assert_eq!(rows.len(), 1);
        assert_eq!(value(StateTable::Sessions, &rows[0], "status"), "closed");
        assert!(cache.rows("p", StateTable::Sessions, 30).is_empty());
        assert!(
            cache
                .rows("o", StateTable::Sessions, 20 + StateCache::TTL_MICROS)
                .is_empty()
        );
        assert_eq!(cache.len(), 1, "a newer row of an id replaces the older");
    }

    fn session(i: usize, values: Vec<String>) -> StateRow {
        StateRow {
            time: i as i64 + 1,
            id: format!("sess_{i}"),
            values,
        }
    }

    #[test]
    fn cache_is_bounded_over_all_orgs() {
        let cache = StateCache::default();
        // eight orgs, more rows than the cache holds
        for i in 0..StateCache::CAPACITY + 50 {
            let org = format!("o{}", i % 8);
            cache.put(&org, StateTable::Sessions, session(i, Vec::new()));
        }
        assert_eq!(cache.len(), StateCache::CAPACITY);
        let now = StateCache::CAPACITY as i64;
        let held: usize = (0..8)
            .map(|o| {
                cache
                    .rows(&format!("o{o}"), StateTable::Sessions, now)
                    .len()
            })
            .sum();
        assert_eq!(held, StateCache::CAPACITY, "the oldest were evicted");
        assert!(
            cache
                .rows("o0", StateTable::Sessions, now)
                .iter()
                .all(|r| r.id != "sess_0"),
            "the oldest row went first"
        );
        assert!(cache.bytes() <= StateCache::CAPACITY_BYTES);
    }

    #[test]
    fn a_busy_org_evicts_its_own_rows_not_another_orgs() {
        let cache = StateCache::default();
        for i in 0..10 {
            cache.put("quiet", StateTable::Agents, session(i, vec!["q".into()]));
        }
        // one org writes far past its row quota, then past its byte quota
        for i in 10..StateCache::CAPACITY * 2 {
            cache.put("busy", StateTable::Sessions, session(i, Vec::new()));
        }
        let big = vec!["x".repeat(64 * 1024)];
        for i in 0..200 {
            cache.put(
                "busy",
                StateTable::Agents,
                session(100_000 + i, big.clone()),
            );
        }
        assert_eq!(
            cache.rows("quiet", StateTable::Agents, 20).len(),
            10,
            "the quiet org keeps its rows"
        );
        let busy = cache.rows("busy", StateTable::Agents, 20).len()
            + cache.rows("busy", StateTable::Sessions, 20).len();
        assert!(busy <= StateCache::ORG_CAPACITY, "{busy}");
        assert!(cache.bytes() <= StateCache::ORG_CAPACITY_BYTES + 10 * 256);
        assert!(
            cache.bytes() >= StateCache::ORG_CAPACITY_BYTES / 2,
            "the busy org's newest big rows are kept"
        );
    }
}
