//! The runtime's HTTP API (DESIGN.md §5 "runtime").
//!
//! | Route | |
//! |---|---|
//! | `POST /api/sessions` | [`CreateSessionRequest`] → `201` [`CreateSessionResponse`] (`200` for a replayed CallSid); `503` draining or full |
//! | `GET /api/sessions/{id}` | [`SessionDetail`](crate::sessions::SessionDetail) |
//! | `DELETE /api/sessions/{id}` | ends the call; `204` |
//! | `GET /api/sessions/{id}/media` | WebSocket, Twilio Media Streams |
//! | `POST /api/sessions/{id}/livekit` | [`JoinRoomRequest`]: join the caller's LiveKit room; `202`, `409` media already connected or not a LiveKit session, `501` without the `livekit` feature |
//! | `GET /api/load` | [`LoadReport`](voice_agent_proto::LoadReport) |
//! | `POST /admin/drain`, `DELETE /admin/drain` | start / cancel draining; answer the load report |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | probes (not ready while draining) and Prometheus |

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State as AxumState};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use voice_agent_http::{Limits, error_response, is_json, standard_layers};
use voice_agent_proto::error::codes;
use voice_agent_proto::{
    CreateSessionRequest, CreateSessionResponse, JoinRoomRequest, SessionState, Transport,
};

use crate::State;
use crate::call::run_call;
use crate::media::MediaStreams;
use crate::sessions::{AdmitError, EndReason};

/// Largest request body (session requests are tiny).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Deadline to the response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest WebSocket message accepted on the media socket.
pub const MAX_WS_MESSAGE_BYTES: usize = voice_agent_proto::mediastreams::MAX_MESSAGE_BYTES;

/// The runtime's router.
pub fn router(state: Arc<State>) -> Router {
    let routes = Router::new()
        .route("/api/sessions", post(create_session))
        .route(
            "/api/sessions/{id}",
            get(get_session).delete(delete_session),
        )
        .route("/api/sessions/{id}/media", get(media))
        .route("/api/sessions/{id}/livekit", post(join_livekit_room))
        .route("/api/load", get(load))
        .route("/admin/drain", post(drain).delete(undrain))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    standard_layers(
        routes,
        Limits {
            max_body_bytes: MAX_BODY_BYTES,
            request_timeout: REQUEST_TIMEOUT,
        },
        None,
    )
    .with_state(state)
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        serde_json::to_string(body).unwrap_or_default(),
    )
        .into_response()
}

/// The JSON body of a request (`what` names it in errors): 415 without a
/// JSON Content-Type, 400 when it does not parse.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<T, Box<Response>> {
    if !headers.get(CONTENT_TYPE).is_some_and(is_json) {
        return Err(Box::new(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            format!("{what}: {e}"),
        ))
    })
}

async fn create_session(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: CreateSessionRequest = match json_body(&headers, &body, "session request") {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    if request.call_sid.trim().is_empty() || request.voice_agent.trim().is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            "callSid and voiceAgent must not be empty",
        );
    }
    if request.voice_agent != state.config.voice_agent {
        return error_response(
            StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            format!(
                "voiceAgent {:?} is not served here (this runtime serves {:?})",
                request.voice_agent, state.config.voice_agent
            ),
        );
    }
    let exporter = &state.exporter;
    let (session, created) = match state.registry.admit(request, crate::now_ms()) {
        Ok(admitted) => admitted,
        Err(err) => {
            let (label, status) = match err {
                AdmitError::Draining => ("draining", StatusCode::SERVICE_UNAVAILABLE),
                AdmitError::Full(_) => ("full", StatusCode::SERVICE_UNAVAILABLE),
                AdmitError::Unsupported(_) => ("unsupported", StatusCode::NOT_IMPLEMENTED),
            };
            exporter.session_requests.with_label_values(&[label]).inc();
            let mut resp = error_response(status, codes::UNAVAILABLE, err.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return resp;
        }
    };
    exporter
        .session_requests
        .with_label_values(&[if created { "created" } else { "replayed" }])
        .inc();
    if created {
        state.publish_load();
        // A session whose media never connects must not hold capacity.
        let watchdog_state = Arc::clone(&state);
        let id = session.id.clone();
        let timeout = state.config.media_connect_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(s) = watchdog_state.registry.get(&id)
                && s.state() == SessionState::Connecting
            {
                tracing::warn!(session = %id, "media never connected; session dropped");
                if watchdog_state.registry.end(&id, EndReason::TransportError) {
                    // No voice loop ran: book the Call's end here.
                    watchdog_state.calls.ended(&s);
                }
                watchdog_state.publish_load();
            }
        });
        tracing::info!(session = %session.id, call_sid = %session.request.call_sid, "session created");
    }
    let response = CreateSessionResponse {
        session_id: session.id.clone(),
        media_url: format!(
            "{}/api/sessions/{}/media",
            state.config.media_base_url, session.id
        ),
        pod: state.config.pod.clone(),
    };
    json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &response,
    )
}

fn not_found(id: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        codes::NOT_FOUND,
        format!("no session {id:?} on this pod"),
    )
}

async fn get_session(AxumState(state): AxumState<Arc<State>>, Path(id): Path<String>) -> Response {
    match state.registry.get(&id) {
        Some(s) => json(StatusCode::OK, &s.detail(&state.config.pod)),
        None => not_found(&id),
    }
}

async fn delete_session(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
) -> Response {
    let Some(session) = state.registry.get(&id) else {
        return not_found(&id);
    };
    let without_media = session.state() == SessionState::Connecting;
    if state.registry.end(&id, EndReason::Deleted) {
        tracing::info!(session = %id, "session ended through the API");
        // A session with media is booked by its voice loop when it stops; one
        // without media has no loop, so book it here.
        if without_media {
            state.calls.ended(&session);
        }
        state.publish_load();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn media(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(session) = state.registry.get(&id) else {
        return not_found(&id);
    };
    if session.state() == SessionState::Ended || !session.claim_media() {
        return error_response(
            StatusCode::CONFLICT,
            codes::INVALID_ARGUMENT,
            format!("session {id:?} already has media or has ended"),
        );
    }
    upgrade
        .read_buffer_size(voice_agent_proto::mediastreams::WS_READ_BUFFER_BYTES)
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| run_call(state, session, MediaStreams::new(socket)))
}

/// Longest LiveKit room name accepted.
const MAX_ROOM_NAME: usize = 256;

async fn join_livekit_room(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: JoinRoomRequest = match json_body(&headers, &body, "join request") {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    if request.room.is_empty()
        || request.room.len() > MAX_ROOM_NAME
        || request.room.chars().any(char::is_control)
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            format!("room must be 1-{MAX_ROOM_NAME} printable characters"),
        );
    }
    let Some(session) = state.registry.get(&id) else {
        return not_found(&id);
    };
    if session.request.transport != Transport::LiveKit {
        return error_response(
            StatusCode::CONFLICT,
            codes::INVALID_ARGUMENT,
            format!("session {id:?} uses Twilio Media Streams, not LiveKit"),
        );
    }
    join_room(state, session, request.room)
}

/// Joins the room and runs the call in it, in the background.
#[cfg(feature = "livekit")]
fn join_room(state: Arc<State>, session: Arc<crate::sessions::Session>, room: String) -> Response {
    let Some(url) = state.config.livekit_url.clone() else {
        return error_response(
            StatusCode::NOT_IMPLEMENTED,
            codes::UNAVAILABLE,
            "the VoiceAgent has no telephony.livekit.url",
        );
    };
    if session.state() == SessionState::Ended || !session.claim_media() {
        return error_response(
            StatusCode::CONFLICT,
            codes::INVALID_ARGUMENT,
            format!("session {:?} already has media or has ended", session.id),
        );
    }
    tokio::spawn(async move {
        match crate::media_livekit::join(&url, &room, &session.id).await {
            Ok(transport) => run_call(state, session, transport).await,
            Err(error) => {
                tracing::warn!(session = %session.id, room, %error, "could not join the LiveKit room; session ended");
                if state.registry.end(&session.id, EndReason::TransportError) {
                    state.calls.ended(&session);
                }
                state.publish_load();
            }
        }
    });
    StatusCode::ACCEPTED.into_response()
}

/// Without the `livekit` feature no LiveKit session is admitted in the first
/// place; this answers anyone asking anyway.
#[cfg(not(feature = "livekit"))]
fn join_room(_state: Arc<State>, session: Arc<crate::sessions::Session>, room: String) -> Response {
    tracing::warn!(session = %session.id, room, "LiveKit join requested, but this build has no LiveKit transport");
    error_response(
        StatusCode::NOT_IMPLEMENTED,
        codes::UNAVAILABLE,
        "this runtime was built without the livekit feature",
    )
}

async fn load(AxumState(state): AxumState<Arc<State>>) -> Response {
    json(StatusCode::OK, &state.registry.load())
}

async fn drain(AxumState(state): AxumState<Arc<State>>) -> Response {
    if !state.registry.set_draining(true) {
        tracing::info!(
            active = state.registry.active(),
            "draining: no new sessions; active calls continue"
        );
    }
    state.exporter.draining.set(1);
    json(StatusCode::ACCEPTED, &state.registry.load())
}

async fn undrain(AxumState(state): AxumState<Arc<State>>) -> Response {
    if state.registry.set_draining(false) {
        tracing::info!("drain cancelled; taking new sessions again");
    }
    state.exporter.draining.set(0);
    json(StatusCode::OK, &state.registry.load())
}

async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Response {
    if state.registry.is_draining() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "draining",
        );
    }
    "ok".into_response()
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.exporter.render(),
    )
        .into_response()
}
