//! Rows of the runtime settings and the admin audit trail's listing filter.
//! The audit chain itself (entries, encodings, verification) is
//! `audit_chain`; the SQL lives in `sql/config/`.

/// A stored runtime setting value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingRow {
    pub key: String,
    /// Empty for the global value.
    pub org_id: String,
    /// The typed value, JSON-encoded.
    pub value_json: String,
    pub updated_at: i64,
}

/// One change of a stored setting, applied only while the stored value is
/// still what the caller read (compare-and-swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    pub key: String,
    /// Empty for the global value.
    pub org_id: String,
    /// The stored `value_json` the caller read; `None` when there was no row.
    pub expected: Option<String>,
    /// The new `value_json`; `None` deletes the row.
    pub new: Option<String>,
    pub at_ms: i64,
}

/// Which entries to list (newest first). Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Actions starting with this, e.g. `config.`.
    pub action_prefix: Option<String>,
    /// A setting key: entries whose target is the key (global) or ends in
    /// `/<key>` (any org's override).
    pub key: Option<String>,
    /// Entries whose target is the org or one of its settings (`<org>/…`).
    pub org_id: Option<String>,
    pub actor: Option<String>,
    pub outcome: Option<String>,
    /// Only entries older than this (paging).
    pub before_seq: Option<i64>,
    pub limit: u32,
}
