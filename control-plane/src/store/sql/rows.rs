//! Decoding of [`SqlStore`](super::SqlStore) result rows into store types
//! (org summaries, arc bindings, api keys, admin tokens), the column lists and select
//! shared by several queries, and unique-violation detection.

use crate::store::{
    AdminTokenRow, ApiKeyRow, ArcBindingRow, LegacyKeyHash, OrgRow, OrgSummary, StoreError,
    StoreResult,
};
use sqlx::Row;
use sqlx::any::AnyRow;

pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

pub(super) fn org_summary(row: &AnyRow) -> StoreResult<OrgSummary> {
    let keys: i64 = row.try_get("key_count")?;
    Ok(OrgSummary {
        org: OrgRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        },
        has_arc_binding: row.try_get::<i64, _>("arc_count")? > 0,
        active_api_keys: u32::try_from(keys)
            .map_err(|_| StoreError::Corrupt("key count".into()))?,
    })
}

pub(super) fn arc_binding(row: &AnyRow) -> StoreResult<ArcBindingRow> {
    Ok(ArcBindingRow {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        url: row.try_get("url")?,
        database: row.try_get("database_name")?,
        measurement: row.try_get("measurement")?,
        api_key_envelope: row.try_get("api_key_envelope")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn api_key(row: &AnyRow) -> StoreResult<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        key_hash: row.try_get("key_hash")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        legacy: match (
            row.try_get::<Option<String>, _>("legacy_bcrypt_hash")?,
            row.try_get::<Option<String>, _>("legacy_prefix")?,
        ) {
            (Some(bcrypt_hash), Some(prefix)) => Some(LegacyKeyHash {
                bcrypt_hash,
                prefix,
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Corrupt(
                    "api key with half a legacy hash".into(),
                ));
            }
        },
    })
}

pub(super) fn admin_token(row: &AnyRow) -> StoreResult<AdminTokenRow> {
    Ok(AdminTokenRow {
        id: row.try_get("id")?,
        token_hash: row.try_get("token_hash")?,
        fingerprint: row.try_get("fingerprint")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(super) const ORG_SUMMARY_SELECT: &str = "SELECT o.id, o.name, o.created_at, \
     (SELECT COUNT(*) FROM arc_bindings a WHERE a.org_id = o.id) AS arc_count, \
     (SELECT COUNT(*) FROM api_keys k WHERE k.org_id = o.id AND k.revoked_at IS NULL \
        AND (k.expires_at IS NULL OR k.expires_at > $1)) AS key_count \
     FROM orgs o";

pub(super) const API_KEY_COLUMNS: &str = "id, org_id, name, key_hash, scopes, created_at, expires_at, last_used_at, revoked_at, \
     legacy_bcrypt_hash, legacy_prefix";

pub(super) const ARC_BINDING_COLUMNS: &str =
    "id, org_id, url, database_name, measurement, api_key_envelope, created_at, updated_at";
pub(super) const ADMIN_TOKEN_COLUMNS: &str =
    "id, token_hash, fingerprint, name, role, created_at, expires_at, last_used_at, revoked_at";
