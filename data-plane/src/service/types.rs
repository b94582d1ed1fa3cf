//! The service's domain types with the original memtrace's JSON names (its
//! SDKs parse them: optional fields omitted when empty, as Go's
//! `omitempty`; extra fields are ignored by them, so memories also carry
//! `id`).
//! Also the raw create/update requests and their validated forms
//! (`TryFrom`), which refuse bad input naming the field and the rule.

use super::ServiceError;
use crate::query::{
    AgentId, DedupKey, EventType, MemoryId, MemoryType, QueryError, SessionId, Tag, UnixMicros,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// A stored memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub id: String,
    /// RFC 3339 with up to microsecond digits, UTC.
    pub time: String,
    pub org_id: String,
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
    pub memory_type: String,
    pub event_type: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dedup_key: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub importance: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_id: String,
    /// When the memory expires (RFC 3339); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// One page of an export (`GET /api/v1/export`, `ExportMemories`): the
/// visible memories oldest first, and the cursor of the next page when
/// more follow (`None`: the export is complete).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPage {
    pub memories: Vec<Memory>,
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/memories` and the agent/session memory lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryList {
    pub memories: Vec<Memory>,
    pub count: usize,
    pub has_more: bool,
}

/// `POST /api/v1/search`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    pub results: Vec<Memory>,
    pub count: usize,
    pub query_time_ms: u64,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    pub id: String,
    pub org_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
}

/// An agent's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStats {
    pub agent_id: String,
    pub memory_count: u64,
    pub memories_24h: u64,
    pub errors_24h: u64,
    pub session_count: u64,
    pub active_sessions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    pub memory_types: BTreeMap<String, u64>,
}

/// A session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    pub id: String,
    pub org_id: String,
    pub agent_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
}

/// `POST /api/v1/sessions/{id}/context`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionContext {
    pub session_id: String,
    pub context: String,
    pub memory_count: usize,
}

/// A memory create request as received (`POST /api/v1/memories`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CreateMemoryRequest {
    /// Optional client-chosen id (must follow the memory id rule).
    pub id: Option<String>,
    pub agent_id: Option<String>,
    pub content: Option<String>,
    pub memory_type: Option<String>,
    pub event_type: Option<String>,
    pub session_id: Option<String>,
    pub metadata: Option<Value>,
    pub tags: Option<Vec<String>>,
    pub importance: Option<f64>,
    pub dedup_key: Option<String>,
    pub parent_id: Option<String>,
    /// Seconds until the memory expires.
    pub ttl: Option<i64>,
    /// When the memory expires (RFC 3339).
    pub expires_at: Option<String>,
}

/// A page of an agent or session list: newest first, `limit` 1 to
/// [`RegistryPage::MAX_LIMIT`] (absent or 0: the maximum, so a client that
/// never pages sees what the original's unpaged list showed up to it), and
/// an `offset` within the query offset bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryPage {
    pub limit: usize,
    pub offset: usize,
}

impl RegistryPage {
    /// Most agents or sessions in one page.
    pub const MAX_LIMIT: usize = 1000;

    pub fn parse(limit: Option<i64>, offset: Option<i64>) -> Result<Self, ServiceError> {
        let limit = match limit {
            None | Some(0) => Self::MAX_LIMIT,
            Some(n) if (1..=Self::MAX_LIMIT as i64).contains(&n) => n as usize,
            Some(_) => {
                return Err(ServiceError::invalid("limit", "must be between 1 and 1000"));
            }
        };
        let offset = crate::query::parse_offset(offset)? as usize;
        Ok(Self { limit, offset })
    }

    /// The page of `items` (already newest first) and whether more follow.
    pub fn take<T>(&self, items: Vec<T>) -> (Vec<T>, bool) {
        let has_more = items.len() > self.offset.saturating_add(self.limit);
        let page = items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        (page, has_more)
    }
}

/// Most tags on one memory.
pub const MAX_MEMORY_TAGS: usize = 64;
/// Longest memory `content`, in bytes: what a page of memories can hold
/// within a read's reply bound (`arcdb::MAX_REPLY_BYTES`) stays useful.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;
/// Longest JSON object field (memory and session `metadata`, agent
/// `config`), encoded, in bytes.
pub const MAX_OBJECT_BYTES: usize = 64 * 1024;
/// Longest `parent_id`, in bytes.
pub const MAX_PARENT_ID_BYTES: usize = 256;

/// A validated memory create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub id: Option<MemoryId>,
    pub agent_id: AgentId,
    pub content: String,
    pub memory_type: MemoryType,
    pub event_type: EventType,
    pub session_id: Option<SessionId>,
    /// Empty for none.
    pub metadata: Map<String, Value>,
    pub tags: Vec<Tag>,
    pub importance: f64,
    pub dedup_key: Option<DedupKey>,
    pub parent_id: String,
    /// When it expires; `None`: never.
    pub expires_at: Option<UnixMicros>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// `null`/absent → empty; an object of at most [`MAX_OBJECT_BYTES`]
/// encoded → itself; anything else → 400.
pub(crate) fn object_field(
    value: Option<Value>,
    field: &'static str,
) -> Result<Map<String, Value>, ServiceError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) if m.is_empty() => Ok(m),
        Some(Value::Object(m)) => {
            let encoded = serde_json::to_vec(&m).map_or(usize::MAX, |v| v.len());
            if encoded > MAX_OBJECT_BYTES {
                return Err(ServiceError::invalid(
                    field,
                    "must be at most 65536 bytes of JSON",
                ));
            }
            Ok(m)
        }
        Some(_) => Err(ServiceError::invalid(field, "must be a JSON object")),
    }
}

/// A client-chosen memory id: the memory id rule, and not the prefix of
/// the ids derived for rows the original memtrace wrote.
fn client_id(id: &str) -> Result<MemoryId, ServiceError> {
    if memtrace_common::legacy::is_legacy_id(id) {
        return Err(ServiceError::invalid(
            MemoryId::FIELD,
            "must not start with lg_ (reserved for memories the original memtrace wrote)",
        ));
    }
    Ok(MemoryId::parse(id)?)
}

impl TryFrom<CreateMemoryRequest> for NewMemory {
    type Error = ServiceError;

    fn try_from(r: CreateMemoryRequest) -> Result<Self, ServiceError> {
        let agent_id = non_empty(r.agent_id)
            .ok_or(ServiceError::invalid(AgentId::FIELD, "is required"))
            .and_then(|a| Ok(AgentId::parse_owned(a)?))?;
        let content = r
            .content
            .map(|c| {
                if c.contains('\0') {
                    c.replace('\0', "")
                } else {
                    c
                }
            })
            .filter(|c| !c.is_empty())
            .ok_or(ServiceError::invalid("content", "is required"))?;
        if content.len() > MAX_CONTENT_BYTES {
            return Err(ServiceError::invalid(
                "content",
                "must be at most 262144 bytes",
            ));
        }
        let memory_type = match non_empty(r.memory_type) {
            Some(t) => MemoryType::parse(&t)?,
            None => MemoryType::Episodic,
        };
        let event_type =
            EventType::parse_owned(non_empty(r.event_type).unwrap_or("general".into()))?;
        let session_id = non_empty(r.session_id)
            .map(SessionId::parse_owned)
            .transpose()?;
        let raw_tags = r.tags.unwrap_or_default();
        // counted before any is parsed: the work stays bounded
        if raw_tags.len() > MAX_MEMORY_TAGS {
            return Err(QueryError::TooMany {
                field: "tags",
                max: MAX_MEMORY_TAGS,
            }
            .into());
        }
        let tags = raw_tags
            .iter()
            .map(|t| Tag::parse(t))
            .collect::<Result<Vec<_>, QueryError>>()?;
        let importance = r.importance.unwrap_or(0.0);
        if !importance.is_finite() || !(0.0..=1.0).contains(&importance) {
            return Err(ServiceError::invalid(
                "importance",
                "must be a number from 0 to 1",
            ));
        }
        let dedup_key = non_empty(r.dedup_key)
            .map(|k| DedupKey::parse(&k))
            .transpose()?;
        let parent_id = r.parent_id.unwrap_or_default().replace('\0', "");
        if parent_id.len() > MAX_PARENT_ID_BYTES {
            return Err(ServiceError::invalid(
                "parent_id",
                "must be at most 256 bytes",
            ));
        }
        let expires_at =
            super::expiry::parse_expiry(r.ttl, r.expires_at.as_deref(), UnixMicros::now())?;
        Ok(Self {
            id: non_empty(r.id).map(|i| client_id(&i)).transpose()?,
            agent_id,
            content,
            memory_type,
            event_type,
            session_id,
            metadata: object_field(r.metadata, "metadata")?,
            tags,
            importance,
            dedup_key,
            parent_id,
            expires_at,
        })
    }
}

/// `POST /api/v1/agents` as received.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RegisterAgentRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    pub config: Option<Value>,
}

/// Longest agent name, in bytes.
pub const MAX_AGENT_NAME_BYTES: usize = 256;
/// Longest agent description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// A validated agent registration.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    pub name: String,
    pub description: String,
    pub config: Map<String, Value>,
}

impl TryFrom<RegisterAgentRequest> for NewAgent {
    type Error = ServiceError;

    fn try_from(r: RegisterAgentRequest) -> Result<Self, ServiceError> {
        let name = r.name.map(|n| n.trim().to_owned()).unwrap_or_default();
        if name.is_empty() {
            return Err(ServiceError::invalid("name", "is required"));
        }
        if name.len() > MAX_AGENT_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(ServiceError::invalid(
                "name",
                "must be at most 256 bytes without control characters",
            ));
        }
        let description = r.description.unwrap_or_default().replace('\0', "");
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(ServiceError::invalid(
                "description",
                "must be at most 4096 bytes",
            ));
        }
        Ok(Self {
            name,
            description,
            config: object_field(r.config, "config")?,
        })
    }
}

/// `POST /api/v1/sessions` as received.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CreateSessionRequest {
    pub agent_id: Option<String>,
    pub metadata: Option<Value>,
}

/// `PUT /api/v1/sessions/{id}` as received: status and/or a metadata
/// replacement.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct UpdateSessionRequest {
    pub status: Option<String>,
    pub metadata: Option<Value>,
}

/// A validated session update.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUpdate {
    pub status: Option<String>,
    /// `Some` replaces the metadata (the original's behaviour).
    pub metadata: Option<Map<String, Value>>,
}

impl TryFrom<UpdateSessionRequest> for SessionUpdate {
    type Error = ServiceError;

    fn try_from(r: UpdateSessionRequest) -> Result<Self, ServiceError> {
        let status = non_empty(r.status);
        if let Some(s) = &status {
            // free-form in the original; bounded to the type rule here
            EventType::parse(s)
                .map_err(|_| ServiceError::invalid("status", crate::query::validate::TYPE_RULE))?;
        }
        let metadata = match r.metadata {
            None => None,
            some => Some(object_field(some, "metadata")?),
        };
        Ok(Self { status, metadata })
    }
}

/// `POST /api/v1/sessions/{id}/context` as received (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ContextRequest {
    pub since: Option<String>,
    pub include_types: Option<Vec<String>>,
    pub max_tokens: Option<i64>,
}

/// A validated session create (the agent is resolved by the service).
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    /// An agent id or name.
    pub agent: String,
    pub metadata: Map<String, Value>,
}

impl TryFrom<CreateSessionRequest> for NewSession {
    type Error = ServiceError;

    fn try_from(r: CreateSessionRequest) -> Result<Self, ServiceError> {
        let agent =
            non_empty(r.agent_id).ok_or(ServiceError::invalid("agent_id", "is required"))?;
        if agent.len() > MAX_AGENT_NAME_BYTES {
            return Err(ServiceError::invalid(
                "agent_id",
                "must name a registered agent (id or name)",
            ));
        }
        Ok(Self {
            agent,
            metadata: object_field(r.metadata, "metadata")?,
        })
    }
}
