//! The HTTP API: routes, handlers and the layers around them.
//!
//! | Route               | Answer                                                     |
//! |---------------------|------------------------------------------------------------|
//! | `POST /v1/samples`  | 202 [`SamplesAccepted`]; 400/413/415/422 [`ErrorBody`]     |
//! | `GET /v1/signals`   | [`SignalsResponse`] with `voiceAgent`, else [`SignalsList`] |
//! | `GET /metrics`      | Prometheus text exposition                                 |
//! | `GET /healthz`, `GET /readyz` | 200 `ok`                                         |
//!
//! Every error, including the layers' own (404, 405, 408, 413), is an
//! [`ErrorBody`].
//!
//! [`SignalsList`]: voice_agent_proto::SignalsList

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State as AxumState};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use voice_agent_proto::error::codes;
use voice_agent_proto::{ErrorBody, SamplesAccepted, SignalsResponse};

use crate::State;
use crate::exporter::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::store::IngestError;

/// Error code of a 405 answer.
pub const METHOD_NOT_ALLOWED: &str = "methodNotAllowed";
/// Error code of a 408 answer: the request (usually its body) was too slow.
pub const REQUEST_TIMEOUT: &str = "requestTimeout";

/// The service's router: every route plus the tracing, error-body, timeout
/// and body-limit layers (outermost first).
pub fn router(state: Arc<State>) -> Router {
    let config = state.config();
    let layers = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            json_errors,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        // The tower-http limit above is the one limit; axum's own 2 MB
        // default would otherwise cap a larger configured one.
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/v1/samples", post(post_samples))
        .route("/v1/signals", get(get_signals))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
        .layer(layers)
        .with_state(state)
}

/// An [`ErrorBody`] answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        error(status, self.code(), self.to_string())
    }
}

/// Whether a `Content-Type` names JSON (`application/json`, `…+json`).
fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(value) = content_type.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .get(essence.len().saturating_sub(5)..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

async fn post_samples(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // No Content-Type is accepted (curl -d sends a form type, so be strict
    // only about a type that is present and wrong).
    if let Some(ct) = headers.get(CONTENT_TYPE).filter(|ct| !is_json(ct)) {
        let err = IngestError::UnsupportedMediaType(ct.to_str().unwrap_or("?").to_owned());
        state.reject(&err);
        return err.into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let err = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                IngestError::BodyTooLarge {
                    limit: state.config().max_body_bytes,
                }
            } else {
                IngestError::Malformed(rejection.body_text())
            };
            state.reject(&err);
            return err.into_response();
        }
    };
    match state.ingest_json(&body) {
        Ok(n) => (
            StatusCode::ACCEPTED,
            axum::Json(SamplesAccepted { accepted: n as u64 }),
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

/// Query of `GET /v1/signals`; both parameters optional.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignalsParams {
    namespace: Option<String>,
    voice_agent: Option<String>,
}

async fn get_signals(
    AxumState(state): AxumState<Arc<State>>,
    query: Result<Query<SignalsParams>, QueryRejection>,
) -> Response {
    let Query(params) = match query {
        Ok(q) => q,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                codes::INVALID_ARGUMENT,
                format!(
                    "{}; parameters are namespace and voiceAgent",
                    rejection.body_text()
                ),
            );
        }
    };
    for (name, value) in [
        ("namespace", &params.namespace),
        ("voiceAgent", &params.voice_agent),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return error(
                StatusCode::BAD_REQUEST,
                codes::INVALID_ARGUMENT,
                format!("{name}: must not be empty when given"),
            );
        }
    }
    match (params.namespace.as_deref(), params.voice_agent.as_deref()) {
        (Some(ns), Some(va)) => {
            let signals: SignalsResponse = state.signals(ns, va);
            axum::Json(signals).into_response()
        }
        (ns, None) => axum::Json(state.signals_list(ns)).into_response(),
        (None, Some(_)) => error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            "namespace: required when voiceAgent is given",
        ),
    }
}

async fn get_metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE))],
        state.render_metrics(),
    )
        .into_response()
}

async fn ok() -> &'static str {
    "ok\n"
}

/// Turns the bodies of errors that did not come from a handler (router 404
/// and 405, the timeout's 408, the body limit's early 413) into an
/// [`ErrorBody`], and counts refused sample batches among them.
async fn json_errors(
    AxumState(state): AxumState<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let is_samples = request.uri().path() == "/v1/samples";
    let response = next.run(request).await;
    let status = response.status();
    let already_json = response.headers().get(CONTENT_TYPE).is_some_and(is_json);
    if !(status.is_client_error() || status.is_server_error()) || already_json {
        return response;
    }
    let config = state.config();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (codes::NOT_FOUND, "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            METHOD_NOT_ALLOWED,
            "method not allowed on this route".to_owned(),
        ),
        StatusCode::REQUEST_TIMEOUT => (
            REQUEST_TIMEOUT,
            format!(
                "request not completed within {} ms",
                config.request_timeout.as_millis()
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            let err = IngestError::BodyTooLarge {
                limit: config.max_body_bytes,
            };
            if is_samples {
                state.reject(&err);
            }
            (codes::PAYLOAD_TOO_LARGE, err.to_string())
        }
        s if s.is_client_error() => (
            codes::INVALID_ARGUMENT,
            s.canonical_reason().unwrap_or("bad request").to_owned(),
        ),
        s => (
            codes::INTERNAL,
            s.canonical_reason().unwrap_or("internal error").to_owned(),
        ),
    };
    let (parts, _) = response.into_parts();
    let mut out = error(status, code, message);
    // Keep headers such as `Allow` on a 405.
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
