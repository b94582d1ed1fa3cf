//! Sensitive setting values at rest: sealed with the master key ring, like
//! Arc API keys (a fresh data key per value; AAD binds org, setting key and
//! purpose, so a value copied to another row fails to open). The stored
//! `value_json` of a sealed value is the JSON string `"sealed:v1:<hex>"`.

use crate::domain::ControlPlane;
use crate::error::Result;
use crate::store::{SettingChange, SettingRow, StoreError};
use memtrace_common::envelope::Binding;
use memtrace_common::settings::{Setting, SettingValue};

/// Purpose bound into the envelope of a sensitive setting value.
pub const SETTING_PURPOSE: &str = "setting.value";
const PREFIX: &str = "sealed:v1:";

fn binding<'a>(org_id: &'a str, key: &'a str) -> Binding<'a> {
    Binding {
        org_id,
        record_id: key,
        purpose: SETTING_PURPOSE,
    }
}

/// The envelope inside a stored value, if it is sealed.
fn envelope(value_json: &str) -> Option<Vec<u8>> {
    let serde_json::Value::String(text) = serde_json::from_str(value_json).ok()? else {
        return None;
    };
    hex::decode(text.strip_prefix(PREFIX)?).ok()
}

fn sealed_json(envelope: &[u8]) -> String {
    serde_json::Value::String(format!("{PREFIX}{}", hex::encode(envelope))).to_string()
}

impl ControlPlane {
    /// The `value_json` to store: sealed when the setting is sensitive.
    pub(crate) fn stored_json(
        &self,
        setting: &Setting,
        org_id: &str,
        value: &SettingValue,
    ) -> String {
        let plain = value.to_json();
        if !setting.sensitive {
            return plain;
        }
        sealed_json(
            &self
                .keyring
                .seal(binding(org_id, setting.key), plain.as_bytes()),
        )
    }

    /// The plain `value_json` of a stored row; `None` (logged) when a sealed
    /// value cannot be opened with the configured master keys.
    pub(crate) fn plain_json(&self, row: &SettingRow) -> Option<String> {
        let Some(envelope) = envelope(&row.value_json) else {
            return Some(row.value_json.clone());
        };
        let opened = self
            .keyring
            .open(binding(&row.org_id, &row.key), &envelope)
            .map_err(|error| {
                tracing::error!(key = %row.key, org_id = %row.org_id, %error, "sensitive setting cannot be opened; configure the master key that sealed it");
            })
            .ok()?;
        String::from_utf8(opened.to_vec()).ok()
    }

    /// Every stored row with sealed values opened (rows that cannot be
    /// opened are left out, so their setting shows its fallback).
    pub(crate) async fn plain_settings(&self) -> Result<Vec<SettingRow>> {
        let rows = self.store.list_settings().await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let value_json = self.plain_json(&row)?;
                Some(SettingRow { value_json, ..row })
            })
            .collect())
    }

    /// The master-key fingerprint of every sealed setting value (for the
    /// keyring status).
    pub(crate) async fn sealed_setting_kek_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for row in self.store.list_settings().await? {
            if let Some(envelope) = envelope(&row.value_json) {
                ids.push(memtrace_common::envelope::envelope_kek_id(&envelope)?);
            }
        }
        Ok(ids)
    }

    /// Rewraps sealed setting values still wrapped by an older master key
    /// with the active one (part of master-key rotation). Returns
    /// `(rewrapped, already_current)`.
    pub async fn rewrap_sensitive_settings(&self) -> Result<(u64, u64)> {
        let (mut rewrapped, mut current) = (0, 0);
        for row in self.store.list_settings().await? {
            let Some(envelope) = envelope(&row.value_json) else {
                continue;
            };
            match self
                .keyring
                .rewrap(binding(&row.org_id, &row.key), &envelope)?
            {
                None => current += 1,
                Some(new) => {
                    let change = SettingChange {
                        key: row.key.clone(),
                        org_id: row.org_id.clone(),
                        expected: Some(row.value_json.clone()),
                        new: Some(sealed_json(&new)),
                        at_ms: row.updated_at,
                    };
                    match self
                        .store
                        .apply_setting_changes(&[change], &[], &self.audit_key())
                        .await
                    {
                        Ok(_) => rewrapped += 1,
                        // changed meanwhile: the new value is sealed with the active key
                        Err(StoreError::Conflict(_)) => current += 1,
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
        Ok((rewrapped, current))
    }
}
