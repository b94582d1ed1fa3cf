//! Conversions between `memtrace.v1` messages and the service's types. An
//! empty proto string means "not given" (proto3 has no presence for
//! scalars), so requests are turned into the same raw request types the
//! REST adapter deserialises and validated by the same `TryFrom`s.

use crate::query::{ExportParams, ListParams, SearchParams};
use crate::service::{
    Agent, AgentStats, ContextRequest, CreateMemoryRequest, CreateSessionRequest, DeleteRequest,
    Deletion, ErasureView, ExportPage, Memory, MemoryList, MemoryPatch, RegisterAgentRequest,
    SearchResult, ServiceError, Session, SessionContext, UpdateSessionRequest,
};
use crate::store::time_micros;
use memtrace_proto::v1 as pb;
use serde_json::{Map, Value};

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn opt_i64(n: i64) -> Option<i64> {
    (n != 0).then_some(n)
}

/// A `*_json` field: empty → absent; otherwise it must be a JSON value (the
/// service then requires an object and names the field).
fn json_field(s: String, field: &'static str) -> Result<Option<Value>, ServiceError> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&s)
        .map(Some)
        .map_err(|_| ServiceError::invalid(field, "must be a JSON object"))
}

fn object_json(m: &Option<Map<String, Value>>) -> String {
    match m {
        Some(m) if !m.is_empty() => Value::Object(m.clone()).to_string(),
        _ => String::new(),
    }
}

/// RFC 3339 → µs (0 when absent or unreadable).
fn micros(rfc3339: &str) -> i64 {
    time_micros(&Value::String(rfc3339.to_owned())).unwrap_or(0)
}

fn micros_opt(rfc3339: &Option<String>) -> i64 {
    rfc3339.as_deref().map_or(0, micros)
}

impl TryFrom<pb::MemoryInput> for CreateMemoryRequest {
    type Error = ServiceError;

    fn try_from(m: pb::MemoryInput) -> Result<Self, ServiceError> {
        Ok(Self {
            id: opt(m.id),
            agent_id: opt(m.agent_id),
            content: opt(m.content),
            memory_type: opt(m.memory_type),
            event_type: opt(m.event_type),
            session_id: opt(m.session_id),
            metadata: json_field(m.metadata_json, "metadata_json")?,
            tags: (!m.tags.is_empty()).then_some(m.tags),
            importance: (m.importance != 0.0).then_some(m.importance),
            dedup_key: opt(m.dedup_key),
            parent_id: opt(m.parent_id),
            ttl: (m.ttl_seconds != 0).then_some(m.ttl_seconds),
            expires_at: (m.expires_at_unix_micros != 0)
                .then(|| crate::query::UnixMicros(m.expires_at_unix_micros).to_rfc3339()),
        })
    }
}

impl From<Memory> for pb::Memory {
    fn from(m: Memory) -> Self {
        Self {
            time_unix_micros: micros(&m.time),
            metadata_json: object_json(&m.metadata),
            id: m.id,
            org_id: m.org_id,
            agent_id: m.agent_id,
            session_id: m.session_id,
            memory_type: m.memory_type,
            event_type: m.event_type,
            content: m.content,
            tags: m.tags,
            dedup_key: m.dedup_key,
            importance: m.importance,
            parent_id: m.parent_id,
            expires_at_unix_micros: micros_opt(&m.expires_at),
        }
    }
}

impl From<crate::service::receipts::ErasureReceipt> for pb::ErasureReceipt {
    fn from(r: crate::service::receipts::ErasureReceipt) -> Self {
        Self {
            delivered_at_unix_micros: micros(&r.delivered_at),
            receipt_json: r.receipt.to_string(),
            erasure_id: r.erasure_id,
        }
    }
}

impl From<MemoryList> for pb::MemoryList {
    fn from(l: MemoryList) -> Self {
        Self {
            count: u32::try_from(l.count).unwrap_or(u32::MAX),
            memories: l.memories.into_iter().map(Into::into).collect(),
            has_more: l.has_more,
        }
    }
}

impl From<SearchResult> for pb::SearchMemoriesResponse {
    fn from(r: SearchResult) -> Self {
        Self {
            count: u32::try_from(r.count).unwrap_or(u32::MAX),
            results: r.results.into_iter().map(Into::into).collect(),
            query_time_ms: i64::try_from(r.query_time_ms).unwrap_or(i64::MAX),
        }
    }
}

impl From<pb::ListMemoriesRequest> for ListParams {
    fn from(r: pb::ListMemoriesRequest) -> Self {
        Self {
            agent_id: opt(r.agent_id),
            session_id: opt(r.session_id),
            memory_type: opt(r.memory_type),
            event_type: opt(r.event_type),
            tags: (!r.tags.is_empty()).then(|| r.tags.join(",")),
            since: opt(r.since),
            until: opt(r.until),
            limit: opt_i64(r.limit),
            offset: opt_i64(r.offset),
            order: opt(r.order),
        }
    }
}

impl From<pb::ExportMemoriesRequest> for ExportParams {
    fn from(r: pb::ExportMemoriesRequest) -> Self {
        Self {
            agent_id: opt(r.agent_id),
            session_id: opt(r.session_id),
            limit: opt_i64(r.limit),
            cursor: opt(r.cursor),
        }
    }
}

impl From<ExportPage> for pb::ExportMemoriesResponse {
    fn from(p: ExportPage) -> Self {
        Self {
            memories: p.memories.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor.unwrap_or_default(),
        }
    }
}

impl From<pb::SearchMemoriesRequest> for SearchParams {
    fn from(r: pb::SearchMemoriesRequest) -> Self {
        Self {
            agent_id: opt(r.agent_id),
            session_id: opt(r.session_id),
            memory_types: r.memory_types,
            event_types: r.event_types,
            tags: r.tags,
            content_contains: opt(r.content_contains),
            since: opt(r.since),
            until: opt(r.until),
            min_importance: (r.min_importance != 0.0).then_some(r.min_importance),
            limit: opt_i64(r.limit),
            order: opt(r.order),
        }
    }
}

impl From<Agent> for pb::Agent {
    fn from(a: Agent) -> Self {
        Self {
            created_at_unix_micros: micros(&a.created_at),
            last_active_at_unix_micros: micros_opt(&a.last_active_at),
            config_json: object_json(&a.config),
            id: a.id,
            org_id: a.org_id,
            name: a.name,
            description: a.description,
        }
    }
}

impl TryFrom<pb::RegisterAgentRequest> for RegisterAgentRequest {
    type Error = ServiceError;

    fn try_from(r: pb::RegisterAgentRequest) -> Result<Self, ServiceError> {
        Ok(Self {
            name: opt(r.name),
            description: opt(r.description),
            config: json_field(r.config_json, "config_json")?,
        })
    }
}

impl From<AgentStats> for pb::AgentStats {
    fn from(s: AgentStats) -> Self {
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        Self {
            memory_count: n(s.memory_count),
            memories_24h: n(s.memories_24h),
            errors_24h: n(s.errors_24h),
            session_count: n(s.session_count),
            active_sessions: n(s.active_sessions),
            last_active_at_unix_micros: micros_opt(&s.last_active_at),
            memory_types: s.memory_types.into_iter().map(|(k, v)| (k, n(v))).collect(),
            agent_id: s.agent_id,
        }
    }
}

impl From<Session> for pb::Session {
    fn from(s: Session) -> Self {
        Self {
            created_at_unix_micros: micros(&s.created_at),
            updated_at_unix_micros: micros(&s.updated_at),
            closed_at_unix_micros: micros_opt(&s.closed_at),
            metadata_json: object_json(&s.metadata),
            id: s.id,
            org_id: s.org_id,
            agent_id: s.agent_id,
            status: s.status,
        }
    }
}

impl TryFrom<pb::CreateSessionRequest> for CreateSessionRequest {
    type Error = ServiceError;

    fn try_from(r: pb::CreateSessionRequest) -> Result<Self, ServiceError> {
        Ok(Self {
            agent_id: opt(r.agent_id),
            metadata: json_field(r.metadata_json, "metadata_json")?,
        })
    }
}

impl TryFrom<pb::UpdateSessionRequest> for UpdateSessionRequest {
    type Error = ServiceError;

    fn try_from(r: pb::UpdateSessionRequest) -> Result<Self, ServiceError> {
        Ok(Self {
            status: opt(r.status),
            metadata: json_field(r.metadata_json, "metadata_json")?,
        })
    }
}

impl From<pb::SessionContextRequest> for ContextRequest {
    fn from(r: pb::SessionContextRequest) -> Self {
        Self {
            since: opt(r.since),
            include_types: (!r.include_types.is_empty()).then_some(r.include_types),
            max_tokens: opt_i64(r.max_tokens),
        }
    }
}

impl From<SessionContext> for pb::SessionContext {
    fn from(c: SessionContext) -> Self {
        Self {
            session_id: c.session_id,
            context: c.context,
            memory_count: u32::try_from(c.memory_count).unwrap_or(u32::MAX),
        }
    }
}

impl TryFrom<pb::UpdateMemoryRequest> for MemoryPatch {
    type Error = ServiceError;

    fn try_from(r: pb::UpdateMemoryRequest) -> Result<Self, ServiceError> {
        let metadata = match r.metadata_json {
            None => None,
            Some(json) => Some(serde_json::from_str::<Value>(&json).map_err(|e| {
                ServiceError::BadRequest(format!("metadata_json is not JSON: {e}"))
            })?),
        };
        Ok(Self {
            content: r.content,
            tags: r.replace_tags.then_some(r.tags),
            importance: r.importance,
            metadata,
            memory_type: r.memory_type,
            event_type: r.event_type,
        })
    }
}

impl From<pb::DeleteMemoriesRequest> for DeleteRequest {
    fn from(r: pb::DeleteMemoriesRequest) -> Self {
        Self {
            ids: r.ids,
            filter: SearchParams {
                agent_id: opt(r.agent_id),
                session_id: opt(r.session_id),
                memory_types: r.memory_types,
                event_types: r.event_types,
                tags: r.tags,
                since: opt(r.since),
                until: opt(r.until),
                ..SearchParams::default()
            },
            dry_run: r.dry_run,
        }
    }
}

impl From<ErasureView> for pb::Erasure {
    fn from(e: ErasureView) -> Self {
        Self {
            requested_at_unix_micros: micros(&e.requested_at),
            id: e.id,
            state: e.state.to_owned(),
            detail: e.detail,
            requested_by: e.requested_by,
            propagated: e.propagated.unwrap_or(false),
        }
    }
}

impl From<Deletion> for pb::DeleteMemoriesResponse {
    fn from(d: Deletion) -> Self {
        Self {
            dry_run: d.dry_run,
            count: d.count.unwrap_or(0),
            erasure: d.erasure.map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_proto_fields_mean_absent_and_bad_json_names_the_field() {
        let r = CreateMemoryRequest::try_from(pb::MemoryInput {
            agent_id: "agent_a".into(),
            content: "hello".into(),
            ..pb::MemoryInput::default()
        })
        .unwrap_or_default();
        assert_eq!(r.agent_id.as_deref(), Some("agent_a"));
        assert_eq!(r.memory_type, None);
        assert_eq!(r.metadata, None);
        assert_eq!(r.importance, None);
        let err = CreateMemoryRequest::try_from(pb::MemoryInput {
            metadata_json: "{not json".into(),
            ..pb::MemoryInput::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("metadata_json"), "{err}");
    }

    #[test]
    fn list_tags_join_as_the_rest_query_does() {
        let p = ListParams::from(pb::ListMemoriesRequest {
            tags: vec!["a".into(), "b".into()],
            limit: 5,
            ..pb::ListMemoriesRequest::default()
        });
        assert_eq!(p.tags.as_deref(), Some("a,b"));
        assert_eq!(p.limit, Some(5));
        assert_eq!(p.offset, None);
    }

    #[test]
    fn memory_times_become_micros() {
        let m = Memory {
            id: "mem_1".into(),
            time: "2026-11-25T12:00:00.000001Z".into(),
            org_id: "org_a".into(),
            agent_id: "agent_a".into(),
            session_id: String::new(),
            memory_type: "episodic".into(),
            event_type: "general".into(),
            content: "c".into(),
            metadata: None,
            tags: vec![],
            dedup_key: String::new(),
            importance: 0.0,
            parent_id: String::new(),
            expires_at: None,
        };
        let p = pb::Memory::from(m);
        assert_eq!(p.time_unix_micros, 1_795_608_000_000_001);
        assert_eq!(p.metadata_json, "");
    }
}
