//! The receipt of a finished erasure ([`ErasureReport`]) and the seam its
//! signature goes through ([`ReceiptSigner`]). Signed receipts (Ed25519, in
//! `memtrace_common::receipt`) are wired in one place: an implementation
//! of [`ReceiptSigner`] handed to `ControlPlane::with_erasure` in
//! `startup.rs`; until then [`UnsignedReceipts`] stores the report as JSON.

use serde::Serialize;
use std::collections::BTreeMap;

/// Where a job ran: never a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErasureTarget {
    /// Host (and port) of the Arc URL, without path or credentials.
    pub host: String,
    pub database: String,
    pub measurement: String,
}

/// One table's verification: the count query run after the deletes and
/// how many covered rows it still found (0 for a done job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TableVerification {
    pub query: String,
    pub remaining: u64,
}

/// What a done erasure reports (and the receipt signs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    pub erasure_id: String,
    pub org_id: String,
    pub target: ErasureTarget,
    /// The scope as stored (`{"memory_ids": […]}`, `{"filter": {…}}`,
    /// `{"whole_org": true}`).
    pub scope: serde_json::Value,
    pub requested_by: String,
    pub requested_at_micros: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Rows Arc reported deleted, per table, over every delete of the job.
    pub rows_removed: BTreeMap<String, u64>,
    pub verification: BTreeMap<String, TableVerification>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot sign the erasure receipt: {0}")]
pub struct ReceiptError(pub String);

/// Turns a report into the stored receipt (JSON). Async, so a signer that
/// reads its key from the database (and creates it on first need) fits.
#[async_trait::async_trait]
pub trait ReceiptSigner: Send + Sync {
    async fn sign(&self, report: &ErasureReport) -> Result<serde_json::Value, ReceiptError>;
}

/// Stores the report unsigned (`"signature": null`), until the receipt
/// signer is wired.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnsignedReceipts;

#[async_trait::async_trait]
impl ReceiptSigner for UnsignedReceipts {
    async fn sign(&self, report: &ErasureReport) -> Result<serde_json::Value, ReceiptError> {
        let report = serde_json::to_value(report).map_err(|e| ReceiptError(e.to_string()))?;
        Ok(serde_json::json!({"report": report, "signature": null}))
    }
}
