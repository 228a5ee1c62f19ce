//! Request errors and how they are answered: an [`ErrorBody`] with a code
//! from [`codes`] and a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use thiserror::Error;
use voice_agent_proto::ErrorBody;
use voice_agent_proto::error::codes;

use crate::embed::EmbedError;
use crate::llm::LlmError;
use crate::store::StoreError;
use crate::vector::VectorError;

/// Why a request failed.
#[derive(Debug, Clone, Error)]
pub enum AgentError {
    /// Malformed or invalid input (400).
    #[error("{0}")]
    Invalid(String),
    /// A body or field over its size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A `Content-Type` other than JSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The addressed VoiceAgent or document does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The database cannot be reached (503).
    #[error("{0}")]
    Unavailable(String),
    /// The LLM, embedder or vector store failed (502, or 504 on a timeout).
    #[error("{message}")]
    Upstream {
        /// What failed.
        message: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
    /// An unexpected failure (500).
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    /// The [`codes`] value.
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::Invalid(_) => codes::INVALID_ARGUMENT,
            AgentError::TooLarge(_) => codes::PAYLOAD_TOO_LARGE,
            AgentError::UnsupportedMediaType(_) => codes::UNSUPPORTED_MEDIA_TYPE,
            AgentError::NotFound(_) => codes::NOT_FOUND,
            AgentError::Unavailable(_) => codes::UNAVAILABLE,
            AgentError::Upstream { .. } => codes::UPSTREAM,
            AgentError::Internal(_) => codes::INTERNAL,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AgentError::Invalid(_) => StatusCode::BAD_REQUEST,
            AgentError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AgentError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AgentError::NotFound(_) => StatusCode::NOT_FOUND,
            AgentError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::Upstream { timeout: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            AgentError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            AgentError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `result` label of the request counter.
    pub fn result_label(&self) -> &'static str {
        match self {
            AgentError::Invalid(_)
            | AgentError::TooLarge(_)
            | AgentError::UnsupportedMediaType(_) => "invalid",
            AgentError::NotFound(_) => "not_found",
            AgentError::Unavailable(_) => "unavailable",
            AgentError::Upstream { .. } => "upstream",
            AgentError::Internal(_) => "internal",
        }
    }

    /// The error body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}

impl From<StoreError> for AgentError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(m) => AgentError::Unavailable(format!(
                "the database is unavailable, nothing was stored; retry later ({m})"
            )),
            StoreError::Failed(m) => AgentError::Internal(format!("database error: {m}")),
        }
    }
}

impl From<LlmError> for AgentError {
    fn from(err: LlmError) -> Self {
        AgentError::Upstream {
            timeout: matches!(err, LlmError::Timeout { .. }),
            message: err.to_string(),
        }
    }
}

impl From<EmbedError> for AgentError {
    fn from(err: EmbedError) -> Self {
        AgentError::Upstream {
            message: err.to_string(),
            timeout: false,
        }
    }
}

impl From<VectorError> for AgentError {
    fn from(err: VectorError) -> Self {
        AgentError::Upstream {
            message: err.to_string(),
            timeout: false,
        }
    }
}
