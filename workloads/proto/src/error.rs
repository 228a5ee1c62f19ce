//! The error body every component returns, and the crate's own error type.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Error codes shared by the components, so clients can branch on `error.code`
/// without parsing messages. Components may add their own codes.
pub mod codes {
    /// The request is malformed or fails validation (400).
    pub const INVALID_ARGUMENT: &str = "invalidArgument";
    /// The request body is larger than the component accepts (413).
    pub const PAYLOAD_TOO_LARGE: &str = "payloadTooLarge";
    /// The content type is not one the component understands (415).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupportedMediaType";
    /// Missing or bad credentials or signature (401/403).
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// The addressed resource does not exist (404).
    pub const NOT_FOUND: &str = "notFound";
    /// The route exists but not with this method (405).
    pub const METHOD_NOT_ALLOWED: &str = "methodNotAllowed";
    /// The request did not complete in time (408).
    pub const REQUEST_TIMEOUT: &str = "requestTimeout";
    /// The component cannot take the request now, e.g. draining or full (503).
    pub const UNAVAILABLE: &str = "unavailable";
    /// A dependency (vendor, database) failed (502).
    pub const UPSTREAM: &str = "upstream";
    /// An unexpected failure inside the component (500).
    pub const INTERNAL: &str = "internal";
    /// Accepting the request would exceed a cardinality limit, e.g. the
    /// metrics service's series cap; nothing was applied (422).
    pub const SERIES_LIMIT_EXCEEDED: &str = "seriesLimitExceeded";
}

/// The JSON error body of every component: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The error itself; wrapped so the body can grow other fields later.
    pub error: ErrorDetail,
}

/// The code and human message of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. [`codes::NOT_FOUND`].
    pub code: String,
    /// A message for humans; never contains secrets.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

impl From<&ProtoError> for ErrorBody {
    fn from(err: &ProtoError) -> Self {
        ErrorBody::new(err.code(), err.to_string())
    }
}

/// Validation and parse failures of the wire types and audio helpers.
///
/// Messages name the offending field by its JSON path, e.g.
/// `samples[3].value: must be a finite number >= 0`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// A field has a value the contract does not allow.
    #[error("{field}: {reason}")]
    InvalidField {
        /// JSON path of the field, e.g. `samples[3].value`.
        field: String,
        /// What is wrong, phrased as the rule, e.g. `must not be empty`.
        reason: String,
    },
    /// A sample batch holds more samples than allowed; maps to HTTP 413.
    #[error("samples: batch has {count} samples, more than the limit of {max}")]
    TooManySamples {
        /// Samples in the batch.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// A name (component, stage, ...) is not one of the known values.
    #[error("unknown {kind}: {value:?}")]
    UnknownName {
        /// What kind of name, e.g. `stage`.
        kind: &'static str,
        /// The refused input.
        value: String,
    },
    /// A `Content-Type` that names no supported audio format and rate.
    #[error("unsupported audio content type {content_type:?}: {reason}")]
    UnsupportedContentType {
        /// The refused header value.
        content_type: String,
        /// Why it was refused.
        reason: String,
    },
    /// A sample rate the [`Resampler`](crate::Resampler) cannot take:
    /// outside 1000..=384000 Hz.
    #[error("unsupported sample rate {0} Hz (the resampler takes 1000..=384000 Hz)")]
    UnsupportedSampleRate(u32),
    /// A rate pair whose reduced ratio `up/down` would need too long a
    /// resampling filter.
    #[error("cannot resample {from} Hz to {to} Hz: ratio {up}/{down} needs too long a filter")]
    ResampleRatioTooComplex {
        /// Input rate in Hz.
        from: u32,
        /// Output rate in Hz.
        to: u32,
        /// Upsampling factor of the reduced ratio.
        up: usize,
        /// Downsampling factor of the reduced ratio.
        down: usize,
    },
    /// PCM16 bytes whose count is odd, so the last sample is cut.
    #[error("PCM16 data has an odd byte count ({0}); samples are 2 bytes")]
    OddByteCount(usize),
    /// A message that is not valid for its protocol (bad JSON, unknown
    /// event, missing field, oversized).
    #[error("{0}")]
    Malformed(String),
    /// Text that is not valid standard base64.
    #[error("invalid base64: {0}")]
    InvalidBase64(String),
}

impl ProtoError {
    /// Shorthand for [`ProtoError::InvalidField`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ProtoError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The [`codes`] value for this error in an [`ErrorBody`].
    pub fn code(&self) -> &'static str {
        match self {
            ProtoError::TooManySamples { .. } => codes::PAYLOAD_TOO_LARGE,
            ProtoError::UnsupportedContentType { .. } => codes::UNSUPPORTED_MEDIA_TYPE,
            ProtoError::InvalidField { .. }
            | ProtoError::UnknownName { .. }
            | ProtoError::UnsupportedSampleRate(_)
            | ProtoError::ResampleRatioTooComplex { .. }
            | ProtoError::OddByteCount(_)
            | ProtoError::Malformed(_)
            | ProtoError::InvalidBase64(_) => codes::INVALID_ARGUMENT,
        }
    }

    /// The HTTP status a server should answer when a request fails with this
    /// error (400, 413 or 415).
    pub fn http_status(&self) -> u16 {
        match self {
            ProtoError::TooManySamples { .. } => 413,
            ProtoError::UnsupportedContentType { .. } => 415,
            _ => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_wire_format() {
        let body = ErrorBody::new("notFound", "session abc not found");
        let json = serde_json::to_string(&body).expect("serialize");
        assert_eq!(
            json,
            r#"{"error":{"code":"notFound","message":"session abc not found"}}"#
        );
        let back: ErrorBody = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, body);
    }

    #[test]
    fn error_body_requires_both_fields() {
        assert!(serde_json::from_str::<ErrorBody>(r#"{"error":{"code":"x"}}"#).is_err());
        assert!(serde_json::from_str::<ErrorBody>(r#"{"code":"x","message":"y"}"#).is_err());
        assert!(
            serde_json::from_str::<ErrorBody>(r#"{"error":{"code":1,"message":"y"}}"#).is_err()
        );
    }

    #[test]
    fn proto_error_maps_to_body_and_status() {
        let err = ProtoError::invalid("samples[3].value", "must be a finite number >= 0");
        assert_eq!(
            err.to_string(),
            "samples[3].value: must be a finite number >= 0"
        );
        assert_eq!(err.http_status(), 400);
        let body = ErrorBody::from(&err);
        assert_eq!(body.error.code, codes::INVALID_ARGUMENT);
        assert_eq!(body.error.message, err.to_string());

        let big = ProtoError::TooManySamples { count: 10, max: 5 };
        assert_eq!(big.http_status(), 413);
        assert_eq!(big.code(), codes::PAYLOAD_TOO_LARGE);
        let ct = ProtoError::UnsupportedContentType {
            content_type: "audio/mpeg".into(),
            reason: "x".into(),
        };
        assert_eq!(ct.http_status(), 415);
    }
}
