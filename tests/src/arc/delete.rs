//! `POST /api/v1/delete`: Arc's rewrite-based delete, as Arc Go's delete
//! handler (`internal/api/delete.go`) behaves.
//!
//! Request: `{"database", "measurement", "where", "dry_run", "confirm"}`
//! (JSON; `dry_run` and `confirm` default to false). In Arc's order:
//!
//! 1. faults ([`Target::Deletes`]), then the token: 401 without a valid
//!    one, 403 `Permission denied: delete required` without the `delete`
//!    permission (auth-middleware body `{"success": false, "error"}`);
//! 2. deletes disabled (Arc's `delete.enabled = false`, see
//!    [`super::ArcStandInBuilder::deletes_enabled`]): 403 `Delete
//!    operations are disabled. Set delete.enabled=true in arc.toml to
//!    enable.`;
//! 3. 400 for a body that is not JSON, a missing `database`/`measurement`,
//!    or one holding `/`, `\` or `..`; 403 `access denied: no delete
//!    permission for database '<db>'` for a database the token may not use;
//! 4. the predicate, checked like Arc (400): required (`WHERE clause is
//!    required. …`), no `;`, `--`, `/*`, `xp_`, `sp_`, no keyword `DROP`,
//!    `DELETE`, `INSERT`, `UPDATE`, `EXEC`, `EXECUTE`, `UNION`, `SELECT`,
//!    `CREATE`, `ALTER`, `COPY`, `ATTACH`, `DETACH`, `LOAD`, `INSTALL`,
//!    `PRAGMA`, `CALL`, `SET` (as words, any case — so no subquery), no
//!    unbalanced quotes or parentheses (`WHERE clause contains forbidden
//!    keyword: DROP`, …); a whole-table predicate (`1=1`, `TRUE`, `1`)
//!    needs `confirm` even for a dry run;
//! 5. neither `dry_run` nor `confirm`: 400 `Confirmation required for delete
//!    operation. Set confirm=true or use dry_run=true to preview.`;
//! 6. the rows matching the predicate among the measurement's **readable**
//!    rows are found with the query engine (the predicate goes through the
//!    query path's rewrite, so `time >= '2026-…Z'` works as in a query), and
//!    removed unless it is a dry run. Arc only rewrites Parquet files: rows
//!    still in its ingest buffer (with the visibility delay on, see
//!    [`super::buffer`]) are not touched, and show up after their flush —
//!    a later delete removes them. With the delay off, rows are readable at
//!    once and a delete removes every row a query would show.
//!
//! Answer (200): `{"success": true, "deleted_count", "affected_files" (files
//! holding matching rows), "rewritten_files" (files rewritten or removed;
//! 0 for a dry run), "execution_time_ms", "dry_run", "files_processed" (the
//! affected files' names)}`. Files are the stand-in's chunks (one per
//! buffer flush); a file left without rows is removed, as Arc removes it.
//! Error bodies have the same fields, zero, with `"success": false,
//! "error"`.
//!
//! Where Arc answers differently from what one might expect, reproduced:
//! - a database or measurement that does not exist (or has no flushed
//!   rows yet) answers 200 with `deleted_count: 0`;
//! - a predicate the engine cannot evaluate (an unknown column, a bad
//!   timestamp literal) also answers 200 with `deleted_count: 0`: Arc's
//!   batch count fails, its per-file fallback skips every file it cannot
//!   count, and nothing is found. Only the checks of step 4 give a 400, so a
//!   caller cannot tell a typo from "nothing to delete" — check afterwards
//!   with a query.
//!
//! Not modelled: Arc's `max_rows_per_delete` and `confirmation_threshold`
//! settings (the stand-in has no row limit on a delete, and a dry run
//! without `confirm` is never refused for its size), cluster mode, and
//! partial failures (207).
//!
//! Cost: held for [`CostModel::delete_cost`] — a scan of the measurement's
//! readable rows for the predicate's columns, plus one file rewrite per
//! rewritten file.

use super::Shared;
use super::auth::{Permission, authenticate, authorize};
use super::cost::CostModel;
use super::faults::Target;
use super::read::hold;
use super::server::{
    After, ConnKill, Failure, apply_faults, auth_failure, injected, json_reply, read_body,
};
use super::store::{Deletion, QueryError};
use super::{MAX_DELETE_CALLS, query};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use regex::Regex;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

pub(super) const DELETE_PATH: &str = "/api/v1/delete";

/// Largest delete request body.
const MAX_DELETE_BODY: usize = 1 << 20;

/// Arc's message when deletes are off.
pub const DISABLED: &str =
    "Delete operations are disabled. Set delete.enabled=true in arc.toml to enable.";

/// Arc's message when neither `confirm` nor `dry_run` is set.
pub const CONFIRMATION_REQUIRED: &str =
    "Confirmation required for delete operation. Set confirm=true or use dry_run=true to preview.";

/// One delete request as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteCall {
    pub database: String,
    pub measurement: String,
    /// The `where` field.
    pub predicate: String,
    pub dry_run: bool,
    pub confirm: bool,
    /// The status answered; `None` while in progress or when no answer was
    /// sent (dropped or reset connection, client gone).
    pub status: Option<u16>,
    /// Rows deleted (or counted, for a dry run) when it succeeded.
    pub deleted_count: Option<u64>,
    /// Numbered in arrival order from 0.
    seq: u64,
}

/// The request body (Arc's `DeleteRequest`; absent fields are empty/false).
#[derive(Debug, Default)]
struct DeleteBody {
    database: String,
    measurement: String,
    /// `where`.
    predicate: String,
    dry_run: bool,
    confirm: bool,
}

impl DeleteBody {
    /// Decodes the JSON body; a field of the wrong type fails, as Go's
    /// decoder fails on it.
    fn parse(body: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let Value::Object(map) = v else {
            return Err("expected a JSON object".into());
        };
        let text = |k: &str| match map.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(t)) => Ok(t.clone()),
            Some(other) => Err(format!("{k}: expected a string, got {other}")),
        };
        let flag = |k: &str| match map.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format!("{k}: expected a bool, got {other}")),
        };
        Ok(Self {
            database: text("database")?,
            measurement: text("measurement")?,
            predicate: text("where")?,
            dry_run: flag("dry_run")?,
            confirm: flag("confirm")?,
        })
    }
}

impl Shared {
    /// Logs a delete call; returns its number.
    fn log_delete(&self, body: &DeleteBody) -> u64 {
        let Ok(mut calls) = self.delete_calls.lock() else {
            return u64::MAX;
        };
        let seq = calls.last().map_or(0, |c| c.seq + 1);
        if calls.len() >= MAX_DELETE_CALLS {
            calls.remove(0);
        }
        calls.push(DeleteCall {
            database: body.database.clone(),
            measurement: body.measurement.clone(),
            predicate: body.predicate.clone(),
            dry_run: body.dry_run,
            confirm: body.confirm,
            status: None,
            deleted_count: None,
            seq,
        });
        seq
    }

    fn log_delete_answer(&self, seq: u64, status: u16, deleted: Option<u64>) {
        if let Ok(mut calls) = self.delete_calls.lock()
            && let Some(c) = calls.iter_mut().rev().find(|c| c.seq == seq)
        {
            c.status = Some(status);
            c.deleted_count = deleted;
        }
    }
}

pub(super) async fn delete_route(
    State(s): State<Arc<Shared>>,
    Extension(conn): Extension<ConnKill>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    s.record("POST", DELETE_PATH, &headers);
    s.stats_mut(|st| st.delete_requests += 1);
    // The body is read first so that every call is logged with what it
    // asked, faults or not.
    let parsed = match read_body(&headers, body, MAX_DELETE_BODY).await {
        Ok(b) => DeleteBody::parse(&b).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("Invalid request body: {e}"),
            )
        }),
        Err(f) => Err(f),
    };
    let seq = s.log_delete(parsed.as_ref().unwrap_or(&DeleteBody::default()));
    let (resp, deleted) = delete_inner(&s, &conn, &headers, parsed).await;
    s.log_delete_answer(seq, resp.status().as_u16(), deleted);
    s.finish(resp)
}

/// Arc's `DeleteResponse` for a failure.
fn delete_error((status, msg): Failure) -> (Response, Option<u64>) {
    let body = json!({
        "success": false,
        "deleted_count": 0,
        "affected_files": 0,
        "rewritten_files": 0,
        "execution_time_ms": 0,
        "dry_run": false,
        "files_processed": Value::Null,
        "error": msg,
    });
    (json_reply(status, body), None)
}

async fn delete_inner(
    s: &Arc<Shared>,
    conn: &ConnKill,
    headers: &HeaderMap,
    parsed: Result<DeleteBody, Failure>,
) -> (Response, Option<u64>) {
    let after = match apply_faults(s, conn, Target::Deletes).await {
        Ok(after) => after,
        Err(resp) => return (resp, None),
    };
    let started = Instant::now();
    let grant = match authenticate(s, headers) {
        Ok(g) => g,
        Err(f) => return (auth_failure(f), None),
    };
    if let Err(f) = authorize(grant.as_ref(), Permission::Delete, []) {
        return (auth_failure(f), None);
    }
    if !s.deletes_enabled.load(std::sync::atomic::Ordering::SeqCst) {
        return delete_error((StatusCode::FORBIDDEN, DISABLED.into()));
    }
    let req = match parsed {
        Ok(r) => r,
        Err(f) => return delete_error(f),
    };
    let bad = |m: &str| delete_error((StatusCode::BAD_REQUEST, m.to_string()));
    if req.database.is_empty() {
        return bad("database is required");
    }
    if req.measurement.is_empty() {
        return bad("measurement is required");
    }
    let traversal = |n: &str| n.contains(['/', '\\']) || n.contains("..");
    if traversal(&req.database) {
        return bad("database name contains invalid characters");
    }
    if traversal(&req.measurement) {
        return bad("measurement name contains invalid characters");
    }
    if let Err(f) = authorize(grant.as_ref(), Permission::Delete, [req.database.as_str()]) {
        return (auth_failure(f), None);
    }
    let whole_table = match validate_where(&req.predicate) {
        Ok(w) => w,
        Err(m) => return bad(&m),
    };
    if whole_table && !req.confirm {
        return bad("Full table delete detected (WHERE 1=1). Set confirm=true to proceed.");
    }
    if !req.dry_run && !req.confirm {
        return bad(CONFIRMATION_REQUIRED);
    }
    let model = s.cost_model();
    let (found, modelled) = match execute(s, &req, model).await {
        Ok(done) => done,
        Err(f) => return delete_error(f),
    };
    hold(started, modelled).await;
    let rewritten = if req.dry_run {
        0
    } else {
        found.files.len() as u64
    };
    if !req.dry_run {
        s.stats_mut(|st| {
            let db = st.databases.entry(req.database.clone()).or_default();
            db.deletes += 1;
            db.deleted_rows += found.rows;
        });
    }
    match after {
        Some(After::Status(code)) => return (injected(code), None),
        Some(After::Reset) => conn.reset().await,
        None => {}
    }
    let resp = json_reply(
        StatusCode::OK,
        json!({
            "success": true,
            "deleted_count": found.rows,
            "affected_files": found.files.len(),
            "rewritten_files": rewritten,
            "execution_time_ms": started.elapsed().as_millis() as u64,
            "dry_run": req.dry_run,
            "files_processed": found.files,
        }),
    );
    (resp, Some(found.rows))
}

static DANGEROUS_KEYWORD: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(DROP|DELETE|INSERT|UPDATE|EXEC|EXECUTE|UNION|SELECT|CREATE|ALTER|COPY|ATTACH|DETACH|LOAD|INSTALL|PRAGMA|CALL|SET)\b",
    )
    .ok()
});

/// Arc's checks of the `where` field; `Ok(true)` for a whole-table
/// predicate (`1=1`, `TRUE`, `1`).
pub fn validate_where(predicate: &str) -> Result<bool, String> {
    if predicate.trim().is_empty() {
        return Err(
            "WHERE clause is required. To delete all data, use WHERE clause '1=1' with confirm=true"
                .into(),
        );
    }
    let mut upper = predicate.trim().to_ascii_uppercase();
    if let Some(rest) = upper.strip_prefix("WHERE ") {
        upper = rest.trim().to_string();
    }
    for p in [";", "--", "/*"] {
        if upper.contains(p) {
            return Err(format!("WHERE clause contains forbidden pattern: {p}"));
        }
    }
    if let Some(m) = DANGEROUS_KEYWORD.as_ref().and_then(|r| r.find(predicate)) {
        return Err(format!(
            "WHERE clause contains forbidden keyword: {}",
            m.as_str().to_ascii_uppercase()
        ));
    }
    // Arc checks these on the upper-cased text, so `sp_` matches `SP_` too
    for p in ["XP_", "SP_"] {
        if upper.contains(p) {
            return Err(format!(
                "WHERE clause contains forbidden pattern: {}",
                p.to_ascii_lowercase()
            ));
        }
    }
    if !predicate.matches('\'').count().is_multiple_of(2) {
        return Err("WHERE clause has unmatched quotes".into());
    }
    if predicate.matches('(').count() != predicate.matches(')').count() {
        return Err("WHERE clause has unmatched parentheses".into());
    }
    Ok(["1=1", "TRUE", "1"].contains(&upper.as_str()))
}

/// A word-character table name the query rewrite resolves; swapped for the
/// real table afterwards (a measurement may hold `-`, which the rewrite's
/// table pattern does not take).
const STAND_IN_TABLE: &str = "standin_delete_target";

/// Finds the matching rows on the store and removes them (unless a dry
/// run); returns what was found and the modelled time.
async fn execute(
    s: &Arc<Shared>,
    req: &DeleteBody,
    model: CostModel,
) -> Result<(Deletion, Duration), Failure> {
    let internal = |m: String| (StatusCode::INTERNAL_SERVER_ERROR, m);
    let store = s.store.clone();
    let (db, m, predicate, dry_run) = (
        req.database.clone(),
        req.measurement.clone(),
        req.predicate.clone(),
        req.dry_run,
    );
    let job = move || -> Result<(Deletion, Duration), Failure> {
        let mut store = store
            .lock()
            .map_err(|_| internal("store poisoned".into()))?;
        store
            .settle(Instant::now())
            .map_err(|e| internal(format!("buffer flush failed: {e:?}")))?;
        let Some(rowid) = store.rowid_column(&db, &m) else {
            // never written: Arc lists no files
            return Ok((Deletion::default(), model.delete_cost(&[], 0)));
        };
        let Some(sql) = rowid_query(&db, &m, rowid, &predicate) else {
            // the engine cannot evaluate it: every file is skipped
            return Ok((Deletion::default(), model.delete_cost(&[], 0)));
        };
        let shapes: Vec<_> = super::scan::scans(&sql)
            .iter()
            .filter_map(|scan| store.scan_shape(scan))
            .filter(|shape| shape.rows > 0)
            .collect();
        if shapes.is_empty() {
            // no flushed rows: no Parquet file to read
            return Ok((Deletion::default(), model.delete_cost(&[], 0)));
        }
        let rowids: Vec<i64> = match store.query(&sql, usize::MAX, &HashSet::new()) {
            Ok(out) => out
                .data
                .iter()
                .filter_map(|row| row.first().and_then(Value::as_i64))
                .collect(),
            Err(QueryError::Engine(_) | QueryError::TooLarge(_)) => Vec::new(),
            Err(QueryError::NotReadOnly) => {
                return Err((StatusCode::BAD_REQUEST, query::DANGEROUS.into()));
            }
        };
        let found = store
            .delete_rows(&db, &m, &rowids, dry_run)
            .map_err(|e| internal(format!("Failed to rewrite files: {e:?}")))?;
        let rewritten = if dry_run { 0 } else { found.files.len() as u64 };
        Ok((found.clone(), model.delete_cost(&shapes, rewritten)))
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(done) => done,
        Err(e) => Err(internal(e.to_string())),
    }
}

/// `SELECT <rowid> FROM "<db>.<m>" WHERE <predicate>`, the predicate
/// rewritten as a query's would be (time literals to µs); `None` when the
/// rewrite refuses it (DuckDB would fail on it too).
fn rowid_query(db: &str, m: &str, rowid: &str, predicate: &str) -> Option<String> {
    let sql = format!("SELECT {rowid} FROM {STAND_IN_TABLE} WHERE {predicate}");
    let rewritten = query::rewrite(&sql, Some(db)).ok()?;
    let placeholder = super::store::table_ident(db, STAND_IN_TABLE);
    let real = super::store::table_ident(db, m);
    Some(rewritten.sql.replacen(&placeholder, &real, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clauses_are_checked_like_arc() {
        assert_eq!(validate_where("org_id = 'a'"), Ok(false));
        assert_eq!(validate_where("1=1"), Ok(true));
        assert_eq!(validate_where(" true "), Ok(true));
        assert_eq!(validate_where("WHERE 1"), Ok(true));
        // column names holding a keyword are fine (word match)
        assert_eq!(validate_where("offset_ms > 3 AND dataset = 'x'"), Ok(false));
        for (bad, why) in [
            ("", "required"),
            ("   ", "required"),
            ("a = 1; DROP TABLE x", "forbidden pattern: ;"),
            ("a = 1 -- x", "forbidden pattern: --"),
            ("a = 1 /* x */", "forbidden pattern: /*"),
            ("id IN (select id from t)", "forbidden keyword: SELECT"),
            ("a = 1 union all b", "forbidden keyword: UNION"),
            ("a = 'drop'", "forbidden keyword: DROP"),
            ("sp_x = 1", "forbidden pattern: sp_"),
            ("a = 'x", "unmatched quotes"),
            ("(a = 1", "unmatched parentheses"),
        ] {
            let e = validate_where(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_predicate_is_rewritten_onto_the_measurement() {
        let sql = rowid_query(
            "acme",
            "mem-ories",
            "rowid",
            "time >= '2025-01-01T00:00:00Z' AND org = 'from x'",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT rowid FROM \"acme.mem-ories\" WHERE time >= 1735689600000000 AND org = 'from x'"
        );
        assert_eq!(rowid_query("acme", "m", "rowid", "time = 'nope'"), None);
    }
}
