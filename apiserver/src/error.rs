//! The one HTTP error type: every rejection becomes a Kubernetes `Status` body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crds::{FieldError, Status, StatusCause, StatusDetails};

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{plural} \"{name}\" not found")]
    NotFound { plural: String, name: String },
    #[error("{plural} \"{name}\" already exists")]
    AlreadyExists { plural: String, name: String },
    #[error("Operation cannot be fulfilled on {plural} \"{name}\": {message}")]
    Conflict {
        plural: String,
        name: String,
        message: String,
    },
    #[error("{kind} \"{name}\" is invalid: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))]
    Invalid {
        kind: String,
        name: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Gone(String),
    #[error("request body too large: the limit is {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::Gone(_) => "Expired",
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `Status` body for this error.
    pub fn status(&self) -> Status {
        let mut status = Status::failure(self.code().as_u16(), self.reason(), self.to_string());
        status.details = match self {
            ApiError::NotFound { plural, name }
            | ApiError::AlreadyExists { plural, name }
            | ApiError::Conflict { plural, name, .. } => Some(StatusDetails {
                name: name.clone(),
                kind: plural.clone(),
                causes: vec![],
            }),
            ApiError::Invalid { kind, name, errors } => Some(StatusDetails {
                name: name.clone(),
                kind: kind.clone(),
                causes: errors
                    .iter()
                    .map(|e| StatusCause {
                        reason: "FieldValueInvalid".into(),
                        message: e.message.clone(),
                        field: e.field.clone(),
                    })
                    .collect(),
            }),
            _ => None,
        };
        status
    }

    /// Map a storage error on object `name` of `plural`.
    pub fn from_storage(e: StorageError, plural: &str, name: &str) -> ApiError {
        match e {
            StorageError::AlreadyExists { .. } => ApiError::AlreadyExists { plural: plural.into(), name: name.into() },
            StorageError::NotFound { .. } => ApiError::NotFound { plural: plural.into(), name: name.into() },
            StorageError::Conflict { .. } => ApiError::Conflict {
                plural: plural.into(),
                name: name.into(),
                message: "the object has been modified; please apply your changes to the latest version and try again"
                    .into(),
            },
            StorageError::TooOld { requested, oldest } => ApiError::Gone(format!(
                "too old resource version: {requested} ({oldest}); list again and watch from the list's resourceVersion"
            )),
            StorageError::Backend { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_) | ApiError::Unavailable(_)) {
            tracing::error!(error = %self, "request failed");
        }
        (self.code(), axum::Json(self.status())).into_response()
    }
}
