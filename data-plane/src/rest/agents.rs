//! `/api/v1/agents`: register, list, get / delete by id or name, an
//! agent's memories and stats.

use super::{
    ApiResult, Body, Pairs, Reader, Writer, list_params, parse_body, registry_query, reply,
};
use crate::service::{NewAgent, RegisterAgentRequest};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

/// `POST /api/v1/tokens`: an agent token for the caller's org, minted by
/// this worker (`admission::tokens`); the key is checked before the body
/// is read. 201 with the token, shown once.
pub(super) async fn mint_token(
    axum::extract::State(admission): axum::extract::State<crate::admission::Admission>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult {
    let principal = admission.minter(super::request_token(&headers))?;
    let body = body.0?;
    if body.len() > crate::admission::tokens::MAX_MINT_BODY {
        return Err(crate::service::ServiceError::TooLarge(format!(
            "a token request is at most {} bytes",
            crate::admission::tokens::MAX_MINT_BODY
        )));
    }
    let request = super::json_body(&body, true)?;
    reply(
        StatusCode::CREATED,
        &admission.mint_token(&principal, request)?,
    )
}

pub(super) async fn register(Writer(svc): Writer, body: Body) -> ApiResult {
    let req: RegisterAgentRequest = parse_body(&svc, body, false)?;
    let agent = svc.register_agent(NewAgent::try_from(req)?).await?;
    reply(StatusCode::CREATED, &agent)
}

pub(super) async fn list(query: Pairs, Reader(svc): Reader) -> ApiResult {
    let (_, page) = registry_query(query)?;
    let (agents, has_more) = svc.list_agents(page).await?;
    reply(
        StatusCode::OK,
        &json!({"count": agents.len(), "agents": agents, "has_more": has_more}),
    )
}

pub(super) async fn get_one(Path(id): Path<String>, Reader(svc): Reader) -> ApiResult {
    reply(StatusCode::OK, &svc.get_agent(&id).await?)
}

/// 204 as the original; with `?cascade=true` the agent's memories are
/// deleted too (an erasure, as `POST /api/v1/delete` by agent): 202 with it.
pub(super) async fn delete(Path(id): Path<String>, query: Pairs, Writer(svc): Writer) -> ApiResult {
    let mut cascade = false;
    for (k, v) in super::pairs(query)? {
        match (k.as_str(), v.as_str()) {
            ("cascade", "true" | "1") => cascade = true,
            ("cascade", "false" | "0" | "") => cascade = false,
            ("cascade", _) => {
                return Err(crate::service::ServiceError::invalid(
                    "cascade",
                    "must be true or false",
                ));
            }
            _ => {}
        }
    }
    match svc.delete_agent(&id, cascade).await? {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(deletion) => reply(StatusCode::ACCEPTED, &deletion),
    }
}

pub(super) async fn memories(
    Path(id): Path<String>,
    query: Pairs,
    Reader(svc): Reader,
) -> ApiResult {
    let params = list_params(query)?;
    reply(StatusCode::OK, &svc.agent_memories(&id, &params).await?)
}

pub(super) async fn stats(Path(id): Path<String>, Reader(svc): Reader) -> ApiResult {
    reply(StatusCode::OK, &svc.agent_stats(&id).await?)
}
