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
    rows: HashMap<Key, StateRow>,
    order: VecDeque<(Key, i64)>,
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
        inner.order.push_back((key.clone(), row.time));
        inner.rows.insert(key, row);
        while inner.rows.len() > Self::CAPACITY || inner.order.len() > 2 * Self::CAPACITY {
            let Some((old, time)) = inner.order.pop_front() else {
                break;
            };
            if inner.rows.get(&old).is_some_and(|r| r.time == time) {
                inner.rows.remove(&old);
            }
        }
    }

    /// The cached rows of an org's table, not older than the TTL.
    pub fn rows(&self, org: &str, table: StateTable, now: i64) -> Vec<StateRow> {
        let inner = self.lock();
        inner
            .rows
            .iter()
            .filter(|((o, t, _), r)| o == org && *t == table && r.time > now - Self::TTL_MICROS)
            .map(|(_, r)| r.clone())
            .collect()
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
    }
}
