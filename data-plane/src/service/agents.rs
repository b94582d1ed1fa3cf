//! Agents: a registry of named agents per org (unique live name), stored as
//! append-only state rows; a delete appends a tombstone row. Every route
//! taking an agent accepts its id or its name and resolves it to the id
//! (the original matched names in GET only).

use super::ids::{agent_id, next_micros, next_micros_after};
use super::rows::{self, rfc3339};
use super::state::value;
use super::types::{Agent, AgentStats, MemoryList, NewAgent, RegistryPage};
use super::{OrgService, ServiceError};
use crate::query::{AgentId, ListParams, StateId, StateQuery, UnixMicros};
use crate::store::{StateRow, StateTable, time_micros};
use serde_json::Value;
use std::collections::BTreeMap;

fn created_micros(a: &Agent) -> i64 {
    UnixMicros::parse_rfc3339(&a.created_at).map_or(0, |t| t.0)
}

impl OrgService {
    /// Appends a state row and keeps it for read-your-writes.
    pub(super) async fn append_state_row(
        &self,
        table: StateTable,
        row: StateRow,
    ) -> Result<(), ServiceError> {
        self.store.append_state(table, row.clone()).await?;
        self.shared.state.put(self.org.as_str(), table, row);
        Ok(())
    }

    /// The latest live row of the agent named by id or name.
    pub(super) async fn find_agent(&self, key: &str) -> Result<Option<StateRow>, ServiceError> {
        let live = |r: &StateRow| value(StateTable::Agents, r, "deleted") != "1";
        if let Ok(id) = StateId::parse(key) {
            let rows = self.read_state(StateTable::Agents, &[id], &[]).await?;
            if let Some(row) = rows.into_iter().find(live) {
                return Ok(Some(row));
            }
        }
        self.find_agent_by_name(key).await
    }

    /// The latest live row of the agent named `name`.
    async fn find_agent_by_name(&self, name: &str) -> Result<Option<StateRow>, ServiceError> {
        if name.is_empty() || name.len() > StateQuery::MAX_VALUE_BYTES {
            return Ok(None);
        }
        let rows = self
            .read_state(StateTable::Agents, &[], &[("name", name), ("deleted", "0")])
            .await?;
        Ok(rows.into_iter().next())
    }

    /// The agent named by id or name; 404 when unknown or deleted.
    pub async fn get_agent(&self, id_or_name: &str) -> Result<Agent, ServiceError> {
        self.check_unbound("managing agents")?;
        self.find_agent(id_or_name)
            .await?
            .map(|r| rows::agent(&r))
            .ok_or(ServiceError::NotFound("agent"))
    }

    /// Registers an agent; 409 if a live agent of the org has that name.
    /// The name check and the append of one org's registrations run one at
    /// a time on this worker; other orgs' registrations never wait on them
    /// (each is two round trips to the org's own store, slow or not).
    pub async fn register_agent(&self, new: NewAgent) -> Result<Agent, ServiceError> {
        self.check_unbound("managing agents")?;
        let _serial = self.shared.register_locks.lock(self.org.as_str()).await;
        if self
            .find_agent(&new.name)
            .await?
            .is_some_and(|r| value(StateTable::Agents, &r, "name") == new.name)
        {
            return Err(ServiceError::Conflict(format!(
                "agent with name {:?} already exists",
                new.name
            )));
        }
        let time = next_micros();
        let agent = Agent {
            id: agent_id(),
            org_id: self.org.as_str().to_owned(),
            name: new.name,
            description: new.description,
            config: (!new.config.is_empty()).then_some(new.config),
            created_at: rfc3339(time),
            last_active_at: None,
        };
        self.append_state_row(StateTable::Agents, rows::agent_row(&agent, false, time))
            .await?;
        tracing::info!(org_id = %self.org, agent_id = %agent.id, "agent registered");
        Ok(agent)
    }

    /// Every live agent, newest first.
    /// A page of the org's agents, newest first, and whether more follow.
    pub async fn list_agents(
        &self,
        page: RegistryPage,
    ) -> Result<(Vec<Agent>, bool), ServiceError> {
        self.check_unbound("managing agents")?;
        let rows = self
            .read_state(StateTable::Agents, &[], &[("deleted", "0")])
            .await?;
        let mut agents: Vec<Agent> = rows.iter().map(rows::agent).collect();
        agents.sort_by_key(|a| std::cmp::Reverse(created_micros(a)));
        Ok(page.take(agents))
    }

    /// Deletes (tombstones) the agent named by id or name; 404 when unknown.
    /// The tombstone is stamped after the row it replaces, whichever
    /// worker's clock stamped that one.
    ///
    /// With `cascade`, the agent's memories are deleted too (an erasure of
    /// its memories, recorded after the agent's row): the deletion is
    /// returned.
    pub async fn delete_agent(
        &self,
        id_or_name: &str,
        cascade: bool,
    ) -> Result<Option<super::Deletion>, ServiceError> {
        self.check_unbound("managing agents")?;
        let row = self
            .find_agent(id_or_name)
            .await?
            .ok_or(ServiceError::NotFound("agent"))?;
        let agent = rows::agent(&row);
        self.append_state_row(
            StateTable::Agents,
            rows::agent_row(&agent, true, next_micros_after(row.time)),
        )
        .await?;
        tracing::info!(org_id = %self.org, agent_id = %agent.id, cascade, "agent deleted");
        if !cascade {
            return Ok(None);
        }
        let filter = crate::erasure::Filter {
            agent_id: Some(crate::query::validate::AgentId::parse(&agent.id)?),
            ..crate::erasure::Filter::default()
        };
        Ok(Some(
            self.erase(crate::erasure::Scope::Filter(filter)).await?,
        ))
    }

    /// An agent's figures. The agent is a registered one (by id or name)
    /// or any `agent_id` memories carry (the SDKs' `remember("agent_x", …)`
    /// registers nothing); 404 only when neither exists. The registry
    /// lookup and the counts run concurrently: one statement's latency.
    pub async fn agent_stats(&self, id_or_name: &str) -> Result<AgentStats, ServiceError> {
        self.check_unbound("managing agents")?;
        let (agent, figures) =
            tokio::join!(self.find_agent(id_or_name), self.agent_figures(id_or_name));
        match agent? {
            Some(row) if row.id == id_or_name => figures,
            // a name: count the id it names
            Some(row) => self.agent_figures(&row.id).await,
            None => match figures {
                Ok(stats) if stats.memory_count > 0 => Ok(stats),
                Ok(_) => Err(ServiceError::NotFound("agent")),
                // not even an agent id (a name that names nothing)
                Err(ServiceError::Invalid(_)) => Err(ServiceError::NotFound("agent")),
                Err(e) => Err(e),
            },
        }
    }

    /// The counts of the memories and sessions carrying `agent_id`.
    async fn agent_figures(&self, agent_id: &str) -> Result<AgentStats, ServiceError> {
        let id = AgentId::parse(agent_id)?;
        let key_window = self.dedup.enabled.then_some(self.dedup.window);
        let now = UnixMicros::now();
        let of_agent = [("agent_id", agent_id)];
        let (result, sessions) = tokio::join!(
            self.read(|b| b.agent_stats(&id, key_window, now)),
            self.read_state(StateTable::Sessions, &[], &of_agent)
        );
        let mut stats = AgentStats {
            agent_id: agent_id.to_owned(),
            memory_count: 0,
            memories_24h: 0,
            errors_24h: 0,
            session_count: 0,
            active_sessions: 0,
            last_active_at: None,
            memory_types: BTreeMap::new(),
        };
        let mut last: Option<i64> = None;
        for m in result?.into_maps() {
            let n = rows::count_value(m.get("memory_count"));
            stats.memory_count += n;
            stats.memories_24h += rows::count_value(m.get("memories_24h"));
            stats.errors_24h += rows::count_value(m.get("errors_24h"));
            if let Some(Value::String(t)) = m.get("memory_type") {
                *stats.memory_types.entry(t.clone()).or_default() += n;
            }
            if let Some(t) = m.get("last_active").and_then(time_micros) {
                last = Some(last.map_or(t, |l| l.max(t)));
            }
        }
        stats.last_active_at = last.map(rfc3339);
        let sessions = sessions?;
        stats.session_count = sessions.len() as u64;
        stats.active_sessions = sessions
            .iter()
            .filter(|r| value(StateTable::Sessions, r, "status") == "active")
            .count() as u64;
        Ok(stats)
    }

    /// An agent's memories (`since` defaults to 24h); 404 when unknown. The
    /// registry lookup and the read run concurrently; a name is resolved
    /// and read again.
    pub async fn agent_memories(
        &self,
        id_or_name: &str,
        params: &ListParams,
    ) -> Result<MemoryList, ServiceError> {
        self.check_unbound("managing agents")?;
        let mut params = params.clone();
        if params.since.as_deref().is_none_or(str::is_empty) {
            params.since = Some("24h".into());
        }
        params.agent_id = Some(id_or_name.to_owned());
        let (agent, list) = tokio::join!(self.get_agent(id_or_name), self.list_memories(&params));
        let agent = agent?;
        if agent.id == id_or_name {
            return list;
        }
        params.agent_id = Some(agent.id);
        self.list_memories(&params).await
    }
}
