//! The closed set of error codes memtrace reports, mapped once to gRPC and
//! HTTP. Each crate's error enum says which code each variant carries; the
//! adapters never pick codes themselves.

/// A deliberately small subset of gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    /// A well-formed request whose value breaks a rule (a setting out of
    /// range or of the wrong type): gRPC INVALID_ARGUMENT, HTTP 422.
    InvalidValue,
    NotFound,
    AlreadyExists,
    Unauthenticated,
    PermissionDenied,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The gRPC code.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Self::InvalidArgument | Self::InvalidValue => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::FailedPrecondition => tonic::Code::FailedPrecondition,
            Self::ResourceExhausted => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::InvalidValue => 422,
            Self::NotFound => 404,
            Self::AlreadyExists => 409,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::FailedPrecondition => 412,
            Self::ResourceExhausted => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

/// Implemented by every crate's error enum.
pub trait CodedError: std::error::Error {
    fn code(&self) -> ErrorCode;
}

/// Converts any coded error into a `tonic::Status`. Internal errors keep their
/// cause out of the message sent to the client (it is logged instead).
pub fn to_status<E: CodedError>(error: &E) -> tonic::Status {
    let code = error.code();
    if code == ErrorCode::Internal {
        tracing::error!(error = %error, "internal error");
        return tonic::Status::internal("internal error; see the server log");
    }
    tonic::Status::new(code.grpc(), error.to_string())
}
