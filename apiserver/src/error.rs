//! The one HTTP error type: every rejection becomes a Kubernetes `Status` body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crds::{FieldError, Status, StatusCause, StatusDetails};

use crate::auth::Forbidden;
use crate::storage::StorageError;

/// Why a request failed; each variant is one HTTP status and Kubernetes `reason`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be understood (bad JSON, query or selector).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credential, or an invalid one, where one is needed.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403: the caller may not do this (see [`crate::auth::authorize()`]).
    #[error("{0}")]
    Forbidden(Box<Forbidden>),
    /// 404: no such object (or path).
    #[error("{plural} \"{name}\" not found")]
    NotFound {
        /// The resource (`services`), or what was not found.
        plural: String,
        /// The object's name, or the path.
        name: String,
    },
    /// 409: an object of that name exists.
    #[error("{plural} \"{name}\" already exists")]
    AlreadyExists {
        /// The resource (`services`).
        plural: String,
        /// The object's name.
        name: String,
    },
    /// 409: the write conflicts with the stored object (a stale resourceVersion, a
    /// binding to another target, a namespace that cannot go).
    #[error("Operation cannot be fulfilled on {plural} \"{name}\": {message}")]
    Conflict {
        /// The resource (`services`).
        plural: String,
        /// The object's name.
        name: String,
        /// Why.
        message: String,
    },
    /// 409: a server-side apply would change fields other managers own (kube's
    /// `Apply failed with N conflict(s)`), each a cause `FieldManagerConflict`.
    #[error("{message}")]
    ApplyConflict {
        /// kube's message, naming every manager and field.
        message: String,
        /// `(manager, field)` of each conflict, the field as kube prints it.
        conflicts: Vec<(String, String)>,
        /// The `apiVersion` the managers wrote with.
        api_version: String,
    },
    /// 422: the object fails validation, or changes an immutable field.
    #[error("{kind} \"{name}\" is invalid: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))]
    Invalid {
        /// The object's kind (`Service`).
        kind: String,
        /// The object's name.
        name: String,
        /// Every invalid field, with its path.
        errors: Vec<FieldError>,
    },
    /// 410: the resourceVersion asked for is no longer available; list again.
    #[error("{0}")]
    Gone(String),
    /// 413: the body is larger than the server accepts.
    #[error("request body too large: the limit is {limit} bytes")]
    TooLarge {
        /// The largest accepted body, in bytes.
        limit: usize,
    },
    /// 415: a content type the server does not accept (a patch type).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 405: the path does not take this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 503: storage failed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500: a bug or a stored object that cannot be read.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => StatusCode::CONFLICT,
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
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
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
            ApiError::Forbidden(f) => Some(StatusDetails {
                name: f.name.clone(),
                kind: f.plural.clone(),
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
            ApiError::ApplyConflict {
                conflicts,
                api_version,
                ..
            } => Some(StatusDetails {
                causes: conflicts
                    .iter()
                    .map(|(manager, field)| StatusCause {
                        reason: "FieldManagerConflict".into(),
                        message: format!("conflict with {manager:?} using {api_version}"),
                        field: field.clone(),
                    })
                    .collect(),
                ..Default::default()
            }),
            _ => None,
        };
        status
    }

    /// 409: object `name` of `plural` changed since the version the write was made at.
    pub fn stale(plural: &str, name: &str) -> ApiError {
        ApiError::Conflict {
            plural: plural.into(),
            name: name.into(),
            message: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        }
    }

    /// Map a storage error on object `name` of `plural`.
    pub fn from_storage(e: StorageError, plural: &str, name: &str) -> ApiError {
        match e {
            StorageError::AlreadyExists { .. } => ApiError::AlreadyExists { plural: plural.into(), name: name.into() },
            StorageError::NotFound { .. } => ApiError::NotFound { plural: plural.into(), name: name.into() },
            StorageError::Conflict { .. } => ApiError::stale(plural, name),
            StorageError::TooOld { requested, oldest } => ApiError::Gone(format!(
                "too old resource version: {requested} ({oldest}); list again and watch from the list's resourceVersion"
            )),
            // A message that already names its backend (`etcd at URL,URL: …`) says it once.
            StorageError::Backend {
                backend,
                ref message,
                ..
            } if message.starts_with(backend) => ApiError::Unavailable(message.clone()),
            StorageError::Backend { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<Forbidden> for ApiError {
    fn from(f: Forbidden) -> Self {
        ApiError::Forbidden(Box::new(f))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_) | ApiError::Unavailable(_)) {
            tracing::error!(error = %self, "request failed");
        }
        let mut body = serde_json::to_value(self.status()).expect("a Status serializes");
        // Kubernetes' details name the API group too, which `crds::StatusDetails` lacks.
        if let (ApiError::Forbidden(f), Some(details)) = (&self, body.get_mut("details")) {
            details["group"] = f.group.clone().into();
        }
        (self.code(), axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_failure_is_a_503_naming_the_store() {
        let cases = [
            (
                StorageError::backend("etcd", "etcd at http://a:1,http://b:2: creating /x: etcdserver: no leader"),
                "storage unavailable: etcd at http://a:1,http://b:2: creating /x: etcdserver: no leader",
            ),
            (
                StorageError::backend("embedded", "the writer stopped"),
                "storage unavailable: embedded storage: the writer stopped",
            ),
        ];
        for (e, message) in cases {
            let status = ApiError::from_storage(e, "clusters", "x").status();
            assert_eq!(status.code, 503);
            assert_eq!(status.reason, "ServiceUnavailable");
            assert_eq!(status.message, message);
        }
        let gone = StorageError::TooOld {
            requested: 3,
            oldest: 9,
        };
        assert_eq!(
            ApiError::from_storage(gone, "clusters", "").status().code,
            410
        );
    }
}
