use super::{Gate, actor, with_revision};
use crate::clock::from_timestamp;
use crate::clock::to_timestamp;
use crate::domain::legacy_keys::LegacyKeySpec;
use crate::domain::tokens::TokenSpec;
use crate::domain::types::{ApiKeyId, ApiKeySpec, OrgId};
use crate::store::ApiKeyRow;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ApiKeyApi(pub Arc<Gate>);

fn key_to_pb(row: ApiKeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: row.id,
        org_id: row.org_id,
        name: row.name,
        scopes: row
            .scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        created_at: Some(to_timestamp(row.created_at)),
        expires_at: row.expires_at.map(to_timestamp),
        last_used_at: row.last_used_at.map(to_timestamp),
        revoked_at: row.revoked_at.map(to_timestamp),
        legacy: row.legacy.is_some(),
    }
}

#[tonic::async_trait]
impl pb::api_key_service_server::ApiKeyService for ApiKeyApi {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let spec = ApiKeySpec::parse(&req.org_id, &req.name, &req.scopes, req.expires_in_seconds)?;
        let created = self.0.service()?.create_api_key(&actor, &spec).await?;
        let (row, secret) = created.value;
        Ok(with_revision(
            pb::CreateApiKeyResponse {
                key: Some(key_to_pb(row)),
                secret: secret.as_str().to_owned(),
            },
            created.revision,
        ))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let req = request.into_inner();
        let org = OrgId::parse(&req.org_id)?;
        let keys = self
            .0
            .service()?
            .list_api_keys(&org, req.include_revoked)
            .await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(key_to_pb).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let actor = actor(&request);
        let id = ApiKeyId::parse(&request.into_inner().key_id)?;
        let revoked = self.0.service()?.revoke_api_key(&actor, &id).await?;
        Ok(with_revision(key_to_pb(revoked.value), revoked.revision))
    }

    async fn import_legacy_api_key(
        &self,
        request: Request<pb::ImportLegacyApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut spec = LegacyKeySpec::parse(
            &req.org_id,
            &req.name,
            &req.scopes,
            &req.bcrypt_hash,
            &req.key_prefix,
        )?;
        spec.created_at = req.created_at.as_ref().map(from_timestamp);
        spec.expires_at = req.expires_at.as_ref().map(from_timestamp);
        let imported = self
            .0
            .service()?
            .import_legacy_api_key(&actor, &spec)
            .await?;
        Ok(with_revision(key_to_pb(imported.value), imported.revision))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let spec = TokenSpec::parse(&req.org_id, &req.agent_id, &req.scopes, req.ttl_seconds)?;
        let minted = self.0.service()?.mint_token(&actor, &spec).await?;
        let claims = minted.claims;
        let at = |t: jiff::Timestamp| to_timestamp(t.as_millisecond());
        Ok(Response::new(pb::CreateTokenResponse {
            token: minted.token.as_str().to_owned(),
            token_id: claims.jti,
            org_id: claims.org,
            agent_id: claims.agent.unwrap_or_default(),
            scopes: claims.scopes,
            issued_at: Some(at(claims.iat)),
            expires_at: Some(at(claims.exp)),
            key_id: minted.key_id,
        }))
    }
}
