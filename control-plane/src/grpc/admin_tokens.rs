//! `memtrace.admin.v1.AdminTokenService`: parse, call the domain, convert.
//! The secret leaves the control plane once, in the create response.

use super::{Gate, actor};
use crate::clock::to_timestamp;
use crate::domain::types::{AdminTokenId, AdminTokenSpec};
use crate::store::AdminTokenRow;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminTokenApi(pub Arc<Gate>);

fn token_to_pb(row: AdminTokenRow) -> pb::AdminToken {
    pb::AdminToken {
        id: row.id,
        name: row.name,
        role: row.role,
        created_at: Some(to_timestamp(row.created_at)),
        expires_at: row.expires_at.map(to_timestamp),
        last_used_at: row.last_used_at.map(to_timestamp),
        revoked_at: row.revoked_at.map(to_timestamp),
    }
}

#[tonic::async_trait]
impl pb::admin_token_service_server::AdminTokenService for AdminTokenApi {
    async fn create_admin_token(
        &self,
        request: Request<pb::CreateAdminTokenRequest>,
    ) -> Result<Response<pb::CreateAdminTokenResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let spec = AdminTokenSpec::parse(&req.name, &req.role, req.expires_in_seconds)?;
        let (row, secret) = self.0.service()?.create_admin_token(&actor, &spec).await?;
        Ok(Response::new(pb::CreateAdminTokenResponse {
            token: Some(token_to_pb(row)),
            secret: secret.as_str().to_owned(),
        }))
    }

    async fn list_admin_tokens(
        &self,
        request: Request<pb::ListAdminTokensRequest>,
    ) -> Result<Response<pb::ListAdminTokensResponse>, Status> {
        let req = request.into_inner();
        let tokens = self
            .0
            .service()?
            .list_admin_tokens(req.include_revoked)
            .await?;
        Ok(Response::new(pb::ListAdminTokensResponse {
            tokens: tokens.into_iter().map(token_to_pb).collect(),
        }))
    }

    async fn revoke_admin_token(
        &self,
        request: Request<pb::RevokeAdminTokenRequest>,
    ) -> Result<Response<pb::AdminToken>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let id = AdminTokenId::parse(&req.token_id)?;
        let row = self
            .0
            .service()?
            .revoke_admin_token(&actor, &id, req.force)
            .await?;
        Ok(Response::new(token_to_pb(row)))
    }
}
