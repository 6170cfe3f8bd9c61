//! One error type for every service function, worded for the person who sees it.

use std::time::Duration;

use warren_store::StoreError;

/// Why a request was refused or failed. Each variant is one API status code and one line in a
/// terminal; only [`ServiceError::Internal`] hides its detail (it is logged instead).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No credentials, or credentials that are wrong, expired or revoked (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The credential lacks the scope or role (403).
    #[error("{0}")]
    Forbidden(String),
    /// The object does not exist, or belongs to another tenant (404).
    #[error("{0}")]
    NotFound(String),
    /// The name or object is taken (409).
    #[error("{0}")]
    Conflict(String),
    /// Bad input; `field` names the field (422).
    #[error("{field}: {message}")]
    Invalid {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A quota would be exceeded; the message names it (409 in the API, with code `quota`).
    #[error("{0}")]
    Quota(String),
    /// Too many attempts; try again after this long (429).
    #[error("too many attempts; try again in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// A node of the cluster that holds what was asked for did not answer; try again shortly
    /// (503, with `Retry-After`).
    #[error("{0}; try again shortly")]
    Unavailable(String),
    /// Something on our side failed (500); the detail is for the log, not the caller.
    #[error("internal error")]
    Internal(String),
}

impl ServiceError {
    /// A 422 naming `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The stable machine-readable code of the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Invalid { .. } => "invalid",
            Self::Quota(_) => "quota",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UserExists(_) | StoreError::TokenExists(_) => Self::Conflict(e.to_string()),
            // The holder's name is not the caller's business.
            StoreError::KeyExists { fingerprint, .. } => {
                Self::Conflict(format!("key {fingerprint} is already registered"))
            }
            StoreError::NameTaken { name, .. } => Self::Conflict(format!("name {name:?} is taken")),
            StoreError::DomainTaken(_) => Self::Conflict(e.to_string()),
            StoreError::NoSuchUser(_)
            | StoreError::NoSuchKey(_)
            | StoreError::NoSuchReservation(_)
            | StoreError::NoSuchCertificate(_)
            | StoreError::NoSuchToken(_)
            | StoreError::NoSuchRule(_)
            | StoreError::NoSuchShare { .. }
            | StoreError::NoSuchDomain(_)
            | StoreError::NoSuchWebhook(_) => Self::NotFound(e.to_string()),
            StoreError::BadUrl(_)
            | StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::Notifications(_) => {
                tracing::error!(error = %e, "store failure");
                Self::Internal(e.to_string())
            }
        }
    }
}
