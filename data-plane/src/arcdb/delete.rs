//! Arc's delete API, typed: [`ArcClient::delete`] sends one
//! [`DeleteRequest`] as `POST {url}/api/v1/delete` and reads Arc's answer
//! into a [`DeleteOutcome`].
//!
//! What Arc does with it (Arc Go's rewrite-based delete): the Parquet files
//! of `database`/`measurement` holding rows that match the SQL predicate
//! are rewritten without them (a file left empty is removed). Only flushed
//! rows are in files: rows still in Arc's ingest buffer are not deleted and
//! become visible after the flush (seconds later), so an erasure must check
//! again after the buffer window and delete what appeared. A real delete
//! needs `confirm: true` (always sent here unless it is a dry run, which
//! only counts).
//!
//! Arc's answers, as this client sees them:
//! - 200 `{deleted_count, affected_files, rewritten_files,
//!   execution_time_ms, dry_run, …}` → [`DeleteOutcome`]. A database or
//!   measurement that does not exist gives `deleted_count: 0`, and so does
//!   a predicate DuckDB cannot evaluate (an unknown column): Arc skips the
//!   files it cannot read. A zero count therefore proves nothing; verify
//!   with a query.
//! - 207 with `success: false` (some files failed to rewrite) →
//!   [`ArcError::Server`] (retryable: deleting again finishes the job).
//! - 403 → [`ArcError::DeleteBlocked`], with [`DeleteBlock::DeletesDisabled`]
//!   (Arc's `delete.enabled` is off) or [`DeleteBlock::NoDeletePermission`]
//!   (the token lacks `delete`): report the erasure as blocked, never as
//!   done.
//! - other statuses and transport failures → the usual [`ArcError`]
//!   variants (400 for a predicate Arc's checks refuse: `;`, comments,
//!   DDL/DML keywords, `SELECT`, unbalanced quotes or parentheses).
//!
//! A delete is idempotent (the same predicate again finds nothing more), so
//! [`ArcClient::delete_with_retry`] may repeat it on retryable errors.

use super::ArcTarget;
use super::client::{ArcClient, bearer, endpoint, failure, read_capped_error_body};
use super::error::{ArcError, DeleteBlock, arc_message};
use super::retry::RetryPolicy;
use reqwest::header::AUTHORIZATION;
use serde::Deserialize;
use std::time::Instant;

const DELETE_PATH: &str = "/api/v1/delete";

/// One delete: the rows of `database`.`measurement` matching `predicate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub database: String,
    pub measurement: String,
    /// A SQL boolean expression over the measurement's columns, sent as
    /// Arc's `where` (no `WHERE` keyword). It is spliced into DuckDB SQL by
    /// Arc: build it from escaped literals only.
    pub predicate: String,
    /// Only count what would be deleted.
    pub dry_run: bool,
}

impl DeleteRequest {
    /// A real delete (not a dry run) on `target`'s database and
    /// measurement.
    pub fn for_target(target: &ArcTarget<'_>, predicate: impl Into<String>) -> Self {
        Self {
            database: target.database.to_string(),
            measurement: target.measurement.to_string(),
            predicate: predicate.into(),
            dry_run: false,
        }
    }

    /// The same request as a dry run.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "database": self.database,
            "measurement": self.measurement,
            "where": self.predicate,
            "dry_run": self.dry_run,
            "confirm": !self.dry_run,
        })
    }
}

/// What Arc reported for a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteOutcome {
    /// Rows deleted (for a dry run: that would be deleted).
    pub deleted_count: u64,
    /// Files holding matching rows.
    pub affected_files: u64,
    /// Files rewritten without them (or removed); 0 for a dry run.
    pub rewritten_files: u64,
    /// Arc's own time for the delete.
    pub execution_time_ms: f64,
    pub dry_run: bool,
}

/// Arc's `DeleteResponse` (fields this client reads).
#[derive(Deserialize)]
struct DeleteReply {
    #[serde(default = "yes")]
    success: bool,
    #[serde(default)]
    deleted_count: u64,
    #[serde(default)]
    affected_files: u64,
    #[serde(default)]
    rewritten_files: u64,
    #[serde(default)]
    execution_time_ms: f64,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    error: Option<String>,
}

fn yes() -> bool {
    true
}

/// Largest delete reply read (it lists file names).
const MAX_DELETE_REPLY: usize = 1 << 20;

impl ArcClient {
    /// Sends one delete to `target`'s Arc (its URL and key; the database
    /// and measurement are the request's). One attempt.
    pub async fn delete(
        &self,
        target: &ArcTarget<'_>,
        request: &DeleteRequest,
    ) -> Result<DeleteOutcome, ArcError> {
        let started = Instant::now();
        let result = self.delete_once(target, request).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(o) => tracing::debug!(
                database = %request.database,
                measurement = %request.measurement,
                dry_run = request.dry_run,
                deleted = o.deleted_count,
                elapsed_ms,
                "arc delete ok"
            ),
            Err(e) => tracing::debug!(
                database = %request.database,
                measurement = %request.measurement,
                dry_run = request.dry_run,
                elapsed_ms,
                error = %e,
                "arc delete failed"
            ),
        }
        result
    }

    async fn delete_once(
        &self,
        target: &ArcTarget<'_>,
        request: &DeleteRequest,
    ) -> Result<DeleteOutcome, ArcError> {
        let mut req = self
            .http()
            .post(endpoint(target.url, DELETE_PATH))
            .json(&request.body());
        if let Some(auth) = bearer(target.api_key)? {
            req = req.header(AUTHORIZATION, auth);
        }
        let resp = req.send().await.map_err(ArcError::from_reqwest)?;
        let status = resp.status().as_u16();
        if status == 403 {
            let message = read_capped_error_body(resp).await;
            return Err(ArcError::DeleteBlocked {
                reason: DeleteBlock::from_message(&message),
                message,
            });
        }
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        let body = resp.bytes().await.map_err(ArcError::from_reqwest)?;
        if body.len() > MAX_DELETE_REPLY {
            return Err(ArcError::ReplyTooLarge {
                max: MAX_DELETE_REPLY,
            });
        }
        parse_delete_reply(status, &body)
    }

    /// [`delete`](Self::delete), retried per `policy` on retryable errors
    /// (a delete is idempotent).
    pub async fn delete_with_retry(
        &self,
        target: &ArcTarget<'_>,
        request: &DeleteRequest,
        policy: &RetryPolicy,
    ) -> Result<DeleteOutcome, ArcError> {
        policy.run("delete", || self.delete(target, request)).await
    }
}

fn parse_delete_reply(status: u16, body: &[u8]) -> Result<DeleteOutcome, ArcError> {
    let reply: DeleteReply = serde_json::from_slice(body)
        .map_err(|e| ArcError::Decode(format!("delete reply is not Arc's: {e}")))?;
    if !reply.success {
        let message = arc_message(
            reply
                .error
                .as_deref()
                .unwrap_or("delete did not succeed")
                .as_bytes(),
        );
        return Err(ArcError::Server { status, message });
    }
    Ok(DeleteOutcome {
        deleted_count: reply.deleted_count,
        affected_files: reply.affected_files,
        rewritten_files: reply.rewritten_files,
        execution_time_ms: reply.execution_time_ms,
        dry_run: reply.dry_run,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn confirm_is_sent_unless_dry_run() {
        let target = ArcTarget {
            url: "http://arc",
            database: "acme",
            measurement: "memories",
            api_key: None,
        };
        let req = DeleteRequest::for_target(&target, "org_id = 'o'");
        let body = req.body();
        assert_eq!(body["where"], "org_id = 'o'");
        assert_eq!(body["database"], "acme");
        assert_eq!(body["measurement"], "memories");
        assert_eq!(
            (body["confirm"].clone(), body["dry_run"].clone()),
            (true.into(), false.into())
        );
        let dry = req.dry_run().body();
        assert_eq!(
            (dry["confirm"].clone(), dry["dry_run"].clone()),
            (false.into(), true.into())
        );
    }

    #[test]
    fn replies_are_read_and_partial_failures_are_server_errors() {
        let ok = br#"{"success":true,"deleted_count":3,"affected_files":2,"rewritten_files":2,
            "execution_time_ms":12.5,"dry_run":false,"files_processed":["a.parquet","b.parquet"]}"#;
        assert_eq!(
            parse_delete_reply(200, ok).unwrap(),
            DeleteOutcome {
                deleted_count: 3,
                affected_files: 2,
                rewritten_files: 2,
                execution_time_ms: 12.5,
                dry_run: false,
            }
        );
        let partial =
            br#"{"success":false,"deleted_count":1,"affected_files":2,"rewritten_files":1,
            "error":"1 of 2 files failed to process"}"#;
        let e = parse_delete_reply(207, partial).unwrap_err();
        assert!(
            matches!(&e, ArcError::Server { status: 207, message } if message.contains("1 of 2")),
            "{e:?}"
        );
        assert!(e.retryable());
        assert!(matches!(
            parse_delete_reply(200, b"<html>"),
            Err(ArcError::Decode(_))
        ));
    }
}
