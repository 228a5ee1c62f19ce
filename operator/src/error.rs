//! The operator's one error type. Every error has a stable category used as
//! the `category` label of `voice_agent_operator_reconcile_errors_total`, in
//! logs and in Event reasons, so dashboards and alerts survive refactoring.

use thiserror::Error;

/// Errors of a reconcile.
#[derive(Debug, Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The spec refers to something that does not exist or is unusable, e.g.
    /// a Secret or a key in it. Waits for a change; no requeue loop.
    #[error("{message}")]
    InvalidSpec {
        /// CamelCase reason for the Degraded condition and the Event.
        reason: &'static str,
        /// What is wrong, naming the object and the field.
        message: String,
    },
    /// The object could not be decoded into the API types.
    #[error("cannot decode {kind} {name}: {message}")]
    Undecodable {
        /// Kind of the object.
        kind: &'static str,
        /// `namespace/name`.
        name: String,
        /// The decoder's message.
        message: String,
    },
    /// Rendering the desired objects failed.
    #[error("rendering: {0}")]
    Build(#[from] crate::render::BuildError),
    /// A value could not be (de)serialized.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// A vendor (Twilio, LiveKit) failed or refused a request.
    #[error("{0}")]
    Vendor(#[from] crate::provision::VendorError),
}

impl Error {
    /// The stable category of this error.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 404 => "not_found",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 || s.code == 401 => "forbidden",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => "rejected",
            Error::Kube(_) => "kube_api",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::Undecodable { .. } => "undecodable",
            Error::Build(_) => "build",
            Error::Serialization(_) => "serialization",
            Error::Vendor(e) if e.is_transient() => "vendor_unavailable",
            Error::Vendor(_) => "vendor_rejected",
        }
    }

    /// Whether retrying can help without a change to the object.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(_) => true,
            Error::Vendor(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Result of the operator's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
