//! The HTTP face of [`Error`]: a status per variant and a JSON body
//! `{"error": {"code": …, "message": …, "field": …}}`. Internal errors are logged in full
//! and answered with a generic message, never their text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::Error;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `invalid_field`, `conflict`, `not_found`, `unauthenticated`,
    /// `forbidden`, `payload_too_large`, `unsupported_media_type`, `internal`.
    pub code: &'static str,
    /// For people, in French.
    pub message: String,
    /// The field at fault, as a JSON path (`identifier`, `lock_ids[2]`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code,
                    message: message.into(),
                    field,
                },
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid { field, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", format!("{field} : {message}"), Some(field))
            }
            Error::Conflict { field, message } => ApiError::new(StatusCode::CONFLICT, "conflict", message, field),
            Error::NotFound { what } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} introuvable"), None)
            }
            Error::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "authentification requise : connectez-vous ou fournissez un jeton « Authorization: Bearer … »",
                None,
            ),
            Error::Forbidden(message) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message, None),
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "erreur interne : l'incident est journalisé, réessayez plus tard",
                    None,
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
