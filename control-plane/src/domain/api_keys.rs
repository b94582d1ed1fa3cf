//! Data-plane API keys: generated here, shown once, stored as hashes.

use super::audit::{AuditOutcome, audit_record};
use super::types::{ApiKeyId, ApiKeySpec, OrgId};
use super::{ControlPlane, Published};
use crate::auth::AdminActor;
use crate::clock::duration_ms;
use crate::error::{ControlPlaneError, Result};
use crate::store::{ApiKeyRow, AuditWith};
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
            legacy: None,
        };
        let audit = |row: &ApiKeyRow| {
            let details = json!({"org_id": row.org_id, "name": row.name, "scopes": row.scopes, "expires_at_ms": row.expires_at});
            audit_record(actor, "key.create", &row.id, AuditOutcome::Ok, details)
        };
        let audit_key = self.audit_key();
        self.store
            .insert_api_key(&row, AuditWith::new(&audit_key, &audit))
            .await?;
        tracing::info!(key_id = %row.id, org_id = %row.org_id, scopes = %row.scopes, "api key created");
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
        let audit = |row: &ApiKeyRow| {
            let details = json!({"org_id": row.org_id, "name": row.name});
            audit_record(actor, "key.revoke", &row.id, AuditOutcome::Ok, details)
        };
        let key = self.audit_key();
        let row = self
            .store
            .revoke_api_key(id.as_str(), now_ms(), AuditWith::new(&key, &audit))
            .await?
            .ok_or_else(|| ControlPlaneError::ApiKeyNotFound(id.as_str().to_owned()))?;
        tracing::info!(key_id = %row.id, org_id = %row.org_id, "api key revoked");
        let revision = self.publish(vec![self.api_key_put(&row)]).await;
        Ok(Published {
            value: row,
            revision,
        })
    }
}
