//! Runtime configuration (`memtrace.admin.v1.ConfigService`): typed settings
//! from [`memtrace_common::settings`], stored in the database (global values
//! and per-org overrides of hot settings), published to the state bus, and
//! audited.
//!
//! Rules: a locked setting refuses every change (the refusal is audited); a
//! value is validated before anything is written; every write is a
//! compare-and-swap committed together with its audit entry, so a failed
//! change changes nothing; sensitive values are masked in every view and
//! never reach the audit trail, an export or the bus. Export, import and the
//! first-start seeding live in [`transfer`].

mod sealed;
mod transfer;

pub use sealed::SETTING_PURPOSE;
pub use transfer::{
    ConflictKind, ExportDocument, ImportConflict, ImportMode, ImportReport, SettingDiff,
    StaleValues,
};

use super::ControlPlane;
use super::audit::{AuditOutcome, audit_record};
use super::types::OrgId;
use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::{SettingChange, SettingRow, StoreError};
use memtrace_common::bus::Op;
use memtrace_common::clock::now_ms;
use memtrace_common::settings::{
    self, EffectiveSettings, MASK, SETTINGS, Setting, SettingValue, Source,
};
use memtrace_common::state::RECORD_SCHEMA;
use memtrace_proto::state::v1 as state;
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

/// Meta key set once the first start seeded the settings.
pub const SEED_MARKER: &str = "settings_initialised";

/// Compare-and-swap attempts before a change reports contention. Writes of
/// one process are serialised, so only other replicas contend.
const CAS_ATTEMPTS: u32 = 12;

/// Audit actions that changed a setting and can be rolled back.
const CONFIG_CHANGES: &[&str] = &[
    "config.set",
    "config.reset",
    "config.import",
    "config.rollback",
    "config.seed",
];

/// Which settings refuse changes in this process (`[control_plane]
/// locked_settings`, installed by `seed_settings`), and the lock that
/// serialises this process's setting writes.
#[derive(Debug)]
pub struct ConfigPolicy {
    locked: RwLock<BTreeSet<String>>,
    writes: tokio::sync::Mutex<()>,
}

impl Default for ConfigPolicy {
    fn default() -> Self {
        Self {
            locked: RwLock::new(settings::locked_by_default().into_iter().collect()),
            writes: tokio::sync::Mutex::new(()),
        }
    }
}

impl ConfigPolicy {
    pub fn is_locked(&self, key: &str) -> bool {
        match self.locked.read() {
            Ok(guard) => guard.contains(key),
            Err(poisoned) => poisoned.into_inner().contains(key),
        }
    }

    /// Held while a setting write (or an import) reads and swaps values.
    pub(crate) async fn write_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    fn replace(&self, keys: &[String]) {
        let set: BTreeSet<String> = keys.iter().map(|k| k.trim().to_owned()).collect();
        match self.locked.write() {
            Ok(mut guard) => *guard = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }
}

/// A setting as the admin API shows it, resolved globally or for one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingView {
    pub setting: &'static Setting,
    /// `Some` when resolved for an org.
    pub org_id: Option<String>,
    /// The effective value (not masked; use [`Self::shown`] for display).
    pub value: SettingValue,
    pub source: Source,
    /// When the stored value that won was written (`None` for defaults).
    pub updated_at: Option<i64>,
    pub locked: bool,
}

impl SettingView {
    /// The value for display: `***` when sensitive and set.
    pub fn shown(&self) -> String {
        self.setting.display(&self.value)
    }

    /// Whether [`Self::shown`] hides the value.
    pub fn masked(&self) -> bool {
        self.setting.sensitive && self.value != self.setting.default_value()
    }

    /// The JSON of the shown value.
    pub fn shown_json(&self) -> String {
        if self.masked() {
            Value::String(MASK.into()).to_string()
        } else {
            self.value.to_json()
        }
    }
}

/// The outcome of a set, reset or rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingUpdate {
    pub before: SettingView,
    pub after: SettingView,
    /// Whether the stored value changed (an identical value writes nothing).
    pub changed: bool,
    /// The bus revision that published the change (`None`: deferred).
    pub revision: Option<i64>,
    pub audit_seq: Option<i64>,
}

/// The audit target of a setting: `key`, or `<org_id>/<key>`.
pub(crate) fn setting_target(key: &str, org: Option<&OrgId>) -> String {
    match org {
        Some(org) => format!("{}/{key}", org.as_str()),
        None => key.to_owned(),
    }
}

fn scope_id(org: Option<&OrgId>) -> &str {
    org.map(OrgId::as_str).unwrap_or_default()
}

/// A stored value as audit details show it (`null` when there is no row).
fn audited_value(setting: &Setting, value: Option<&SettingValue>) -> Value {
    match value {
        None => Value::Null,
        Some(_) if setting.sensitive => Value::String(MASK.into()),
        Some(v) => v.to_json_value(),
    }
}

/// The text of an attempted value, for a denial entry.
fn attempted(setting: &Setting, text: &str) -> Value {
    if setting.sensitive {
        return Value::String(MASK.into());
    }
    Value::String(text.chars().take(256).collect())
}

pub(crate) const LOG_LEVEL: &str = "log.level";

/// The stored global value of `key` as a string, if any.
fn stored_text(rows: &[SettingRow], key: &str) -> Option<String> {
    rows.iter()
        .find(|r| r.key == key && r.org_id.is_empty())
        .and_then(|r| serde_json::from_str::<String>(&r.value_json).ok())
}

/// Applies the stored global `log.level` (the default without one) to this
/// process's log filter, and starts trace export when a stored
/// `telemetry.otlp_endpoint` names one and none is in force
/// (restart-required: a later change waits for a restart).
pub(crate) fn apply_log_level(rows: &[SettingRow]) {
    let level =
        stored_text(rows, LOG_LEVEL).unwrap_or_else(|| EffectiveSettings::new().log_level());
    memtrace_common::telemetry::apply_level(&level);
    if let Some(endpoint) = stored_text(rows, "telemetry.otlp_endpoint") {
        let headers = stored_text(rows, "telemetry.otlp_headers").unwrap_or_default();
        memtrace_common::telemetry::traces::apply_settings(
            &endpoint,
            &headers,
            "memtrace-control-plane",
        );
    }
}

/// Stored values as an effective view (rows the registry refuses are
/// skipped with a warning), plus when each row was written.
pub(crate) fn effective_from_rows(
    rows: &[SettingRow],
) -> (EffectiveSettings, HashMap<(String, String), i64>) {
    let mut effective = EffectiveSettings::new();
    let mut written = HashMap::new();
    for row in rows {
        match effective.apply_json(Some(&row.org_id), &row.key, &row.value_json) {
            Ok(()) => {
                written.insert((row.key.clone(), row.org_id.clone()), row.updated_at);
            }
            Err(error) => {
                tracing::warn!(key = %row.key, org_id = %row.org_id, %error, "stored setting ignored: the registry refuses it")
            }
        }
    }
    (effective, written)
}

impl ControlPlane {
    /// Replaces the set of locked settings (validated against the registry).
    pub fn set_locked_settings(&self, keys: &[String]) -> Result<()> {
        settings::validate_keys(keys)?;
        self.config_policy.replace(keys);
        Ok(())
    }

    pub fn is_locked(&self, key: &str) -> bool {
        self.config_policy.is_locked(key)
    }

    /// Every setting resolved globally or for `org` (which must exist).
    pub async fn list_settings(&self, org: Option<&OrgId>) -> Result<Vec<SettingView>> {
        if let Some(org) = org {
            self.get_org(org).await?;
        }
        let rows = self.plain_settings().await?;
        let (effective, written) = effective_from_rows(&rows);
        SETTINGS
            .iter()
            .map(|setting| self.view(&effective, &written, setting, org))
            .collect()
    }

    /// One setting resolved globally or for `org` (which must exist).
    pub async fn get_setting(
        &self,
        setting: &'static Setting,
        org: Option<&OrgId>,
    ) -> Result<SettingView> {
        if let Some(org) = org {
            self.get_org(org).await?;
        }
        self.current_view(setting, org).await
    }

    async fn current_view(
        &self,
        setting: &'static Setting,
        org: Option<&OrgId>,
    ) -> Result<SettingView> {
        let rows = self.plain_settings().await?;
        let (effective, written) = effective_from_rows(&rows);
        self.view(&effective, &written, setting, org)
    }

    fn view(
        &self,
        effective: &EffectiveSettings,
        written: &HashMap<(String, String), i64>,
        setting: &'static Setting,
        org: Option<&OrgId>,
    ) -> Result<SettingView> {
        let resolved = effective.resolve(org.map(OrgId::as_str), setting.key)?;
        let winner = match resolved.source {
            Source::Org => scope_id(org),
            Source::Global | Source::Default => "",
        };
        Ok(SettingView {
            setting,
            org_id: org.map(|o| o.as_str().to_owned()),
            value: resolved.value,
            source: resolved.source,
            updated_at: written
                .get(&(setting.key.to_owned(), winner.to_owned()))
                .copied()
                .filter(|_| resolved.source != Source::Default),
            locked: self.is_locked(setting.key),
        })
    }

    /// Sets a global value, or an org's override of a per-org setting.
    pub async fn set_setting(
        &self,
        actor: &AdminActor,
        setting: &'static Setting,
        org: Option<&OrgId>,
        text: &str,
    ) -> Result<SettingUpdate> {
        self.ensure_unlocked(actor, "config.set", setting, org, attempted(setting, text))
            .await?;
        let value = setting.parse(text)?;
        self.check_scope(setting, org).await?;
        self.write_setting(actor, "config.set", setting, org, Some(value), Map::new())
            .await
    }

    /// Removes a global value (back to the default) or an org's override
    /// (back to the global value).
    pub async fn reset_setting(
        &self,
        actor: &AdminActor,
        setting: &'static Setting,
        org: Option<&OrgId>,
    ) -> Result<SettingUpdate> {
        self.ensure_unlocked(actor, "config.reset", setting, org, Value::Null)
            .await?;
        self.check_scope(setting, org).await?;
        self.write_setting(actor, "config.reset", setting, org, None, Map::new())
            .await
    }

    /// Restores the value a config change replaced (its audit entry `seq`).
    pub async fn rollback_setting(&self, actor: &AdminActor, seq: i64) -> Result<SettingUpdate> {
        let entry = self.get_audit(seq).await?;
        if !CONFIG_CHANGES.contains(&entry.action.as_str()) || entry.outcome != "ok" {
            return Err(ControlPlaneError::FailedPrecondition(format!(
                "audit entry {seq} is not an applied config change (action {}, outcome {}); only {} entries with outcome ok can be rolled back",
                entry.action,
                entry.outcome,
                CONFIG_CHANGES.join(", ")
            )));
        }
        let details: Value = serde_json::from_str(&entry.details_json).map_err(|_| {
            ControlPlaneError::FailedPrecondition(format!(
                "audit entry {seq} has unreadable details"
            ))
        })?;
        let key = details["key"].as_str().ok_or_else(|| {
            ControlPlaneError::FailedPrecondition(format!("audit entry {seq} names no setting"))
        })?;
        let setting = settings::lookup(key)?;
        if details["sensitive"] == Value::Bool(true) || setting.sensitive {
            return Err(ControlPlaneError::FailedPrecondition(format!(
                "audit entry {seq} changed sensitive setting {key}, whose values the audit trail does not keep, so it cannot be rolled back; set a new value of {key} instead"
            )));
        }
        let org = details["org_id"]
            .as_str()
            .filter(|o| !o.is_empty())
            .map(OrgId::parse)
            .transpose()?;
        let old = &details["old"];
        self.ensure_unlocked(actor, "config.rollback", setting, org.as_ref(), old.clone())
            .await?;
        let value = match old {
            Value::Null => None,
            json => {
                let value = SettingValue::from_json_value(json).ok_or_else(|| {
                    ControlPlaneError::FailedPrecondition(format!(
                        "audit entry {seq} holds no usable previous value"
                    ))
                })?;
                setting.validate(&value)?;
                Some(value)
            }
        };
        self.check_scope(setting, org.as_ref()).await?;
        let mut extra = Map::new();
        extra.insert("rollback_of".into(), json!(seq));
        self.write_setting(
            actor,
            "config.rollback",
            setting,
            org.as_ref(),
            value,
            extra,
        )
        .await
    }

    /// Refuses (and audits the refusal of) a change to a locked setting.
    async fn ensure_unlocked(
        &self,
        actor: &AdminActor,
        action: &str,
        setting: &Setting,
        org: Option<&OrgId>,
        attempted: Value,
    ) -> Result<()> {
        if !self.is_locked(setting.key) {
            return Ok(());
        }
        let target = setting_target(setting.key, org);
        let details = json!({
            "key": setting.key,
            "org_id": scope_id(org),
            "attempted": attempted,
            "reason": "locked",
        });
        if let Err(error) = self
            .append_audit_entry(actor, action, &target, AuditOutcome::Denied, details)
            .await
        {
            tracing::error!(%error, key = setting.key, "cannot audit a refused change of a locked setting");
        }
        tracing::warn!(key = setting.key, org_id = scope_id(org), actor = %actor.fingerprint, action, "setting change refused: the setting is locked");
        Err(ControlPlaneError::SettingLocked(setting.key.to_owned()))
    }

    /// An org override needs a per-org setting and an existing org.
    async fn check_scope(&self, setting: &Setting, org: Option<&OrgId>) -> Result<()> {
        if let Some(org) = org {
            if !setting.per_org {
                return Err(settings::SettingError::NotPerOrg {
                    key: setting.key.to_owned(),
                }
                .into());
            }
            self.get_org(org).await?;
        }
        Ok(())
    }

    /// Writes `new` (`None` deletes the row) with its audit entry as one
    /// compare-and-swap, retrying on contention, then publishes.
    async fn write_setting(
        &self,
        actor: &AdminActor,
        action: &str,
        setting: &'static Setting,
        org: Option<&OrgId>,
        new: Option<SettingValue>,
        extra: Map<String, Value>,
    ) -> Result<SettingUpdate> {
        let before = self.current_view(setting, org).await?;
        let org_id = scope_id(org);
        let target = setting_target(setting.key, org);
        let new_json = new.as_ref().map(SettingValue::to_json);
        let mut audit_seq = None;
        let mut changed = false;
        let guard = self.config_policy.write_guard().await;
        for attempt in 1..=CAS_ATTEMPTS {
            let current = self.store.get_setting(setting.key, org_id).await?;
            let stored = current.as_ref().map(|r| r.value_json.clone());
            let plain = current.as_ref().and_then(|r| self.plain_json(r));
            let unchanged = match (&current, &new_json) {
                (None, None) => true,
                (Some(_), Some(new)) => plain.as_ref() == Some(new),
                _ => false,
            };
            if unchanged {
                break;
            }
            let old = plain.and_then(|json| setting.from_json(&json).ok());
            let mut details = Map::new();
            details.insert("key".into(), json!(setting.key));
            details.insert("org_id".into(), json!(org_id));
            details.insert("old".into(), audited_value(setting, old.as_ref()));
            details.insert("new".into(), audited_value(setting, new.as_ref()));
            details.insert("sensitive".into(), json!(setting.sensitive));
            details.extend(extra.clone());
            let record = audit_record(
                actor,
                action,
                &target,
                AuditOutcome::Ok,
                Value::Object(details),
            );
            let change = SettingChange {
                key: setting.key.to_owned(),
                org_id: org_id.to_owned(),
                expected: stored,
                new: new.as_ref().map(|v| self.stored_json(setting, org_id, v)),
                at_ms: now_ms(),
            };
            match self
                .store
                .apply_setting_changes(&[change], &[record], &self.audit_key())
                .await
            {
                Ok(entries) => {
                    audit_seq = entries.first().map(|e| e.seq);
                    changed = true;
                    break;
                }
                Err(StoreError::Conflict(_)) if attempt < CAS_ATTEMPTS => {
                    // another replica won the swap: back off with jitter
                    let ms = rand::random_range(1..=5 * u64::from(attempt));
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                Err(StoreError::Conflict(_)) => {
                    return Err(ControlPlaneError::FailedPrecondition(format!(
                        "setting {} kept changing concurrently; nothing was changed, retry",
                        setting.key
                    )));
                }
                Err(error) => return Err(error.into()),
            }
        }
        drop(guard);
        let revision = self
            .publish_settings(&[(setting.key.to_owned(), org_id.to_owned())])
            .await;
        let after = self.current_view(setting, org).await?;
        tracing::info!(
            key = setting.key,
            org_id,
            action,
            actor = %actor.fingerprint,
            changed,
            old = %before.shown(),
            new = %after.shown(),
            revision = ?revision,
            "setting changed"
        );
        Ok(SettingUpdate {
            before,
            after,
            changed,
            revision,
            audit_seq,
        })
    }

    /// The published record of a stored value. Sensitive settings are never
    /// published in clear, so they have none.
    pub(crate) fn setting_put(&self, row: &SettingRow) -> Option<Op> {
        let setting = settings::lookup(&row.key).ok()?;
        if setting.sensitive {
            return None;
        }
        let record = state::SettingRecord {
            schema: RECORD_SCHEMA,
            key: row.key.clone(),
            org_id: row.org_id.clone(),
            value_json: row.value_json.clone(),
        };
        Some(Op::Put {
            key: self.setting_state_key(&row.key, &row.org_id),
            value: record.encode_to_vec(),
        })
    }

    fn setting_state_key(&self, key: &str, org_id: &str) -> String {
        if org_id.is_empty() {
            self.state_keys().global_setting(key)
        } else {
            self.state_keys().org_setting(org_id, key)
        }
    }

    /// Every setting record the bus should hold (for the reconciler, which
    /// also owns the `config/` prefix once it includes these).
    pub async fn desired_settings(&self) -> Result<Vec<Op>> {
        let rows = self.store.list_settings().await?;
        // every pass: a change made through another replica reaches this
        // process's log filter too
        apply_log_level(&rows);
        Ok(rows
            .iter()
            .filter_map(|row| self.setting_put(row))
            .collect())
    }

    /// Publishes the stored state of `(key, org_id)` pairs, read from the
    /// database after the bus, so a later publication never carries an
    /// older value, on this replica or another (`publish::fresh`).
    pub(crate) async fn publish_settings(&self, targets: &[(String, String)]) -> Option<i64> {
        let keys: Vec<String> = targets
            .iter()
            .map(|(key, org_id)| self.setting_state_key(key, org_id))
            .collect();
        self.publish_fresh(&keys).await
    }

    /// Deletes an org's overrides (call when deleting the org) and returns
    /// the bus deletes for the caller's publication.
    pub async fn delete_org_settings(&self, org: &OrgId) -> Result<Vec<Op>> {
        let removed = self.store.delete_org_settings(org.as_str()).await?;
        Ok(self.setting_deletes(&removed))
    }

    /// The bus deletes of removed setting rows.
    pub(crate) fn setting_deletes(&self, removed: &[SettingRow]) -> Vec<Op> {
        removed
            .iter()
            .map(|row| Op::Delete {
                key: self.setting_state_key(&row.key, &row.org_id),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
