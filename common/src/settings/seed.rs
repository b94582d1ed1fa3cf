//! Which static settings (`memtrace.toml`, `MEMTRACE_<SECTION>_<KEY>`) seed
//! which runtime settings. The control plane applies the plan once, on the
//! first start of a database; afterwards the database wins and the static
//! values are only compared, never written.

use super::{LOG_LEVELS, Setting, SettingError, SettingValue, lookup};
use crate::config::MemtraceConfig;

/// One static key and the runtime setting it seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticSource {
    /// As written in the file, e.g. `[arc] write_batch_size`.
    pub origin: &'static str,
    /// The variable that overrides it.
    pub env: &'static str,
    /// The runtime setting it seeds.
    pub key: &'static str,
}

/// Every static key that seeds a runtime setting.
pub const SOURCES: &[StaticSource] = &[
    StaticSource {
        origin: "[arc] write_batch_size",
        env: "MEMTRACE_ARC_WRITE_BATCH_SIZE",
        key: "arc.write_batch_size",
    },
    StaticSource {
        origin: "[arc] write_flush_interval_ms",
        env: "MEMTRACE_ARC_WRITE_FLUSH_INTERVAL_MS",
        key: "arc.write_flush_interval_ms",
    },
    StaticSource {
        origin: "[arc] query_timeout",
        env: "MEMTRACE_ARC_QUERY_TIMEOUT",
        key: "arc.query_timeout_ms",
    },
    StaticSource {
        origin: "[dedup] enabled",
        env: "MEMTRACE_DEDUP_ENABLED",
        key: "dedup.enabled",
    },
    StaticSource {
        origin: "[dedup] window_hours",
        env: "MEMTRACE_DEDUP_WINDOW_HOURS",
        key: "dedup.window_hours",
    },
    StaticSource {
        origin: "[log] level",
        env: "MEMTRACE_LOG_LEVEL",
        key: "log.level",
    },
];

/// A runtime value taken from the static configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedValue {
    pub setting: &'static Setting,
    pub value: SettingValue,
    pub source: StaticSource,
}

impl SeedValue {
    /// Whether the static value differs from the registry default.
    pub fn is_default(&self) -> bool {
        self.value == self.setting.default_value()
    }
}

/// The static values mapped onto runtime settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedPlan {
    /// One per [`SOURCES`] entry that could be mapped.
    pub values: Vec<SeedValue>,
    /// Why a static value was not used (it is valid statically but has no
    /// runtime equivalent, e.g. a log filter directive).
    pub skipped: Vec<String>,
}

impl SeedPlan {
    /// The values worth writing: those that differ from the defaults.
    pub fn non_default(&self) -> impl Iterator<Item = &SeedValue> {
        self.values.iter().filter(|v| !v.is_default())
    }
}

/// Maps the static configuration; a static value outside the runtime range
/// fails, naming the file key and the variable.
pub fn plan(config: &MemtraceConfig) -> Result<SeedPlan, SettingError> {
    let mut plan = SeedPlan::default();
    for source in SOURCES {
        let setting = lookup(source.key)?;
        let raw: Option<SettingValue> = match source.key {
            "arc.write_batch_size" => Some(int(config.arc.write_batch_size)),
            "arc.write_flush_interval_ms" => Some(int(config.arc.write_flush_interval_ms)),
            "arc.query_timeout_ms" => Some(int(config.arc.query_timeout.saturating_mul(1000))),
            "dedup.enabled" => Some(SettingValue::Bool(config.dedup.enabled)),
            "dedup.window_hours" => Some(int(config.dedup.window_hours)),
            "log.level" => {
                let level = config.log.level.trim().to_ascii_lowercase();
                if LOG_LEVELS.contains(&level.as_str()) {
                    Some(SettingValue::String(level))
                } else {
                    plan.skipped.push(format!(
                        "{} ({}) {:?} is a filter directive, not one of {}; log.level keeps its default",
                        source.origin,
                        source.env,
                        config.log.level,
                        LOG_LEVELS.join(", ")
                    ));
                    None
                }
            }
            _ => None,
        };
        let Some(value) = raw else { continue };
        setting
            .validate(&value)
            .map_err(|_| SettingError::FromStatic {
                origin: source.origin,
                env: source.env,
                key: setting.key,
                expected: setting.ty.expected(),
                got: value.to_string(),
            })?;
        plan.values.push(SeedValue {
            setting,
            value,
            source: *source,
        });
    }
    Ok(plan)
}

fn int(value: u64) -> SettingValue {
    SettingValue::Int(i64::try_from(value).unwrap_or(i64::MAX))
}
