use super::{Gate, actor, with_revision};
use crate::clock::to_timestamp;
use crate::domain::legacy_keys::ArcImportCounts;
use crate::domain::types::{OrgId, OrgName};
use crate::store::OrgSummary;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct OrgApi(pub Arc<Gate>);

pub(crate) fn org_to_pb(summary: OrgSummary) -> pb::Org {
    pb::Org {
        id: summary.org.id,
        name: summary.org.name,
        created_at: Some(to_timestamp(summary.org.created_at)),
        has_arc_binding: summary.has_arc_binding,
        active_api_keys: summary.active_api_keys,
    }
}

#[tonic::async_trait]
impl pb::org_service_server::OrgService for OrgApi {
    async fn create_org(
        &self,
        request: Request<pb::CreateOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let name = OrgName::parse(&req.name)?;
        let service = self.0.service()?;
        // an import keeps the id the org had in the Go memtrace
        let org = if req.id.trim().is_empty() {
            service.create_org(&actor, &name).await?
        } else {
            let id = OrgId::parse(&req.id)?;
            service
                .create_org_with_id(&actor, id.as_str(), &name)
                .await?
        };
        Ok(with_revision(org_to_pb(org.value), org.revision))
    }

    async fn list_orgs(
        &self,
        _request: Request<pb::ListOrgsRequest>,
    ) -> Result<Response<pb::ListOrgsResponse>, Status> {
        let orgs = self.0.service()?.list_orgs().await?;
        Ok(Response::new(pb::ListOrgsResponse {
            orgs: orgs.into_iter().map(org_to_pb).collect(),
        }))
    }

    async fn get_org(
        &self,
        request: Request<pb::GetOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        let id = OrgId::parse(&request.into_inner().org_id)?;
        let org = self.0.service()?.get_org(&id).await?;
        Ok(Response::new(org_to_pb(org)))
    }

    async fn delete_org(
        &self,
        request: Request<pb::DeleteOrgRequest>,
    ) -> Result<Response<pb::DeleteOrgResponse>, Status> {
        let actor = actor(&request);
        let id = OrgId::parse(&request.into_inner().org_id)?;
        let deleted = self.0.service()?.delete_org(&actor, &id).await?;
        let deletion = deleted.value;
        Ok(with_revision(
            pb::DeleteOrgResponse {
                org_id: deletion.org.id,
                arc_binding_removed: deletion.arc_binding_removed,
                api_keys_removed: deletion.api_keys_removed,
            },
            deleted.revision,
        ))
    }

    async fn record_legacy_import(
        &self,
        request: Request<pb::RecordLegacyImportRequest>,
    ) -> Result<Response<pb::RecordLegacyImportResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let org = OrgId::parse(&req.org_id)?;
        let counts = ArcImportCounts {
            agents_imported: req.agents_imported,
            sessions_imported: req.sessions_imported,
            agents_skipped: req.agents_skipped,
            sessions_skipped: req.sessions_skipped,
        };
        let seq = self
            .0
            .service()?
            .record_legacy_import(&actor, &org, counts)
            .await?;
        Ok(Response::new(pb::RecordLegacyImportResponse { seq }))
    }
}
