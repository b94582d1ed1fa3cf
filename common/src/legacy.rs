//! Memories the original memtrace wrote into Arc: the same columns as ours
//! but no `id` (and no `expires_at`). Reads give each such row a stable id
//! derived from the row itself, computed in the SQL: `lg_` and the first 32
//! hex digits of the SHA-256 of its `time` (µs since the epoch, in decimal),
//! `agent_id`, `session_id`, `memory_type`, `event_type` and `content`,
//! joined by U+001F. The same row always gets the same id; two rows equal
//! in all of these are one memory (the original wrote such rows only when a
//! write was retried). Clients cannot choose ids with the `lg_` prefix.

/// The prefix of derived ids.
pub const LEGACY_ID_PREFIX: &str = "lg_";

/// Whether `id` is a derived (legacy) id.
pub fn is_legacy_id(id: &str) -> bool {
    id.starts_with(LEGACY_ID_PREFIX)
}

/// The DuckDB expression of a legacy row's id on columns prefixed with `p`
/// (`"v."`, or `""` for an Arc delete's `where`). It names no `id` column,
/// so it also holds in a Parquet file the original wrote alone.
pub fn arc_legacy_id(p: &str) -> String {
    let sep = " || chr(31) || ";
    let fields = [
        "agent_id",
        "session_id",
        "memory_type",
        "event_type",
        "content",
    ]
    .map(|c| format!("{p}{c}"))
    .join(sep);
    format!(
        "'{LEGACY_ID_PREFIX}' || substr(sha256(CAST(epoch_us({p}time) AS VARCHAR){sep}{fields}), 1, 32)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expression_names_the_row_columns_only() {
        let e = arc_legacy_id("v.");
        assert_eq!(
            e,
            "'lg_' || substr(sha256(CAST(epoch_us(v.time) AS VARCHAR) || chr(31) || v.agent_id \
             || chr(31) || v.session_id || chr(31) || v.memory_type || chr(31) || v.event_type \
             || chr(31) || v.content), 1, 32)"
        );
        let bare = arc_legacy_id("");
        let words = bare.split(|c: char| !(c.is_alphanumeric() || c == '_'));
        assert!(!words.clone().any(|w| w == "id"), "no id column: {bare}");
        assert!(words.clone().any(|w| w == "agent_id"));
        assert!(is_legacy_id("lg_0123") && !is_legacy_id("mem_lg_1"));
    }
}
