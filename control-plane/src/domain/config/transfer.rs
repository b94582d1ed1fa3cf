//! Moving settings in and out: export (a versioned JSON document without
//! sensitive values), import (merge, with a dry run that shows changes and
//! conflicts, all-or-nothing when applied), and the first-start seeding from
//! the static configuration.
//!
//! Document (version 1):
//!
//! ```json
//! { "version": 1, "exported_at": "2026-11-23T10:00:00Z", "exported_at_ms": 1795..., "source": "memtrace-control-plane 0.1.0",
//!   "settings": { "arc.write_batch_size": 500 },
//!   "orgs": { "org_x": { "limits.requests_per_second": 50 } },
//!   "excluded_sensitive": ["telemetry.otlp_headers"] }
//! ```
//!
//! Import merges: keys absent from the document are left alone.

use super::{SEED_MARKER, audited_value, effective_from_rows, setting_target};
use crate::auth::AdminActor;
use crate::domain::ControlPlane;
use crate::domain::audit::{AuditOutcome, audit_record};
use crate::domain::types::OrgId;
use crate::error::{ControlPlaneError, Result};
use crate::store::{SettingChange, SettingRow, StoreError};
use memtrace_common::clock::now_ms;
use memtrace_common::config::MemtraceConfig;
use memtrace_common::settings::{self, SettingValue, seed};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

/// The export format version this build writes and reads.
pub const DOCUMENT_VERSION: u64 = 1;
/// The largest document an import accepts.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// An export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportDocument {
    pub document: Value,
    /// Values in the document (global and per-org).
    pub values: u32,
    /// Sensitive settings with stored values that were left out.
    pub excluded_sensitive: Vec<String>,
}

/// One value an import changes (values masked when sensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDiff {
    pub key: String,
    pub org_id: Option<String>,
    /// The stored value, `None` when there is none (default or inherited).
    pub old: Option<String>,
    pub new: String,
}

/// Why an import cannot apply a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    Locked,
    UnknownKey,
    InvalidValue,
    NotPerOrg,
    OrgNotFound,
    /// The stored value changed after the document was exported.
    ChangedSinceExport,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Locked => "locked",
            Self::UnknownKey => "unknown_key",
            Self::InvalidValue => "invalid_value",
            Self::NotPerOrg => "not_per_org",
            Self::OrgNotFound => "org_not_found",
            Self::ChangedSinceExport => "changed_since_export",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportConflict {
    pub key: String,
    pub org_id: Option<String>,
    pub kind: ConflictKind,
    pub reason: String,
}

/// What an import would do or did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportReport {
    pub changes: Vec<SettingDiff>,
    pub conflicts: Vec<ImportConflict>,
    /// Values already as the document says.
    pub unchanged: u32,
    pub applied: bool,
    pub revision: Option<i64>,
}

fn invalid_document(rule: impl Into<String>) -> ControlPlaneError {
    ControlPlaneError::invalid("document", rule)
}

fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A parsed value of the document: (org, key, json).
type Entry = (Option<String>, String, Value);

fn document_entries(doc: &Value) -> Result<(Vec<Entry>, Option<i64>)> {
    let version = doc["version"]
        .as_u64()
        .ok_or_else(|| invalid_document("\"version\" is missing"))?;
    if version != DOCUMENT_VERSION {
        return Err(invalid_document(format!(
            "version {version} is not supported (this control plane reads version {DOCUMENT_VERSION})"
        )));
    }
    let exported_at = doc["exported_at_ms"].as_i64();
    let mut entries = Vec::new();
    match &doc["settings"] {
        Value::Null => {}
        Value::Object(values) => {
            entries.extend(values.iter().map(|(k, v)| (None, k.clone(), v.clone())));
        }
        _ => {
            return Err(invalid_document(
                "\"settings\" must be an object of key: value",
            ));
        }
    }
    match &doc["orgs"] {
        Value::Null => {}
        Value::Object(orgs) => {
            for (org, values) in orgs {
                let Value::Object(values) = values else {
                    return Err(invalid_document(format!(
                        "\"orgs\".{org:?} must be an object of key: value"
                    )));
                };
                entries.extend(
                    values
                        .iter()
                        .map(|(k, v)| (Some(org.clone()), k.clone(), v.clone())),
                );
            }
        }
        _ => {
            return Err(invalid_document(
                "\"orgs\" must be an object of org id: {key: value}",
            ));
        }
    }
    Ok((entries, exported_at))
}

/// Whether an import writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Report the changes and conflicts only.
    DryRun,
    Apply,
}

/// What an import does with a value changed in the database after the
/// document was exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleValues {
    /// Report it as a conflict (the default).
    Refuse,
    /// Overwrite it (`--force`).
    Overwrite,
}

impl ImportMode {
    /// From the wire's `dry_run` flag.
    pub fn dry_run(dry_run: bool) -> Self {
        if dry_run { Self::DryRun } else { Self::Apply }
    }
}

impl StaleValues {
    /// From the wire's `force` flag.
    pub fn overwrite(force: bool) -> Self {
        if force { Self::Overwrite } else { Self::Refuse }
    }
}

impl ControlPlane {
    /// The stored values (global and per-org) as a document, without
    /// sensitive ones.
    pub async fn export_settings(&self) -> Result<ExportDocument> {
        let rows = self.store.list_settings().await?;
        let mut global = Map::new();
        let mut orgs: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut excluded = Vec::new();
        let mut values = 0u32;
        for row in &rows {
            let Ok(setting) = settings::lookup(&row.key) else {
                continue;
            };
            if setting.sensitive {
                excluded.push(row.key.clone());
                continue;
            }
            let Ok(value) = setting.from_json(&row.value_json) else {
                continue;
            };
            let target = if row.org_id.is_empty() {
                &mut global
            } else {
                orgs.entry(row.org_id.clone()).or_default()
            };
            target.insert(row.key.clone(), value.to_json_value());
            values += 1;
        }
        excluded.sort();
        excluded.dedup();
        let now = now_ms();
        let document = json!({
            "version": DOCUMENT_VERSION,
            "exported_at": rfc3339(now),
            "exported_at_ms": now,
            "source": concat!("memtrace-control-plane ", env!("CARGO_PKG_VERSION")),
            "settings": global,
            "orgs": orgs,
            "excluded_sensitive": excluded,
        });
        Ok(ExportDocument {
            document,
            values,
            excluded_sensitive: excluded,
        })
    }

    /// Compares a document with the database; [`ImportMode::DryRun`] only
    /// reports. Applying refuses the whole document while any conflict
    /// remains ([`StaleValues::Overwrite`] only overrides "changed since
    /// export"), and writes every change with its audit entry in one
    /// transaction.
    pub async fn import_settings(
        &self,
        actor: &AdminActor,
        document: &str,
        mode: ImportMode,
        stale: StaleValues,
    ) -> Result<ImportReport> {
        if document.len() > MAX_DOCUMENT_BYTES {
            return Err(invalid_document(format!(
                "larger than {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        let doc: Value = serde_json::from_str(document)
            .map_err(|e| invalid_document(format!("not valid JSON ({e})")))?;
        let _guard = self.config_policy.write_guard().await;
        let (entries, exported_at) = document_entries(&doc)?;
        let rows = self.store.list_settings().await?;
        let stored: HashMap<(String, String), &SettingRow> = rows
            .iter()
            .map(|r| ((r.key.clone(), r.org_id.clone()), r))
            .collect();
        let known_orgs: std::collections::HashSet<String> = self
            .store
            .list_orgs()
            .await?
            .into_iter()
            .map(|o| o.org.id)
            .collect();

        let mut report = ImportReport::default();
        let mut planned: Vec<(SettingChange, Value)> = Vec::new();
        for (org, key, json_value) in entries {
            let conflict = |kind: ConflictKind, reason: String| ImportConflict {
                key: key.clone(),
                org_id: org.clone(),
                kind,
                reason,
            };
            let setting = match settings::lookup(&key) {
                Ok(s) => s,
                Err(e) => {
                    report
                        .conflicts
                        .push(conflict(ConflictKind::UnknownKey, e.to_string()));
                    continue;
                }
            };
            let value = match SettingValue::from_json_value(&json_value)
                .ok_or_else(|| settings::SettingError::Invalid {
                    key: key.clone(),
                    expected: setting.ty.expected(),
                    got: if setting.sensitive {
                        settings::MASK.into()
                    } else {
                        json_value.to_string()
                    },
                })
                .and_then(|v| setting.validate(&v).map(|()| v))
            {
                Ok(v) => v,
                Err(e) => {
                    report
                        .conflicts
                        .push(conflict(ConflictKind::InvalidValue, e.to_string()));
                    continue;
                }
            };
            let org_id = match &org {
                None => String::new(),
                Some(o) => {
                    if !setting.per_org {
                        report.conflicts.push(conflict(
                            ConflictKind::NotPerOrg,
                            format!("setting {key} cannot be overridden per org"),
                        ));
                        continue;
                    }
                    match OrgId::parse(o) {
                        Ok(id) if known_orgs.contains(id.as_str()) => id.as_str().to_owned(),
                        _ => {
                            report.conflicts.push(conflict(
                                ConflictKind::OrgNotFound,
                                format!("org {o} does not exist"),
                            ));
                            continue;
                        }
                    }
                }
            };
            let current = stored.get(&(setting.key.to_owned(), org_id.clone()));
            let new_json = value.to_json();
            let current_plain = current.and_then(|r| self.plain_json(r));
            if current_plain.as_ref() == Some(&new_json) {
                report.unchanged += 1;
                continue;
            }
            let old = current_plain.and_then(|json| setting.from_json(&json).ok());
            if self.is_locked(setting.key) {
                report.conflicts.push(conflict(
                    ConflictKind::Locked,
                    format!("setting {key} is locked"),
                ));
            } else if let (Some(row), Some(at), false) =
                (current, exported_at, stale == StaleValues::Overwrite)
                && row.updated_at > at
            {
                report.conflicts.push(conflict(
                    ConflictKind::ChangedSinceExport,
                    format!(
                        "the stored value {} was written at {}, after this document was exported; import with force set to overwrite it",
                        setting.display(old.as_ref().unwrap_or(&value)),
                        rfc3339(row.updated_at)
                    ),
                ));
            }
            report.changes.push(SettingDiff {
                key: setting.key.to_owned(),
                org_id: org.clone().filter(|_| !org_id.is_empty()),
                old: old.as_ref().map(|v| setting.display(v)),
                new: setting.display(&value),
            });
            let org_ref = OrgId::parse(&org_id).ok();
            let details = json!({
                "key": setting.key,
                "org_id": org_id,
                "old": audited_value(setting, old.as_ref()),
                "new": audited_value(setting, Some(&value)),
                "sensitive": setting.sensitive,
                "target": setting_target(setting.key, org_ref.as_ref()),
            });
            let stored_json = self.stored_json(setting, &org_id, &value);
            planned.push((
                SettingChange {
                    key: setting.key.to_owned(),
                    org_id,
                    expected: current.map(|r| r.value_json.clone()),
                    new: Some(stored_json),
                    at_ms: now_ms(),
                },
                details,
            ));
        }
        if mode == ImportMode::DryRun {
            return Ok(report);
        }
        self.refuse_conflicts(actor, &report).await?;
        if planned.is_empty() {
            return Ok(report);
        }
        let (changes, records): (Vec<SettingChange>, Vec<_>) = planned
            .into_iter()
            .map(|(change, mut details)| {
                let target = details["target"].as_str().unwrap_or(&change.key).to_owned();
                if let Some(map) = details.as_object_mut() {
                    map.remove("target");
                }
                let record =
                    audit_record(actor, "config.import", &target, AuditOutcome::Ok, details);
                (change, record)
            })
            .unzip();
        match self
            .store
            .apply_setting_changes(&changes, &records, &self.audit_key())
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(ControlPlaneError::FailedPrecondition(
                    "settings changed while the import ran; nothing was applied, run the import again".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let targets: Vec<(String, String)> = changes
            .iter()
            .map(|c| (c.key.clone(), c.org_id.clone()))
            .collect();
        report.revision = self.publish_settings(&targets).await;
        report.applied = true;
        tracing::info!(changes = changes.len(), actor = %actor.fingerprint, revision = ?report.revision, "settings imported");
        Ok(report)
    }

    /// Turns remaining conflicts into the error of the most serious kind;
    /// locked settings are audited as denied.
    async fn refuse_conflicts(&self, actor: &AdminActor, report: &ImportReport) -> Result<()> {
        if report.conflicts.is_empty() {
            return Ok(());
        }
        let summary = report
            .conflicts
            .iter()
            .map(|c| match &c.org_id {
                Some(org) => format!("{org}/{}: {}", c.key, c.reason),
                None => format!("{}: {}", c.key, c.reason),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let locked: Vec<&ImportConflict> = report
            .conflicts
            .iter()
            .filter(|c| c.kind == ConflictKind::Locked)
            .collect();
        for conflict in &locked {
            let org = conflict
                .org_id
                .as_deref()
                .and_then(|o| OrgId::parse(o).ok());
            let details = json!({"key": conflict.key, "org_id": conflict.org_id.clone().unwrap_or_default(), "reason": "locked"});
            let target = setting_target(&conflict.key, org.as_ref());
            if let Err(error) = self
                .append_audit_entry(
                    actor,
                    "config.import",
                    &target,
                    AuditOutcome::Denied,
                    details,
                )
                .await
            {
                tracing::error!(%error, key = %conflict.key, "cannot audit a refused import of a locked setting");
            }
        }
        let message = format!("import refused, nothing was applied: {summary}");
        if !locked.is_empty() {
            return Err(ControlPlaneError::PermissionDenied(message));
        }
        if report
            .conflicts
            .iter()
            .all(|c| c.kind == ConflictKind::ChangedSinceExport)
        {
            return Err(ControlPlaneError::FailedPrecondition(message));
        }
        Err(ControlPlaneError::invalid("document", message))
    }

    /// First start of a database: installs `[control_plane] locked_settings`,
    /// then — once per database, atomically across replicas — writes the
    /// static values that differ from the defaults (audited as `system`) and
    /// publishes them. Later starts never write: the database wins, and
    /// static values that differ from it are only logged.
    pub async fn seed_settings(&self, config: &MemtraceConfig) -> Result<()> {
        let locked = &config.control_plane.locked_settings;
        self.set_locked_settings(locked).map_err(|e| {
            ControlPlaneError::Startup(format!(
                "[control_plane] locked_settings (MEMTRACE_CONTROL_PLANE_LOCKED_SETTINGS): {e}"
            ))
        })?;
        let plan = seed::plan(config).map_err(|e| ControlPlaneError::Startup(e.to_string()))?;
        for note in &plan.skipped {
            tracing::warn!(note = %note, "static setting not seeded");
        }
        let actor = AdminActor::system();
        let mut changes = Vec::new();
        let mut records = Vec::new();
        for value in plan.non_default() {
            let setting = value.setting;
            changes.push(SettingChange {
                key: setting.key.to_owned(),
                org_id: String::new(),
                expected: None,
                new: Some(self.stored_json(setting, "", &value.value)),
                at_ms: now_ms(),
            });
            let details = json!({
                "key": setting.key,
                "org_id": "",
                "old": Value::Null,
                "new": audited_value(setting, Some(&value.value)),
                "sensitive": setting.sensitive,
                "source": format!("{} ({})", value.source.origin, value.source.env),
            });
            records.push(audit_record(
                &actor,
                "config.seed",
                setting.key,
                AuditOutcome::Ok,
                details,
            ));
        }
        let seeded = self
            .store
            .seed_settings(SEED_MARKER, &changes, &records, &self.audit_key())
            .await?;
        if seeded {
            let targets: Vec<(String, String)> = changes
                .iter()
                .map(|c| (c.key.clone(), String::new()))
                .collect();
            let revision = self.publish_settings(&targets).await;
            tracing::info!(seeded = changes.len(), locked = ?locked, revision = ?revision, "runtime settings initialised from the static configuration");
            return Ok(());
        }
        let rows = self.plain_settings().await?;
        let (effective, _) = effective_from_rows(&rows);
        for value in &plan.values {
            let Ok(current) = effective.resolve(None, value.setting.key) else {
                continue;
            };
            if current.value != value.value {
                tracing::info!(
                    key = value.setting.key,
                    static_source = value.source.origin,
                    variable = value.source.env,
                    static_value = %value.setting.display(&value.value),
                    database_value = %value.setting.display(&current.value),
                    "static setting differs from the runtime value; the database wins (change it with 'memtracectl config set')"
                );
            }
        }
        tracing::info!(locked = ?locked, "runtime settings already initialised; static values not applied");
        Ok(())
    }
}
