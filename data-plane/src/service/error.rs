//! The one error type of the memory service and its single mapping to an
//! HTTP status + JSON body (the REST adapter) and to a gRPC code (the gRPC
//! adapter). Bodies are `{"error": "..."}` as the original memtrace wrote
//! them; the no-Arc 503 adds `hint`.

use crate::auth::AuthError;
use crate::query::QueryError;
use crate::store::StoreError;
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
    /// 429 with `Retry-After`: the org's write queue is full.
    #[error("write queue of the org is full, retry later")]
    Busy { retry_after: Duration },
    /// 429 with `Retry-After`: the org is over its request rate.
    #[error("rate limit of the org exceeded, retry later")]
    RateLimited { retry_after: Duration },
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

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy { retry_after } => Self::Busy { retry_after },
            StoreError::Unavailable(m) => Self::Unavailable(format!("storage unavailable: {m}")),
            StoreError::ShuttingDown => Self::Unavailable("the worker is shutting down".into()),
            StoreError::TooLarge(m) => Self::TooLarge(m),
            StoreError::Backend(m) => Self::Backend(m),
        }
    }
}

impl ServiceError {
    /// The HTTP status code.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Invalid(_) | Self::BadRequest(_) => 400,
            Self::Auth(AuthError::Missing | AuthError::Invalid) => 401,
            Self::Auth(AuthError::MissingScope(_)) => 403,
            Self::NotFound(_) => 404,
            Self::Duplicate | Self::Conflict(_) => 409,
            Self::TooLarge(_) => 413,
            Self::Busy { .. } | Self::RateLimited { .. } => 429,
            Self::NoArcInstance | Self::Unavailable(_) => 503,
            Self::Backend(_) => 502,
            Self::Internal(_) => 500,
        }
    }

    /// The JSON body: `{"error": "..."}` (plus `hint` for the no-Arc 503).
    pub fn http_body(&self) -> Value {
        match self {
            Self::NoArcInstance => json!({"error": NO_ARC_INSTANCE, "hint": NO_ARC_HINT}),
            other => json!({"error": other.to_string()}),
        }
    }

    /// How long to wait before retrying, for a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after } | Self::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Seconds for a `Retry-After` header (at least 1), for a 429.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after()
            .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
    }

    /// Milliseconds (at least 1) for the gRPC `retry-after-ms` trailer and a
    /// streamed batch's error, for a RESOURCE_EXHAUSTED with a wait.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    /// The gRPC status code for the same failure.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::Invalid(_) | Self::BadRequest(_) => tonic::Code::InvalidArgument,
            Self::Auth(AuthError::Missing | AuthError::Invalid) => tonic::Code::Unauthenticated,
            Self::Auth(AuthError::MissingScope(_)) => tonic::Code::PermissionDenied,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::Duplicate | Self::Conflict(_) => tonic::Code::AlreadyExists,
            Self::TooLarge(_) | Self::Busy { .. } | Self::RateLimited { .. } => {
                tonic::Code::ResourceExhausted
            }
            Self::NoArcInstance => tonic::Code::FailedPrecondition,
            Self::Unavailable(_) => tonic::Code::Unavailable,
            Self::Backend(_) | Self::Internal(_) => tonic::Code::Internal,
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

    #[test]
    fn one_mapping() {
        assert_eq!(ServiceError::Duplicate.http_status(), 409);
        assert_eq!(
            ServiceError::Duplicate.http_body(),
            json!({"error": "duplicate memory"})
        );
        assert_eq!(
            ServiceError::NotFound("memory").http_body(),
            json!({"error": "memory not found"})
        );
        let no_arc = ServiceError::NoArcInstance;
        assert_eq!(no_arc.http_status(), 503);
        assert!(
            no_arc.http_body()["error"]
                .as_str()
                .is_some_and(|e| e.contains("arc instance"))
        );
        assert!(no_arc.http_body()["hint"].is_string());
        let busy = ServiceError::from(StoreError::Busy {
            retry_after: Duration::from_millis(200),
        });
        assert_eq!(busy.http_status(), 429);
        assert_eq!(busy.retry_after_secs(), Some(1));
        assert_eq!(busy.retry_after_ms(), Some(200));
        assert_eq!(ServiceError::Duplicate.retry_after_ms(), None);
        assert_eq!(busy.grpc_code(), tonic::Code::ResourceExhausted);
        let invalid = ServiceError::invalid("agent_id", "is required");
        assert_eq!(invalid.http_status(), 400);
        assert_eq!(invalid.to_string(), "invalid agent_id: is required");
    }
}
