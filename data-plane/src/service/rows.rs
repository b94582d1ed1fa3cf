//! Conversions between stored rows and the domain types: memory rows read
//! back (times through [`time_micros`], `metadata_json` and `tags_csv`
//! decoded), and agent/session state rows in both directions.

use super::ServiceError;
use super::collapse::ReadMemory;
use super::state::value;
use super::types::{Agent, Memory, Session};
use crate::query::UnixMicros;
use crate::store::{Rows, StateRow, StateTable, time_micros};
use serde_json::{Map, Value};

fn text(m: &Map<String, Value>, c: &str) -> String {
    match m.get(c) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A JSON object stored as text; empty, `{}` or unreadable → `None`.
pub fn decode_object(json: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) if !m.is_empty() => Some(m),
        _ => None,
    }
}

/// How an empty metadata object is stored (as the original).
pub const EMPTY_OBJECT: &str = "{}";

/// An object as stored text (`{}` when empty, as the original).
pub fn encode_object(m: &Map<String, Value>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

/// RFC 3339 of µs.
pub fn rfc3339(micros: i64) -> String {
    UnixMicros(micros).to_rfc3339()
}

/// A stored expiry (µs, 0: never) as a memory's `expires_at`.
pub fn expiry(micros: i64) -> Option<String> {
    (micros > 0).then(|| rfc3339(micros))
}

/// A memory's `expires_at` back as stored µs (0: never).
pub fn expiry_micros(m: &Memory) -> i64 {
    m.expires_at
        .as_deref()
        .and_then(UnixMicros::parse_rfc3339)
        .map_or(0, |t| t.0)
}

/// A count as an engine returns it (a number, or a string of one; anything
/// else counts 0).
pub fn count_value(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The single count `n` of a one-row answer (no row: 0).
pub fn count(rows: Rows) -> u64 {
    rows.into_maps()
        .into_iter()
        .next()
        .map_or(0, |row| count_value(row.get("n")))
}

/// Memory rows (builder column order) as memories.
pub fn memories(rows: Rows) -> Result<Vec<Memory>, ServiceError> {
    Ok(read_memories(rows)?.into_iter().map(|r| r.memory).collect())
}

/// Memory rows as memories with their times in µs.
pub fn read_memories(rows: Rows) -> Result<Vec<ReadMemory>, ServiceError> {
    rows.into_maps()
        .into_iter()
        .map(|m| {
            let time = m.get("time").and_then(time_micros).ok_or_else(|| {
                ServiceError::Internal("memory row without a readable time".into())
            })?;
            let importance = match m.get("importance") {
                Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
                Some(Value::String(s)) => s.parse().unwrap_or(0.0),
                _ => 0.0,
            };
            let memory = Memory {
                id: text(&m, "id"),
                time: rfc3339(time),
                org_id: text(&m, "org_id"),
                agent_id: text(&m, "agent_id"),
                session_id: text(&m, "session_id"),
                memory_type: text(&m, "memory_type"),
                event_type: text(&m, "event_type"),
                content: text(&m, "content"),
                metadata: decode_object(&text(&m, "metadata_json")),
                tags: text(&m, "tags_csv")
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                dedup_key: text(&m, "dedup_key"),
                importance,
                parent_id: text(&m, "parent_id"),
                expires_at: expiry(count_value(m.get("expires_at")) as i64),
            };
            Ok(ReadMemory {
                micros: time,
                memory,
            })
        })
        .collect()
}

/// The latest agent row as an agent (tombstones are filtered by callers).
pub fn agent(row: &StateRow) -> Agent {
    let v = |c| value(StateTable::Agents, row, c).to_owned();
    Agent {
        id: row.id.clone(),
        org_id: v("org_id"),
        name: v("name"),
        description: v("description"),
        config: decode_object(&v("config_json")),
        created_at: v("created_at"),
        last_active_at: None,
    }
}

/// An agent as a state row at `time`.
pub fn agent_row(a: &Agent, deleted: bool, time: i64) -> StateRow {
    StateRow {
        time,
        id: a.id.clone(),
        values: vec![
            a.org_id.clone(),
            a.name.clone(),
            a.description.clone(),
            a.config.as_ref().map(encode_object).unwrap_or("{}".into()),
            a.created_at.clone(),
            if deleted { "1" } else { "0" }.into(),
        ],
    }
}

/// The latest session row as a session.
pub fn session(row: &StateRow) -> Session {
    let v = |c| value(StateTable::Sessions, row, c).to_owned();
    let closed = v("closed_at");
    Session {
        id: row.id.clone(),
        org_id: v("org_id"),
        agent_id: v("agent_id"),
        status: v("status"),
        metadata: decode_object(&v("metadata_json")),
        created_at: v("created_at"),
        updated_at: v("updated_at"),
        closed_at: (!closed.is_empty()).then_some(closed),
    }
}

/// A session as a state row at `time`.
pub fn session_row(s: &Session, time: i64) -> StateRow {
    StateRow {
        time,
        id: s.id.clone(),
        values: vec![
            s.org_id.clone(),
            s.agent_id.clone(),
            s.status.clone(),
            s.metadata
                .as_ref()
                .map(encode_object)
                .unwrap_or("{}".into()),
            s.created_at.clone(),
            s.updated_at.clone(),
            s.closed_at.clone().unwrap_or_default(),
        ],
    }
}
