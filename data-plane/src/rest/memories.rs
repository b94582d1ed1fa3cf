//! `/api/v1/memories` (create single or `{memories:[...]}` batch, list, get
//! by id) and `/api/v1/search`.

use super::{ApiResult, Body, Pairs, Reader, Writer, list_params, parse_body, reply};
use crate::query::SearchParams;
use crate::service::{
    CreateMemoryRequest, DeleteRequest, Deletion, MemoryPatch, NewMemory, ServiceError,
};
use axum::extract::Path;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) async fn create(Writer(svc): Writer, body: Body) -> ApiResult {
    let value: Value = parse_body(&svc, body, false)?;
    match value {
        Value::Object(mut o) if o.get("memories").is_some_and(Value::is_array) => {
            let Some(Value::Array(items)) = o.remove("memories") else {
                return Err(ServiceError::BadRequest("memories must be an array".into()));
            };
            let mut batch = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let req: CreateMemoryRequest = serde_json::from_value(item)
                    .map_err(|e| ServiceError::BadRequest(format!("invalid memories[{i}]: {e}")))?;
                let memory = NewMemory::try_from(req)
                    .map_err(|e| ServiceError::BadRequest(format!("memories[{i}]: {e}")))?;
                batch.push(memory);
            }
            let created = svc.create_memories(batch).await?;
            reply(
                StatusCode::CREATED,
                &json!({"count": created.len(), "memories": created}),
            )
        }
        Value::Object(_) => {
            let req: CreateMemoryRequest = serde_json::from_value(value)
                .map_err(|e| ServiceError::BadRequest(format!("invalid request body: {e}")))?;
            let memory = svc.create_memory(NewMemory::try_from(req)?).await?;
            reply(StatusCode::CREATED, &memory)
        }
        _ => Err(ServiceError::BadRequest(
            "invalid request body: expected a JSON object".into(),
        )),
    }
}

pub(super) async fn list(query: Pairs, Reader(svc): Reader) -> ApiResult {
    let params = list_params(query)?;
    reply(StatusCode::OK, &svc.list_memories(&params).await?)
}

pub(super) async fn get_one(Path(id): Path<String>, Reader(svc): Reader) -> ApiResult {
    reply(StatusCode::OK, &svc.get_memory(&id).await?)
}

/// The search body (the original's SearchQuery).
#[derive(Debug, Default, Deserialize)]
struct SearchBody {
    agent_id: Option<String>,
    session_id: Option<String>,
    memory_types: Option<Vec<String>>,
    event_types: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    content_contains: Option<String>,
    since: Option<String>,
    until: Option<String>,
    min_importance: Option<f64>,
    limit: Option<i64>,
    order: Option<String>,
}

pub(super) async fn search(Reader(svc): Reader, body: Body) -> ApiResult {
    let b: SearchBody = parse_body(&svc, body, true)?;
    let params = SearchParams {
        agent_id: b.agent_id,
        session_id: b.session_id,
        memory_types: b.memory_types.unwrap_or_default(),
        event_types: b.event_types.unwrap_or_default(),
        tags: b.tags.unwrap_or_default(),
        content_contains: b.content_contains,
        since: b.since,
        until: b.until,
        min_importance: b.min_importance,
        limit: b.limit,
        order: b.order,
    };
    reply(StatusCode::OK, &svc.search(&params).await?)
}

/// 202 for a recorded erasure (hidden now, erased shortly), 200 for a
/// dry run's count.
fn deletion_reply(deletion: &Deletion) -> ApiResult {
    let status = if deletion.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    reply(status, deletion)
}

pub(super) async fn delete_one(Path(id): Path<String>, Writer(svc): Writer) -> ApiResult {
    deletion_reply(&svc.delete_memory(&id).await?)
}

/// The delete body: `ids`, or the filter fields of a search, and `dry_run`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    ids: Option<Vec<String>>,
    agent_id: Option<String>,
    session_id: Option<String>,
    memory_types: Option<Vec<String>>,
    event_types: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    content_contains: Option<String>,
    min_importance: Option<f64>,
    since: Option<String>,
    until: Option<String>,
    dry_run: Option<bool>,
}

pub(super) async fn delete_many(Writer(svc): Writer, body: Body) -> ApiResult {
    let b: DeleteBody = parse_body(&svc, body, false)?;
    let req = DeleteRequest {
        ids: b.ids.unwrap_or_default(),
        filter: SearchParams {
            agent_id: b.agent_id,
            session_id: b.session_id,
            memory_types: b.memory_types.unwrap_or_default(),
            event_types: b.event_types.unwrap_or_default(),
            tags: b.tags.unwrap_or_default(),
            content_contains: b.content_contains,
            since: b.since,
            until: b.until,
            min_importance: b.min_importance,
            ..SearchParams::default()
        },
        dry_run: b.dry_run.unwrap_or(false),
    };
    deletion_reply(&svc.delete_memories(&req).await?)
}

/// The org's erasures in progress.
pub(super) async fn erasures(Reader(svc): Reader) -> ApiResult {
    let erasures = svc.erasures()?;
    reply(
        StatusCode::OK,
        &json!({"count": erasures.len(), "erasures": erasures}),
    )
}

/// The org's delivered erasure receipts, newest first
/// (`?erasure_id=&limit=`).
pub(super) async fn receipts(query: super::Pairs, Reader(svc): Reader) -> ApiResult {
    let (mut id, mut limit) = (None, None);
    for (k, v) in super::pairs(query)? {
        match k.as_str() {
            "erasure_id" => id = Some(v),
            "limit" if !v.is_empty() => limit = Some(super::int_param(&v, "limit")?),
            _ => {}
        }
    }
    let receipts = svc.erasure_receipts(id.as_deref(), limit).await?;
    reply(
        StatusCode::OK,
        &json!({"count": receipts.len(), "receipts": receipts}),
    )
}

/// The control plane's receipt public keys, as `memtracectl erasure verify
/// --keys` reads them (any key of the org; they are public).
pub(super) async fn receipt_keys(
    axum::extract::State(admission): axum::extract::State<crate::admission::Admission>,
    Reader(_svc): Reader,
) -> ApiResult {
    reply(StatusCode::OK, &admission.receipt_key_set())
}

/// One erasure's signed receipt, as `memtracectl erasure verify` reads it.
pub(super) async fn receipt(Path(id): Path<String>, Reader(svc): Reader) -> ApiResult {
    reply(StatusCode::OK, &svc.erasure_receipt(&id).await?.receipt)
}

pub(super) async fn update(Path(id): Path<String>, Writer(svc): Writer, body: Body) -> ApiResult {
    let patch: MemoryPatch = parse_body(&svc, body, false)?;
    reply(StatusCode::OK, &svc.update_memory(&id, patch).await?)
}

/// A memory's versions, newest first.
pub(super) async fn history(Path(id): Path<String>, Reader(svc): Reader) -> ApiResult {
    let versions = svc.memory_history(&id).await?;
    reply(
        StatusCode::OK,
        &json!({"id": id, "count": versions.len(), "versions": versions}),
    )
}
