//! The control plane's one error enum, and the single place its variants get
//! their error codes.

use crate::store::StoreError;
use memtrace_common::envelope::EnvelopeError;
use memtrace_common::error::{CodedError, ErrorCode};
use memtrace_common::settings::SettingError;

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("invalid {field}: {rule}")]
    InvalidArgument { field: &'static str, rule: String },
    #[error("org {0} not found")]
    OrgNotFound(String),
    #[error("org {0} has no arc binding")]
    ArcBindingNotFound(String),
    #[error("api key {0} not found")]
    ApiKeyNotFound(String),
    #[error("admin token {0} not found")]
    AdminTokenNotFound(String),
    #[error(
        "admin token {0} is the last active admin-role token: revoking it would leave no token that can make changes"
    )]
    LastAdminToken(String),
    #[error(
        "admin token {token_id} has role {role}, which may not call {method} (needs role {required})"
    )]
    RoleDenied {
        token_id: String,
        role: &'static str,
        method: String,
        required: &'static str,
    },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "stored secret cannot be opened: {0}; configure the master key that sealed it (MEMTRACE_MASTER_KEY or MEMTRACE_MASTER_KEYS_PREVIOUS)"
    )]
    Secret(#[from] EnvelopeError),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error(
        "setting {0} is locked by [control_plane] locked_settings (MEMTRACE_CONTROL_PLANE_LOCKED_SETTINGS); the attempt was audited"
    )]
    SettingLocked(String),
    #[error("audit entry {0} not found")]
    AuditEntryNotFound(i64),
    #[error("erasure {0} not found")]
    ErasureNotFound(String),
    #[error("{0}")]
    Startup(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ControlPlaneError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => Self::AlreadyExists(message),
            other => Self::Store(other),
        }
    }
}

impl ControlPlaneError {
    pub fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            rule: rule.into(),
        }
    }
}

impl CodedError for ControlPlaneError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Self::OrgNotFound(_)
            | Self::ArcBindingNotFound(_)
            | Self::ApiKeyNotFound(_)
            | Self::AdminTokenNotFound(_) => ErrorCode::NotFound,
            Self::LastAdminToken(_) => ErrorCode::FailedPrecondition,
            Self::RoleDenied { .. } => ErrorCode::PermissionDenied,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Secret(_) | Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::Setting(error) => error.code(),
            Self::SettingLocked(_) => ErrorCode::PermissionDenied,
            Self::AuditEntryNotFound(_) | Self::ErasureNotFound(_) => ErrorCode::NotFound,
            Self::Startup(_) | Self::Store(_) => ErrorCode::Internal,
        }
    }
}

impl From<ControlPlaneError> for tonic::Status {
    fn from(error: ControlPlaneError) -> Self {
        memtrace_common::error::to_status(&error)
    }
}

pub type Result<T, E = ControlPlaneError> = std::result::Result<T, E>;
