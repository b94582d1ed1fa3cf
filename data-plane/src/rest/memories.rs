//! `/api/v1/memories` (create single or `{memories:[...]}` batch, list, get
//! by id) and `/api/v1/search`.

use super::{
    ApiResult, Pairs, RestState, checked_body, json_body, list_params, org_service, reply,
};
use crate::auth::Scope;
use crate::query::SearchParams;
use crate::service::{CreateMemoryRequest, NewMemory, ServiceError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) async fn create(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Write).await?;
    let body = checked_body(&svc, body)?;
    let value: Value = json_body(&body, false)?;
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

pub(super) async fn list(
    State(state): State<RestState>,
    headers: HeaderMap,
    query: Pairs,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    let params = list_params(query)?;
    reply(StatusCode::OK, &svc.list_memories(&params).await?)
}

pub(super) async fn get_one(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
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

pub(super) async fn search(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    let body = checked_body(&svc, body)?;
    let b: SearchBody = json_body(&body, true)?;
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
