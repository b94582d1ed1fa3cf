use super::{Gate, actor, with_revision};
use crate::clock::to_timestamp;
use crate::domain::ArcBindingView;
use crate::domain::types::{ArcSpec, OrgId};
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ArcBindingApi(pub Arc<Gate>);

fn binding_to_pb(view: ArcBindingView) -> pb::ArcBinding {
    pb::ArcBinding {
        id: view.row.id,
        org_id: view.row.org_id,
        url: view.row.url,
        database: view.row.database,
        measurement: view.row.measurement,
        api_key_masked: view.api_key_masked,
        created_at: Some(to_timestamp(view.row.created_at)),
        updated_at: Some(to_timestamp(view.row.updated_at)),
    }
}

#[tonic::async_trait]
impl pb::arc_binding_service_server::ArcBindingService for ArcBindingApi {
    async fn bind_arc(
        &self,
        request: Request<pb::BindArcRequest>,
    ) -> Result<Response<pb::ArcBinding>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let org = OrgId::parse(&req.org_id)?;
        let spec = ArcSpec::parse(&req.url, &req.database, &req.measurement, &req.api_key)?;
        let view = self
            .0
            .service()?
            .bind_arc(&actor, &org, spec, req.replace)
            .await?;
        Ok(with_revision(binding_to_pb(view.value), view.revision))
    }

    async fn get_arc_binding(
        &self,
        request: Request<pb::GetArcBindingRequest>,
    ) -> Result<Response<pb::ArcBinding>, Status> {
        let org = OrgId::parse(&request.into_inner().org_id)?;
        let view = self.0.service()?.get_arc_binding(&org).await?;
        Ok(Response::new(binding_to_pb(view)))
    }

    async fn remove_arc_binding(
        &self,
        request: Request<pb::RemoveArcBindingRequest>,
    ) -> Result<Response<pb::RemoveArcBindingResponse>, Status> {
        let actor = actor(&request);
        let org = OrgId::parse(&request.into_inner().org_id)?;
        let removed = self.0.service()?.remove_arc_binding(&actor, &org).await?;
        Ok(with_revision(
            pb::RemoveArcBindingResponse {
                org_id: org.as_str().to_owned(),
            },
            removed.revision,
        ))
    }

    async fn test_arc_binding(
        &self,
        request: Request<pb::TestArcBindingRequest>,
    ) -> Result<Response<pb::TestArcBindingResponse>, Status> {
        let org = OrgId::parse(&request.into_inner().org_id)?;
        let probe = self.0.service()?.test_arc_binding(&org).await?;
        Ok(Response::new(pb::TestArcBindingResponse {
            reachable: probe.reachable,
            http_status: u32::from(probe.http_status),
            latency_ms: probe.latency_ms,
            detail: probe.detail,
        }))
    }
}
