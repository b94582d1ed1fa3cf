//! Agents and sessions imported from the Go memtrace (`memtracectl import
//! legacy`): written as the state rows the worker itself writes, with their
//! original ids and times, when no row of that id exists yet. Re-running an
//! import therefore changes nothing: every id already present is skipped
//! (a later change by a worker, or a delete, wins over the original row).

use super::rows::{self, rfc3339};
use super::types::{Agent, Session};
use super::{OrgService, ServiceError};
use crate::query::StateId;
use crate::store::StateTable;
use crate::store::arc_store::MIN_TIME_MICROS;
use serde_json::{Map, Value};

/// An agent as the Go memtrace stored it (times in µs since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedAgent {
    pub id: String,
    pub name: String,
    pub description: String,
    pub config: Option<Map<String, Value>>,
    pub created_us: i64,
}

/// A session as the Go memtrace stored it (times in µs since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedSession {
    pub id: String,
    pub agent_id: String,
    pub status: String,
    pub metadata: Option<Map<String, Value>>,
    pub created_us: i64,
    pub updated_us: i64,
    pub closed_us: Option<i64>,
}

/// What importing one agent or session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Written (or, in a dry run, would be).
    Imported,
    /// Left alone, with why (it exists, or it cannot be imported).
    Skipped(String),
}

fn checked(id: &str, time_us: i64) -> Result<StateId, String> {
    let parsed = StateId::parse(id).map_err(|e| format!("id {id:?} is not usable: {e}"))?;
    if time_us < MIN_TIME_MICROS {
        return Err(format!("time of {id} is before 1970-04-26"));
    }
    Ok(parsed)
}

impl OrgService {
    /// Writes `agent` unless a row of its id exists or a live agent of the
    /// org has its name; `dry_run` checks only.
    pub async fn import_agent(
        &self,
        agent: &ImportedAgent,
        dry_run: bool,
    ) -> Result<ImportOutcome, ServiceError> {
        let id = match checked(&agent.id, agent.created_us) {
            Ok(id) => id,
            Err(why) => return Ok(ImportOutcome::Skipped(why)),
        };
        if !self
            .read_state(StateTable::Agents, &[id], &[])
            .await?
            .is_empty()
        {
            return Ok(ImportOutcome::Skipped("exists".into()));
        }
        if let Some(other) = self.find_agent(&agent.name).await? {
            return Ok(ImportOutcome::Skipped(format!(
                "a live agent named {:?} exists ({})",
                agent.name, other.id
            )));
        }
        if !dry_run {
            let row = Agent {
                id: agent.id.clone(),
                org_id: self.org.as_str().to_owned(),
                name: agent.name.clone(),
                description: agent.description.clone(),
                config: agent.config.clone(),
                created_at: rfc3339(agent.created_us),
                last_active_at: None,
            };
            self.append_state_row(
                StateTable::Agents,
                rows::agent_row(&row, false, agent.created_us),
            )
            .await?;
        }
        Ok(ImportOutcome::Imported)
    }

    /// Writes `session` unless a row of its id exists; `dry_run` checks only.
    pub async fn import_session(
        &self,
        session: &ImportedSession,
        dry_run: bool,
    ) -> Result<ImportOutcome, ServiceError> {
        let time = session.updated_us.max(session.created_us);
        let id = match checked(&session.id, time) {
            Ok(id) => id,
            Err(why) => return Ok(ImportOutcome::Skipped(why)),
        };
        if !self
            .read_state(StateTable::Sessions, &[id], &[])
            .await?
            .is_empty()
        {
            return Ok(ImportOutcome::Skipped("exists".into()));
        }
        if !dry_run {
            let row = Session {
                id: session.id.clone(),
                org_id: self.org.as_str().to_owned(),
                agent_id: session.agent_id.clone(),
                status: session.status.clone(),
                metadata: session.metadata.clone(),
                created_at: rfc3339(session.created_us),
                updated_at: rfc3339(session.updated_us),
                closed_at: session.closed_us.map(rfc3339),
            };
            self.append_state_row(StateTable::Sessions, rows::session_row(&row, time))
                .await?;
        }
        Ok(ImportOutcome::Imported)
    }
}
