//! `/api/v1/sessions`: create, list (optionally by agent), get, update
//! (status / metadata replacement), a session's memories and its context.

use super::{
    ApiResult, Pairs, RestState, checked_body, json_body, list_params, org_service, query_value,
    reply,
};
use crate::auth::Scope;
use crate::service::{
    ContextRequest, CreateSessionRequest, NewSession, SessionUpdate, UpdateSessionRequest,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

pub(super) async fn create(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Write).await?;
    let body = checked_body(&svc, body)?;
    let req: CreateSessionRequest = json_body(&body, false)?;
    let session = svc.create_session(NewSession::try_from(req)?).await?;
    reply(StatusCode::CREATED, &session)
}

pub(super) async fn list(
    State(state): State<RestState>,
    headers: HeaderMap,
    query: Pairs,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    let agent = query_value(query, "agent_id")?;
    let sessions = svc.list_sessions(agent.as_deref()).await?;
    reply(
        StatusCode::OK,
        &json!({"count": sessions.len(), "sessions": sessions}),
    )
}

pub(super) async fn get_one(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    reply(StatusCode::OK, &svc.get_session(&id).await?)
}

pub(super) async fn update(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Write).await?;
    let body = checked_body(&svc, body)?;
    let req: UpdateSessionRequest = json_body(&body, true)?;
    let session = svc
        .update_session(&id, SessionUpdate::try_from(req)?)
        .await?;
    reply(StatusCode::OK, &session)
}

pub(super) async fn memories(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Pairs,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    let params = list_params(query)?;
    reply(StatusCode::OK, &svc.session_memories(&id, &params).await?)
}

pub(super) async fn context(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    let body = checked_body(&svc, body)?;
    let req: ContextRequest = json_body(&body, true)?;
    reply(StatusCode::OK, &svc.session_context(&id, req).await?)
}
