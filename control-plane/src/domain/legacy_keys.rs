//! Imports from the Go memtrace (`memtracectl import legacy`): its API keys,
//! stored by the Go server's bcrypt hash and lookup prefix — the key itself
//! is never known here — and published so workers accept the key in its
//! old format (`memtrace_common::legacy_keys`); and the audit entry of what the
//! import wrote straight to an org's Arc.

use super::audit::{AuditOutcome, audit_record};
use super::types::{OrgId, Scopes};
use super::{ControlPlane, Published};
use crate::auth::AdminActor;
use crate::error::{ControlPlaneError, Result};
use crate::store::{ApiKeyRow, AuditWith, LegacyKeyHash};
use memtrace_common::clock::now_ms;
use memtrace_common::legacy_keys::{is_bcrypt_hash, is_legacy_prefix, legacy_key_id};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A validated import of one Go memtrace key.
#[derive(Debug, Clone)]
pub struct LegacyKeySpec {
    pub org_id: OrgId,
    pub name: String,
    pub scopes: Scopes,
    pub hash: LegacyKeyHash,
    /// ms since the epoch; `None`: now.
    pub created_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl LegacyKeySpec {
    pub fn parse<S: AsRef<str>>(
        org_id: &str,
        name: &str,
        scopes: &[S],
        bcrypt_hash: &str,
        key_prefix: &str,
    ) -> Result<Self> {
        if !is_bcrypt_hash(bcrypt_hash) {
            return Err(ControlPlaneError::invalid(
                "bcrypt_hash",
                "must be a bcrypt hash ($2a$, $2b$ or $2y$, a cost, 53 characters of salt and hash)",
            ));
        }
        if !is_legacy_prefix(key_prefix) {
            return Err(ControlPlaneError::invalid(
                "key_prefix",
                "must be 16 lowercase hex characters (the first 16 of the key's SHA-256)",
            ));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(ControlPlaneError::invalid(
                "name",
                "must be 1 to 64 characters without control characters",
            ));
        }
        Ok(Self {
            org_id: OrgId::parse(org_id)?,
            name: name.to_owned(),
            scopes: Scopes::parse(scopes)?,
            hash: LegacyKeyHash {
                bcrypt_hash: bcrypt_hash.to_owned(),
                prefix: key_prefix.to_owned(),
            },
            created_at: None,
            expires_at: None,
        })
    }
}

/// The `key_hash` of an imported key: a domain-separated hash of its bcrypt
/// hash (unique per key, and no presented key hashes to it).
fn placeholder_hash(bcrypt_hash: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"memtrace/legacy-api-key/v1\0");
    h.update(bcrypt_hash.as_bytes());
    h.finalize().to_vec()
}

impl ControlPlane {
    /// Imports a Go memtrace key; ALREADY_EXISTS when its id is taken.
    pub async fn import_legacy_api_key(
        &self,
        actor: &AdminActor,
        spec: &LegacyKeySpec,
    ) -> Result<Published<ApiKeyRow>> {
        self.get_org(&spec.org_id).await?;
        let id = legacy_key_id(&spec.hash.prefix);
        if self.store.get_api_key(&id).await?.is_some() {
            return Err(ControlPlaneError::AlreadyExists(format!(
                "api key {id} exists (imported before)"
            )));
        }
        let row = ApiKeyRow {
            id,
            org_id: spec.org_id.as_str().to_owned(),
            name: spec.name.clone(),
            key_hash: placeholder_hash(&spec.hash.bcrypt_hash),
            scopes: spec.scopes.to_csv(),
            created_at: spec.created_at.unwrap_or_else(now_ms),
            expires_at: spec.expires_at,
            last_used_at: None,
            revoked_at: None,
            legacy: Some(spec.hash.clone()),
        };
        let audit = |row: &ApiKeyRow| {
            let details = json!({"org_id": row.org_id, "name": row.name, "scopes": row.scopes,
                "expires_at_ms": row.expires_at, "legacy": true});
            audit_record(
                actor,
                "key.import_legacy",
                &row.id,
                AuditOutcome::Ok,
                details,
            )
        };
        let audit_key = self.audit_key();
        self.store
            .insert_api_key(&row, AuditWith::new(&audit_key, &audit))
            .await?;
        tracing::info!(key_id = %row.id, org_id = %row.org_id, "legacy api key imported");
        let revision = self.publish(vec![self.api_key_put(&row)]).await;
        Ok(Published {
            value: row,
            revision,
        })
    }
}

/// What an import wrote straight to an org's Arc (agents and sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArcImportCounts {
    pub agents_imported: u32,
    pub sessions_imported: u32,
    pub agents_skipped: u32,
    pub sessions_skipped: u32,
}

impl ControlPlane {
    /// Audits `counts` as `import.legacy_state` of `org`; the entry's seq.
    pub async fn record_legacy_import(
        &self,
        actor: &AdminActor,
        org: &OrgId,
        counts: ArcImportCounts,
    ) -> Result<i64> {
        self.get_org(org).await?;
        let details = json!({
            "agents_imported": counts.agents_imported,
            "sessions_imported": counts.sessions_imported,
            "agents_skipped": counts.agents_skipped,
            "sessions_skipped": counts.sessions_skipped,
        });
        let entry = self
            .append_audit_entry(
                actor,
                "import.legacy_state",
                org.as_str(),
                AuditOutcome::Ok,
                details,
            )
            .await?;
        Ok(entry.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_the_field_they_refuse() {
        let hash = "$2a$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234";
        let ok = LegacyKeySpec::parse("org_a", "k", &["read"], hash, "0123456789abcdef");
        assert!(ok.is_ok());
        let bad_hash = LegacyKeySpec::parse("org_a", "k", &["read"], "plain", "0123456789abcdef");
        assert!(bad_hash.unwrap_err().to_string().contains("bcrypt_hash"));
        let bad_prefix = LegacyKeySpec::parse("org_a", "k", &["read"], hash, "XYZ");
        assert!(bad_prefix.unwrap_err().to_string().contains("key_prefix"));
        assert_ne!(
            placeholder_hash(hash),
            placeholder_hash(&hash.replace('a', "b"))
        );
    }
}
