//! Data-plane API keys: generated here, shown once, stored as hashes.

use super::types::{ApiKeyId, ApiKeySpec, OrgId};
use super::{ControlPlane, Published};
use crate::auth::AdminActor;
use crate::clock::duration_ms;
use crate::error::{ControlPlaneError, Result};
use crate::store::ApiKeyRow;
use memtrace_common::clock::now_ms;
use memtrace_common::credentials::generate_api_key;
use serde_json::json;
use zeroize::Zeroizing;

impl ControlPlane {
    /// Creates a key; the returned secret exists nowhere else.
    pub async fn create_api_key(
        &self,
        actor: &AdminActor,
        spec: &ApiKeySpec,
    ) -> Result<Published<(ApiKeyRow, Zeroizing<String>)>> {
        self.get_org(&spec.org_id).await?;
        let key = generate_api_key();
        let now = now_ms();
        let row = ApiKeyRow {
            id: key.key_id.clone(),
            org_id: spec.org_id.as_str().to_owned(),
            name: spec.name.clone(),
            key_hash: key.hash.to_vec(),
            scopes: spec.scopes.to_csv(),
            created_at: now,
            expires_at: spec.expires_in.map(|d| now.saturating_add(duration_ms(d))),
            last_used_at: None,
            revoked_at: None,
        };
        self.store.insert_api_key(&row).await?;
        tracing::info!(key_id = %row.id, org_id = %row.org_id, scopes = %row.scopes, "api key created");
        self.audit_change(
            actor,
            "key.create",
            &row.id,
            json!({"org_id": row.org_id, "name": row.name, "scopes": row.scopes, "expires_at_ms": row.expires_at}),
        )
        .await;
        let revision = self.publish(vec![self.api_key_put(&row)]).await;
        Ok(Published {
            value: (row, key.token),
            revision,
        })
    }

    pub async fn list_api_keys(
        &self,
        org: &OrgId,
        include_revoked: bool,
    ) -> Result<Vec<ApiKeyRow>> {
        self.get_org(org).await?;
        Ok(self
            .store
            .list_api_keys(org.as_str(), include_revoked)
            .await?)
    }

    pub async fn revoke_api_key(
        &self,
        actor: &AdminActor,
        id: &ApiKeyId,
    ) -> Result<Published<ApiKeyRow>> {
        let row = self
            .store
            .revoke_api_key(id.as_str(), now_ms())
            .await?
            .ok_or_else(|| ControlPlaneError::ApiKeyNotFound(id.as_str().to_owned()))?;
        tracing::info!(key_id = %row.id, org_id = %row.org_id, "api key revoked");
        self.audit_change(
            actor,
            "key.revoke",
            &row.id,
            json!({"org_id": row.org_id, "name": row.name}),
        )
        .await;
        let revision = self.publish(vec![self.api_key_put(&row)]).await;
        Ok(Published {
            value: row,
            revision,
        })
    }
}
