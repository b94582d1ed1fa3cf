//! The one error type of the memory service. Each variant carries one
//! [`ErrorCode`] (mapped to HTTP and gRPC once, in `memtrace_common::error`,
//! which also keeps internal causes out of what clients see); the adapters
//! only render it. REST bodies are `{"error": "..."}` as the original
//! memtrace wrote them; the no-Arc 503 adds `hint`.

use crate::admission::auth::AuthError;
use crate::query::QueryError;
use crate::store::StoreError;
use memtrace_common::error::{CodedError, ErrorCode, public_message};
use serde_json::{Value, json};
use std::time::Duration;

/// The 503 message the SDKs look for ("arc instance", case-insensitive).
pub const NO_ARC_INSTANCE: &str = "no arc instance configured for this org";
/// The hint sent with [`NO_ARC_INSTANCE`].
pub const NO_ARC_HINT: &str = "ask an admin to run memtracectl org add-arc <org_id>";

/// Everything a service call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// A field broke a rule (400); the message names the field and the rule.
    #[error(transparent)]
    Invalid(#[from] QueryError),
    /// A malformed request (400): bad JSON, a missing required field.
    #[error("{0}")]
    BadRequest(String),
    /// 401 / 403.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 404 `{"error":"<what> not found"}`.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409 `{"error":"duplicate memory"}` (single create of a duplicate).
    #[error("duplicate memory")]
    Duplicate,
    /// 409 for anything else that already exists (an agent name).
    #[error("{0}")]
    Conflict(String),
    /// 413: the request is larger than the org may send.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a body in an encoding the worker does not decode.
    #[error("{0}")]
    Unsupported(String),
    /// 408: the client did not send its body within `server.read_timeout`.
    #[error("request body not received within {0:?} (server.read_timeout); send it at once")]
    BodyTimeout(Duration),
    /// 429 with `Retry-After`: the org's write queue is full.
    #[error("write queue of the org is full, retry later")]
    Busy { retry_after: Duration },
    /// 429 with `Retry-After`: the org is over its request rate.
    #[error("rate limit of the org exceeded, retry later")]
    RateLimited { retry_after: Duration },
    /// 429 with `Retry-After`: the org has `max` reads in flight on this
    /// worker (`limits.max_concurrent_reads`).
    #[error(
        "the org has {max} reads in flight on this worker (limits.max_concurrent_reads); retry shortly"
    )]
    ReadsBusy { max: u64 },
    /// 429 with `Retry-After`: the org's erasures in progress fill the
    /// share of a read's SQL they may take (`query::ERASURE_SQL_BUDGET`).
    #[error(
        "too many deletes of this org are still being erased; retry when they finish (GET /api/v1/erasures)"
    )]
    ErasuresBusy { retry_after: Duration },
    /// 503 with a hint: the org has no Arc binding and no embedded store.
    #[error("{NO_ARC_INSTANCE}")]
    NoArcInstance,
    /// 503: the store is unreachable or the worker is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 502: the storage backend refused or failed the request.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// 500: a bug or an unreadable stored row.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The wait a 503 / UNAVAILABLE asks for (`Retry-After`, the gRPC
/// `retry-after-ms` trailer, a streamed batch's `retry_after_ms`): the
/// store failed after the worker's own retries, or the worker is shutting
/// down, so the client should retry shortly, on another worker if it can.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy { retry_after } => Self::Busy { retry_after },
            StoreError::Unavailable(m) => Self::Unavailable(format!("storage unavailable: {m}")),
            StoreError::ShuttingDown => Self::Unavailable("the worker is shutting down".into()),
            StoreError::TooLarge(m) => Self::TooLarge(m),
            StoreError::Backend(m) => Self::Backend(m),
            StoreError::MissingColumn(c) => {
                Self::Backend(format!("the memory table has no {c} column"))
            }
        }
    }
}

impl CodedError for ServiceError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) | Self::BadRequest(_) => ErrorCode::InvalidArgument,
            Self::Auth(e) if e.unauthenticated() => ErrorCode::Unauthenticated,
            Self::Auth(_) => ErrorCode::PermissionDenied,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Duplicate | Self::Conflict(_) => ErrorCode::AlreadyExists,
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::Unsupported(_) => ErrorCode::UnsupportedMediaType,
            Self::BodyTimeout(_) => ErrorCode::RequestTimeout,
            Self::Busy { .. }
            | Self::RateLimited { .. }
            | Self::ReadsBusy { .. }
            | Self::ErasuresBusy { .. } => ErrorCode::ResourceExhausted,
            Self::NoArcInstance => ErrorCode::NotConfigured,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Backend(_) => ErrorCode::BadGateway,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after }
            | Self::RateLimited { retry_after }
            | Self::ErasuresBusy { retry_after } => Some(*retry_after),
            Self::ReadsBusy { .. } => Some(Duration::from_secs(1)),
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        }
    }
}

impl ServiceError {
    /// The REST body: `{"error": "..."}` with the public message (plus
    /// `hint` for the no-Arc 503).
    pub fn http_body(&self) -> Value {
        match self {
            Self::NoArcInstance => json!({"error": NO_ARC_INSTANCE, "hint": NO_ARC_HINT}),
            other => json!({"error": public_message(other)}),
        }
    }

    /// A 400 naming `field` and its `rule`.
    pub fn invalid(field: &'static str, rule: &'static str) -> Self {
        Self::Invalid(QueryError::Invalid { field, rule })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::error::{retry_after_ms, retry_after_secs};

    #[test]
    fn one_mapping() {
        assert_eq!(ServiceError::Duplicate.code().http_status(), 409);
        assert_eq!(
            ServiceError::Duplicate.http_body(),
            json!({"error": "duplicate memory"})
        );
        assert_eq!(
            ServiceError::NotFound("memory").http_body(),
            json!({"error": "memory not found"})
        );
        let no_arc = ServiceError::NoArcInstance;
        assert_eq!(no_arc.code().http_status(), 503);
        assert!(
            no_arc.http_body()["error"]
                .as_str()
                .is_some_and(|e| e.contains("arc instance"))
        );
        assert!(no_arc.http_body()["hint"].is_string());
        let busy = ServiceError::from(StoreError::Busy {
            retry_after: Duration::from_millis(200),
        });
        assert_eq!(busy.code().http_status(), 429);
        assert_eq!(busy.retry_after().map(retry_after_secs), Some(1));
        assert_eq!(busy.retry_after().map(retry_after_ms), Some(200));
        assert_eq!(ServiceError::Duplicate.retry_after(), None);
        let down = ServiceError::from(StoreError::Unavailable("arc refused".into()));
        assert_eq!(down.code().http_status(), 503);
        assert_eq!(down.retry_after().map(retry_after_secs), Some(1));
        let closing = ServiceError::from(StoreError::ShuttingDown);
        assert_eq!(closing.retry_after(), Some(UNAVAILABLE_RETRY_AFTER));
        assert_eq!(busy.code().grpc(), tonic::Code::ResourceExhausted);
        let invalid = ServiceError::invalid("agent_id", "is required");
        assert_eq!(invalid.code().http_status(), 400);
        assert_eq!(invalid.to_string(), "invalid agent_id: is required");
    }

    #[test]
    fn internal_causes_are_not_sent_and_other_codes_map_once() {
        let internal = ServiceError::Internal("row 3 of memories unreadable".into());
        assert_eq!(internal.code().http_status(), 500);
        assert_eq!(
            internal.http_body(),
            json!({"error": memtrace_common::error::INTERNAL_MESSAGE})
        );
        let status = memtrace_common::error::to_status(&internal);
        assert!(!status.message().contains("row 3"));
        assert_eq!(
            ServiceError::TooLarge("big".into()).code().http_status(),
            413
        );
        assert_eq!(
            ServiceError::TooLarge("big".into()).code().grpc(),
            tonic::Code::ResourceExhausted
        );
        let backend = ServiceError::Backend("arc answered 400".into());
        assert_eq!(backend.code().http_status(), 502);
        assert_eq!(
            backend.http_body(),
            json!({"error": "storage backend failed: arc answered 400"})
        );
        assert_eq!(
            ServiceError::NoArcInstance.code().grpc(),
            tonic::Code::FailedPrecondition
        );
    }
}
