//! One error type for every service, and the one table that maps its kinds to HTTP statuses and
//! gRPC codes, so an error reads the same wherever it starts and whichever hops it crosses.

use http::StatusCode;
use tonic::Code;

/// Metadata key that carries the exact [`ErrorKind`] across gRPC, where several kinds share a code.
/// Its presence also tells the client that the status came from a service, not from the transport.
pub(crate) const KIND_METADATA: &str = "x-error-kind";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    LengthRequired,
    Unprocessable,
    TooManyRequests,
    Internal,
    Unavailable,
    InsufficientStorage,
}

/// The table: (kind, HTTP status, gRPC code, name on the wire).
const TABLE: &[(ErrorKind, StatusCode, Code, &str)] = &[
    (
        ErrorKind::BadRequest,
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        "bad-request",
    ),
    (
        ErrorKind::Unauthorized,
        StatusCode::UNAUTHORIZED,
        Code::Unauthenticated,
        "unauthorized",
    ),
    (
        ErrorKind::Forbidden,
        StatusCode::FORBIDDEN,
        Code::PermissionDenied,
        "forbidden",
    ),
    (
        ErrorKind::NotFound,
        StatusCode::NOT_FOUND,
        Code::NotFound,
        "not-found",
    ),
    (
        ErrorKind::Conflict,
        StatusCode::CONFLICT,
        Code::AlreadyExists,
        "conflict",
    ),
    (
        ErrorKind::LengthRequired,
        StatusCode::LENGTH_REQUIRED,
        Code::FailedPrecondition,
        "length-required",
    ),
    (
        ErrorKind::Unprocessable,
        StatusCode::UNPROCESSABLE_ENTITY,
        Code::InvalidArgument,
        "unprocessable",
    ),
    (
        ErrorKind::TooManyRequests,
        StatusCode::TOO_MANY_REQUESTS,
        Code::ResourceExhausted,
        "too-many-requests",
    ),
    (
        ErrorKind::Internal,
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "internal",
    ),
    (
        ErrorKind::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        Code::Unavailable,
        "unavailable",
    ),
    (
        ErrorKind::InsufficientStorage,
        StatusCode::INSUFFICIENT_STORAGE,
        Code::ResourceExhausted,
        "insufficient-storage",
    ),
];

impl ErrorKind {
    fn row(self) -> &'static (ErrorKind, StatusCode, Code, &'static str) {
        TABLE
            .iter()
            .find(|row| row.0 == self)
            .expect("every kind has a row in TABLE")
    }

    pub fn http_status(self) -> StatusCode {
        self.row().1
    }

    pub fn grpc_code(self) -> Code {
        self.row().2
    }

    fn wire_name(self) -> &'static str {
        self.row().3
    }

    fn from_wire_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|row| row.3 == name).map(|row| row.0)
    }

    /// The kind for a gRPC status that did not come from one of our services.
    fn from_grpc_code(code: Code) -> Self {
        match code {
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::Conflict,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::Unprocessable,
            Code::Unauthenticated => ErrorKind::Unauthorized,
            Code::PermissionDenied => ErrorKind::Forbidden,
            Code::ResourceExhausted => ErrorKind::TooManyRequests,
            Code::FailedPrecondition => ErrorKind::BadRequest,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// An error with the message a user sees, naming the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unprocessable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn bucket_not_found(bucket: &str) -> Self {
        Self::not_found(format!("Bucket '{bucket}' is not found"))
    }

    pub fn entry_not_found(entry: &str) -> Self {
        Self::not_found(format!("Entry '{entry}' is not found"))
    }

    pub fn query_not_found(id: u64) -> Self {
        Self::not_found(format!("Query {id} doesn't exist. It expired or was finished"))
    }

    pub fn http_status(&self) -> StatusCode {
        self.kind.http_status()
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let mut status = tonic::Status::new(error.kind.grpc_code(), error.message);
        status.metadata_mut().insert(
            KIND_METADATA,
            tonic::metadata::MetadataValue::from_static(error.kind.wire_name()),
        );
        status
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let kind = status
            .metadata()
            .get(KIND_METADATA)
            .and_then(|value| value.to_str().ok())
            .and_then(ErrorKind::from_wire_name)
            .unwrap_or_else(|| ErrorKind::from_grpc_code(status.code()));
        Error::new(kind, status.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_a_grpc_round_trip() {
        for (kind, status, _, _) in TABLE {
            let error = Error::new(*kind, "message 'x'");
            let back = Error::from(tonic::Status::from(error.clone()));
            assert_eq!(back, error);
            assert_eq!(back.http_status(), *status);
        }
    }

    #[test]
    fn foreign_statuses_map_by_code() {
        let error = Error::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert_eq!(error.http_status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
