//! Authenticating, decoding and validating published records
//! (`memtrace.state.v1`) into the worker's entries. Every record must verify
//! under the fleet key first (`memtrace_common::state::open_record`): etcd
//! is not trusted. Arc keys are opened with the fleet key here, once per
//! change, never per request.

use memtrace_common::envelope::Binding;
use memtrace_common::fleet::FleetKeyring;
use memtrace_common::state::{RECORD_SCHEMA, StateKey, open_record};
use memtrace_proto::state::v1 as state;
use prost::Message;
use zeroize::Zeroizing;

/// Purpose the control plane binds into an Arc key's seal.
const ARC_KEY_PURPOSE: &str = "arc.api_key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgEntry {
    pub name: String,
    pub deleted: bool,
}

/// Where an org's memories go.
pub struct ArcRoute {
    pub binding_id: String,
    pub url: String,
    pub database: String,
    pub measurement: String,
    pub api_key: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for ArcRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcRoute")
            .field("binding_id", &self.binding_id)
            .field("url", &self.url)
            .field("database", &self.database)
            .field("measurement", &self.measurement)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A data-plane API key as workers check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyEntry {
    pub org_id: String,
    pub hash: [u8; 32],
    pub read: bool,
    pub write: bool,
    pub admin: bool,
    /// 0 = never.
    pub expires_at_ms: i64,
    pub revoked: bool,
    /// The bcrypt hash of a key imported from the Go memtrace, checked
    /// instead of `hash` (`admission::legacy`); `None` for our own keys.
    pub legacy_bcrypt: Option<String>,
}

impl ApiKeyEntry {
    /// A read-write key of `org_id` imported from the Go memtrace, checked
    /// by `bcrypt_hash` (never expires, not revoked).
    pub fn imported(org_id: &str, bcrypt_hash: String) -> Self {
        Self {
            org_id: org_id.to_owned(),
            hash: [0; 32],
            read: true,
            write: true,
            admin: false,
            expires_at_ms: 0,
            revoked: false,
            legacy_bcrypt: Some(bcrypt_hash),
        }
    }

    /// Usable at `now_ms`: not revoked and not expired (expiry is strict).
    pub fn usable_at(&self, now_ms: i64) -> bool {
        !self.revoked && (self.expires_at_ms == 0 || now_ms < self.expires_at_ms)
    }
}

/// A public key the control plane signs erasure receipts with, as workers
/// serve it to tenants (`GET /api/v1/erasures/keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptKeyEntry {
    pub public_key: [u8; 32],
    pub created_at_ms: i64,
    /// 0: the current key.
    pub retired_at_ms: i64,
}

/// A decoded record.
#[derive(Debug)]
pub enum Record {
    Org(OrgEntry),
    Route(ArcRoute),
    ApiKey(ApiKeyEntry),
    /// An agent-token public key (Ed25519).
    TokenKey([u8; 32]),
    /// An erasure-receipt public key.
    ReceiptKey(ReceiptKeyEntry),
    /// A setting's JSON value.
    Setting(String),
    Erasure(crate::erasure::Erasure),
    Marker,
}

/// Why a stored value was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Not written by a holder of the fleet key (or altered, or moved):
    /// ignored, the previous good value stays.
    Unauthenticated(String),
    /// Authentic, but this worker cannot use it (a newer schema, an unknown
    /// scope, a malformed field).
    Invalid(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unauthenticated(reason) => write!(f, "unauthenticated: {reason}"),
            Self::Invalid(reason) => write!(f, "invalid: {reason}"),
        }
    }
}

fn check_schema(schema: u32) -> Result<(), String> {
    if schema == RECORD_SCHEMA {
        Ok(())
    } else {
        Err(format!(
            "unknown record schema {schema} (this worker understands {RECORD_SCHEMA})"
        ))
    }
}

/// Authenticates and decodes the value stored at `key`, whose path relative
/// to the state prefix is `path`.
pub fn decode(
    key: &StateKey,
    path: &str,
    value: &[u8],
    fleet: &FleetKeyring,
) -> Result<Record, Rejected> {
    if matches!(key, StateKey::PublishedMarker | StateKey::ReconciledMarker) {
        return Ok(Record::Marker);
    }
    let record =
        open_record(fleet, path, value).map_err(|e| Rejected::Unauthenticated(e.to_string()))?;
    decode_record(key, record, fleet).map_err(Rejected::Invalid)
}

/// Decodes an authenticated record.
fn decode_record(key: &StateKey, value: &[u8], fleet: &FleetKeyring) -> Result<Record, String> {
    let bad = |e: prost::DecodeError| format!("not a valid record: {e}");
    match key {
        StateKey::Org { org_id } => {
            let record = state::OrgRecord::decode(value).map_err(bad)?;
            check_schema(record.schema)?;
            if &record.org_id != org_id {
                return Err(format!(
                    "record names org {:?} under the key of {org_id:?}",
                    record.org_id
                ));
            }
            Ok(Record::Org(OrgEntry {
                name: record.name,
                deleted: record.deleted,
            }))
        }
        StateKey::ArcRoute { org_id } => {
            let record = state::ArcRouteRecord::decode(value).map_err(bad)?;
            check_schema(record.schema)?;
            if &record.org_id != org_id {
                return Err(format!(
                    "route names org {:?} under the key of {org_id:?}",
                    record.org_id
                ));
            }
            if !(record.url.starts_with("http://") || record.url.starts_with("https://")) {
                return Err("route url is not http(s)".into());
            }
            let api_key = if record.sealed_api_key.is_empty() {
                None
            } else {
                let binding = Binding {
                    org_id,
                    record_id: &record.binding_id,
                    purpose: ARC_KEY_PURPOSE,
                };
                // sealed for this URL and database only
                let route = [record.url.as_str(), record.database.as_str()];
                let plain = fleet
                    .open(
                        &record.fleet_key_id,
                        binding,
                        &route,
                        &record.sealed_api_key,
                    )
                    .map_err(|e| format!("arc key cannot be opened with the fleet key: {e}"))?;
                let text = String::from_utf8(plain.to_vec())
                    .map_err(|_| "arc key is not utf-8".to_owned())?;
                Some(Zeroizing::new(text))
            };
            Ok(Record::Route(ArcRoute {
                binding_id: record.binding_id,
                url: record.url,
                database: record.database,
                measurement: record.measurement,
                api_key,
            }))
        }
        StateKey::ApiKey { key_id } => {
            let record = state::ApiKeyRecord::decode(value).map_err(bad)?;
            check_schema(record.schema)?;
            if &record.key_id != key_id {
                return Err(format!(
                    "record names key {:?} under the key of {key_id:?}",
                    record.key_id
                ));
            }
            let hash: [u8; 32] = record
                .key_hash
                .as_slice()
                .try_into()
                .map_err(|_| "key hash is not 32 bytes".to_owned())?;
            let mut entry = ApiKeyEntry {
                org_id: record.org_id,
                hash,
                read: false,
                write: false,
                admin: false,
                expires_at_ms: record.expires_at_ms,
                revoked: record.revoked,
                legacy_bcrypt: legacy_bcrypt(
                    key_id,
                    record.legacy_bcrypt_hash,
                    &record.legacy_prefix,
                )?,
            };
            for scope in &record.scopes {
                match scope.as_str() {
                    "read" => entry.read = true,
                    "write" => entry.write = true,
                    "admin" => entry.admin = true,
                    other => return Err(format!("unknown scope {other:?}")),
                }
            }
            Ok(Record::ApiKey(entry))
        }
        StateKey::TokenKey { key_id } | StateKey::ReceiptKey { key_id } => {
            let record = state::TokenKeyRecord::decode(value).map_err(bad)?;
            check_schema(record.schema)?;
            if &record.key_id != key_id {
                return Err(format!(
                    "record names signing key {:?} under the key of {key_id:?}",
                    record.key_id
                ));
            }
            let public_key: [u8; 32] = record
                .public_key
                .as_slice()
                .try_into()
                .map_err(|_| "signing public key is not 32 bytes".to_owned())?;
            if matches!(key, StateKey::ReceiptKey { .. }) {
                return Ok(Record::ReceiptKey(ReceiptKeyEntry {
                    public_key,
                    created_at_ms: record.created_at_ms,
                    retired_at_ms: record.retired_at_ms,
                }));
            }
            Ok(Record::TokenKey(public_key))
        }
        StateKey::GlobalSetting { key: name } | StateKey::OrgSetting { key: name, .. } => {
            let record = state::SettingRecord::decode(value).map_err(bad)?;
            check_schema(record.schema)?;
            if &record.key != name {
                return Err(format!(
                    "record names setting {:?} under the key of {name:?}",
                    record.key
                ));
            }
            // validate exactly as applying will: key, type, range, per-org
            let mut probe = memtrace_common::settings::EffectiveSettings::new();
            let org = match key {
                StateKey::OrgSetting { org_id, .. } => Some(org_id.as_str()),
                _ => None,
            };
            probe
                .apply_json(org, name, &record.value_json)
                .map_err(|e| format!("invalid setting value: {e}"))?;
            Ok(Record::Setting(record.value_json))
        }
        StateKey::PublishedMarker | StateKey::ReconciledMarker => Ok(Record::Marker),
        StateKey::Worker { .. } => Err("worker registrations are not published state".into()),
        StateKey::Erasure { org_id, erasure_id } => {
            let record = state::ErasureRecord::decode(value).map_err(bad)?;
            check_schema(record.schema)?;
            crate::erasure::Erasure::from_record(org_id, erasure_id, record).map(Record::Erasure)
        }
    }
}

/// The bcrypt hash of an imported Go memtrace key, checked against its id
/// (`key_<prefix>`); `None` when the record is one of our own keys.
fn legacy_bcrypt(key_id: &str, hash: String, prefix: &str) -> Result<Option<String>, String> {
    if hash.is_empty() && prefix.is_empty() {
        return Ok(None);
    }
    if !memtrace_common::legacy_keys::is_bcrypt_hash(&hash) {
        return Err("legacy_bcrypt_hash is not a bcrypt hash".into());
    }
    if memtrace_common::legacy_keys::legacy_key_id(prefix) != key_id {
        return Err(format!(
            "legacy_prefix {prefix:?} is not the prefix of key {key_id:?}"
        ));
    }
    Ok(Some(hash))
}
