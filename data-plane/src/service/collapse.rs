//! Read-time collapse of duplicates, in the worker, over a newest-first
//! prefix of a read (the rule is the query builder's, see
//! `query::build::memories`): of the rows sharing an id the newest is kept;
//! a kept row with a dedup key is hidden when the next newer kept row with
//! the same key came less than the window after it. Whether a row is
//! hidden depends only on rows newer than it, so a prefix read newest
//! first decides every row it holds exactly, whatever lies beyond it.
//!
//! One thing a `LIMIT n` prefix does not settle is a tie in `time` at its
//! end: rows sharing the last time may continue past the limit, so when
//! the prefix is full those rows are left for a longer prefix.

use super::types::Memory;
use std::collections::{HashMap, HashSet};

/// A memory as read, with its time in µs for the collapse.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadMemory {
    pub micros: i64,
    pub memory: Memory,
}

/// What a prefix yields once collapsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Collapsed {
    /// The visible memories the prefix decides, newest first (ties by id,
    /// descending).
    pub visible: Vec<ReadMemory>,
    /// Whether they are all the visible memories of the read (the prefix
    /// was not full); otherwise more may follow the last one.
    pub complete: bool,
}

/// Collapses `rows`, the newest rows of a read (at most `fetched_limit`
/// were asked for), with `key_window` µs (`None`: ids only).
pub fn newest_first(
    mut rows: Vec<ReadMemory>,
    fetched_limit: usize,
    key_window: Option<i64>,
) -> Collapsed {
    let complete = rows.len() < fetched_limit;
    rows.sort_by(|a, b| {
        b.micros
            .cmp(&a.micros)
            .then_with(|| b.memory.id.cmp(&a.memory.id))
    });
    if !complete && let Some(last) = rows.last().map(|r| r.micros) {
        // the tie at the end may continue past the limit
        rows.retain(|r| r.micros != last);
    }
    let mut ids: HashSet<String> = HashSet::with_capacity(rows.len());
    // per key: the time of the nearest newer kept row seen so far
    let mut newer: HashMap<String, i64> = HashMap::new();
    let mut visible = Vec::with_capacity(rows.len());
    for row in rows {
        if !ids.insert(row.memory.id.clone()) {
            continue;
        }
        let hidden = match key_window {
            Some(window) if !row.memory.dedup_key.is_empty() => {
                let next = newer.insert(row.memory.dedup_key.clone(), row.micros);
                next.is_some_and(|next| next.saturating_sub(row.micros) < window)
            }
            _ => false,
        };
        if !hidden {
            visible.push(row);
        }
    }
    Collapsed { visible, complete }
}

/// Orders `visible` (newest first, ties by id) for a search: ties on time
/// by higher importance first, then id.
pub fn importance_ties(visible: &mut [ReadMemory]) {
    visible.sort_by(|a, b| {
        b.micros
            .cmp(&a.micros)
            .then_with(|| b.memory.importance.total_cmp(&a.memory.importance))
            .then_with(|| b.memory.id.cmp(&a.memory.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(micros: i64, id: &str, key: &str) -> ReadMemory {
        ReadMemory {
            micros,
            memory: Memory {
                id: id.into(),
                time: micros.to_string(),
                org_id: "org_a".into(),
                agent_id: "a".into(),
                session_id: String::new(),
                memory_type: "episodic".into(),
                event_type: "general".into(),
                content: "c".into(),
                metadata: None,
                tags: Vec::new(),
                dedup_key: key.into(),
                importance: 0.0,
                parent_id: String::new(),
                expires_at: None,
            },
        }
    }

    fn ids(c: &Collapsed) -> Vec<&str> {
        c.visible.iter().map(|r| r.memory.id.as_str()).collect()
    }

    #[test]
    fn retried_ids_keep_their_newest_version() {
        let rows = vec![row(10, "m1", "k1"), row(30, "m1", "k1"), row(20, "m2", "")];
        let c = newest_first(rows, 10, None);
        assert_eq!(ids(&c), ["m1", "m2"]);
        assert_eq!(c.visible[0].micros, 30);
        assert!(c.complete);
    }

    #[test]
    fn the_later_of_two_duplicates_within_the_window_is_shown() {
        let rows = vec![
            row(100, "old", "k"),
            row(150, "new", "k"),
            // a legitimate repeat: more than the window after its predecessor
            row(300, "again", "k"),
            row(120, "other", "k2"),
        ];
        let c = newest_first(rows, 10, Some(100));
        assert_eq!(ids(&c), ["again", "new", "other"]);
        // without the key rule every id is shown
        let rows = vec![row(100, "old", "k"), row(150, "new", "k")];
        assert_eq!(ids(&newest_first(rows, 10, None)), ["new", "old"]);
    }

    #[test]
    fn hidden_rows_still_hide_their_older_duplicates() {
        // c hides b (< window), b hides a (< window) although b is hidden
        let rows = vec![row(0, "a", "k"), row(60, "b", "k"), row(120, "c", "k")];
        assert_eq!(ids(&newest_first(rows, 10, Some(100))), ["c"]);
    }

    #[test]
    fn a_full_prefix_leaves_its_final_tie_for_a_longer_read() {
        let rows = vec![row(50, "x", ""), row(40, "b", ""), row(40, "a", "")];
        let c = newest_first(rows, 3, None);
        assert!(!c.complete);
        assert_eq!(ids(&c), ["x"]);
        // ties at equal time are ordered by id, descending
        let rows = vec![row(40, "a", ""), row(40, "b", ""), row(50, "x", "")];
        let c = newest_first(rows, 4, None);
        assert!(c.complete);
        assert_eq!(ids(&c), ["x", "b", "a"]);
    }

    #[test]
    fn equal_times_with_one_key_keep_the_higher_id() {
        let rows = vec![row(40, "a", "k"), row(40, "b", "k")];
        assert_eq!(ids(&newest_first(rows, 10, Some(1))), ["b"]);
    }

    #[test]
    fn importance_breaks_ties_for_search() {
        let mut a = row(40, "a", "");
        a.memory.importance = 0.9;
        let mut c = newest_first(vec![a, row(40, "b", ""), row(50, "x", "")], 10, None);
        importance_ties(&mut c.visible);
        assert_eq!(ids(&c), ["x", "a", "b"]);
    }
}
