//! Errors: `metav1.Status` bodies for HTTP clients and [`FakeError`] for
//! the test hooks.

use serde_json::{Value, json};

use crate::resource::ResourceType;

/// An error from one of the [`FakeApi`](crate::FakeApi) test hooks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FakeError {
    /// No registered kind answers to this name or apiVersion/kind.
    #[error("unknown resource {0:?}")]
    UnknownResource(String),
    /// The object does not exist.
    #[error("{resource} {namespace:?}/{name:?} not found")]
    NotFound {
        /// The resource (`deployments.apps`).
        resource: String,
        /// The namespace, if namespaced.
        namespace: Option<String>,
        /// The object name.
        name: String,
    },
    /// The object or arguments are not acceptable.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// A failed request, rendered as a `metav1.Status` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        self
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", rt.group_resource(), name),
        )
        .with_details(rt, name)
    }

    pub fn no_route() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", rt.group_resource(), name),
        )
        .with_details(rt, name)
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                rt.group_resource(),
                name,
                why
            ),
        )
        .with_details(rt, name)
    }

    pub fn invalid(rt: &ResourceType, name: &str, field: &str, why: &str) -> Self {
        let mut err = ApiError::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}: {}", rt.kind, name, field, why),
        )
        .with_details(rt, name);
        if let Some(Value::Object(d)) = err.details.as_mut() {
            d.insert(
                "causes".into(),
                json!([{"reason": "FieldValueInvalid", "message": why, "field": field}]),
            );
        }
        err
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(d), Value::Object(m)) = (&self.details, &mut status) {
            m.insert("details".into(), d.clone());
        }
        status
    }
}

impl From<ApiError> for FakeError {
    fn from(e: ApiError) -> Self {
        FakeError::Invalid(e.message)
    }
}
