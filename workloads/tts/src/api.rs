//! The HTTP API: routes, handlers and the layers around them.
//!
//! | Route | Answer |
//! |---|---|
//! | `POST /v1/synthesize` | 200 audio (streamed, or whole from the cache with `X-Audio-Duration-Ms`), or [`SynthesizeJsonResponse`] with `Accept: application/json`; 400/413/415 invalid, 502 provider failed, 503 busy or provider unavailable, all [`ErrorBody`](voice_agent_proto::ErrorBody) |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /healthz` | 200 `ok` |
//! | `GET /readyz` | 200 `ok` once the provider check passed, else 503 [`ErrorBody`](voice_agent_proto::ErrorBody) (and a recheck) |
//!
//! A streamed 200 is sent only after the provider produced audio; a failure
//! after that aborts the body (the chunked transfer never terminates), so a
//! client can never mistake a cut-off synthesis for a complete one.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use voice_agent_http::{Limits, OnTooLarge, accepts, error_response, is_json, standard_layers};
use voice_agent_proto::error::codes;
use voice_agent_proto::tts::AUDIO_DURATION_HEADER;
use voice_agent_proto::{AudioFormat, SynthesizeJsonResponse, SynthesizeRequest, audio};

use crate::State;
use crate::exporter::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Outcome};
use crate::synth::{SynthError, Synthesis};

/// The service's router: every route plus the tracing, error-body, timeout
/// and body-limit layers (outermost first). The timeout bounds the time to
/// the response head (first audio); streamed bodies are bounded per chunk
/// by the provider timeout instead.
pub fn router(state: Arc<State>) -> Router {
    let config = state.config();
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
    };
    // The body limit refuses oversized requests before the handler: count them.
    let counter = Arc::clone(&state);
    let on_too_large: OnTooLarge = Arc::new(move |path: &str| {
        if path == "/v1/synthesize" {
            counter.exporter().count(Outcome::Invalid);
        }
    });
    let routes = Router::new()
        .route("/v1/synthesize", post(post_synthesize))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(ok))
        .route("/readyz", get(readyz));
    standard_layers(routes, limits, Some(on_too_large)).with_state(state)
}

impl IntoResponse for SynthError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = error_response(status, self.code(), self.to_string());
        if matches!(self, SynthError::Busy { .. }) {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Whether the client asked for the JSON answer: `Accept` lists
/// `application/json` with a non-zero quality.
pub fn wants_json(headers: &HeaderMap) -> bool {
    accepts(headers, "application/json")
}

fn audio_headers(format: AudioFormat, sample_rate: u32) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(ct) = HeaderValue::from_str(&format.content_type(sample_rate)) {
        headers.insert(CONTENT_TYPE, ct);
    }
    headers
}

/// `X-Audio-Duration-Ms` of `bytes` of audio: exact, in shortest form.
fn duration_header(len: usize, format: AudioFormat, sample_rate: u32) -> Option<HeaderValue> {
    let ms = audio::duration_ms(len / format.bytes_per_sample(), sample_rate);
    HeaderValue::from_str(&ms.to_string()).ok()
}

fn invalid(state: &State, message: String) -> Response {
    state.exporter().count(Outcome::Invalid);
    error_response(StatusCode::BAD_REQUEST, codes::INVALID_ARGUMENT, message)
}

/// Parses a [`SynthesizeRequest`], naming the offending field when the
/// JSON is well-formed but a field has the wrong type or value.
pub fn parse_request(body: &[u8]) -> Result<SynthesizeRequest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("body: must be a JSON object".into());
    };
    let field = |name: &str| object.get(name).filter(|v| !v.is_null());
    match field("text") {
        None => return Err("text: is required".into()),
        Some(v) if !v.is_string() => return Err("text: must be a string".into()),
        _ => {}
    }
    if field("voice").is_some_and(|v| !v.is_string()) {
        return Err("voice: must be a string".into());
    }
    if let Some(v) = field("format")
        && v.as_str()
            .and_then(|f| f.parse::<AudioFormat>().ok())
            .is_none()
    {
        return Err(format!("format: must be \"pcm16\" or \"mulaw\" (got {v})"));
    }
    if field("sampleRate").is_some_and(|v| !v.is_u64()) {
        return Err("sampleRate: must be a whole number of Hz: 8000, 16000 or 24000".into());
    }
    serde_json::from_value(value).map_err(|e| format!("malformed request: {e}"))
}

async fn post_synthesize(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // No Content-Type is accepted (curl -d); a present, wrong one is not.
    if let Some(ct) = headers.get(CONTENT_TYPE).filter(|ct| !is_json(ct)) {
        state.exporter().count(Outcome::Invalid);
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {:?}: expected application/json",
                ct.to_str().unwrap_or("?")
            ),
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            state.exporter().count(Outcome::Invalid);
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::PAYLOAD_TOO_LARGE,
                format!("request body over {} bytes", state.config().max_body_bytes),
            );
        }
        Err(rejection) => return invalid(&state, rejection.body_text()),
    };
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(message) => return invalid(&state, message),
    };
    let json = wants_json(&headers);
    match state.synthesize(&request).await {
        Err(err) => err.into_response(),
        Ok(Synthesis::Cached {
            audio,
            format,
            sample_rate,
        }) => {
            if json {
                return axum::Json(SynthesizeJsonResponse::from_audio(
                    &audio,
                    format,
                    sample_rate,
                ))
                .into_response();
            }
            let mut headers = audio_headers(format, sample_rate);
            if let Some(ms) = duration_header(audio.len(), format, sample_rate) {
                headers.insert(AUDIO_DURATION_HEADER, ms);
            }
            (headers, audio).into_response()
        }
        Ok(Synthesis::Streaming(stream)) => {
            let (format, sample_rate) = (stream.format(), stream.sample_rate());
            if json {
                return match stream.collect().await {
                    Ok(audio) => axum::Json(SynthesizeJsonResponse::from_audio(
                        &audio,
                        format,
                        sample_rate,
                    ))
                    .into_response(),
                    Err(err) => SynthError::Provider(err).into_response(),
                };
            }
            let body = Body::from_stream(stream.into_stream());
            (audio_headers(format, sample_rate), body).into_response()
        }
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

async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Response {
    if state.is_ready() {
        return "ok\n".into_response();
    }
    match state.check_provider().await {
        Ok(_) => "ok\n".into_response(),
        Err(err) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            err.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_json(&accept("application/json")));
        assert!(wants_json(&accept("audio/pcm, Application/JSON;q=0.5")));
        assert!(!wants_json(&accept("application/json;q=0")));
        assert!(!wants_json(&accept("*/*")));
        assert!(!wants_json(&accept("audio/basic")));
        assert!(!wants_json(&HeaderMap::new()));
    }

    #[test]
    fn duration_header_is_exact() {
        let v = duration_header(3_202, AudioFormat::Pcm16, 16_000).expect("header");
        assert_eq!(v, "100.0625");
        let v = duration_header(8_000, AudioFormat::Mulaw, 8_000).expect("header");
        assert_eq!(v, "1000");
    }
}
