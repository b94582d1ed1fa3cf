//! A minimal `POST /api/v1/delete`, enough for the control plane's erasure
//! jobs: `{"database", "measurement", "where", "confirm": true}` (Bearer
//! auth; the token needs write access to the database) removes the
//! readable rows of the measurement matching `where` through the
//! stand-in's SQL engine and answers 200 `{"deleted_count",
//! "affected_files", "rewritten_files", "execution_time_ms", "dry_run"}`.
//! Rows still held in the ingest buffer are not deleted, as in Arc; a
//! database or measurement that does not exist answers 200 with 0.
//! `confirm` other than true is a 400. A fuller version (dry runs,
//! deletes disabled, the `delete` permission) replaces this one.

use super::Shared;
use super::auth::{authenticate, authorize};
use super::server::{auth_failure, json_reply, read_body};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

pub(super) const DELETE_PATH: &str = "/api/v1/delete";

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    json_reply(status, json!({ "error": msg.into() }))
}

pub(super) async fn delete_route(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    s.record("POST", DELETE_PATH, &headers);
    let started = Instant::now();
    let grant = match authenticate(&s, &headers) {
        Ok(g) => g,
        Err(f) => return s.finish(auth_failure(f)),
    };
    let body = match read_body(&headers, body, 1 << 20).await {
        Ok(b) => b,
        Err((status, msg)) => return s.finish(error(status, msg)),
    };
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return s.finish(error(
                StatusCode::BAD_REQUEST,
                format!("Invalid request body: {e}"),
            ));
        }
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let (database, measurement, where_) = (field("database"), field("measurement"), field("where"));
    if database.is_empty() || measurement.is_empty() || where_.trim().is_empty() {
        return s.finish(error(
            StatusCode::BAD_REQUEST,
            "database, measurement and where are required",
        ));
    }
    if req.get("confirm").and_then(Value::as_bool) != Some(true) {
        return s.finish(error(
            StatusCode::BAD_REQUEST,
            "confirm must be true to delete",
        ));
    }
    if let Err(f) = authorize(grant.as_ref(), true, [database.as_str()]) {
        return s.finish(auth_failure(f));
    }
    let deleted = match s.store.lock() {
        Ok(mut store) => store.delete_where(&database, &measurement, &where_),
        Err(_) => Err("store poisoned".into()),
    };
    let resp = match deleted {
        Ok(n) => json_reply(
            StatusCode::OK,
            json!({
                "deleted_count": n,
                "affected_files": u64::from(n > 0),
                "rewritten_files": u64::from(n > 0),
                "execution_time_ms": started.elapsed().as_secs_f64() * 1000.0,
                "dry_run": false,
            }),
        ),
        Err(msg) => error(StatusCode::BAD_REQUEST, format!("delete failed: {msg}")),
    };
    s.finish(resp)
}
