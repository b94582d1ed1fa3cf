//! Agent and session state rows: reading the latest row per id from the
//! store, and the read-your-writes cache.
//!
//! Arc makes appended rows visible to queries only once its own buffer
//! flushed (up to a few seconds). So that a client that just created or
//! closed a session reads it back through the same worker, every state row
//! this worker appends is also kept in a small cache (per org and table,
//! [`StateCache::CAPACITY`] rows over all orgs, oldest evicted first, each
//! kept [`StateCache::TTL_MICROS`]); reads merge store and cache, newest row
//! per id winning. The window that remains: a write made through another
//! worker is seen here only after Arc flushed it.

use super::{OrgService, ServiceError};
use crate::query::{Ident, QueryBuilder, StateId, StateQuery, UnixMicros};
use crate::store::{Rows, StateRow, StateTable, TenantStore, time_micros};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

type Key = (String, StateTable, String);

/// Rows this worker appended recently; see the module docs.
#[derive(Debug, Default)]
pub struct StateCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// org → table → id → newest row (nested, so a read touches only its
    /// own org's rows and looks them up by `&str`).
    rows: HashMap<String, HashMap<StateTable, HashMap<String, StateRow>>>,
    /// Rows held over all orgs.
    count: usize,
    /// Insertion order with each row's time, for eviction.
    order: VecDeque<(Key, i64)>,
}

impl CacheInner {
    /// Removes the row of `key` if it is still the one written at `time`.
    fn evict(&mut self, (org, table, id): &Key, time: i64) {
        let Some(tables) = self.rows.get_mut(org) else {
            return;
        };
        let Some(ids) = tables.get_mut(table) else {
            return;
        };
        if ids.get(id).is_some_and(|r| r.time == time) {
            ids.remove(id);
            self.count -= 1;
            if ids.is_empty() {
                tables.remove(table);
                if tables.is_empty() {
                    self.rows.remove(org);
                }
            }
        }
    }
}

impl StateCache {
    /// Most rows kept over all orgs.
    pub const CAPACITY: usize = 10_000;
    /// How long a row is kept: well past Arc's flush interval.
    pub const TTL_MICROS: i64 = 5 * 60 * 1_000_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a row just appended.
    pub fn put(&self, org: &str, table: StateTable, row: StateRow) {
        let mut inner = self.lock();
        let key = (org.to_owned(), table, row.id.clone());
        inner.order.push_back((key, row.time));
        let ids = inner
            .rows
            .entry(org.to_owned())
            .or_default()
            .entry(table)
            .or_default();
        if ids.insert(row.id.clone(), row).is_none() {
            inner.count += 1;
        }
        while inner.count > Self::CAPACITY || inner.order.len() > 2 * Self::CAPACITY {
            let Some((old, time)) = inner.order.pop_front() else {
                break;
            };
            inner.evict(&old, time);
        }
    }

    /// The cached rows of an org's table, not older than the TTL.
    pub fn rows(&self, org: &str, table: StateTable, now: i64) -> Vec<StateRow> {
        let inner = self.lock();
        inner
            .rows
            .get(org)
            .and_then(|tables| tables.get(&table))
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

    #[test]
    fn cache_is_bounded_over_all_orgs() {
        let cache = StateCache::default();
        for i in 0..StateCache::CAPACITY + 50 {
            let org = if i % 2 == 0 { "o" } else { "p" };
            let row = StateRow {
                time: i as i64 + 1,
                id: format!("sess_{i}"),
                values: Vec::new(),
            };
            cache.put(org, StateTable::Sessions, row);
        }
        assert_eq!(cache.len(), StateCache::CAPACITY);
        let now = StateCache::CAPACITY as i64;
        let held = cache.rows("o", StateTable::Sessions, now).len()
            + cache.rows("p", StateTable::Sessions, now).len();
        assert_eq!(held, StateCache::CAPACITY, "the oldest were evicted");
        assert!(
            cache
                .rows("o", StateTable::Sessions, now)
                .iter()
                .all(|r| r.id != "sess_0"),
            "the oldest row went first"
        );
    }
}
