//! Request shapes: raw values as the REST/gRPC layer receives them
//! ([`ListParams`], [`SearchParams`]) and the validated queries built from
//! them. Every rule failure is a [`QueryError`] naming the field.

use super::QueryError;
use super::time::TimeBound;
use super::validate::{
    AgentId, ContentPattern, EventType, Limit, MemoryId, MemoryType, Order, SessionId, Tag,
    parse_offset,
};

/// Most tags one query may require.
pub const MAX_TAGS: usize = 16;
/// Most event types one query may list.
pub const MAX_EVENT_TYPES: usize = 16;
/// Most values a list field may carry as sent (duplicates and empty values
/// included), checked as they are read: a request's parsing work stays
/// bounded and linear whatever its size.
pub const MAX_LIST_VALUES: usize = 256;
/// The rule broken past [`MAX_LIST_VALUES`].
const LIST_VALUES_RULE: &str =
    "at most 256 values may be sent, duplicates and empty values included";

/// The filters shared by list, search and session context. Each field is
/// already validated; an empty list means "no filter".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryFilter {
    pub agent_id: Option<AgentId>,
    pub session_id: Option<SessionId>,
    /// `memory_type IN (...)`.
    pub memory_types: Vec<MemoryType>,
    /// `event_type IN (...)`.
    pub event_types: Vec<EventType>,
    /// Every tag must be an element of `tags_csv` (AND, whole tags).
    pub tags: Vec<Tag>,
    /// Case-insensitive substring of `content`.
    pub content_contains: Option<ContentPattern>,
    /// `importance >= x`; ignored unless finite and `> 0` (as the original).
    pub min_importance: Option<f64>,
    /// `time > since`.
    pub since: Option<TimeBound>,
    /// `time < until`.
    pub until: Option<TimeBound>,
}

/// One page of a memory read: which memories, in which order, and which
/// slice of the result once duplicates are collapsed (see
/// [`QueryBuilder`](super::QueryBuilder)'s read shapes).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPage {
    pub filter: MemoryFilter,
    pub order: Order,
    /// Break ties on `time` by higher importance first (search).
    pub importance_tiebreak: bool,
    pub limit: u32,
    pub offset: u64,
}

/// `GET /api/v1/memories` (and the agent/session memory lists) as received.
/// `tags` is the comma-separated query value. The agent memory list defaults
/// `since` to `24h`; that default belongs to the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub memory_type: Option<String>,
    pub event_type: Option<String>,
    pub tags: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    pub order: Option<String>,
}

/// A validated memory list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filter: MemoryFilter,
    pub limit: Limit,
    pub offset: u64,
    pub order: Order,
}

impl ListQuery {
    pub fn parse(p: &ListParams) -> Result<Self, QueryError> {
        let tags = match p.tags.as_deref() {
            Some(csv) => parse_tags(csv.split(',').map(str::trim))?,
            None => Vec::new(),
        };
        let filter = MemoryFilter {
            agent_id: opt(p.agent_id.as_deref(), AgentId::parse)?,
            session_id: opt(p.session_id.as_deref(), SessionId::parse)?,
            memory_types: opt(p.memory_type.as_deref(), MemoryType::parse)?
                .into_iter()
                .collect(),
            event_types: opt(p.event_type.as_deref(), EventType::parse)?
                .into_iter()
                .collect(),
            tags,
            content_contains: None,
            min_importance: None,
            since: TimeBound::parse_since(p.since.as_deref().unwrap_or(""))?,
            until: TimeBound::parse_until(p.until.as_deref().unwrap_or(""))?,
        };
        Ok(Self {
            filter,
            limit: Limit::list(p.limit),
            offset: parse_offset(p.offset)?,
            order: Order::parse(p.order.as_deref())?,
        })
    }

    /// The page this list reads. `has_more` is exact: the read looks one
    /// memory past the page (the original guessed `rows >= limit`).
    pub fn page(&self) -> MemoryPage {
        MemoryPage {
            filter: self.filter.clone(),
            order: self.order,
            importance_tiebreak: false,
            limit: self.limit.get(),
            offset: self.offset,
        }
    }
}

/// `POST /api/v1/search` as received (JSON body).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchParams {
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub memory_types: Vec<String>,
    pub event_types: Vec<String>,
    pub tags: Vec<String>,
    pub content_contains: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub min_importance: Option<f64>,
    pub limit: Option<i64>,
    pub order: Option<String>,
}

/// A validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub filter: MemoryFilter,
    pub limit: Limit,
    pub order: Order,
    /// Break ties on `time` by higher importance first.
    pub importance_tiebreak: bool,
}

impl SearchQuery {
    pub fn parse(p: &SearchParams) -> Result<Self, QueryError> {
        let min_importance = match p.min_importance {
            Some(x) if !x.is_finite() => {
                return Err(QueryError::invalid(
                    "min_importance",
                    "must be a finite number",
                ));
            }
            Some(x) if x > 0.0 => Some(x),
            _ => None,
        };
        let event_types = distinct(
            p.event_types.iter().map(String::as_str),
            "event_types",
            MAX_EVENT_TYPES,
            EventType::parse,
        )?;
        let filter = MemoryFilter {
            agent_id: opt(p.agent_id.as_deref(), AgentId::parse)?,
            session_id: opt(p.session_id.as_deref(), SessionId::parse)?,
            memory_types: parse_memory_types(&p.memory_types, "memory_types")?,
            event_types,
            tags: parse_tags(p.tags.iter().map(String::as_str))?,
            content_contains: ContentPattern::parse(p.content_contains.as_deref().unwrap_or(""))?,
            min_importance,
            since: TimeBound::parse_since(p.since.as_deref().unwrap_or(""))?,
            until: TimeBound::parse_until(p.until.as_deref().unwrap_or(""))?,
        };
        Ok(Self {
            filter,
            limit: Limit::search(p.limit),
            order: Order::parse(p.order.as_deref())?,
            importance_tiebreak: true,
        })
    }

    /// The page this search reads (always the first).
    pub fn page(&self) -> MemoryPage {
        MemoryPage {
            filter: self.filter.clone(),
            order: self.order,
            importance_tiebreak: self.importance_tiebreak,
            limit: self.limit.get(),
            offset: 0,
        }
    }
}

/// A session's context window: its newest memories (at most
/// [`Limit::CONTEXT`]), newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextQuery {
    pub session_id: SessionId,
    pub since: TimeBound,
    pub include_types: Vec<MemoryType>,
}

impl ContextQuery {
    /// The context's default window, as the original.
    pub const DEFAULT_SINCE: TimeBound = TimeBound::Ago(24 * 3_600_000_000);

    /// `since` defaults to 24h; unlike the original, absolute timestamps are
    /// honoured too. `include_types` empty means every type.
    pub fn parse(
        session_id: &str,
        since: Option<&str>,
        include_types: &[String],
    ) -> Result<Self, QueryError> {
        Ok(Self {
            session_id: SessionId::parse(session_id)?,
            since: TimeBound::parse_since(since.unwrap_or(""))?.unwrap_or(Self::DEFAULT_SINCE),
            include_types: parse_memory_types(include_types, "include_types")?,
        })
    }

    /// The newest [`Limit::CONTEXT`] memories of the session in the window.
    pub fn page(&self) -> MemoryPage {
        MemoryPage {
            filter: MemoryFilter {
                session_id: Some(self.session_id.clone()),
                memory_types: self.include_types.clone(),
                since: Some(self.since),
                ..MemoryFilter::default()
            },
            order: Order::Desc,
            importance_tiebreak: false,
            limit: Limit::CONTEXT.get(),
            offset: 0,
        }
    }
}

/// Absent or empty is `None`.
fn opt<T>(
    value: Option<&str>,
    parse: impl Fn(&str) -> Result<T, QueryError>,
) -> Result<Option<T>, QueryError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => parse(v).map(Some),
    }
}

/// The distinct non-empty values of a list field, in the order first sent,
/// each parsed once: refused past [`MAX_LIST_VALUES`] values as sent, or
/// past `max` distinct ones, as soon as the limit is crossed (one set
/// insertion per value, so linear in the request).
fn distinct<'a, T: Eq + std::hash::Hash + Clone>(
    raw: impl Iterator<Item = &'a str>,
    field: &'static str,
    max: usize,
    parse: impl Fn(&str) -> Result<T, QueryError>,
) -> Result<Vec<T>, QueryError> {
    let mut seen: hashbrown::HashSet<T> = hashbrown::HashSet::new();
    let mut out = Vec::new();
    for (n, value) in raw.enumerate() {
        if n >= MAX_LIST_VALUES {
            return Err(QueryError::invalid(field, LIST_VALUES_RULE));
        }
        if value.is_empty() {
            continue;
        }
        let value = parse(value).map_err(|e| e.in_field(field))?;
        if seen.insert(value.clone()) {
            out.push(value);
            if out.len() > max {
                return Err(QueryError::TooMany { field, max });
            }
        }
    }
    Ok(out)
}

fn parse_tags<'a>(raw: impl Iterator<Item = &'a str>) -> Result<Vec<Tag>, QueryError> {
    distinct(raw, Tag::FIELD, MAX_TAGS, Tag::parse)
}

fn parse_memory_types(raw: &[String], field: &'static str) -> Result<Vec<MemoryType>, QueryError> {
    // a closed set of four: `max` never binds
    distinct(
        raw.iter().map(String::as_str),
        field,
        usize::MAX,
        MemoryType::parse,
    )
}

/// Memories per export page when `limit` is not given.
pub const EXPORT_DEFAULT_LIMIT: u32 = 1_000;
/// Most memories per export page.
pub const EXPORT_MAX_LIMIT: u32 = 10_000;
/// Longest cursor accepted, as sent.
const MAX_CURSOR_LEN: usize = 512;
const CURSOR_RULE: &str = "must be a next_cursor returned by a previous export of this org";

/// `GET /api/v1/export` (and `ExportMemories`) as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportParams {
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Where an export page starts: after the memory at (`micros`, `id`) in
/// the export's order (time, then id, ascending). Sent as base64url
/// (no padding) of `<micros>:<id>`; opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCursor {
    pub micros: i64,
    pub id: MemoryId,
}

impl ExportCursor {
    /// The cursor of the page after the memory at (`micros`, `id`).
    pub fn encode(micros: i64, id: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}:{id}"))
    }

    /// Parses a cursor sent back by a client; anything else is a
    /// [`QueryError`] naming `cursor`.
    pub fn parse(value: &str) -> Result<Self, QueryError> {
        use base64::Engine as _;
        let bad = || QueryError::invalid("cursor", CURSOR_RULE);
        if value.is_empty() || value.len() > MAX_CURSOR_LEN {
            return Err(bad());
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
        if micros.is_empty() || !micros.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(bad());
        }
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let id = MemoryId::parse(id).map_err(|_| bad())?;
        Ok(Self { micros, id })
    }
}

/// A validated export page request.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportQuery {
    /// `agent_id` and `session_id` only.
    pub filter: MemoryFilter,
    pub limit: u32,
    /// Start after this memory; `None`: from the oldest.
    pub after: Option<ExportCursor>,
}

impl ExportQuery {
    pub fn parse(p: &ExportParams) -> Result<Self, QueryError> {
        let limit = match p.limit {
            None | Some(0) => EXPORT_DEFAULT_LIMIT,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=EXPORT_MAX_LIMIT).contains(n))
                .ok_or(QueryError::invalid("limit", "must be from 1 to 10000"))?,
        };
        Ok(Self {
            filter: MemoryFilter {
                agent_id: opt(p.agent_id.as_deref(), AgentId::parse)?,
                session_id: opt(p.session_id.as_deref(), SessionId::parse)?,
                ..MemoryFilter::default()
            },
            limit,
            after: opt(p.cursor.as_deref(), ExportCursor::parse)?,
        })
    }
}
