//! Organizations.

use super::audit::{AuditOutcome, audit_record};
use super::erasure::new_erasure_id;
use super::types::{OrgId, OrgName};
use super::{ControlPlane, Published};
use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::{
    AuditWith, ErasureJobRow, NewErasure, OrgDeletion, OrgRow, OrgSummary, TombstoneRow,
};
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
    /// overrides; leaves a tombstone. The same transaction creates a
    /// whole-org erasure job holding what it needs to reach the org's Arc
    /// (binding id, URL, database, measurement, sealed key), published on
    /// the bus like a worker's request; the runner erases the org's
    /// memories, agents and sessions.
    pub async fn delete_org(
        &self,
        actor: &AdminActor,
        id: &OrgId,
    ) -> Result<Published<OrgDeletion>> {
        let deleted_at = now_ms();
        let erasure = self.org_erasure(actor, id, deleted_at).await?;
        let audit = |deletion: &OrgDeletion| {
            let details = json!({
                "name": deletion.org.name,
                "erasure_id": erasure.id,
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
            .delete_org(
                id.as_str(),
                deleted_at,
                Some(&erasure),
                AuditWith::new(&key, &audit),
            )
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
        tracing::info!(org_id = %deletion.org.id, erasure_id = %erasure.id, "whole-org erasure requested");
        if let Err(error) = self.publish_erasure(&erasure).await {
            tracing::warn!(erasure_id = %erasure.id, %error, "erasure record not published; the runner republishes it");
        }
        Ok(Published {
            value: deletion,
            revision,
        })
    }

    /// The whole-org erasure job of an org's deletion (its target is pinned
    /// by the store in the deletion's transaction).
    async fn org_erasure(
        &self,
        actor: &AdminActor,
        id: &OrgId,
        at_ms: i64,
    ) -> Result<ErasureJobRow> {
        let has_arc = self.store.get_arc_binding(id.as_str()).await?.is_some();
        Ok(NewErasure {
            id: new_erasure_id(),
            org_id: id.as_str().to_owned(),
            scope_json: json!({"whole_org": true}).to_string(),
            memory_predicate: String::new(),
            store: if has_arc { "arc" } else { "embedded" }.into(),
            as_of_micros: at_ms.saturating_mul(1000),
            requested_by: format!("admin:{}", actor.fingerprint),
            requested_at_micros: at_ms.saturating_mul(1000),
        }
        .into_job(at_ms))
    }
}
