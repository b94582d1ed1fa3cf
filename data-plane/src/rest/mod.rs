//! The memtrace-compatible REST API (`/api/v1/*`, wire-compatible with the
//! original Go memtrace and its SDKs): an axum router of thin handlers that
//! pass the request's key through [`Admission`] (the route's scope: reads
//! need `read`, writes `write`), parse the body or query into the service's
//! types, call the org's [`OrgService`], and render. Every failure is a
//! [`ServiceError`], rendered here once: the status of its code,
//! `{"error": ...}` (`hint` on the no-Arc 503), `Retry-After` on 429 and on
//! 503 (store unavailable, shutting down).

mod agents;
mod body;
mod export;
mod memories;
mod sessions;

use crate::admission::{Admission, MAX_REQUEST_BYTES, Scope, credential, legacy};
use crate::query::ListParams;
use crate::service::types::RegistryPage;
use crate::service::{OrgService, ServiceError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use memtrace_common::error::{CodedError, retry_after_secs};
use serde::de::DeserializeOwned;

pub(crate) use body::Body;
pub use body::BodyTimeout;

/// The `/api/v1` routes; a client has `body_timeout` (`server.read_timeout`)
/// to send a request's body.
pub fn router(state: Admission, body_timeout: BodyTimeout) -> axum::Router {
    axum::Router::new()
        .route(
            "/api/v1/memories",
            post(memories::create).get(memories::list),
        )
        .route(
            "/api/v1/memories/{id}",
            get(memories::get_one)
                .patch(memories::update)
                .delete(memories::delete_one),
        )
        .route("/api/v1/memories/{id}/history", get(memories::history))
        .route("/api/v1/search", post(memories::search))
        .route("/api/v1/delete", post(memories::delete_many))
        .route("/api/v1/erasures", get(memories::erasures))
        .route("/api/v1/erasures/receipts", get(memories::receipts))
        .route("/api/v1/erasures/keys", get(memories::receipt_keys))
        .route("/api/v1/erasures/{id}/receipt", get(memories::receipt))
        .route("/api/v1/export", get(export::export))
        .route("/api/v1/agents", post(agents::register).get(agents::list))
        .route(
            "/api/v1/agents/{id}",
            get(agents::get_one).delete(agents::delete),
        )
        .route("/api/v1/agents/{id}/memories", get(agents::memories))
        .route("/api/v1/agents/{id}/stats", get(agents::stats))
        .route(
            "/api/v1/sessions",
            post(sessions::create).get(sessions::list),
        )
        .route(
            "/api/v1/sessions/{id}",
            get(sessions::get_one).put(sessions::update),
        )
        .route("/api/v1/sessions/{id}/memories", get(sessions::memories))
        .route("/api/v1/sessions/{id}/context", post(sessions::context))
        .route("/api/v1/tokens", post(agents::mint_token))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::Extension(body_timeout))
        .layer(axum::middleware::from_fn(body::close_if_unread))
        .layer(axum::middleware::from_fn(legacy_headers))
        .with_state(state)
}

/// Marks every response to a request with a Go memtrace key as deprecated
/// (`Deprecation`, `Warning`: see `admission::legacy`).
async fn legacy_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let legacy = request_token(request.headers()).is_some_and(legacy::looks_legacy);
    let mut response = next.run(request).await;
    if legacy {
        legacy::mark(response.headers_mut());
    }
    response
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut response = (status, Json(self.http_body())).into_response();
        if let Some(wait) = self.retry_after()
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs(wait).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// Handler results.
pub(crate) type ApiResult = Result<Response, ServiceError>;

/// The API key of a request (`x-api-key` or `authorization: Bearer`).
fn request_token(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    credential(header("x-api-key"), header("authorization"))
}

/// The org's service for a route that reads: extracting it runs
/// [`Admission::admit`] with the `read` scope.
pub(crate) struct Reader(pub OrgService);

/// The org's service for a route that writes (the `write` scope).
pub(crate) struct Writer(pub OrgService);

impl FromRequestParts<Admission> for Reader {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Admission,
    ) -> Result<Self, ServiceError> {
        state
            .admit(request_token(&parts.headers), Scope::Read)
            .await
            .map(Self)
    }
}

impl FromRequestParts<Admission> for Writer {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Admission,
    ) -> Result<Self, ServiceError> {
        state
            .admit(request_token(&parts.headers), Scope::Write)
            .await
            .map(Self)
    }
}

/// The body as JSON, within the org's `max_payload_bytes` ([`checked_body`],
/// [`json_body`]); an empty body is `T::default()` when `empty_ok`.
pub(crate) fn parse_body<T: DeserializeOwned + Default>(
    svc: &OrgService,
    body: Body,
    empty_ok: bool,
) -> Result<T, ServiceError> {
    json_body(&checked_body(svc, body)?, empty_ok)
}

/// The body (read and decoded by [`Body`]), refused with 413 above the
/// org's `max_payload_bytes` (counted decoded).
fn checked_body(svc: &OrgService, body: Body) -> Result<Bytes, ServiceError> {
    let body = body.0?;
    svc.check_payload(body.len())?;
    Ok(body)
}

/// A JSON body; an empty body is `T::default()` when `empty_ok`.
fn json_body<T: DeserializeOwned + Default>(
    body: &[u8],
    empty_ok: bool,
) -> Result<T, ServiceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(T::default())
        } else {
            Err(ServiceError::BadRequest(
                "invalid request body: empty, expected a JSON object".into(),
            ))
        };
    }
    serde_json::from_slice(body)
        .map_err(|e| ServiceError::BadRequest(format!("invalid request body: {e}")))
}

/// Query pairs, refused with a JSON 400 when unparsable.
pub(crate) type Pairs = Result<axum::extract::Query<Vec<(String, String)>>, QueryRejection>;

pub(crate) fn pairs(q: Pairs) -> Result<Vec<(String, String)>, ServiceError> {
    q.map(|axum::extract::Query(p)| p)
        .map_err(|e| ServiceError::BadRequest(format!("invalid query string: {}", e.body_text())))
}

pub(crate) fn int_param(value: &str, field: &'static str) -> Result<i64, ServiceError> {
    value
        .trim()
        .parse()
        .map_err(|_| ServiceError::invalid(field, "must be an integer"))
}

/// The list parameters of a query string (last value of a repeated key wins).
pub(crate) fn list_params(q: Pairs) -> Result<ListParams, ServiceError> {
    let mut p = ListParams::default();
    for (k, v) in pairs(q)? {
        match k.as_str() {
            "agent_id" => p.agent_id = Some(v),
            "session_id" => p.session_id = Some(v),
            "memory_type" => p.memory_type = Some(v),
            "event_type" => p.event_type = Some(v),
            "tags" => p.tags = Some(v),
            "since" => p.since = Some(v),
            "until" => p.until = Some(v),
            "order" => p.order = Some(v),
            "limit" if !v.is_empty() => p.limit = Some(int_param(&v, "limit")?),
            "offset" if !v.is_empty() => p.offset = Some(int_param(&v, "offset")?),
            _ => {}
        }
    }
    Ok(p)
}

/// The `agent_id` (the last, when repeated), `limit` and `offset` of an
/// agent or session list.
pub(crate) fn registry_query(q: Pairs) -> Result<(Option<String>, RegistryPage), ServiceError> {
    let (mut agent, mut limit, mut offset) = (None, None, None);
    for (k, v) in pairs(q)? {
        match k.as_str() {
            "agent_id" => agent = Some(v),
            "limit" if !v.is_empty() => limit = Some(int_param(&v, "limit")?),
            "offset" if !v.is_empty() => offset = Some(int_param(&v, "offset")?),
            _ => {}
        }
    }
    Ok((agent, RegistryPage::parse(limit, offset)?))
}

/// A JSON response with `status`.
pub(crate) fn reply<T: serde::Serialize>(status: StatusCode, body: &T) -> ApiResult {
    Ok((status, Json(body)).into_response())
}
