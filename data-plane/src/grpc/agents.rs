//! `memtrace.v1.AgentService`: one thin method per call.

use super::{Reply, admit, reply};
use crate::admission::tokens::MintRequest;
use crate::admission::{Admission, Scope};
use crate::query::ListParams;
use crate::service::types::RegistryPage;
use crate::service::{NewAgent, RegisterAgentRequest};
use memtrace_proto::v1 as pb;
use tonic::{Request, Response};

/// `memtrace.v1.AgentService`.
pub struct AgentApi {
    admission: Admission,
}

impl AgentApi {
    pub fn new(admission: Admission) -> Self {
        Self { admission }
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    async fn register_agent(&self, request: Request<pb::RegisterAgentRequest>) -> Reply<pb::Agent> {
        let svc = admit(&self.admission, &request, Scope::Write).await?;
        let new =
            RegisterAgentRequest::try_from(request.into_inner()).and_then(NewAgent::try_from)?;
        reply(svc.register_agent(new).await)
    }

    async fn list_agents(&self, request: Request<pb::ListAgentsRequest>) -> Reply<pb::AgentList> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let r = request.into_inner();
        let page = RegistryPage::parse(Some(r.limit), Some(r.offset))?;
        let (agents, has_more) = svc.list_agents(page).await?;
        Ok(Response::new(pb::AgentList {
            count: u32::try_from(agents.len()).unwrap_or(u32::MAX),
            agents: agents.into_iter().map(Into::into).collect(),
            has_more,
        }))
    }

    async fn get_agent(&self, request: Request<pb::AgentRef>) -> Reply<pb::Agent> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        reply(svc.get_agent(&request.into_inner().id).await)
    }

    async fn delete_agent(&self, request: Request<pb::AgentRef>) -> Reply<pb::DeleteAgentResponse> {
        let svc = admit(&self.admission, &request, Scope::Write).await?;
        let r = request.into_inner();
        let deletion = svc.delete_agent(&r.id, r.cascade).await?;
        Ok(Response::new(pb::DeleteAgentResponse {
            erasure: deletion.and_then(|d| d.erasure).map(Into::into),
        }))
    }

    async fn get_agent_stats(&self, request: Request<pb::AgentRef>) -> Reply<pb::AgentStats> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        reply(svc.agent_stats(&request.into_inner().id).await)
    }

    async fn list_agent_memories(
        &self,
        request: Request<pb::AgentMemoriesRequest>,
    ) -> Reply<pb::MemoryList> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let r = request.into_inner();
        let params = r.options.map(ListParams::from).unwrap_or_default();
        reply(svc.agent_memories(&r.id, &params).await)
    }

    async fn create_agent_token(
        &self,
        request: Request<pb::CreateAgentTokenRequest>,
    ) -> Reply<pb::AgentToken> {
        let principal = self.admission.minter(super::token(request.metadata()))?;
        let r = request.into_inner();
        let minted = self.admission.mint_token(
            &principal,
            MintRequest {
                agent_id: Some(r.agent_id),
                scopes: r.scopes,
                ttl_seconds: Some(r.ttl_seconds),
            },
        )?;
        Ok(Response::new(pb::AgentToken {
            token: minted.token,
            token_id: minted.token_id,
            org_id: minted.org_id,
            agent_id: minted.agent_id.unwrap_or_default(),
            scopes: minted.scopes,
            issued_at: minted.issued_at,
            expires_at: minted.expires_at,
            key_id: minted.key_id,
        }))
    }
}
