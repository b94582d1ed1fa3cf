//! Per-memory expiry: `ttl` (seconds) or `expires_at` (RFC 3339) on create,
//! stored as the `expires_at` column (µs since the epoch, 0: never). Every
//! memory read hides expired rows at once (`QueryBuilder`'s unexpired
//! predicate); the control plane's sweep erases them with the erasure
//! machinery.
//!
//! Arc has no schema: a measurement whose Parquet files all predate the
//! column answers any read naming `expires_at` with a binder error. Such a
//! read is retried without the column (exact: no row can expire), and
//! [`ColumnRows::ensure`] writes the org one row carrying the column —
//! `id` and content empty, so no read ever shows it (every memory read
//! requires a non-empty id) — so that after Arc's next flush one statement
//! suffices again. A measurement only the original memtrace wrote lacks
//! `id` too, and the same row gives it that column. Once per org per
//! worker; the set is bounded.

use super::ServiceError;
use crate::query::{OrgId, UnixMicros};
use crate::store::{MemoryRow, TenantStore};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Longest `ttl`, and latest `expires_at` from now: 100 years (seconds).
pub const MAX_TTL_SECONDS: i64 = 100 * 365 * 24 * 3600;

/// Orgs tracked at most; past it the set starts over (an org is then at
/// worst given a second column row).
const MAX_ORGS: usize = 100_000;

/// The orgs this worker wrote a column row for: one row carrying every
/// memory column, so a measurement that lacked `expires_at` (or, written by
/// the original memtrace alone, `id`) has it after Arc's next flush.
#[derive(Debug, Default)]
pub struct ColumnRows {
    written: Mutex<HashSet<String>>,
}

impl ColumnRows {
    /// Writes `org` one column row into its memory and version tables, in
    /// the background, unless this worker already did.
    pub fn ensure(self: &Arc<Self>, store: &Arc<dyn TenantStore>, org: &OrgId) {
        {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            if written.len() >= MAX_ORGS {
                written.clear();
            }
            if !written.insert(org.as_str().to_owned()) {
                return;
            }
        }
        let (this, store, org) = (self.clone(), store.clone(), org.as_str().to_owned());
        tokio::spawn(async move {
            let row = column_row(&org, UnixMicros::now().0);
            let rows = std::slice::from_ref(&row);
            let (memories, versions) =
                tokio::join!(store.append_memories(rows), store.append_versions(rows));
            match memories.and(versions) {
                Ok(()) => {
                    tracing::info!(org_id = %org, "memory tables given the expires_at column")
                }
                Err(error) => {
                    tracing::warn!(org_id = %org, %error, "cannot write the expires_at column row; the next read that needs it retries");
                    this.written
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&org);
                }
            }
        });
    }
}

/// The row that gives an org's memory table the `expires_at` column: no
/// id, no content, never shown by a read.
fn column_row(org: &str, now: i64) -> MemoryRow {
    MemoryRow {
        time: now,
        org_id: org.into(),
        metadata_json: super::rows::EMPTY_OBJECT.into(),
        ..MemoryRow::default()
    }
}

/// A create's expiry (µs since the epoch; `None`: never) from its `ttl`
/// (seconds, 1 to [`MAX_TTL_SECONDS`]) or `expires_at` (RFC 3339, after
/// `now` and at most [`MAX_TTL_SECONDS`] ahead); both at once is refused.
pub fn parse_expiry(
    ttl: Option<i64>,
    expires_at: Option<&str>,
    now: UnixMicros,
) -> Result<Option<UnixMicros>, ServiceError> {
    const MICROS: i64 = 1_000_000;
    let latest = now.0.saturating_add(MAX_TTL_SECONDS * MICROS);
    match (ttl, expires_at.filter(|s| !s.is_empty())) {
        (Some(_), Some(_)) => Err(ServiceError::invalid(
            "ttl",
            "give either ttl or expires_at, not both",
        )),
        (Some(ttl), None) => {
            if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
                return Err(ServiceError::invalid(
                    "ttl",
                    "must be a number of seconds between 1 and 3153600000 (100 years)",
                ));
            }
            Ok(Some(UnixMicros(now.0.saturating_add(ttl * MICROS))))
        }
        (None, Some(text)) => {
            let at = UnixMicros::parse_rfc3339(text).ok_or_else(|| {
                ServiceError::invalid(
                    "expires_at",
                    "must be an RFC 3339 time such as 2026-12-31T23:59:59Z",
                )
            })?;
            if at.0 <= now.0 {
                return Err(ServiceError::invalid("expires_at", "must be in the future"));
            }
            if at.0 > latest {
                return Err(ServiceError::invalid(
                    "expires_at",
                    "must be at most 100 years ahead",
                ));
            }
            Ok(Some(at))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMicros = UnixMicros(1_800_000_000_000_000);

    #[test]
    fn ttl_and_expires_at_are_checked() {
        assert_eq!(parse_expiry(None, None, NOW).unwrap(), None);
        assert_eq!(
            parse_expiry(Some(60), None, NOW).unwrap(),
            Some(UnixMicros(NOW.0 + 60_000_000))
        );
        let at = UnixMicros(NOW.0 + 3_600_000_000);
        assert_eq!(
            parse_expiry(None, Some(&at.to_rfc3339()), NOW).unwrap(),
            Some(at)
        );
        assert_eq!(parse_expiry(None, Some(""), NOW).unwrap(), None);
        for (ttl, at, field, rule) in [
            (Some(0), None, "ttl", "between 1 and"),
            (Some(-5), None, "ttl", "between 1 and"),
            (Some(MAX_TTL_SECONDS + 1), None, "ttl", "between 1 and"),
            (Some(5), Some("2030-01-01T00:00:00Z"), "ttl", "not both"),
            (None, Some("tomorrow"), "expires_at", "RFC 3339"),
            (None, Some("2020-01-01T00:00:00Z"), "expires_at", "future"),
            (
                None,
                Some("2300-01-01T00:00:00Z"),
                "expires_at",
                "100 years",
            ),
        ] {
            let e = parse_expiry(ttl, at, NOW).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(rule), "{ttl:?} {at:?}: {e}");
        }
    }

    #[test]
    fn the_column_row_is_never_a_memory() {
        let row = column_row("org_a", NOW.0);
        assert!(row.id.is_empty(), "reads require a non-empty id");
        assert_eq!(&*row.org_id, "org_a");
        assert_eq!(row.expires_at, 0);
        assert!(row.content.is_empty());
    }
}
