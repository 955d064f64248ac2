//! Every error the API answers with: a status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}`, whatever went wrong.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use morpheus_engine::EngineError;
use morpheus_workflows::deploy::DeployError;
use serde::Serialize;
use utoipa::ToSchema;

/// An API error: its HTTP status, a stable machine-readable code and a one-line message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status it is answered with.
    pub status: StatusCode,
    /// Stable code (`not_found`, `invalid_request`, …) clients can match on.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What an error body holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `invalid_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `rate_limited`, `internal`, `unavailable`.
    pub code: String,
    /// One line saying what went wrong.
    pub message: String,
}

impl ApiError {
    /// A 400: the request itself is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A 409: the request is valid but the state does not allow it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// A 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// Any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.replace('\n', " "),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        use EngineError as E;
        match &error {
            E::UnknownWorkflow(_)
            | E::InvalidInput { .. }
            | E::InvalidSchedule(_)
            | E::InvalidDocument(_) => Self::invalid(error.to_string()),
            E::RunNotFound(_) | E::ScheduleNotFound(_) => Self::not_found(error.to_string()),
            E::InvalidState { .. } | E::ScheduleExists(_) | E::DocumentConflict { .. } => {
                Self::conflict(error.to_string())
            }
            E::Database(_) | E::ShuttingDown => {
                tracing::error!(%error, "database error answering an API request");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("the database could not answer: {error}"),
                )
            }
            _ => {
                tracing::error!(%error, "error answering an API request");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    error.to_string(),
                )
            }
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(error: DeployError) -> Self {
        match error {
            DeployError::Invalid(_) => Self::invalid(error.to_string()),
            DeployError::NotFound(_) => Self::not_found(error.to_string()),
            DeployError::State(_) => Self::conflict(error.to_string()),
            DeployError::Engine(engine) => engine.into(),
            other => {
                tracing::error!(error = %other, "deploy error answering an API request");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(status, "payload_too_large", rejection.body_text());
        }
        Self::invalid(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;
