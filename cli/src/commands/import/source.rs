//! Reading the Go memtrace's SQLite metadata file (read-only): its orgs,
//! Arc instances (Arc keys still sealed), API keys (bcrypt hashes and
//! prefixes), agents and sessions. Times are normalised to µs since the
//! epoch: the Go server wrote them as SQLite text (`YYYY-MM-DD HH:MM:SS`,
//! optionally with fractions and an offset, or RFC 3339) or as unix seconds.

use crate::error::CliError;
use memtrace_data_plane::service::import::{ImportedAgent, ImportedSession};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};
use serde_json::{Map, Value};
use std::path::Path;

pub struct LegacyOrg {
    pub id: String,
    pub name: String,
}

pub struct LegacyArc {
    pub org_id: String,
    pub url: String,
    pub database: String,
    pub measurement: String,
    pub cipher: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

pub struct LegacyApiKey {
    pub id: i64,
    pub org_id: String,
    pub name: String,
    pub bcrypt_hash: String,
    pub prefix: String,
    pub permissions: String,
    pub created_us: Option<i64>,
    pub expires_us: Option<i64>,
    pub enabled: bool,
}

/// An agent of `org_id`, as the worker's memory service imports it.
pub struct LegacyAgent {
    pub org_id: String,
    pub agent: ImportedAgent,
}

/// A session of `org_id`, as the worker's memory service imports it.
pub struct LegacySession {
    pub org_id: String,
    pub session: ImportedSession,
}

/// Everything the import reads, in id order.
pub struct LegacyDb {
    pub orgs: Vec<LegacyOrg>,
    pub arcs: Vec<LegacyArc>,
    pub keys: Vec<LegacyApiKey>,
    pub agents: Vec<LegacyAgent>,
    pub sessions: Vec<LegacySession>,
}

impl LegacyDb {
    /// Every row that belongs to an org: its kind, id (as reported) and org.
    pub fn owned(&self) -> impl Iterator<Item = (&'static str, String, &str)> {
        let arcs = self
            .arcs
            .iter()
            .map(|a| ("arc_binding", a.org_id.clone(), a.org_id.as_str()));
        let keys = self
            .keys
            .iter()
            .map(|k| ("api_key", k.id.to_string(), k.org_id.as_str()));
        let agents = self
            .agents
            .iter()
            .map(|a| ("agent", a.agent.id.clone(), a.org_id.as_str()));
        let sessions = self
            .sessions
            .iter()
            .map(|s| ("session", s.session.id.clone(), s.org_id.as_str()));
        arcs.chain(keys).chain(agents).chain(sessions)
    }
}

fn fail(path: &Path, what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::new(format!("--db {}: {what}: {e}", path.display()))
}

/// Reads the file at `path`, opened read-only.
pub fn read(path: &Path) -> Result<LegacyDb, CliError> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| fail(path, "cannot open it as SQLite", e))?;
    let query = |table: &str, sql: &str| -> Result<Vec<Vec<Value>>, CliError> {
        let mut stmt = db
            .prepare(sql)
            .map_err(|e| fail(path, &format!("table {table} is not the Go memtrace's"), e))?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |row| (0..n).map(|i| value(row, i)).collect())
            .map_err(|e| fail(path, &format!("reading {table}"), e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| fail(path, &format!("reading {table}"), e))
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let time = |table: &str, column: &str, v: &Value| -> Result<Option<i64>, CliError> {
        match v {
            Value::Null => Ok(None),
            v => micros(v).map(Some).ok_or_else(|| {
                fail(
                    path,
                    &format!("{table}.{column}"),
                    format!("{v} is not a time"),
                )
            }),
        }
    };
    let required = |table: &str, column: &str, v: &Value| -> Result<i64, CliError> {
        time(table, column, v)?
            .ok_or_else(|| fail(path, &format!("{table}.{column}"), "must not be NULL"))
    };
    let orgs = query(
        "organizations",
        "SELECT id, name FROM organizations ORDER BY id",
    )?
    .iter()
    .map(|r| LegacyOrg {
        id: text(&r[0]),
        name: text(&r[1]),
    })
    .collect();
    let arcs = query(
        "arc_instances",
        "SELECT org_id, url, database, measurement, api_key_cipher, api_key_nonce \
         FROM arc_instances ORDER BY org_id",
    )?
    .into_iter()
    .map(|r| LegacyArc {
        org_id: text(&r[0]),
        url: text(&r[1]),
        database: text(&r[2]),
        measurement: text(&r[3]),
        cipher: blob(&r[4]),
        nonce: blob(&r[5]),
    })
    .collect();
    let mut keys = Vec::new();
    for r in query(
        "api_keys",
        "SELECT id, org_id, name, key_hash, key_prefix, permissions, created_at, expires_at, enabled \
         FROM api_keys ORDER BY id",
    )? {
        keys.push(LegacyApiKey {
            id: r[0].as_i64().unwrap_or_default(),
            org_id: text(&r[1]),
            name: text(&r[2]),
            bcrypt_hash: text(&r[3]),
            prefix: text(&r[4]),
            permissions: text(&r[5]),
            created_us: time("api_keys", "created_at", &r[6])?,
            expires_us: time("api_keys", "expires_at", &r[7])?,
            enabled: r[8].as_i64() != Some(0),
        });
    }
    let mut agents = Vec::new();
    for r in query(
        "agents",
        "SELECT id, org_id, name, description, config_json, created_at FROM agents ORDER BY id",
    )? {
        agents.push(LegacyAgent {
            org_id: text(&r[1]),
            agent: ImportedAgent {
                id: text(&r[0]),
                name: text(&r[2]),
                description: text(&r[3]),
                config: object(&r[4]),
                created_us: required("agents", "created_at", &r[5])?,
            },
        });
    }
    let mut sessions = Vec::new();
    for r in query(
        "sessions",
        "SELECT id, org_id, agent_id, status, metadata_json, created_at, updated_at, closed_at \
         FROM sessions ORDER BY id",
    )? {
        let created = required("sessions", "created_at", &r[5])?;
        sessions.push(LegacySession {
            org_id: text(&r[1]),
            session: ImportedSession {
                id: text(&r[0]),
                agent_id: text(&r[2]),
                status: text(&r[3]),
                metadata: object(&r[4]),
                created_us: created,
                updated_us: time("sessions", "updated_at", &r[6])?.unwrap_or(created),
                closed_us: time("sessions", "closed_at", &r[7])?,
            },
        });
    }
    Ok(LegacyDb {
        orgs,
        arcs,
        keys,
        agents,
        sessions,
    })
}

/// A column as JSON (blobs as arrays of bytes).
fn value(row: &Row<'_>, i: usize) -> rusqlite::Result<Value> {
    Ok(match row.get_ref(i)? {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::from(n),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
    })
}

fn blob(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|x| x.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        _ => None,
    }
}

/// A JSON object column; `{}`, NULL and anything else that is not an
/// object with members read as none.
fn object(v: &Value) -> Option<Map<String, Value>> {
    let Value::String(s) = v else { return None };
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(map)) if !map.is_empty() => Some(map),
        _ => None,
    }
}

/// µs since the epoch of a stored time (module docs for the forms).
pub fn micros(v: &Value) -> Option<i64> {
    if let Some(seconds) = v.as_i64() {
        return seconds.checked_mul(1_000_000);
    }
    let s = v.as_str()?.trim();
    // Go's time.Time String(): "2025-01-02 15:04:05.123 +0000 UTC"
    let s = s.strip_suffix(" UTC").unwrap_or(s);
    let candidates = [
        s.to_owned(),
        s.replacen(' ', "T", 1),
        s.replacen(' ', "T", 1)
            .replace(" +", "+")
            .replace(" -", "-"),
    ];
    for c in &candidates {
        if let Ok(ts) = c.parse::<jiff::Timestamp>() {
            return Some(ts.as_microsecond());
        }
        // no offset: SQLite's CURRENT_TIMESTAMP is UTC
        if let Ok(ts) = format!("{c}Z").parse::<jiff::Timestamp>() {
            return Some(ts.as_microsecond());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_in_the_forms_the_go_server_wrote() {
        let at = 1_735_830_245_000_000; // 2025-01-02T15:04:05Z
        for form in [
            "2025-01-02 15:04:05",
            "2025-01-02T15:04:05Z",
            "2025-01-02 15:04:05+00:00",
            "2025-01-02 17:04:05+02:00",
            "2025-01-02 15:04:05 +0000 UTC",
        ] {
            assert_eq!(micros(&Value::from(form)), Some(at), "{form}");
        }
        assert_eq!(
            micros(&Value::from("2025-01-02 15:04:05.5")),
            Some(at + 500_000)
        );
        assert_eq!(micros(&Value::from(1_735_830_245)), Some(at));
        assert_eq!(micros(&Value::from("yesterday")), None);
    }
}
