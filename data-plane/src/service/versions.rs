//! Updating a memory and reading its history. An update writes a new
//! version with the same id (content, tags, importance, metadata, memory
//! and event type may change; agent, session, dedup key and parent stay):
//! the current version is copied to `memory_versions` first, the new one
//! is appended to the memory table (newer `time`: reads show it, newest
//! version wins), and the superseded rows in the memory table are recorded
//! as an erasure — hidden from every read at once (so a filter matching
//! only the old content cannot surface it), then removed from the memory
//! table by the control plane. History is `memory_versions` plus the
//! current row. Two updates of one memory racing on two workers: the later
//! one wins, the earlier is in history.

use super::rows::{self, EMPTY_OBJECT, encode_object};
use super::{Memory, OrgService, ServiceError};
use crate::erasure::Scope;
use crate::query::UnixMicros;
use crate::query::validate::MemoryId;
use crate::service::types::{CreateMemoryRequest, NewMemory};
use crate::store::MemoryRow;
use crate::store::time_micros;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// Most superseded versions a history shows.
pub const MAX_HISTORY: u32 = 1000;

/// What an update may change; absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryPatch {
    pub content: Option<String>,
    pub tags: Option<Vec<String>>,
    pub importance: Option<f64>,
    pub metadata: Option<Value>,
    pub memory_type: Option<String>,
    pub event_type: Option<String>,
}

impl MemoryPatch {
    fn is_empty(&self) -> bool {
        self.content.is_none()
            && self.tags.is_none()
            && self.importance.is_none()
            && self.metadata.is_none()
            && self.memory_type.is_none()
            && self.event_type.is_none()
    }
}

impl OrgService {
    /// Updates memory `id` (`PATCH /api/v1/memories/{id}`): its new
    /// version. 404 when no version is readable yet (a memory becomes
    /// readable within Arc's buffer window after its create).
    pub async fn update_memory(
        &self,
        id: &str,
        patch: MemoryPatch,
    ) -> Result<Memory, ServiceError> {
        let id = MemoryId::parse(id)?;
        if patch.is_empty() {
            return Err(ServiceError::BadRequest(
                "nothing to update: give at least one of content, tags, importance, metadata, \
                 memory_type, event_type"
                    .into(),
            ));
        }
        let Some(requests) = self.erasure_requests.clone() else {
            return Err(ServiceError::Unavailable(
                "this worker cannot record updates (no state bus)".into(),
            ));
        };
        let current = self.get_memory(id.as_str()).await?;
        let current_time = time_micros(&Value::String(current.time.clone())).ok_or_else(|| {
            ServiceError::Internal("current version without a readable time".into())
        })?;
        // validated as a create, without the id: the new version keeps the
        // current one's (a derived `lg_` id included)
        let merged = NewMemory::try_from(CreateMemoryRequest {
            id: None,
            agent_id: Some(current.agent_id.clone()),
            content: patch.content.or_else(|| Some(current.content.clone())),
            memory_type: patch
                .memory_type
                .or_else(|| Some(current.memory_type.clone())),
            event_type: patch
                .event_type
                .or_else(|| Some(current.event_type.clone())),
            session_id: Some(current.session_id.clone()),
            metadata: patch
                .metadata
                .or_else(|| current.metadata.clone().map(Value::Object)),
            tags: patch.tags.or_else(|| Some(current.tags.clone())),
            importance: patch.importance.or(Some(current.importance)),
            dedup_key: Some(current.dedup_key.clone()),
            parent_id: Some(current.parent_id.clone()),
            // an update keeps the memory's expiry (set below)
            ttl: None,
            expires_at: None,
        })?;
        let org_id: Arc<str> = Arc::from(self.org.as_str());
        let old = row_of(&current, current_time, org_id.clone());
        let time = super::ids::next_micros_after(current_time);
        let new = MemoryRow {
            time,
            id: current.id.clone(),
            org_id,
            agent_id: merged.agent_id.into_string(),
            session_id: current.session_id.clone(),
            memory_type: Cow::Borrowed(merged.memory_type.as_str()),
            event_type: merged.event_type.into_string(),
            content: merged.content,
            metadata_json: if merged.metadata.is_empty() {
                Cow::Borrowed(EMPTY_OBJECT)
            } else {
                Cow::Owned(encode_object(&merged.metadata))
            },
            tags_csv: merged
                .tags
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
            dedup_key: current.dedup_key.clone(),
            importance: merged.importance,
            parent_id: current.parent_id.clone(),
            expires_at: rows::expiry_micros(&current),
        };
        // history first: a failure after it leaves the old version both
        // current and in history (shown once), never lost
        self.store
            .append_versions(std::slice::from_ref(&old))
            .await?;
        self.store
            .append_memories(std::slice::from_ref(&new))
            .await?;
        let superseded = self.new_erasure(Scope::Superseded(vec![id]), time - 1);
        self.check_erasure_budget(&superseded)?;
        let recorded = requests
            .record(
                &superseded,
                self.builder.erasure_predicate(&superseded),
                self.store_kind(),
            )
            .await
            .map_err(|e| {
                ServiceError::Unavailable(format!(
                    "{e}; the new version is stored, retry the update to hide the old one from filtered reads"
                ))
            })?;
        tracing::debug!(org_id = %self.org, memory_id = %current.id, revision = recorded.revision, "memory updated");
        Ok(super::memories::render(new, merged.metadata, merged.tags))
    }

    /// Memory `id`'s versions, newest first: the current one, then the
    /// superseded ones (`GET /api/v1/memories/{id}/history`). 404 when the
    /// memory is not readable (unknown, deleted, past retention).
    pub async fn memory_history(&self, id: &str) -> Result<Vec<Memory>, ServiceError> {
        let id = MemoryId::parse(id)?;
        let now = UnixMicros::now();
        let older = self.read(|b| b.superseded_versions(&id, MAX_HISTORY, now));
        let (current, older) = tokio::join!(self.get_memory(id.as_str()), older);
        let current = current?;
        let mut versions = vec![current];
        let mut seen: std::collections::HashSet<String> =
            versions.iter().map(|m| m.time.clone()).collect();
        for m in rows::memories(older?)? {
            // an update retried, or a failure between its two writes,
            // can store one version twice
            if seen.insert(m.time.clone()) {
                versions.push(m);
            }
        }
        Ok(versions)
    }
}

/// The stored row of a memory as read.
fn row_of(m: &Memory, time: i64, org_id: Arc<str>) -> MemoryRow {
    MemoryRow {
        time,
        id: m.id.clone(),
        org_id,
        agent_id: m.agent_id.clone(),
        session_id: m.session_id.clone(),
        memory_type: Cow::Owned(m.memory_type.clone()),
        event_type: m.event_type.clone(),
        content: m.content.clone(),
        metadata_json: match &m.metadata {
            Some(meta) => Cow::Owned(encode_object(meta)),
            None => Cow::Borrowed(EMPTY_OBJECT),
        },
        tags_csv: m.tags.join(","),
        dedup_key: m.dedup_key.clone(),
        importance: m.importance,
        parent_id: m.parent_id.clone(),
        expires_at: rows::expiry_micros(m),
    }
}
