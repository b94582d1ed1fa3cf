//! Delivering a finished erasure's signed receipt into the org's own store
//! (table `erasure_receipts`: `time` = delivery µs, `id` = erasure id,
//! `org_id`, `receipt_json`), where the org's workers serve it to the
//! tenant (`GET /api/v1/erasures/{id}/receipt`). The control plane keeps
//! no tenant content, and tenants read their receipts with their own key
//! from their own data. On Arc: one columnar MessagePack write
//! (`POST /api/v1/write/msgpack`, gzip: every Arc build takes it) with the
//! binding's key; in the embedded store: one insert into the org's file.
//!
//! A job is done only once its receipt is delivered: a failed delivery is
//! retried like an Arc outage (the rows are already gone, so the retry's
//! delete and count are quick and it signs and delivers again; the
//! workers keep the newest receipt of an erasure). An org's deletion is
//! not delivered: nothing of the org stays, its receipts included
//! (operators keep it: `memtracectl erasure show`).

use super::arc::{ArcFailure, ArcTarget};
use crate::store::ErasureJobRow;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection as _};
use std::io::Write as _;
use std::path::Path;

/// The table receipts are delivered into (the data plane reads it).
pub(crate) const RECEIPTS_TABLE: &str = "erasure_receipts";

const WRITE_PATH: &str = "/api/v1/write/msgpack";

/// The receipt of `job` as one row: (time µs, erasure id, org, receipt).
fn row(job: &ErasureJobRow, now_ms: i64) -> Option<(i64, &str, &str, &str)> {
    let receipt = job.receipt_json.as_deref()?;
    Some((now_ms.saturating_mul(1000), &job.id, &job.org_id, receipt))
}

/// Writes `job`'s receipt into its org's Arc.
pub(crate) async fn to_arc(
    http: &reqwest::Client,
    target: &ArcTarget,
    job: &ErasureJobRow,
    now_ms: i64,
) -> Result<(), ArcFailure> {
    let Some((time, id, org, receipt)) = row(job, now_ms) else {
        return Err(ArcFailure::Failed(
            "the job has no receipt to deliver".into(),
        ));
    };
    let body = json!({"m": RECEIPTS_TABLE, "columns": {
        "time": [time], "id": [id], "org_id": [org], "receipt_json": [receipt],
    }});
    let packed = rmp_serde::to_vec_named(&body)
        .map_err(|e| ArcFailure::Failed(format!("encoding the receipt: {e}")))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&packed)
        .map_err(|e| ArcFailure::Failed(format!("compressing the receipt: {e}")))?;
    let gzipped = gz
        .finish()
        .map_err(|e| ArcFailure::Failed(format!("compressing the receipt: {e}")))?;
    let database = HeaderValue::from_str(&target.database)
        .map_err(|_| ArcFailure::Failed("the binding's database is not a header value".into()))?;
    let request = super::arc::authorized(
        http.post(format!("{}{WRITE_PATH}", target.url.trim_end_matches('/')))
            .header(CONTENT_TYPE, "application/msgpack")
            .header(CONTENT_ENCODING, "gzip")
            .header("x-arc-database", database)
            .body(gzipped),
        target,
    )?;
    let response = request.send().await.map_err(|e| {
        ArcFailure::Transient(format!(
            "POST {WRITE_PATH} failed: {}",
            crate::domain::arc::error_chain(&e)
        ))
    })?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(super::arc::classify(WRITE_PATH, status, &text))
}

/// Inserts `job`'s receipt into the org's embedded file (created when the
/// org never wrote anything).
pub(crate) async fn to_embedded(
    file: &Path,
    job: &ErasureJobRow,
    now_ms: i64,
) -> Result<(), String> {
    let Some((time, id, org, receipt)) = row(job, now_ms) else {
        return Err("the job has no receipt to deliver".into());
    };
    let mut conn = super::embedded::open(file, "rwc").await?;
    let statements = [
        "PRAGMA busy_timeout = 5000".to_owned(),
        format!(
            "CREATE TABLE IF NOT EXISTS \"{RECEIPTS_TABLE}\" (time INTEGER NOT NULL, \
             id TEXT NOT NULL, org_id TEXT NOT NULL, receipt_json TEXT NOT NULL)"
        ),
    ];
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("receipt table: {e}"))?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO \"{RECEIPTS_TABLE}\" (time, id, org_id, receipt_json) VALUES (?, ?, ?, ?)"
    )))
    .bind(time)
    .bind(id)
    .bind(org)
    .bind(receipt)
    .execute(&mut conn)
    .await
    .map_err(|e| format!("delivering the receipt: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

impl crate::domain::ControlPlane {
    /// Delivers `job`'s receipt into its org's store (not for an org's
    /// deletion); the outcome to settle with when it cannot.
    pub(super) async fn deliver_receipt(
        &self,
        job: &ErasureJobRow,
    ) -> Result<(), super::run::Outcome> {
        use super::run::Outcome;
        if super::scope::is_whole_org(&job.scope_json) {
            return Ok(());
        }
        let now = memtrace_common::clock::now_ms();
        let undelivered = |d: String| format!("receipt not delivered to the org's store: {d}");
        match self.erasure_target(job).await? {
            Some(target) => {
                to_arc(&self.erasure.http, &target, job, now)
                    .await
                    .map_err(|f| match f {
                        ArcFailure::Refused(d) => Outcome::Blocked(undelivered(d)),
                        ArcFailure::Transient(d) | ArcFailure::Failed(d) => {
                            Outcome::Retry(undelivered(d))
                        }
                    })
            }
            None => {
                let settings = &self.erasure.settings;
                let Some(dir) = settings.embedded_dir.as_ref().filter(|d| d.is_dir()) else {
                    return Err(Outcome::Blocked(undelivered(super::run::NO_ARC.into())));
                };
                let file = super::embedded::org_file(dir, &job.org_id);
                to_embedded(&file, job, now)
                    .await
                    .map_err(|d| Outcome::Retry(undelivered(d)))
            }
        }
    }
}
