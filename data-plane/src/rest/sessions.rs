//! `/api/v1/sessions`: create, list (optionally by agent), get, update
//! (status / metadata replacement), a session's memories and its context.

use super::{
    ApiResult, Body, Pairs, Reader, Writer, list_params, parse_body, registry_query, reply,
};
use crate::service::{
    ContextRequest, CreateSessionRequest, NewSession, SessionUpdate, UpdateSessionRequest,
};
use axum::extract::Path;
use axum::http::StatusCode;
use serde_json::json;

pub(super) async fn create(Writer(svc): Writer, body: Body) -> ApiResult {
    let req: CreateSessionRequest = parse_body(&svc, body, false)?;
    let session = svc.create_session(NewSession::try_from(req)?).await?;
    reply(StatusCode::CREATED, &session)
}

pub(super) async fn list(query: Pairs, Reader(svc): Reader) -> ApiResult {
    let (agent, page) = registry_query(query)?;
    let (sessions, has_more) = svc.list_sessions(agent.as_deref(), page).await?;
    reply(
        StatusCode::OK,
        &json!({"count": sessions.len(), "sessions": sessions, "has_more": has_more}),
    )
}

pub(super) async fn get_one(Path(id): Path<String>, Reader(svc): Reader) -> ApiResult {
    reply(StatusCode::OK, &svc.get_session(&id).await?)
}

pub(super) async fn update(Path(id): Path<String>, Writer(svc): Writer, body: Body) -> ApiResult {
    let req: UpdateSessionRequest = parse_body(&svc, body, true)?;
    let session = svc
        .update_session(&id, SessionUpdate::try_from(req)?)
        .await?;
    reply(StatusCode::OK, &session)
}

pub(super) async fn memories(
    Path(id): Path<String>,
    query: Pairs,
    Reader(svc): Reader,
) -> ApiResult {
    let params = list_params(query)?;
    reply(StatusCode::OK, &svc.session_memories(&id, &params).await?)
}

pub(super) async fn context(Path(id): Path<String>, Reader(svc): Reader, body: Body) -> ApiResult {
    let req: ContextRequest = parse_body(&svc, body, true)?;
    reply(StatusCode::OK, &svc.session_context(&id, req).await?)
}
