//! Effective values as a worker sees them: the registry default, overridden by
//! the global value, overridden by the org's own value. Every value entering
//! the view is validated; an invalid one is refused and the previous value
//! stays, so a bad record can never crash or misconfigure a worker.

use super::{SettingError, SettingValue, lookup};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    Global,
    Org,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Global => "global",
            Self::Org => "org",
        }
    }
}

/// An effective value and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub value: SettingValue,
    pub source: Source,
}

/// Global values and per-org overrides, layered over the registry defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectiveSettings {
    global: BTreeMap<&'static str, SettingValue>,
    orgs: BTreeMap<String, BTreeMap<&'static str, SettingValue>>,
}

/// `Some("")` means global, as in published records.
fn scope(org_id: Option<&str>) -> Option<&str> {
    org_id.filter(|o| !o.is_empty())
}

impl EffectiveSettings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a global (`org_id` `None` or empty) or per-org value, after
    /// checking the key, the type and range, and that the setting may be
    /// overridden per org.
    pub fn set(
        &mut self,
        org_id: Option<&str>,
        key: &str,
        value: SettingValue,
    ) -> Result<(), SettingError> {
        let setting = lookup(key)?;
        setting.validate(&value)?;
        match scope(org_id) {
            None => {
                self.global.insert(setting.key, value);
            }
            Some(org) => {
                if !setting.per_org {
                    return Err(SettingError::NotPerOrg {
                        key: setting.key.to_owned(),
                    });
                }
                self.orgs
                    .entry(org.to_owned())
                    .or_default()
                    .insert(setting.key, value);
            }
        }
        Ok(())
    }

    /// Applies a published `SettingRecord` value (JSON). Nothing changes on error.
    pub fn apply_json(
        &mut self,
        org_id: Option<&str>,
        key: &str,
        value_json: &str,
    ) -> Result<(), SettingError> {
        let value = lookup(key)?.from_json(value_json)?;
        self.set(org_id, key, value)
    }

    /// Removes a global value or an org override; whether one was there.
    pub fn remove(&mut self, org_id: Option<&str>, key: &str) -> bool {
        match scope(org_id) {
            None => self.global.remove(key).is_some(),
            Some(org) => {
                let Some(values) = self.orgs.get_mut(org) else {
                    return false;
                };
                let removed = values.remove(key).is_some();
                if values.is_empty() {
                    self.orgs.remove(org);
                }
                removed
            }
        }
    }

    /// Drops every override of an org (the org was deleted).
    pub fn remove_org(&mut self, org_id: &str) -> bool {
        self.orgs.remove(org_id).is_some()
    }

    /// The effective value of `key` for `org_id` (or globally).
    pub fn resolve(&self, org_id: Option<&str>, key: &str) -> Result<Resolved, SettingError> {
        let setting = lookup(key)?;
        if let Some(value) = scope(org_id)
            .and_then(|org| self.orgs.get(org))
            .and_then(|values| values.get(setting.key))
        {
            return Ok(Resolved {
                value: value.clone(),
                source: Source::Org,
            });
        }
        Ok(match self.global.get(setting.key) {
            Some(value) => Resolved {
                value: value.clone(),
                source: Source::Global,
            },
            None => Resolved {
                value: setting.default_value(),
                source: Source::Default,
            },
        })
    }

    /// The global values set (not defaults).
    pub fn global_values(&self) -> impl Iterator<Item = (&'static str, &SettingValue)> {
        self.global.iter().map(|(k, v)| (*k, v))
    }

    /// An org's overrides.
    pub fn org_values(&self, org_id: &str) -> impl Iterator<Item = (&'static str, &SettingValue)> {
        self.orgs
            .get(org_id)
            .into_iter()
            .flat_map(|values| values.iter().map(|(k, v)| (*k, v)))
    }

    fn int(&self, org_id: Option<&str>, key: &str) -> u64 {
        match self.resolve(org_id, key).map(|r| r.value) {
            Ok(SettingValue::Int(v)) => u64::try_from(v).unwrap_or(0),
            _ => 0,
        }
    }

    fn flag(&self, org_id: Option<&str>, key: &str) -> bool {
        matches!(
            self.resolve(org_id, key).map(|r| r.value),
            Ok(SettingValue::Bool(true))
        )
    }

    fn text(&self, org_id: Option<&str>, key: &str) -> String {
        match self.resolve(org_id, key).map(|r| r.value) {
            Ok(SettingValue::String(v)) => v,
            _ => String::new(),
        }
    }

    /// How an org's writes are batched.
    pub fn write(&self, org_id: Option<&str>) -> WriteSettings {
        WriteSettings {
            batch_size: self.int(org_id, "arc.write_batch_size"),
            flush_interval: Duration::from_millis(self.int(org_id, "arc.write_flush_interval_ms")),
            linger: Duration::from_millis(self.int(org_id, "arc.write_linger_ms")),
            max_batch_bytes: self.int(org_id, "arc.max_batch_bytes"),
            retry_max_attempts: u32::try_from(self.int(None, "arc.retry_max_attempts"))
                .unwrap_or(0),
            query_timeout: Duration::from_millis(self.int(None, "arc.query_timeout_ms")),
            compression: WriteCompression::from_name(&self.text(org_id, "arc.write_compression")),
            max_inflight_writes: u32::try_from(self.int(org_id, "arc.max_inflight_writes"))
                .unwrap_or(1),
        }
    }

    /// How an org's writes are deduplicated.
    pub fn dedup(&self, org_id: Option<&str>) -> DedupSettings {
        DedupSettings {
            enabled: self.flag(org_id, "dedup.enabled"),
            window: Duration::from_secs(self.int(org_id, "dedup.window_hours") * 3600),
            key_content_bytes: usize::try_from(self.int(None, "dedup.key_content_bytes"))
                .unwrap_or(200),
        }
    }

    /// Whether the org's keys imported from the Go memtrace are accepted.
    pub fn legacy_keys_enabled(&self, org_id: &str) -> bool {
        self.flag(Some(org_id), "auth.legacy_keys_enabled")
    }

    /// How long an org's memories are kept (`None`: until deleted).
    pub fn retention(&self, org_id: Option<&str>) -> Option<Duration> {
        match self.int(org_id, "memories.retention_days") {
            0 => None,
            days => Some(Duration::from_secs(days * 86_400)),
        }
    }

    /// The longest lifetime of a token minted for an org, in seconds.
    pub fn token_max_ttl_seconds(&self, org_id: Option<&str>) -> i64 {
        i64::try_from(self.int(org_id, "tokens.max_ttl_seconds")).unwrap_or(i64::MAX)
    }

    /// An org's admission limits.
    pub fn limits(&self, org_id: Option<&str>) -> TenantLimits {
        TenantLimits {
            requests_per_second: self.int(org_id, "limits.requests_per_second"),
            burst: self.int(org_id, "limits.burst"),
            max_payload_bytes: self.int(org_id, "limits.max_payload_bytes"),
            max_queued_events: self.int(org_id, "limits.max_queued_events"),
            max_concurrent_reads: self.int(org_id, "limits.max_concurrent_reads"),
        }
    }

    /// The process log level (`trace` … `error`).
    pub fn log_level(&self) -> String {
        self.text(None, "log.level")
    }

    /// `telemetry.otlp_endpoint` and `telemetry.otlp_headers` (restart-required).
    pub fn otlp(&self) -> (String, String) {
        (
            self.text(None, "telemetry.otlp_endpoint"),
            self.text(None, "telemetry.otlp_headers"),
        )
    }
}

/// Batching of writes to Arc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSettings {
    pub batch_size: u64,
    pub flush_interval: Duration,
    pub linger: Duration,
    pub max_batch_bytes: u64,
    pub retry_max_attempts: u32,
    pub query_timeout: Duration,
    pub compression: WriteCompression,
    /// Arc writes of the org outstanding at once on one worker.
    pub max_inflight_writes: u32,
}

/// How write bodies to an org's Arc are compressed (`arc.write_compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteCompression {
    /// Zstandard (what Arc's own docs recommend; the default).
    #[default]
    Zstd,
    /// Gzip, for Arc builds that refuse zstd bodies.
    Gzip,
    /// Raw MessagePack.
    None,
}

impl WriteCompression {
    /// The `Content-Encoding` header value, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
            Self::None => None,
        }
    }

    /// The setting's value for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::None => "none",
        }
    }

    fn from_name(name: &str) -> Self {
        match name {
            "gzip" => Self::Gzip,
            "none" => Self::None,
            _ => Self::Zstd,
        }
    }
}

/// Deduplication of writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupSettings {
    pub enabled: bool,
    pub window: Duration,
    pub key_content_bytes: usize,
}

/// Admission limits of one org on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    /// 0 = unlimited.
    pub requests_per_second: u64,
    pub burst: u64,
    pub max_payload_bytes: u64,
    pub max_queued_events: u64,
    /// Reads of the org one worker serves at once.
    pub max_concurrent_reads: u64,
}
