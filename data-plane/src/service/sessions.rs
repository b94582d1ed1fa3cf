//! Sessions: `sess_<24 hex>` state rows tied to a registered agent (given
//! by id or name, stored as the id). Updates append a full new row: the
//! status (free text within the type rule; `closed` also sets `closed_at`
//! once) and/or a replacement of the metadata.

use super::context::render;
use super::ids::{next_micros, next_micros_after, session_id};
use super::rows::{self, rfc3339};
use super::types::{
    ContextRequest, MemoryList, NewSession, RegistryPage, Session, SessionContext, SessionUpdate,
};
use super::{OrgService, ServiceError};
use crate::query::{ContextQuery, ListParams, StateId, UnixMicros};
use crate::store::StateTable;

impl OrgService {
    /// Starts a session for a registered agent; 400 if the agent is unknown.
    pub async fn create_session(&self, new: NewSession) -> Result<Session, ServiceError> {
        self.check_unbound("sessions")?;
        let agent = self.find_agent(&new.agent).await?.ok_or_else(|| {
            ServiceError::invalid("agent_id", "must name a registered agent (id or name)")
        })?;
        let time = next_micros();
        let now = rfc3339(time);
        let session = Session {
            id: session_id(),
            org_id: self.org.as_str().to_owned(),
            agent_id: agent.id,
            status: "active".into(),
            metadata: (!new.metadata.is_empty()).then_some(new.metadata),
            created_at: now.clone(),
            updated_at: now,
            closed_at: None,
        };
        self.append_state_row(StateTable::Sessions, rows::session_row(&session, time))
            .await?;
        tracing::info!(org_id = %self.org, session_id = %session.id, "session created");
        Ok(session)
    }

    /// Sessions, newest first; `agent` (id or name) narrows to one agent's.
    /// A page of the org's sessions (of one agent when given), newest
    /// first, and whether more follow.
    pub async fn list_sessions(
        &self,
        agent: Option<&str>,
        page: RegistryPage,
    ) -> Result<(Vec<Session>, bool), ServiceError> {
        self.check_unbound("sessions")?;
        let agent_id = match agent.filter(|a| !a.is_empty()) {
            None => None,
            Some(key) => match self.find_agent(key).await? {
                Some(row) => Some(row.id),
                None => Some(key.to_owned()),
            },
        };
        let equals: Vec<(&str, &str)> = agent_id
            .as_deref()
            .map(|a| ("agent_id", a))
            .into_iter()
            .collect();
        if agent_id
            .as_ref()
            .is_some_and(|a| a.len() > crate::query::StateQuery::MAX_VALUE_BYTES)
        {
            return Ok((Vec::new(), false));
        }
        let rows = self.read_state(StateTable::Sessions, &[], &equals).await?;
        let mut sessions: Vec<Session> = rows.iter().map(rows::session).collect();
        sessions.sort_by_key(|s| {
            std::cmp::Reverse(UnixMicros::parse_rfc3339(&s.created_at).map_or(0, |t| t.0))
        });
        Ok(page.take(sessions))
    }

    /// One session; 404 when unknown.
    pub async fn get_session(&self, id: &str) -> Result<Session, ServiceError> {
        self.check_unbound("sessions")?;
        self.session_row(id).await.map(|(session, _)| session)
    }

    /// One session and the time of its latest row; 404 when unknown.
    async fn session_row(&self, id: &str) -> Result<(Session, i64), ServiceError> {
        let Ok(id) = StateId::parse(id) else {
            return Err(ServiceError::NotFound("session"));
        };
        let rows = self.read_state(StateTable::Sessions, &[id], &[]).await?;
        rows.first()
            .map(|r| (rows::session(r), r.time))
            .ok_or(ServiceError::NotFound("session"))
    }

    /// Changes status and/or replaces metadata; 404 when unknown. The new
    /// row is stamped after the row it replaces, whichever worker's clock
    /// stamped that one.
    pub async fn update_session(
        &self,
        id: &str,
        update: SessionUpdate,
    ) -> Result<Session, ServiceError> {
        self.check_unbound("sessions")?;
        let (mut session, replaced) = self.session_row(id).await?;
        let time = next_micros_after(replaced);
        if let Some(status) = update.status {
            if status == "closed" && session.closed_at.is_none() {
                session.closed_at = Some(rfc3339(time));
            }
            session.status = status;
        }
        if let Some(metadata) = update.metadata {
            session.metadata = (!metadata.is_empty()).then_some(metadata);
        }
        session.updated_at = rfc3339(time);
        self.append_state_row(StateTable::Sessions, rows::session_row(&session, time))
            .await?;
        Ok(session)
    }

    /// A session's memories; 404 when the session is unknown. The check
    /// and the read run concurrently: one statement's latency.
    pub async fn session_memories(
        &self,
        id: &str,
        params: &ListParams,
    ) -> Result<MemoryList, ServiceError> {
        self.check_unbound("sessions")?;
        let mut params = params.clone();
        params.session_id = Some(id.to_owned());
        let (session, list) = tokio::join!(self.get_session(id), self.list_memories(&params));
        session?;
        list
    }

    /// The session's context as markdown; 404 when the session is unknown
    /// (checked concurrently with the read).
    pub async fn session_context(
        &self,
        id: &str,
        request: ContextRequest,
    ) -> Result<SessionContext, ServiceError> {
        self.check_unbound("sessions")?;
        let q = ContextQuery::parse(
            id,
            request.since.as_deref(),
            request.include_types.as_deref().unwrap_or(&[]),
        )?;
        let max_tokens = match request.max_tokens {
            None | Some(0) => None,
            Some(n) if n < 0 => {
                return Err(ServiceError::invalid("max_tokens", "must be >= 0"));
            }
            Some(n) => Some(u64::try_from(n).unwrap_or(u64::MAX)),
        };
        let page = q.page();
        let (session, page) = tokio::join!(self.get_session(id), self.read_page(&page));
        let session = session?;
        let (memories, _) = page?;
        let (context, memory_count) = render(&session.id, &memories, max_tokens);
        Ok(SessionContext {
            session_id: session.id,
            context,
            memory_count,
        })
    }
}
