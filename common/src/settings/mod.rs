//! The typed registry of runtime settings: what the control plane validates
//! and stores, and what workers parse from the state bus.
//!
//! Each [`Setting`] has a key, a [`SettingType`] (with its range), a default,
//! a [`Category`] (applied live, or only at the next restart), whether an org
//! may override it, whether it is locked by default, and whether its value is
//! sensitive (masked in every listing, excluded from exports and from the
//! audit trail). Values are [`SettingValue`]s, encoded as JSON (a number, a
//! boolean or a string) in the database and in published records.
//!
//! Precedence, lowest first: the registry default < a value seeded from the
//! static configuration on the first start ([`seed`]) or set at runtime
//! (global) < a per-org override. [`EffectiveSettings`] resolves it for
//! workers. Every error names the key and the rule, and never echoes a
//! sensitive value.

mod effective;
mod registry;
pub mod seed;

pub use registry::SETTINGS;
pub(crate) use registry::{KIB, LOG_LEVELS, MIB};

pub use effective::{
    DedupSettings, EffectiveSettings, Resolved, Source, TenantLimits, WriteCompression,
    WriteSettings,
};

use crate::error::{CodedError, ErrorCode};
use std::fmt;

/// The type of a setting, with its accepted range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingType {
    /// A whole number in `min..=max`; `unit` names what it counts.
    Integer {
        min: i64,
        max: i64,
        unit: &'static str,
    },
    /// A duration in milliseconds in `min..=max`; accepts `250`, `250ms`, `2s`, `1m`, `1h`.
    DurationMs {
        min: i64,
        max: i64,
    },
    Boolean,
    /// One of a fixed set of lowercase words.
    Enum {
        values: &'static [&'static str],
    },
    /// Free text of at most `max_len` characters, without control characters.
    Text {
        max_len: usize,
    },
}

impl SettingType {
    /// The type's name as shown to operators.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Integer { .. } => "integer",
            Self::DurationMs { .. } => "duration_ms",
            Self::Boolean => "boolean",
            Self::Enum { .. } => "enum",
            Self::Text { .. } => "string",
        }
    }

    /// The accepted range, e.g. `1..=100000 events` or `trace|debug|info`.
    pub fn range(&self) -> String {
        match self {
            Self::Integer { min, max, unit: "" } => format!("{min}..={max}"),
            Self::Integer { min, max, unit } => format!("{min}..={max} {unit}"),
            Self::DurationMs { min, max } => format!("{min}..={max} ms"),
            Self::Boolean => "true|false".to_owned(),
            Self::Enum { values } => values.join("|"),
            Self::Text { max_len } => format!("at most {max_len} characters"),
        }
    }

    /// What a valid value looks like, for error messages.
    pub fn expected(&self) -> String {
        match self {
            Self::Integer {
                min,
                max,
                unit: "bytes",
            } => format!(
                "an integer number of bytes in {min}..={max} (suffixes KiB, MiB, GiB accepted)"
            ),
            Self::Integer { min, max, unit: "" } => format!("an integer in {min}..={max}"),
            Self::Integer { min, max, unit } => format!("an integer in {min}..={max} ({unit})"),
            Self::DurationMs { min, max } => {
                format!("a duration in milliseconds in {min}..={max} (e.g. 250, 250ms, 2s, 1m)")
            }
            Self::Boolean => "a boolean (true or false)".to_owned(),
            Self::Enum { values } => format!("one of {}", values.join(", ")),
            Self::Text { max_len } => {
                format!("text of at most {max_len} characters without control characters")
            }
        }
    }
}

/// When a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Applied by running processes as soon as they see it.
    Hot,
    /// Stored and published at once, applied by each process at its next start.
    RestartRequired,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::RestartRequired => "restart-required",
        }
    }
}

/// A registry default (a `const`-friendly [`SettingValue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    Int(i64),
    Bool(bool),
    Str(&'static str),
}

/// One registered setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub description: &'static str,
    pub ty: SettingType,
    pub default: DefaultValue,
    pub category: Category,
    /// Whether an org may override the global value (only hot settings may).
    pub per_org: bool,
    /// Locked unless `[control_plane] locked_settings` says otherwise.
    pub locked_by_default: bool,
    /// Masked everywhere, never exported, never in the audit trail.
    pub sensitive: bool,
}

impl Setting {
    pub fn default_value(&self) -> SettingValue {
        match self.default {
            DefaultValue::Int(v) => SettingValue::Int(v),
            DefaultValue::Bool(v) => SettingValue::Bool(v),
            DefaultValue::Str(v) => SettingValue::String(v.to_owned()),
        }
    }

    /// Parses an operator's text (`500`, `2s`, `4MiB`, `true`, `debug`).
    pub fn parse(&self, text: &str) -> Result<SettingValue, SettingError> {
        let trimmed = text.trim();
        let value = match self.ty {
            SettingType::Integer { unit, .. } => {
                let parsed = if unit == "bytes" {
                    parse_bytes(trimmed)
                } else {
                    parse_int(trimmed)
                };
                SettingValue::Int(parsed.ok_or_else(|| self.invalid(text))?)
            }
            SettingType::DurationMs { .. } => {
                SettingValue::Int(parse_duration_ms(trimmed).ok_or_else(|| self.invalid(text))?)
            }
            SettingType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => SettingValue::Bool(true),
                "false" | "0" | "no" | "off" => SettingValue::Bool(false),
                _ => return Err(self.invalid(text)),
            },
            SettingType::Enum { .. } => SettingValue::String(trimmed.to_ascii_lowercase()),
            SettingType::Text { .. } => SettingValue::String(trimmed.to_owned()),
        };
        self.validate(&value)?;
        Ok(value)
    }

    /// Decodes a stored or published JSON value and validates it.
    pub fn from_json(&self, json: &str) -> Result<SettingValue, SettingError> {
        let parsed: serde_json::Value =
            serde_json::from_str(json).map_err(|_| self.invalid(json))?;
        let value = SettingValue::from_json_value(&parsed).ok_or_else(|| self.invalid(json))?;
        self.validate(&value)?;
        Ok(value)
    }

    /// Checks type and range.
    pub fn validate(&self, value: &SettingValue) -> Result<(), SettingError> {
        let ok = match (&self.ty, value) {
            (
                SettingType::Integer { min, max, .. } | SettingType::DurationMs { min, max },
                SettingValue::Int(v),
            ) => (*min..=*max).contains(v),
            (SettingType::Boolean, SettingValue::Bool(_)) => true,
            (SettingType::Enum { values }, SettingValue::String(s)) => values.contains(&s.as_str()),
            (SettingType::Text { max_len }, SettingValue::String(s)) => {
                s.chars().count() <= *max_len && !s.chars().any(char::is_control)
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(self.invalid(&value.to_string()))
        }
    }

    /// What to show for `value`: the value, or `***` when sensitive and set.
    pub fn display(&self, value: &SettingValue) -> String {
        if self.sensitive && *value != self.default_value() {
            MASK.to_owned()
        } else {
            value.to_string()
        }
    }

    fn invalid(&self, got: &str) -> SettingError {
        SettingError::Invalid {
            key: self.key.to_owned(),
            expected: self.ty.expected(),
            got: if self.sensitive {
                MASK.to_owned()
            } else {
                got.to_owned()
            },
        }
    }
}

/// What sensitive values are replaced by.
pub const MASK: &str = "***";

/// A typed value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SettingValue {
    Int(i64),
    Bool(bool),
    String(String),
}

impl SettingValue {
    /// The JSON encoding: a number, a boolean or a string.
    pub fn to_json(&self) -> String {
        self.to_json_value().to_string()
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        match self {
            Self::Int(v) => serde_json::Value::from(*v),
            Self::Bool(v) => serde_json::Value::Bool(*v),
            Self::String(v) => serde_json::Value::String(v.clone()),
        }
    }

    /// Untyped decoding; `None` for null, floats, arrays and objects.
    pub fn from_json_value(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::Number(n) => n.as_i64().map(Self::Int),
            serde_json::Value::Bool(b) => Some(Self::Bool(*b)),
            serde_json::Value::String(s) => Some(Self::String(s.clone())),
            _ => None,
        }
    }
}

impl fmt::Display for SettingValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::String(v) => f.write_str(v),
        }
    }
}

/// Why a key or a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown setting {key:?}{}", suggestion(close_matches))]
    Unknown {
        key: String,
        close_matches: Vec<&'static str>,
    },
    #[error("invalid value for {key}: expected {expected}, got {got:?}")]
    Invalid {
        key: String,
        expected: String,
        got: String,
    },
    #[error(
        "setting {key} cannot be overridden per org; per-org settings: {}",
        per_org_keys().join(", ")
    )]
    NotPerOrg { key: String },
    #[error("{origin} ({env}) cannot seed {key}: expected {expected}, got {got:?}")]
    FromStatic {
        origin: &'static str,
        env: &'static str,
        key: &'static str,
        expected: String,
        got: String,
    },
}

fn suggestion(close: &[&'static str]) -> String {
    match close {
        [] => String::new(),
        [one] => format!("; did you mean {one}?"),
        many => format!("; did you mean one of {}?", many.join(", ")),
    }
}

impl CodedError for SettingError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Unknown { .. } => ErrorCode::NotFound,
            Self::Invalid { .. } | Self::NotPerOrg { .. } => ErrorCode::InvalidValue,
            Self::FromStatic { .. } => ErrorCode::InvalidArgument,
        }
    }
}

/// The setting named `key`, or `Unknown` with close matches.
pub fn lookup(key: &str) -> Result<&'static Setting, SettingError> {
    let key = key.trim();
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .ok_or_else(|| SettingError::Unknown {
            key: key.to_owned(),
            close_matches: close_matches(key),
        })
}

/// Parses an operator's text for `key`.
pub fn parse_value(key: &str, text: &str) -> Result<SettingValue, SettingError> {
    lookup(key)?.parse(text)
}

/// Registered keys that look like `key`: prefixes, shared last segments, or
/// within a small edit distance; closest first, at most three.
pub fn close_matches(key: &str) -> Vec<&'static str> {
    let key = key.trim().to_ascii_lowercase();
    if key.is_empty() {
        return Vec::new();
    }
    let budget = (key.chars().count() / 4).max(2);
    let last = key.rsplit('.').next().unwrap_or(&key);
    let mut scored: Vec<(usize, &'static str)> = SETTINGS
        .iter()
        .filter_map(|s| {
            let distance = strsim::levenshtein(&key, s.key);
            let related = (key.len() >= 4 && (s.key.starts_with(&key) || key.starts_with(s.key)))
                || (last.len() >= 4 && s.key.rsplit('.').next() == Some(last));
            (related || distance <= budget).then_some((distance, s.key))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, k)| k).collect()
}

/// Keys an org may override.
pub fn per_org_keys() -> Vec<&'static str> {
    SETTINGS
        .iter()
        .filter(|s| s.per_org)
        .map(|s| s.key)
        .collect()
}

/// The default of `[control_plane] locked_settings`.
pub fn locked_by_default() -> Vec<String> {
    SETTINGS
        .iter()
        .filter(|s| s.locked_by_default)
        .map(|s| s.key.to_owned())
        .collect()
}

/// Checks a list of keys (e.g. `locked_settings`); the first unknown one fails.
pub fn validate_keys<S: AsRef<str>>(keys: &[S]) -> Result<(), SettingError> {
    keys.iter().try_for_each(|k| lookup(k.as_ref()).map(|_| ()))
}

fn parse_int(text: &str) -> Option<i64> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || text.starts_with('_') {
        return None;
    }
    digits.parse().ok()
}

fn split_suffix(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    (text[..at].trim(), text[at..].trim())
}

fn parse_bytes(text: &str) -> Option<i64> {
    let (number, suffix) = split_suffix(text);
    let factor = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => KIB,
        "mib" | "m" => MIB,
        "gib" | "g" => 1024 * MIB,
        _ => return None,
    };
    parse_int(number)?.checked_mul(factor)
}

fn parse_duration_ms(text: &str) -> Option<i64> {
    let (number, suffix) = split_suffix(text);
    let factor = match suffix {
        "" | "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    parse_int(number)?.checked_mul(factor)
}

#[cfg(test)]
mod tests;
