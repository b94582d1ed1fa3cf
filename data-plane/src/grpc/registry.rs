//! `AgentService` and `SessionService`: one thin method per call.

use super::{service, status};
use crate::auth::Scope;
use crate::query::ListParams;
use crate::rest::RestState;
use crate::service::{
    ContextRequest, CreateSessionRequest, NewAgent, NewSession, RegisterAgentRequest,
    SessionUpdate, UpdateSessionRequest,
};
use memtrace_proto::v1 as pb;
use tonic::{Request, Response, Status};

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U: From<T>>(r: Result<T, crate::service::ServiceError>) -> Reply<U> {
    r.map(|v| Response::new(U::from(v))).map_err(|e| status(&e))
}

/// `memtrace.v1.AgentService`.
pub struct AgentApi {
    state: RestState,
}

impl AgentApi {
    pub fn new(state: RestState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    async fn register_agent(&self, request: Request<pb::RegisterAgentRequest>) -> Reply<pb::Agent> {
        let svc = service(&self.state, &request, Scope::Write).await?;
        let new = RegisterAgentRequest::try_from(request.into_inner())
            .and_then(NewAgent::try_from)
            .map_err(|e| status(&e))?;
        reply(svc.register_agent(new).await)
    }

    async fn list_agents(&self, request: Request<pb::ListAgentsRequest>) -> Reply<pb::AgentList> {
        let svc = service(&self.state, &request, Scope::Read).await?;
        let agents = svc.list_agents().await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::AgentList {
            count: u32::try_from(agents.len()).unwrap_or(u32::MAX),
            agents: agents.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_agent(&self, request: Request<pb::AgentRef>) -> Reply<pb::Agent> {
        let svc = service(&self.state, &request, Scope::Read).await?;
        reply(svc.get_agent(&request.into_inner().id).await)
    }

    async fn delete_agent(&self, request: Request<pb::AgentRef>) -> Reply<pb::DeleteAgentResponse> {
        let svc = service(&self.state, &request, Scope::Write).await?;
        svc.delete_agent(&request.into_inner().id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::DeleteAgentResponse {}))
    }

    async fn get_agent_stats(&self, request: Request<pb::AgentRef>) -> Reply<pb::AgentStats> {
        let svc = service(&self.state, &request, Scope::Read).await?;
        reply(svc.agent_stats(&request.into_inner().id).await)
    }

    async fn list_agent_memories(
        &self,
        request: Request<pb::AgentMemoriesRequest>,
    ) -> Reply<pb::MemoryList> {
        let svc = service(&self.state, &request, Scope::Read).await?;
        let r = request.into_inner();
        let params = r.options.map(ListParams::from).unwrap_or_default();
        reply(svc.agent_memories(&r.id, &params).await)
    }
}

/// `memtrace.v1.SessionService`.
pub struct SessionApi {
    state: RestState,
}

impl SessionApi {
    pub fn new(state: RestState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Reply<pb::Session> {
        let svc = service(&self.state, &request, Scope::Write).await?;
        let new = CreateSessionRequest::try_from(request.into_inner())
            .and_then(NewSession::try_from)
            .map_err(|e| status(&e))?;
        reply(svc.create_session(new).await)
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Reply<pb::SessionList> {
        let svc = service(&self.state, &request, Scope::Read).await?;
        let agent = request.into_inner().agent_id;
        let agent = (!agent.is_empty()).then_some(agent.as_str());
        let sessions = svc.list_sessions(agent).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::SessionList {
            count: u32::try_from(sessions.len()).unwrap_or(u32::MAX),
            sessions: sessions.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_session(&self, request: Request<pb::SessionRef>) -> Reply<pb::Session> {
        let svc = service(&self.state, &request, Scope::Read).await?;
        reply(svc.get_session(&request.into_inner().id).await)
    }

    async fn update_session(
        &self,
        request: Request<pb::UpdateSessionRequest>,
    ) -> Reply<pb::Session> {
        let svc = service(&self.state, &request, Scope::Write).await?;
        let r = request.into_inner();
        let id = r.id.clone();
        let update = UpdateSessionRequest::try_from(r)
            .and_then(SessionUpdate::try_from)
            .map_err(|e| status(&e))?;
        reply(svc.update_session(&id, update).await)
    }

    async fn get_session_context(
        &self,
        request: Request<pb::SessionContextRequest>,
    ) -> Reply<pb::SessionContext> {
        let svc = service(&self.state, &request, Scope::Read).await?;
        let r = request.into_inner();
        let id = r.id.clone();
        reply(svc.session_context(&id, ContextRequest::from(r)).await)
    }

    async fn list_session_memories(
        &self,
        request: Request<pb::SessionMemoriesRequest>,
    ) -> Reply<pb::MemoryList> {
        let svc = service(&self.state, &request, Scope::Read).await?;
        let r = request.into_inner();
        let params = r.options.map(ListParams::from).unwrap_or_default();
        reply(svc.session_memories(&r.id, &params).await)
    }
}
