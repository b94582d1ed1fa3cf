//! `/api/v1/agents`: register, list, get / delete by id or name, an
//! agent's memories and stats.

use super::{
    ApiResult, Pairs, RestState, checked_body, json_body, list_params, org_service, reply,
};
use crate::auth::Scope;
use crate::service::{NewAgent, RegisterAgentRequest};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

pub(super) async fn register(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Write).await?;
    let body = checked_body(&svc, body)?;
    let req: RegisterAgentRequest = json_body(&body, false)?;
    let agent = svc.register_agent(NewAgent::try_from(req)?).await?;
    reply(StatusCode::CREATED, &agent)
}

pub(super) async fn list(State(state): State<RestState>, headers: HeaderMap) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    let agents = svc.list_agents().await?;
    reply(
        StatusCode::OK,
        &json!({"count": agents.len(), "agents": agents}),
    )
}

pub(super) async fn get_one(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    reply(StatusCode::OK, &svc.get_agent(&id).await?)
}

pub(super) async fn delete(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Write).await?;
    svc.delete_agent(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn memories(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Pairs,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    let params = list_params(query)?;
    reply(StatusCode::OK, &svc.agent_memories(&id, &params).await?)
}

pub(super) async fn stats(
    State(state): State<RestState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let svc = org_service(&state, &headers, Scope::Read).await?;
    reply(StatusCode::OK, &svc.agent_stats(&id).await?)
}
