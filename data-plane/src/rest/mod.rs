//! The memtrace-compatible REST API (`/api/v1/*`, wire-compatible with the
//! original Go memtrace and its SDKs): an axum router of thin handlers that
//! authenticate the key against the live snapshot, check the route's scope
//! (reads need `read`, writes `write`; 403 otherwise) and the org's rate
//! limit (429 + `Retry-After`), build the org's
//! [`OrgService`] over the store a [`StoreResolver`] picks, call it, and
//! render. Every failure is a [`ServiceError`] rendered by its one mapping
//! (`{"error": ...}`, `hint` on the no-Arc 503, `Retry-After` on 429).

mod agents;
mod memories;
mod sessions;

use crate::auth::{Scope, authenticate, credential};
use crate::limits::RateLimiter;
use crate::query::ListParams;
use crate::service::{OrgService, ServiceError, ServiceShared};
use crate::snapshot::{Snapshot, SnapshotHandle};
use crate::store::TenantStore;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Largest request body accepted at all (an org's `max_payload_bytes`
/// may be lower; it is checked once the org is known).
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// Picks the store of an org for a request.
#[async_trait::async_trait]
pub trait StoreResolver: Send + Sync + 'static {
    /// The org's store, or [`ServiceError::NoArcInstance`] when it has none.
    async fn store(
        &self,
        snapshot: &Snapshot,
        org_id: &str,
    ) -> Result<Arc<dyn TenantStore>, ServiceError>;
}

/// What the handlers share.
#[derive(Clone)]
pub struct RestState {
    pub snapshot: Arc<SnapshotHandle>,
    /// Per-org request rate limits (this worker's share of the org's).
    pub limiter: Arc<RateLimiter>,
    pub stores: Arc<dyn StoreResolver>,
    pub shared: Arc<ServiceShared>,
}

/// The `/api/v1` routes.
pub fn router(state: RestState) -> axum::Router {
    axum::Router::new()
        .route(
            "/api/v1/memories",
            post(memories::create).get(memories::list),
        )
        .route("/api/v1/memories/{id}", get(memories::get_one))
        .route("/api/v1/search", post(memories::search))
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
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut response = (status, Json(self.http_body())).into_response();
        if let Some(secs) = self.retry_after_secs()
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// Handler results.
pub(crate) type ApiResult = Result<Response, ServiceError>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The API key of a request (`x-api-key` or `authorization: Bearer`).
fn request_token(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    credential(header("x-api-key"), header("authorization"))
}

/// Authenticates the request's API key `token`, checks `scope` and the
/// org's rate limit, and opens the org's service (REST and gRPC alike).
pub(crate) async fn org_service(
    state: &RestState,
    token: Option<&str>,
    scope: Scope,
) -> Result<OrgService, ServiceError> {
    if !state.snapshot.is_ready() {
        return Err(ServiceError::Unavailable(
            "worker not ready: no snapshot of published state yet".into(),
        ));
    }
    let snapshot = state.snapshot.load();
    let principal = authenticate(&snapshot, token, now_ms())?;
    principal.require(scope)?;
    let limits = snapshot.settings().limits(Some(&principal.org_id));
    state
        .limiter
        .check(
            &principal.org_id,
            &limits,
            snapshot.worker_count(),
            1.0,
            Instant::now(),
        )
        .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
    let store = state.stores.store(&snapshot, &principal.org_id).await?;
    OrgService::with_limits(
        store,
        &principal.org_id,
        snapshot.settings(),
        limits,
        state.shared.clone(),
    )
}

/// The org's service for a route that reads: extracting it authenticates
/// the request, checks the `read` scope and the rate limit ([`org_service`]).
pub(crate) struct Reader(pub OrgService);

/// The org's service for a route that writes (the `write` scope).
pub(crate) struct Writer(pub OrgService);

impl FromRequestParts<RestState> for Reader {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RestState,
    ) -> Result<Self, ServiceError> {
        org_service(state, request_token(&parts.headers), Scope::Read)
            .await
            .map(Self)
    }
}

impl FromRequestParts<RestState> for Writer {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RestState,
    ) -> Result<Self, ServiceError> {
        org_service(state, request_token(&parts.headers), Scope::Write)
            .await
            .map(Self)
    }
}

/// A raw request body (its rejection is reported by [`parse_body`]).
pub(crate) type Body = Result<Bytes, BytesRejection>;

/// The body as JSON, within the org's `max_payload_bytes` ([`checked_body`],
/// [`json_body`]); an empty body is `T::default()` when `empty_ok`.
pub(crate) fn parse_body<T: DeserializeOwned + Default>(
    svc: &OrgService,
    body: Body,
    empty_ok: bool,
) -> Result<T, ServiceError> {
    json_body(&checked_body(svc, body)?, empty_ok)
}

/// The body, refused with 413 above the org's `max_payload_bytes`.
fn checked_body(svc: &OrgService, body: Body) -> Result<Bytes, ServiceError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServiceError::TooLarge(format!(
                "request body exceeds the limit of {MAX_BODY_BYTES} bytes"
            ))
        } else {
            ServiceError::BadRequest(format!("invalid request body: {}", e.body_text()))
        }
    })?;
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

fn pairs(q: Pairs) -> Result<Vec<(String, String)>, ServiceError> {
    q.map(|axum::extract::Query(p)| p)
        .map_err(|e| ServiceError::BadRequest(format!("invalid query string: {}", e.body_text())))
}

fn int_param(value: &str, field: &'static str) -> Result<i64, ServiceError> {
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

/// One query value by name.
pub(crate) fn query_value(q: Pairs, name: &str) -> Result<Option<String>, ServiceError> {
    Ok(pairs(q)?
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v))
}

/// A JSON response with `status`.
pub(crate) fn reply<T: serde::Serialize>(status: StatusCode, body: &T) -> ApiResult {
    Ok((status, Json(body)).into_response())
}
