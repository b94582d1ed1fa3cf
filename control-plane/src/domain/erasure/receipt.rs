//! The receipt of a finished erasure ([`ErasureReport`]) and the seam its
//! signature goes through ([`ReportSigner`]): the control plane's receipt
//! signing key (`domain::receipts::ReceiptSigner`, Ed25519 receipts of
//! `memtrace_common::receipt`) is handed to `ControlPlane::with_erasure` in
//! `startup.rs`, the one place it is wired; [`UnsignedReceipts`] (the
//! report as JSON, no signature) serves unit tests.

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
pub trait ReportSigner: Send + Sync {
    async fn sign(&self, report: &ErasureReport) -> Result<serde_json::Value, ReceiptError>;
}

/// Stores the report unsigned (`"signature": null`), until the receipt
/// signer is wired.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnsignedReceipts;

#[async_trait::async_trait]
impl ReportSigner for UnsignedReceipts {
    async fn sign(&self, report: &ErasureReport) -> Result<serde_json::Value, ReceiptError> {
        let report = serde_json::to_value(report).map_err(|e| ReceiptError(e.to_string()))?;
        Ok(serde_json::json!({"report": report, "signature": null}))
    }
}

/// A report as the receipt `memtrace_common::receipt` signs: the scope in
/// its `{"kind": …}` form, times as instants, one receipt id per erasure.
pub(crate) fn receipt_of(
    report: &ErasureReport,
) -> Result<memtrace_common::receipt::Receipt, ReceiptError> {
    use memtrace_common::receipt::{self as r, Receipt};
    use serde_json::{Value, json};
    let instant_ms = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms).map_err(|e| ReceiptError(format!("time {ms}: {e}")))
    };
    let scope = &report.scope;
    let kind = if let Some(ids) = scope.get("memory_ids") {
        json!({"kind": "memory_ids", "ids": ids})
    } else if let Some(ids) = scope.get("superseded_ids") {
        json!({"kind": "superseded_versions", "ids": ids})
    } else if let Some(Value::Object(f)) = scope.get("filter") {
        let mut kind = f.clone();
        kind.insert("kind".into(), json!("filter"));
        Value::Object(kind)
    } else if scope["whole_org"].as_bool() == Some(true) {
        json!({"kind": "org"})
    } else if scope["expired"].as_bool() == Some(true) {
        json!({"kind": "expired"})
    } else {
        return Err(ReceiptError(format!("unknown scope {scope}")));
    };
    let target = if report.target.host == "embedded" {
        r::ErasureTarget::Embedded
    } else {
        r::ErasureTarget::Arc {
            url_host: report.target.host.clone(),
            database: report.target.database.clone(),
            measurements: report.rows_removed.keys().cloned().collect(),
        }
    };
    Ok(Receipt {
        receipt_id: format!("rcpt_{}", report.erasure_id.trim_start_matches("era_")),
        erasure_id: report.erasure_id.clone(),
        org_id: report.org_id.clone(),
        target,
        scope: kind,
        requested_by: report.requested_by.clone(),
        requested_at: jiff::Timestamp::from_microsecond(report.requested_at_micros)
            .map_err(|e| ReceiptError(format!("requested_at: {e}")))?,
        started_at: instant_ms(report.started_at_ms)?,
        finished_at: instant_ms(report.finished_at_ms)?,
        rows_removed: report.rows_removed.clone(),
        verification: report
            .verification
            .iter()
            .map(|(table, v)| {
                (
                    table.clone(),
                    r::TableVerification {
                        query: v.query.clone(),
                        result: v.remaining,
                    },
                )
            })
            .collect(),
        // set by the signer
        issued_at: jiff::Timestamp::UNIX_EPOCH,
    })
}

/// Receipts signed with the control plane's receipt signing key.
#[async_trait::async_trait]
impl ReportSigner for crate::domain::receipts::ReceiptSigner {
    async fn sign(&self, report: &ErasureReport) -> Result<serde_json::Value, ReceiptError> {
        let signed = crate::domain::receipts::ReceiptSigner::sign(self, receipt_of(report)?)
            .await
            .map_err(|e| ReceiptError(e.to_string()))?;
        serde_json::to_value(&signed).map_err(|e| ReceiptError(e.to_string()))
    }
}
