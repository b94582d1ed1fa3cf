//! `memtrace.admin.v1.ConfigService`: parse the key (registry lookup) and the
//! org, call the domain, convert. Values are parsed by the domain, after the
//! lock check, so a change to a locked key is refused whatever its value.

use super::{Gate, actor, with_revision};
use crate::clock::to_timestamp;
use crate::domain::config::{ImportMode, ImportReport, SettingUpdate, SettingView, StaleValues};
use crate::domain::types::OrgId;
use crate::error::{ControlPlaneError, Result};
use memtrace_common::settings;
use memtrace_proto::admin::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ConfigApi(pub Arc<Gate>);

/// An empty org id means "global".
fn optional_org(org_id: &str) -> Result<Option<OrgId>> {
    match org_id.trim() {
        "" => Ok(None),
        id => OrgId::parse(id).map(Some),
    }
}

fn revision(revision: Option<i64>) -> u64 {
    revision.and_then(|r| u64::try_from(r).ok()).unwrap_or(0)
}

fn setting_to_pb(view: &SettingView) -> pb::Setting {
    let setting = view.setting;
    pb::Setting {
        key: setting.key.to_owned(),
        description: setting.description.to_owned(),
        r#type: setting.ty.name().to_owned(),
        range: setting.ty.range(),
        default_value: setting.default_value().to_string(),
        value: view.shown(),
        value_json: view.shown_json(),
        source: view.source.as_str().to_owned(),
        category: setting.category.as_str().to_owned(),
        per_org: setting.per_org,
        locked: view.locked,
        sensitive: setting.sensitive,
        masked: view.masked(),
        org_id: view.org_id.clone().unwrap_or_default(),
        updated_at: view.updated_at.map(to_timestamp),
    }
}

fn change_to_pb(update: &SettingUpdate) -> Response<pb::SettingChangeResponse> {
    with_revision(
        pb::SettingChangeResponse {
            setting: Some(setting_to_pb(&update.after)),
            old_value: update.before.shown(),
            old_source: update.before.source.as_str().to_owned(),
            changed: update.changed,
            revision: revision(update.revision),
            audit_seq: update
                .audit_seq
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
        },
        update.revision,
    )
}

fn import_to_pb(report: ImportReport) -> pb::ImportSettingsResponse {
    pb::ImportSettingsResponse {
        changes: report
            .changes
            .into_iter()
            .map(|c| pb::SettingDiff {
                key: c.key,
                org_id: c.org_id.unwrap_or_default(),
                old_set: c.old.is_some(),
                old_value: c.old.unwrap_or_default(),
                new_value: c.new,
            })
            .collect(),
        conflicts: report
            .conflicts
            .into_iter()
            .map(|c| pb::ImportConflict {
                key: c.key,
                org_id: c.org_id.unwrap_or_default(),
                kind: c.kind.as_str().to_owned(),
                reason: c.reason,
            })
            .collect(),
        unchanged: report.unchanged,
        applied: report.applied,
        revision: revision(report.revision),
    }
}

#[tonic::async_trait]
impl pb::config_service_server::ConfigService for ConfigApi {
    async fn list_settings(
        &self,
        request: Request<pb::ListSettingsRequest>,
    ) -> Result<Response<pb::ListSettingsResponse>, Status> {
        let org = optional_org(&request.into_inner().org_id)?;
        let views = self.0.service()?.list_settings(org.as_ref()).await?;
        Ok(Response::new(pb::ListSettingsResponse {
            settings: views.iter().map(setting_to_pb).collect(),
        }))
    }

    async fn get_setting(
        &self,
        request: Request<pb::GetSettingRequest>,
    ) -> Result<Response<pb::Setting>, Status> {
        let req = request.into_inner();
        let setting = settings::lookup(&req.key).map_err(ControlPlaneError::from)?;
        let org = optional_org(&req.org_id)?;
        let view = self.0.service()?.get_setting(setting, org.as_ref()).await?;
        Ok(Response::new(setting_to_pb(&view)))
    }

    async fn set_setting(
        &self,
        request: Request<pb::SetSettingRequest>,
    ) -> Result<Response<pb::SettingChangeResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let setting = settings::lookup(&req.key).map_err(ControlPlaneError::from)?;
        let org = optional_org(&req.org_id)?;
        let update = self
            .0
            .service()?
            .set_setting(&actor, setting, org.as_ref(), &req.value)
            .await?;
        Ok(change_to_pb(&update))
    }

    async fn reset_setting(
        &self,
        request: Request<pb::ResetSettingRequest>,
    ) -> Result<Response<pb::SettingChangeResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let setting = settings::lookup(&req.key).map_err(ControlPlaneError::from)?;
        let org = optional_org(&req.org_id)?;
        let update = self
            .0
            .service()?
            .reset_setting(&actor, setting, org.as_ref())
            .await?;
        Ok(change_to_pb(&update))
    }

    async fn export_settings(
        &self,
        _request: Request<pb::ExportSettingsRequest>,
    ) -> Result<Response<pb::ExportSettingsResponse>, Status> {
        let export = self.0.service()?.export_settings().await?;
        Ok(Response::new(pb::ExportSettingsResponse {
            document: export.document.to_string(),
            values: export.values,
            excluded_sensitive: export.excluded_sensitive,
        }))
    }

    async fn import_settings(
        &self,
        request: Request<pb::ImportSettingsRequest>,
    ) -> Result<Response<pb::ImportSettingsResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let report = self
            .0
            .service()?
            .import_settings(
                &actor,
                &req.document,
                ImportMode::dry_run(req.dry_run),
                StaleValues::overwrite(req.force),
            )
            .await?;
        let published = report.revision;
        Ok(with_revision(import_to_pb(report), published))
    }

    async fn rollback_setting(
        &self,
        request: Request<pb::RollbackSettingRequest>,
    ) -> Result<Response<pb::SettingChangeResponse>, Status> {
        let actor = actor(&request);
        let seq = i64::try_from(request.into_inner().seq)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                ControlPlaneError::invalid("seq", "must be an audit entry's sequence number (≥ 1)")
            })?;
        let update = self.0.service()?.rollback_setting(&actor, seq).await?;
        Ok(change_to_pb(&update))
    }
}
