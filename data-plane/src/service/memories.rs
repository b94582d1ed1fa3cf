//! Memories: create (single or batch, deduplicated), list, search, get.
//!
//! Writes make no store round trip. Dedup per request is the in-memory
//! index only: keys it holds are duplicates (409 for a single create,
//! skipped in a batch, DUPLICATE when streamed); survivors are reserved in
//! the index before the write (so a concurrent request with the same key is
//! a duplicate even while this write is pending) and released if the write
//! fails. A write holding reservations runs in its own task, so a cancelled
//! request cannot leave them held for a write that failed. What the index
//! cannot see (another worker's writes, keys it evicted, a restart) is
//! stored and collapsed by every read ([`super::collapse`]).
//!
//! Reads: a newest-first page is one plain top-N statement collapsed here;
//! should collapsing leave the page short while more rows exist, a longer
//! prefix is read (rare: only duplicates shorten it). Oldest-first pages
//! and pages past [`PREFIX_MAX_ROWS`] rows are collapsed in SQL.

use super::dedup::{Reserved, auto_key};
use super::ids::{memory_id, next_micros_n};
use super::rows::{self, EMPTY_OBJECT, encode_object, rfc3339};
use super::types::{ExportPage, Memory, MemoryList, NewMemory, SearchResult};
use super::{MAX_BATCH, OrgService, ServiceError, ServiceShared, collapse};
use crate::query::{
    ExportCursor, ExportParams, ExportQuery, ListParams, ListQuery, MemoryId, MemoryPage, Order,
    PREFIX_MAX_ROWS, SearchParams, SearchQuery, SessionId, Tag, UnixMicros,
};
use crate::store::MemoryRow;
use crate::store::StoreError;
use hashbrown::HashSet;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What a write does with a duplicate input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDuplicate {
    /// Fail the write with [`ServiceError::Duplicate`] (a single create: 409).
    Refuse,
    /// Leave it out and write the rest (batches, as the original).
    Skip,
}

/// What a write answers for each stored input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The memory, rendered for the response.
    Memories,
    /// Only its id (the streaming write: cheaper per event).
    Ids,
}

/// One stored input of a write: its id, and the memory rendered for the
/// response when asked for.
struct Written {
    id: String,
    memory: Option<Memory>,
}

impl OrgService {
    /// Creates one memory; a duplicate (by dedup key, within the window) is
    /// refused with [`ServiceError::Duplicate`].
    pub async fn create_memory(&self, memory: NewMemory) -> Result<Memory, ServiceError> {
        self.write_memories(vec![memory], OnDuplicate::Refuse, Answer::Memories)
            .await?
            .into_iter()
            .flatten()
            .find_map(|w| w.memory)
            .ok_or(ServiceError::Duplicate)
    }

    /// Creates a batch; duplicates are skipped silently (as the original)
    /// and only the created memories are returned.
    pub async fn create_memories(
        &self,
        memories: Vec<NewMemory>,
    ) -> Result<Vec<Memory>, ServiceError> {
        let each = self
            .write_memories(memories, OnDuplicate::Skip, Answer::Memories)
            .await?;
        Ok(each
            .into_iter()
            .flatten()
            .filter_map(|w| w.memory)
            .collect())
    }

    /// Creates a batch and answers per input, in order: the new memory's id
    /// when it was stored, `None` when it was a duplicate (skipped). Used by
    /// the streaming write, which acknowledges each item and needs no
    /// rendered memory (cheaper per event).
    pub async fn create_memories_each(
        &self,
        memories: Vec<NewMemory>,
    ) -> Result<Vec<Option<String>>, ServiceError> {
        let each = self
            .write_memories(memories, OnDuplicate::Skip, Answer::Ids)
            .await?;
        Ok(each.into_iter().map(|w| w.map(|w| w.id)).collect())
    }

    /// Writes the survivors of dedup; per input, `None` for a duplicate.
    /// With [`Answer::Memories`], each stored memory is also rendered for
    /// the response.
    async fn write_memories(
        &self,
        memories: Vec<NewMemory>,
        on_duplicate: OnDuplicate,
        answer: Answer,
    ) -> Result<Vec<Option<Written>>, ServiceError> {
        if memories.is_empty() {
            return Ok(Vec::new());
        }
        for memory in &memories {
            self.check_agent(memory.agent_id.as_str())?;
        }
        if memories.len() > MAX_BATCH {
            return Err(ServiceError::TooLarge(format!(
                "too many memories in one batch: at most {MAX_BATCH}"
            )));
        }
        let org = self.org.as_str();
        let now = UnixMicros::now().0;
        let window = i64::try_from(self.dedup.window.as_micros()).unwrap_or(i64::MAX);
        let expiry = now.saturating_add(window);
        let keys: Vec<String> = memories
            .iter()
            .map(|m| match &m.dedup_key {
                Some(k) => k.as_str().to_owned(),
                None if self.dedup.enabled => auto_key(
                    m.agent_id.as_str(),
                    m.event_type.as_str(),
                    &m.content,
                    self.dedup.key_content_bytes,
                ),
                None => String::new(),
            })
            .collect();

        // per input: still to be written (not a duplicate)
        let mut keep = vec![true; memories.len()];
        let reserved = if self.dedup.enabled {
            self.dedup_keys(&keys, &mut keep, now, expiry)
        } else {
            Vec::new()
        };
        if on_duplicate == OnDuplicate::Refuse && !keep[0] {
            tracing::debug!(org_id = %org, "duplicate memory refused");
            return Err(ServiceError::Duplicate);
        }

        // one shared org id and one clock reading for every row
        let org_id: Arc<str> = Arc::from(org);
        let kept = keep.iter().filter(|k| **k).count();
        let first_time = next_micros_n(kept);
        let mut rows = Vec::with_capacity(kept);
        // what the response renders besides the row (only when asked)
        let full = answer == Answer::Memories;
        let mut extras = Vec::with_capacity(if full { kept } else { 0 });
        for ((m, key), keep) in memories.into_iter().zip(keys).zip(keep.iter()) {
            if !*keep {
                continue;
            }
            let time = first_time + rows.len() as i64;
            let id =
                m.id.map(MemoryId::into_string)
                    .unwrap_or_else(|| memory_id(time));
            let tags_csv = match m.tags.as_slice() {
                [] => String::new(),
                tags => tags
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            };
            let metadata_json = if m.metadata.is_empty() {
                Cow::Borrowed(EMPTY_OBJECT)
            } else {
                Cow::Owned(encode_object(&m.metadata))
            };
            rows.push(MemoryRow {
                time,
                id,
                org_id: org_id.clone(),
                agent_id: m.agent_id.into_string(),
                session_id: m.session_id.map(SessionId::into_string).unwrap_or_default(),
                memory_type: Cow::Borrowed(m.memory_type.as_str()),
                event_type: m.event_type.into_string(),
                content: m.content,
                metadata_json,
                tags_csv,
                dedup_key: key,
                importance: m.importance,
                parent_id: m.parent_id,
                expires_at: m.expires_at.map_or(0, |t| t.0),
            });
            if full {
                extras.push((m.metadata, m.tags));
            }
        }
        if rows.is_empty() {
            return Ok(keep.iter().map(|_| None).collect());
        }
        let count = rows.len();
        let (rows, result) = if reserved.is_empty() {
            let result = self.store.append_memories(&rows).await;
            (rows, result)
        } else {
            let store = self.store.clone();
            let release = Release {
                shared: self.shared.clone(),
                org: org.to_owned(),
                reserved,
            };
            let (rows, result) = write_reserved(release, async move {
                let result = store.append_memories(&rows).await;
                (rows, result)
            })
            .await;
            (rows.unwrap_or_default(), result)
        };
        if let Err(e) = result {
            tracing::warn!(org_id = %org, error = %e, "memory write failed");
            return Err(e.into());
        }
        tracing::debug!(org_id = %org, count, "memories stored");
        // the stored rows become the answer (moved, not copied)
        let mut rows = rows.into_iter();
        let mut extras = extras.into_iter();
        Ok(keep
            .iter()
            .map(|kept| {
                if !*kept {
                    return None;
                }
                let row = rows.next()?;
                Some(match extras.next() {
                    Some((metadata, tags)) => {
                        let memory = render(row, metadata, tags);
                        Written {
                            id: memory.id.clone(),
                            memory: Some(memory),
                        }
                    }
                    None => Written {
                        id: row.id,
                        memory: None,
                    },
                })
            })
            .collect())
    }

    /// Marks in `keep` the inputs that are duplicates: of an earlier input
    /// of the request, or of a key in the index. The survivors' keys are
    /// reserved in the index (returned) so a concurrent write of the same
    /// key is a duplicate while this one is pending.
    fn dedup_keys(
        &self,
        keys: &[String],
        keep: &mut [bool],
        now: i64,
        expiry: i64,
    ) -> Vec<Reserved> {
        if keys.len() > 1 {
            let mut seen: HashSet<&str> = HashSet::with_capacity(keys.len());
            let mut repeated = 0;
            for (i, k) in keys.iter().enumerate() {
                if !seen.insert(k) {
                    keep[i] = false;
                    repeated += 1;
                }
            }
            self.shared.dedup.count_in_request(repeated);
        }
        self.shared
            .dedup
            .reserve_kept(self.org.as_str(), keys, keep, now, expiry)
    }

    /// One page of memories (`GET /api/v1/memories`).
    pub async fn list_memories(&self, params: &ListParams) -> Result<MemoryList, ServiceError> {
        let params = self.narrowed(params, |p| &mut p.agent_id)?;
        let q = ListQuery::parse(&params)?;
        let (memories, has_more) = self.read_page(&q.page()).await?;
        Ok(MemoryList {
            count: memories.len(),
            memories,
            has_more,
        })
    }

    /// A search (`POST /api/v1/search`).
    pub async fn search(&self, params: &SearchParams) -> Result<SearchResult, ServiceError> {
        let params = self.narrowed(params, |p| &mut p.agent_id)?;
        let q = SearchQuery::parse(&params)?;
        let started = Instant::now();
        let (results, _) = self.read_page(&q.page()).await?;
        Ok(SearchResult {
            count: results.len(),
            results,
            query_time_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The visible memories of `page` and whether more follow it.
    pub(super) async fn read_page(
        &self,
        page: &MemoryPage,
    ) -> Result<(Vec<Memory>, bool), ServiceError> {
        let key_window = self.dedup.enabled.then_some(self.dedup.window);
        let window_micros = key_window.map(|w| i64::try_from(w.as_micros()).unwrap_or(i64::MAX));
        let offset = usize::try_from(page.offset).unwrap_or(usize::MAX);
        let limit = page.limit as usize;
        // the page, one more to know whether a next exists, one more for a
        // final tie in time that a full prefix leaves undecided
        let wanted = offset.saturating_add(limit).saturating_add(1);
        let now = UnixMicros::now();
        let max = PREFIX_MAX_ROWS as usize;
        let mut fetch = wanted.saturating_add(1);
        while page.order == Order::Desc && fetch <= max {
            let rows = self.read(|b| b.newest_memories(&page.filter, fetch as u32, now));
            let rows = rows::read_memories(rows.await?)?;
            let mut c = collapse::newest_first(rows, fetch, window_micros);
            if c.complete || c.visible.len() >= wanted {
                if page.importance_tiebreak {
                    collapse::importance_ties(&mut c.visible);
                }
                let has_more = c.visible.len() > offset + limit;
                let memories = c
                    .visible
                    .into_iter()
                    .skip(offset)
                    .take(limit)
                    .map(|r| r.memory)
                    .collect();
                return Ok((memories, has_more));
            }
            // duplicates (or a long tie) shortened the page: read further
            tracing::debug!(org_id = %self.org, fetch, visible = c.visible.len(), "collapsed prefix short; reading a longer one");
            fetch = if fetch == max {
                max + 1
            } else {
                (fetch * 4).min(max)
            };
        }
        let rows = self.read(|b| b.collapsed_page(page, key_window, now));
        let mut memories = rows::memories(rows.await?)?;
        let has_more = memories.len() > limit;
        memories.truncate(limit);
        Ok((memories, has_more))
    }

    /// One page of the org's export (`GET /api/v1/export`): the visible
    /// memories after the cursor, oldest first, at most `limit`, in one
    /// statement read within the worker's reply bounds; the next page's
    /// cursor when more follow.
    pub async fn export_memories(&self, params: &ExportParams) -> Result<ExportPage, ServiceError> {
        let params = self.narrowed(params, |p| &mut p.agent_id)?;
        let q = ExportQuery::parse(&params)?;
        let key_window = self.dedup.enabled.then_some(self.dedup.window);
        let now = UnixMicros::now();
        let rows = self.read(|b| b.export_page(&q, key_window, now));
        let mut rows = rows::read_memories(rows.await?)?;
        let limit = q.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|last| ExportCursor::encode(last.micros, &last.memory.id))
        } else {
            None
        };
        Ok(ExportPage {
            memories: rows.into_iter().map(|r| r.memory).collect(),
            next_cursor,
        })
    }

    /// One memory by id; 404 when unknown.
    pub async fn get_memory(&self, id: &str) -> Result<Memory, ServiceError> {
        let id = MemoryId::parse(id)?;
        let now = UnixMicros::now();
        let rows = self.read(|b| b.get(&id, now)).await?;
        let memory = rows::memories(rows)?
            .pop()
            .ok_or(ServiceError::NotFound("memory"))?;
        self.check_agent(&memory.agent_id)?;
        Ok(memory)
    }
}

/// Dedup keys reserved for a write, released when dropped armed: the
/// write failed, or its task panicked or was dropped at shutdown.
struct Release {
    shared: Arc<ServiceShared>,
    org: String,
    reserved: Vec<Reserved>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.reserved.is_empty() {
            self.shared.dedup.release(&self.org, &self.reserved);
        }
    }
}

/// Runs `write` to its end in its own task, so a caller that goes away
/// (client disconnect, cancelled call) cannot leave the keys reserved for
/// a write that then fails: those keys would refuse every retry as a
/// duplicate for the whole window though nothing was stored. The keys stay
/// reserved only if the write succeeded. The write hands back what it
/// borrowed (`T`), lost only if its task failed.
async fn write_reserved<F, T>(mut release: Release, write: F) -> (Option<T>, Result<(), StoreError>)
where
    F: Future<Output = (T, Result<(), StoreError>)> + Send + 'static,
    T: Send + 'static,
{
    // the write stays in the request's span (none while traces are off)
    let task = tokio::spawn(
        async move {
            let (back, result) = write.await;
            if result.is_ok() {
                release.reserved.clear();
            }
            drop(release);
            (back, result)
        }
        .instrument(if memtrace_common::telemetry::traces::enabled() {
            tracing::Span::current()
        } else {
            tracing::Span::none()
        }),
    );
    match task.await {
        Ok((back, result)) => (Some(back), result),
        Err(e) => (
            None,
            Err(StoreError::Backend(format!(
                "memory write task failed: {e}"
            ))),
        ),
    }
}

/// A stored row as the response's memory.
pub(super) fn render(row: MemoryRow, metadata: Map<String, Value>, tags: Vec<Tag>) -> Memory {
    Memory {
        time: rfc3339(row.time),
        id: row.id,
        org_id: row.org_id.to_string(),
        agent_id: row.agent_id,
        session_id: row.session_id,
        memory_type: row.memory_type.into_owned(),
        event_type: row.event_type,
        content: row.content,
        metadata: (!metadata.is_empty()).then_some(metadata),
        tags: tags.into_iter().map(Tag::into_string).collect(),
        dedup_key: row.dedup_key,
        importance: row.importance,
        parent_id: row.parent_id,
        expires_at: super::rows::expiry(row.expires_at),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::sync::oneshot;

    fn reserved(shared: &Arc<ServiceShared>, key: &str) -> Release {
        let keys = vec![key.to_owned()];
        let mut keep = vec![true];
        let reserved = shared
            .dedup
            .reserve_kept("org_a", &keys, &mut keep, 0, i64::MAX);
        assert_eq!(keep, [true]);
        Release {
            shared: shared.clone(),
            org: "org_a".into(),
            reserved,
        }
    }

    #[tokio::test]
    async fn a_cancelled_request_whose_write_fails_releases_its_keys() {
        let shared = Arc::new(ServiceShared::default());
        let release = reserved(&shared, "k1");
        let (started_tx, started) = oneshot::channel::<()>();
        let (fail, failed) = oneshot::channel::<()>();
        let caller = tokio::spawn(write_reserved(release, async move {
            let _ = started_tx.send(());
            let _ = failed.await;
            ((), Err(StoreError::Backend("arc said no".into())))
        }));
        started.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert!(
            shared.dedup.contains("org_a", "k1", 1),
            "held while the write is pending"
        );
        fail.send(()).unwrap();
        for _ in 0..500 {
            if !shared.dedup.contains("org_a", "k1", 1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(
            !shared.dedup.contains("org_a", "k1", 1),
            "a failed write must not leave its key refusing retries as duplicates"
        );
    }

    #[tokio::test]
    async fn keys_stay_reserved_after_a_stored_write_and_go_after_a_failed_one() {
        let shared = Arc::new(ServiceShared::default());
        let (back, ok) = write_reserved(reserved(&shared, "k1"), async { (7, Ok(())) }).await;
        assert!(ok.is_ok());
        assert_eq!(back, Some(7), "the write hands back what it was given");
        assert!(shared.dedup.contains("org_a", "k1", 1));
        let (_, err) = write_reserved(reserved(&shared, "k2"), async {
            ((), Err(StoreError::Backend("arc said no".into())))
        })
        .await;
        assert!(matches!(err, Err(StoreError::Backend(_))));
        assert!(!shared.dedup.contains("org_a", "k2", 1));
    }
}
