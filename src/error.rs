//! The one error type of the library. Messages are meant for the council and residents,
//! so they are in French; `code` values and logs stay in English.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value given by the caller is wrong; `field` names it (a JSON path, a CSV column).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request is well-formed but clashes with what is stored.
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error("{what} introuvable")]
    NotFound { what: &'static str },
    #[error("authentification requise")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    /// Anything the caller cannot fix. Logged in full, answered with a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }

    pub fn conflict(field: Option<&str>, message: impl fmt::Display) -> Self {
        Error::Conflict {
            field: field.map(str::to_owned),
            message: message.to_string(),
        }
    }

    pub fn forbidden() -> Self {
        Error::Forbidden("accès refusé pour votre rôle dans cette résidence".into())
    }

    /// Renames the field of an `Invalid` error, e.g. for a CSV column named otherwise.
    pub fn with_field(self, name: &str) -> Self {
        match self {
            Error::Invalid { message, .. } => Error::Invalid {
                field: name.to_owned(),
                message,
            },
            other => other,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        crate::storage::classify(err)
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Error::Internal(format!("migration failed: {err}"))
    }
}
