//! Organizations.

use super::audit::{AuditOutcome, audit_record};
use super::types::{OrgId, OrgName};
use super::{ControlPlane, Published};
use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::{AuditWith, OrgDeletion, OrgRow, OrgSummary, TombstoneRow};
use memtrace_common::bus::Op;
use memtrace_common::clock::now_ms;
use memtrace_common::ids::new_id;
use serde_json::json;

impl ControlPlane {
    pub async fn create_org(
        &self,
        actor: &AdminActor,
        name: &OrgName,
    ) -> Result<Published<OrgSummary>> {
        self.create_org_with_id(actor, &new_id("org"), name).await
    }

    /// Creates an org with a given id (used for the legacy `org_default`).
    pub async fn create_org_with_id(
        &self,
        actor: &AdminActor,
        id: &str,
        name: &OrgName,
    ) -> Result<Published<OrgSummary>> {
        let row = OrgRow {
            id: id.to_owned(),
            name: name.as_str().to_owned(),
            created_at: now_ms(),
        };
        let audit = |row: &OrgRow| {
            let details = json!({"name": row.name});
            audit_record(actor, "org.create", &row.id, AuditOutcome::Ok, details)
        };
        let key = self.audit_key();
        self.store
            .insert_org(&row, AuditWith::new(&key, &audit))
            .await?;
        tracing::info!(org_id = %row.id, "org created");
        let revision = self.publish(vec![self.org_put(&row)]).await;
        Ok(Published {
            value: OrgSummary {
                org: row,
                has_arc_binding: false,
                active_api_keys: 0,
            },
            revision,
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

    /// Deletes the org with its Arc binding, API keys and setting
    /// overrides; leaves a tombstone.
    pub async fn delete_org(
        &self,
        actor: &AdminActor,
        id: &OrgId,
    ) -> Result<Published<OrgDeletion>> {
        let deleted_at = now_ms();
        let audit = |deletion: &OrgDeletion| {
            let details = json!({
                "name": deletion.org.name,
                "arc_binding_removed": deletion.arc_binding_removed,
                "api_keys_removed": deletion.api_key_ids,
                "settings_removed": deletion.settings_removed.len(),
            });
            audit_record(
                actor,
                "org.delete",
                &deletion.org.id,
                AuditOutcome::Ok,
                details,
            )
        };
        let key = self.audit_key();
        let deletion = self
            .store
            .delete_org(id.as_str(), deleted_at, AuditWith::new(&key, &audit))
            .await?
            .ok_or_else(|| ControlPlaneError::OrgNotFound(id.as_str().to_owned()))?;
        tracing::info!(
            org_id = %deletion.org.id,
            arc_binding_removed = deletion.arc_binding_removed,
            api_keys_removed = deletion.api_keys_removed,
            settings_removed = deletion.settings_removed.len(),
            "org deleted"
        );
        let setting_deletes = self.setting_deletes(&deletion.settings_removed);
        let keys = self.state_keys();
        let mut ops = vec![self.tombstone_put(&TombstoneRow {
            org_id: deletion.org.id.clone(),
            name: deletion.org.name.clone(),
            deleted_at,
        })];
        ops.push(Op::Delete {
            key: keys.arc_route(&deletion.org.id),
        });
        ops.extend(deletion.api_key_ids.iter().map(|key_id| Op::Delete {
            key: keys.api_key(key_id),
        }));
        ops.extend(setting_deletes);
        let revision = self.publish(ops).await;
        Ok(Published {
            value: deletion,
            revision,
        })
    }
}
