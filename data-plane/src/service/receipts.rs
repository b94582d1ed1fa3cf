//! Erasure receipts through the data API (`GET /api/v1/erasures/receipts`,
//! `GET /api/v1/erasures/{id}/receipt`, gRPC `ListErasureReceipts`). When
//! an erasure job of the org finishes, the control plane signs its receipt
//! and delivers it into the org's own store (table `erasure_receipts`: the
//! erasure id, the time and the signed receipt as JSON), so a tenant reads
//! it with its own key, from its own data, and checks it offline with
//! `memtracectl erasure verify`. A receipt is readable once Arc flushed it
//! (about 5 s after the job finished). An org's deletion erases its
//! receipts with everything else.

use super::{OrgService, ServiceError};
use crate::query::UnixMicros;
use crate::store::time_micros;
use serde::Serialize;
use serde_json::Value;

/// Most receipts in one answer (and the default).
pub const MAX_RECEIPTS: u32 = 100;

/// One delivered receipt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErasureReceipt {
    pub erasure_id: String,
    /// When the control plane delivered it (RFC 3339).
    pub delivered_at: String,
    /// The signed receipt, as `memtracectl erasure verify` reads it.
    pub receipt: Value,
}

/// An erasure id as the API takes it: `era_` then lowercase letters,
/// digits or `_`, at most 64 bytes.
fn check_erasure_id(id: &str) -> Result<(), ServiceError> {
    let ok = id.len() <= 64
        && id.strip_prefix("era_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "erasure_id",
            "must be an erasure id (era_ then lowercase letters and digits, at most 64 bytes)",
        ))
    }
}

impl OrgService {
    /// The org's delivered receipts, newest first, at most `limit` (1 to
    /// [`MAX_RECEIPTS`]; absent or 0: the maximum); only `erasure_id`'s
    /// when given.
    pub async fn erasure_receipts(
        &self,
        erasure_id: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<ErasureReceipt>, ServiceError> {
        self.check_unbound("erasure receipts")?;
        let limit = match limit {
            None | Some(0) => MAX_RECEIPTS,
            Some(n) if (1..=i64::from(MAX_RECEIPTS)).contains(&n) => n as u32,
            Some(_) => return Err(ServiceError::invalid("limit", "must be between 1 and 100")),
        };
        let erasure_id = erasure_id.filter(|id| !id.is_empty());
        if let Some(id) = erasure_id {
            check_erasure_id(id)?;
        }
        let rows = self.read(|b| b.erasure_receipts(erasure_id, limit)).await?;
        let mut seen = std::collections::HashSet::new();
        let mut receipts = Vec::new();
        for row in rows.into_maps() {
            let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
            // a delivery retried stores one receipt twice: the newest wins
            if id.is_empty() || !seen.insert(id.to_owned()) {
                continue;
            }
            let receipt = row
                .get("receipt_json")
                .and_then(Value::as_str)
                .and_then(|j| serde_json::from_str(j).ok())
                .ok_or_else(|| {
                    ServiceError::Internal(format!("erasure receipt {id} is not JSON"))
                })?;
            let delivered = row.get("time").and_then(time_micros).unwrap_or(0);
            receipts.push(ErasureReceipt {
                erasure_id: id.to_owned(),
                delivered_at: UnixMicros(delivered).to_rfc3339(),
                receipt,
            });
        }
        Ok(receipts)
    }

    /// One erasure's receipt; 404 until it is delivered and readable.
    pub async fn erasure_receipt(&self, erasure_id: &str) -> Result<ErasureReceipt, ServiceError> {
        check_erasure_id(erasure_id)?;
        self.erasure_receipts(Some(erasure_id), Some(1))
            .await?
            .pop()
            .ok_or(ServiceError::NotFound("erasure receipt"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erasure_ids_are_checked() {
        for ok in ["era_0190a0b27c3d7e4f8a1b2c3d4e", "era_1", "era_a_b"] {
            assert!(check_erasure_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "era_",
            "era-1",
            "ERA_1",
            "era_x'y",
            "mem_1",
            &"era_1".repeat(20),
        ] {
            let e = check_erasure_id(bad).unwrap_err().to_string();
            assert!(e.contains("erasure_id"), "{bad}: {e}");
        }
    }
}
