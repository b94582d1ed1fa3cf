//! Organizations.

use super::ControlPlane;
use super::types::{OrgId, OrgName};
use crate::clock::now_ms;
use crate::error::{ControlPlaneError, Result};
use crate::store::{OrgDeletion, OrgRow, OrgSummary};
use memtrace_common::ids::new_id;

impl ControlPlane {
    pub async fn create_org(&self, name: &OrgName) -> Result<OrgSummary> {
        self.create_org_with_id(&new_id("org"), name).await
    }

    /// Creates an org with a given id (used for the legacy `org_default`).
    pub async fn create_org_with_id(&self, id: &str, name: &OrgName) -> Result<OrgSummary> {
        let row = OrgRow {
            id: id.to_owned(),
            name: name.as_str().to_owned(),
            created_at: now_ms(),
        };
        self.store.insert_org(&row).await?;
        tracing::info!(org_id = %row.id, "org created");
        Ok(OrgSummary {
            org: row,
            has_arc_binding: false,
            active_api_keys: 0,
        })
    }

    pub async fn list_orgs(&self) -> Result<Vec<OrgSummary>> {
        Ok(self.store.list_orgs().await?)
    }

    pub async fn get_org(&self, id: &OrgId) -> Result<OrgSummary> {
        self.store
            .get_org(id.as_str())
            .await?
            .ok_or_else(|| ControlPlaneError::OrgNotFound(id.as_str().to_owned()))
    }

    /// Deletes the org with its Arc binding and API keys; leaves a tombstone.
    pub async fn delete_org(&self, id: &OrgId) -> Result<OrgDeletion> {
        let deletion = self
            .store
            .delete_org(id.as_str(), now_ms())
            .await?
            .ok_or_else(|| ControlPlaneError::OrgNotFound(id.as_str().to_owned()))?;
        tracing::info!(
            org_id = %deletion.org.id,
            arc_binding_removed = deletion.arc_binding_removed,
            api_keys_removed = deletion.api_keys_removed,
            "org deleted"
        );
        Ok(deletion)
    }
}
