//! The closed set of error codes memtrace reports, mapped once to gRPC and
//! HTTP, and the one conversion of a coded error into what a client sees.
//! Each crate's error enum says which code each variant carries
//! ([`CodedError`]); the adapters never pick codes or messages themselves.

use std::borrow::Cow;
use std::time::Duration;

/// A deliberately small subset of gRPC status codes, each with one HTTP
/// status.
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
    /// Too many requests or too much queued: RESOURCE_EXHAUSTED, HTTP 429.
    ResourceExhausted,
    /// One request larger than allowed: RESOURCE_EXHAUSTED, HTTP 413.
    PayloadTooLarge,
    /// A request in an encoding the server does not decode (an unknown
    /// `Content-Encoding`): INVALID_ARGUMENT, HTTP 415.
    UnsupportedMediaType,
    /// The client did not send its request in time: DEADLINE_EXCEEDED,
    /// HTTP 408.
    RequestTimeout,
    /// Nothing to serve the request with until an operator configures it
    /// (an org without an Arc binding): FAILED_PRECONDITION, HTTP 503 (what
    /// the original memtrace's SDKs expect).
    NotConfigured,
    Unavailable,
    /// A backend (a tenant's Arc) refused or failed the request: INTERNAL,
    /// HTTP 502; the message is the client's to read.
    BadGateway,
    /// A bug or an unreadable record: the cause stays in the server log.
    Internal,
}

impl ErrorCode {
    /// The gRPC code.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Self::InvalidArgument | Self::InvalidValue | Self::UnsupportedMediaType => {
                tonic::Code::InvalidArgument
            }
            Self::RequestTimeout => tonic::Code::DeadlineExceeded,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::FailedPrecondition | Self::NotConfigured => tonic::Code::FailedPrecondition,
            Self::ResourceExhausted | Self::PayloadTooLarge => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::BadGateway | Self::Internal => tonic::Code::Internal,
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
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RequestTimeout => 408,
            Self::NotConfigured | Self::Unavailable => 503,
            Self::BadGateway => 502,
            Self::Internal => 500,
        }
    }
}

/// Implemented by every crate's error enum.
pub trait CodedError: std::error::Error {
    fn code(&self) -> ErrorCode;

    /// How long the client should wait before retrying (429s).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// The message a client is shown: the error's own text, except for
/// internal errors, whose cause is logged here and replaced.
pub fn public_message<E: CodedError + ?Sized>(error: &E) -> Cow<'static, str> {
    if error.code() == ErrorCode::Internal {
        tracing::error!(error = %error, "internal error");
        Cow::Borrowed(INTERNAL_MESSAGE)
    } else {
        Cow::Owned(error.to_string())
    }
}

/// What clients see instead of an internal error's cause.
pub const INTERNAL_MESSAGE: &str = "internal error; see the server log";

/// Seconds for an HTTP `Retry-After` header: at least 1, rounded up.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Milliseconds (at least 1) for the gRPC `retry-after-ms` trailer.
pub fn retry_after_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Converts any coded error into a `tonic::Status`: its code, its public
/// message, and a `retry-after-ms` trailer when it carries a wait.
pub fn to_status<E: CodedError + ?Sized>(error: &E) -> tonic::Status {
    let mut status = tonic::Status::new(error.code().grpc(), public_message(error));
    if let Some(wait) = error.retry_after() {
        let value = tonic::metadata::MetadataValue::from(retry_after_ms(wait));
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Sample {
        #[error("secret cause")]
        Bug,
        #[error("slow down")]
        Busy,
    }

    impl CodedError for Sample {
        fn code(&self) -> ErrorCode {
            match self {
                Self::Bug => ErrorCode::Internal,
                Self::Busy => ErrorCode::ResourceExhausted,
            }
        }

        fn retry_after(&self) -> Option<Duration> {
            matches!(self, Self::Busy).then_some(Duration::from_millis(1500))
        }
    }

    #[test]
    fn internal_causes_stay_in_the_log() {
        let status = to_status(&Sample::Bug);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), INTERNAL_MESSAGE);
        assert!(status.metadata().get("retry-after-ms").is_none());
        assert_eq!(public_message(&Sample::Busy), "slow down");
    }

    #[test]
    fn waits_travel_as_a_trailer_and_a_header() {
        let status = to_status(&Sample::Busy);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok()),
            Some("1500")
        );
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_ms(Duration::from_micros(10)), 1);
    }

    #[test]
    fn each_code_has_one_http_and_grpc_status() {
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(
            ErrorCode::PayloadTooLarge.grpc(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(ErrorCode::NotConfigured.http_status(), 503);
        assert_eq!(
            ErrorCode::NotConfigured.grpc(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(ErrorCode::BadGateway.http_status(), 502);
    }
}
