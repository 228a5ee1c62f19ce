//! The HTTP API: routes, handlers and the layers around them.
//!
//! | Route               | Answer                                                     |
//! |---------------------|------------------------------------------------------------|
//! | `POST /v1/samples`  | 202 [`SamplesAccepted`]; 400/413/415/422 [`ErrorBody`](voice_agent_proto::ErrorBody)     |
//! | `GET /v1/signals`   | [`SignalsResponse`] with `voiceAgent`, else [`SignalsList`] |
//! | `GET /metrics`      | Prometheus text exposition                                 |
//! | `GET /healthz`, `GET /readyz` | 200 `ok`                                         |
//! | `GET /apis/external.metrics.k8s.io/...` | with `external_metrics` only: see [`crate::external`] |
//!
//! Every error, including the layers' own (404, 405, 408, 413), is an
//! [`ErrorBody`](voice_agent_proto::ErrorBody).
//!
//! [`SignalsList`]: voice_agent_proto::SignalsList

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State as AxumState};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use voice_agent_http::{Limits, OnTooLarge, error_response, is_json, standard_layers};
use voice_agent_proto::error::codes;
use voice_agent_proto::{SamplesAccepted, SignalsResponse};

use crate::State;
use crate::exporter::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::store::IngestError;

/// The service's router: every route plus the tracing, error-body, timeout
/// and body-limit layers (outermost first).
pub fn router(state: Arc<State>) -> Router {
    let config = state.config();
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
    };
    // The body limit refuses oversized batches before the handler: count them.
    let counter = Arc::clone(&state);
    let on_too_large: OnTooLarge = Arc::new(move |path: &str| {
        if path == "/v1/samples" {
            counter.reject(&IngestError::BodyTooLarge {
                limit: limits.max_body_bytes,
            });
        }
    });
    let mut routes = Router::new()
        .route("/v1/samples", post(post_samples))
        .route("/v1/signals", get(get_signals))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(ok))
        .route("/readyz", get(ok));
    if config.external_metrics {
        routes = routes.merge(crate::external::routes());
    }
    standard_layers(routes, limits, Some(on_too_large)).with_state(state)
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        error_response(status, self.code(), self.to_string())
    }
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
            return error_response(
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
            return error_response(
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
        (None, Some(_)) => error_response(
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
