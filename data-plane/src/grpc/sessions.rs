//! `memtrace.v1.SessionService`: one thin method per call.

use super::{Reply, admit, reply};
use crate::admission::{Admission, Scope};
use crate::query::ListParams;
use crate::service::types::RegistryPage;
use crate::service::{
    ContextRequest, CreateSessionRequest, NewSession, SessionUpdate, UpdateSessionRequest,
};
use memtrace_proto::v1 as pb;
use tonic::{Request, Response};

/// `memtrace.v1.SessionService`.
pub struct SessionApi {
    admission: Admission,
}

impl SessionApi {
    pub fn new(admission: Admission) -> Self {
        Self { admission }
    }
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Reply<pb::Session> {
        let svc = admit(&self.admission, &request, Scope::Write).await?;
        let new =
            CreateSessionRequest::try_from(request.into_inner()).and_then(NewSession::try_from)?;
        reply(svc.create_session(new).await)
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Reply<pb::SessionList> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let r = request.into_inner();
        let page = RegistryPage::parse(Some(r.limit), Some(r.offset))?;
        let agent = (!r.agent_id.is_empty()).then_some(r.agent_id.as_str());
        let (sessions, has_more) = svc.list_sessions(agent, page).await?;
        Ok(Response::new(pb::SessionList {
            count: u32::try_from(sessions.len()).unwrap_or(u32::MAX),
            sessions: sessions.into_iter().map(Into::into).collect(),
            has_more,
        }))
    }

    async fn get_session(&self, request: Request<pb::SessionRef>) -> Reply<pb::Session> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        reply(svc.get_session(&request.into_inner().id).await)
    }

    async fn update_session(
        &self,
        request: Request<pb::UpdateSessionRequest>,
    ) -> Reply<pb::Session> {
        let svc = admit(&self.admission, &request, Scope::Write).await?;
        let r = request.into_inner();
        let id = r.id.clone();
        let update = UpdateSessionRequest::try_from(r).and_then(SessionUpdate::try_from)?;
        reply(svc.update_session(&id, update).await)
    }

    async fn get_session_context(
        &self,
        request: Request<pb::SessionContextRequest>,
    ) -> Reply<pb::SessionContext> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let r = request.into_inner();
        let id = r.id.clone();
        reply(svc.session_context(&id, ContextRequest::from(r)).await)
    }

    async fn list_session_memories(
        &self,
        request: Request<pb::SessionMemoriesRequest>,
    ) -> Reply<pb::MemoryList> {
        let svc = admit(&self.admission, &request, Scope::Read).await?;
        let r = request.into_inner();
        let params = r.options.map(ListParams::from).unwrap_or_default();
        reply(svc.session_memories(&r.id, &params).await)
    }
}
