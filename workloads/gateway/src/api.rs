//! The HTTP API: routes, handlers and the layers around them.
//!
//! | Route | Answer |
//! |---|---|
//! | `POST /twilio/voice` | 200 TwiML; 400 malformed form or CallSid, 403 missing/bad signature, 415 not a form |
//! | `POST /twilio/status` | 204; 400, 403, 415 as above |
//! | `GET /twilio/media` | WebSocket (Twilio Media Streams), proxied to the runtime |
//! | `POST /livekit/webhook` | 200; 401 missing/bad JWT or body hash, 400 unreadable event |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /healthz` | 200 `ok` |
//! | `GET /readyz` | 200 `ok` while serving, 503 before and during shutdown |
//!
//! Nothing happens before a request is authenticated: a refused webhook
//! creates no Call, opens no session and ends none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::oneshot;
use voice_agent_api::{CallEndReason, mask_phone_number};
use voice_agent_http::{Limits, error_response, essence, standard_layers};
use voice_agent_proto::error::codes;
use voice_agent_proto::mediastreams::{MAX_MESSAGE_BYTES, SESSION_PARAMETER};
use voice_agent_proto::{CreateSessionRequest, Stage, Transport};

use crate::answers::{Answer, SessionRef};
use crate::calls::{self, CallOutcome, NewCall};
use crate::exporter::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Outcome, Route};
use crate::livekit::{self, EventAction};
use crate::media::{MEDIA_URL_PARAMETER, TOKEN_PARAMETER};
use crate::{State, form, signature, twiml};

/// Path of the voice webhook.
pub const VOICE_PATH: &str = "/twilio/voice";
/// Path of the status callback.
pub const STATUS_PATH: &str = "/twilio/status";
/// Path of the Media Streams WebSocket.
pub const MEDIA_PATH: &str = "/twilio/media";
/// Path of the LiveKit webhook.
pub const LIVEKIT_PATH: &str = "/livekit/webhook";

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Twilio's terminal `CallStatus` values.
pub const TERMINAL_CALL_STATUSES: [&str; 5] =
    ["completed", "busy", "failed", "no-answer", "canceled"];

/// The gateway's router: every route plus the tracing, error-body, timeout
/// and body-limit layers.
pub fn router(state: Arc<State>) -> Router {
    let config = state.config();
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
    };
    let routes = Router::new()
        .route(VOICE_PATH, post(twilio_voice))
        .route(STATUS_PATH, post(twilio_status))
        .route(MEDIA_PATH, get(twilio_media))
        .route(LIVEKIT_PATH, post(livekit_webhook))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    standard_layers(routes, limits, None).with_state(state)
}

fn twiml_response(twiml: String) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(twiml::CONTENT_TYPE))],
        twiml,
    )
        .into_response()
}

/// Why a form webhook was refused; nothing was done for it.
#[derive(Debug)]
struct Refused {
    outcome: Outcome,
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn new(
        outcome: Outcome,
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Refused {
            outcome,
            status,
            code,
            message: message.into(),
        }
    }

    /// Counts the refusal and answers it.
    fn respond(self, state: &State, route: Route) -> Response {
        state.exporter().request(route, self.outcome);
        error_response(self.status, self.code, self.message)
    }
}

/// A form webhook whose Twilio signature verified.
fn verified_form(
    state: &State,
    path: &str,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<Vec<(String, String)>, Refused> {
    let Some(signature) = headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    else {
        tracing::warn!(path, "webhook without X-Twilio-Signature refused");
        return Err(Refused::new(
            Outcome::Unauthorized,
            StatusCode::FORBIDDEN,
            codes::UNAUTHENTICATED,
            "missing X-Twilio-Signature",
        ));
    };
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| essence(v).eq_ignore_ascii_case(FORM_CONTENT_TYPE));
    if !is_form {
        return Err(Refused::new(
            Outcome::Invalid,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {FORM_CONTENT_TYPE}"),
        ));
    }
    let params = form::parse(body).map_err(|e| {
        Refused::new(
            Outcome::Invalid,
            StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            e.to_string(),
        )
    })?;
    // Twilio signs the URL it was configured with: the public URL, this
    // route, and the query it sent.
    let mut url = state.config().public_url.http_url(path);
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(query);
    }
    if !signature::validate(
        state.config().twilio_auth_token.expose(),
        &url,
        &params,
        signature,
    ) {
        tracing::warn!(path, "webhook with a bad X-Twilio-Signature refused");
        return Err(Refused::new(
            Outcome::Unauthorized,
            StatusCode::FORBIDDEN,
            codes::UNAUTHENTICATED,
            "X-Twilio-Signature does not match",
        ));
    }
    Ok(params)
}

/// `POST /twilio/voice`.
async fn twilio_voice(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let _in_flight = state.in_flight();
    let params = match verified_form(&state, VOICE_PATH, &headers, &uri, &body) {
        Ok(params) => params,
        Err(refused) => return refused.respond(&state, Route::TwilioVoice),
    };
    let Some(call_sid) =
        form::first(&params, "CallSid").filter(|s| calls::object_name(s).is_some())
    else {
        state
            .exporter()
            .request(Route::TwilioVoice, Outcome::Invalid);
        return error_response(
            StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            "CallSid: required, 2-63 letters and digits",
        );
    };
    let from = form::first(&params, "From").unwrap_or_default();
    let to = form::first(&params, "To").unwrap_or_default();
    let bound = &state.config().component.bound_numbers;
    if !bound.is_empty() && !bound.iter().any(|n| n.trim() == to.trim()) {
        tracing::info!(
            call_sid,
            to = %mask_phone_number(to),
            "call to a number not bound to this agent rejected"
        );
        finish(&state, Outcome::Rejected, started);
        return twiml_response(twiml::reject());
    }

    let slot = state.answers().slot(call_sid);
    if let Some(answer) = slot.get() {
        tracing::info!(call_sid, "voice webhook replayed; same answer");
        finish(&state, Outcome::Replay, started);
        return twiml_response(answer.twiml.clone());
    }
    tracing::info!(
        call_sid,
        from = %mask_phone_number(from),
        to = %mask_phone_number(to),
        "incoming call"
    );
    // In a task of its own: Twilio hanging up on a slow answer must not
    // cancel a half-opened session; the replay then finds the answer.
    let computed = Arc::new(AtomicBool::new(false));
    let task = {
        let state = Arc::clone(&state);
        let computed = Arc::clone(&computed);
        let (call_sid, from, to) = (call_sid.to_owned(), from.to_owned(), to.to_owned());
        tokio::spawn(async move {
            let answer = slot
                .get_or_init(|| async {
                    computed.store(true, Ordering::Relaxed);
                    answer_call(&state, &call_sid, &from, &to).await
                })
                .await
                .clone();
            if let Some(session) = &answer.session {
                state
                    .answers()
                    .index_session(&call_sid, &session.session_id);
            }
            answer
        })
    };
    let answer = match task.await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::error!(call_sid, %error, "answering the call failed");
            state
                .exporter()
                .request(Route::TwilioVoice, Outcome::Failed);
            return twiml_response(twiml::say_hangup(twiml::ERROR_MESSAGE));
        }
    };
    let outcome = if computed.load(Ordering::Relaxed) {
        answer.outcome
    } else {
        Outcome::Replay
    };
    finish(&state, outcome, started);
    twiml_response(answer.twiml)
}

/// Counts a voice webhook and records its latency.
fn finish(state: &State, outcome: Outcome, started: Instant) {
    let elapsed = started.elapsed();
    state.exporter().request(Route::TwilioVoice, outcome);
    state.exporter().webhook(outcome, elapsed);
    state
        .pusher()
        .latency(Stage::Webhook, elapsed.as_secs_f64() * 1000.0);
}

/// Opens the session and builds the TwiML, while the Call is recorded in
/// the background.
async fn answer_call(state: &Arc<State>, call_sid: &str, from: &str, to: &str) -> Answer {
    let config = state.config();
    let voice_agent = config.component.voice_agent.clone();
    let (outcome_tx, outcome_rx) = oneshot::channel();
    tokio::spawn(calls::record(
        state.recorder(),
        state.exporter_arc(),
        NewCall::new(call_sid, &voice_agent, from, to),
        outcome_rx,
    ));
    let request = CreateSessionRequest {
        call_sid: call_sid.to_owned(),
        voice_agent,
        from: from.to_owned(),
        to: to.to_owned(),
        transport: config.transport(),
    };
    let session = match state.runtime().open_session(&request).await {
        Ok(session) => session,
        Err(error) => {
            let (reason, result, outcome, message) = if error.is_capacity() {
                (
                    CallEndReason::NoCapacity,
                    "no_capacity",
                    Outcome::NoCapacity,
                    twiml::NO_CAPACITY_MESSAGE,
                )
            } else {
                (
                    CallEndReason::Error,
                    "error",
                    Outcome::Failed,
                    twiml::ERROR_MESSAGE,
                )
            };
            tracing::warn!(call_sid, %error, "no runtime session; apologising");
            state.exporter().session(result);
            let _ = outcome_tx.send(CallOutcome::Failed(reason));
            return Answer {
                twiml: twiml::say_hangup(message),
                session: None,
                outcome,
            };
        }
    };
    state.exporter().session("opened");
    let session = SessionRef {
        session_id: session.session_id,
        media_url: session.media_url,
        pod: session.pod,
    };
    tracing::info!(call_sid, session_id = %session.session_id, pod = %session.pod, "session opened");
    let key = config.twilio_auth_token.expose();
    let twiml = match config.transport() {
        Transport::MediaStreams => {
            let token = signature::media_token(key, &session.session_id, &session.media_url);
            Ok(twiml::connect_stream(
                &config.public_url.ws_url(crate::api::MEDIA_PATH),
                &[
                    (SESSION_PARAMETER, &session.session_id),
                    (MEDIA_URL_PARAMETER, &session.media_url),
                    (TOKEN_PARAMETER, &token),
                ],
            ))
        }
        Transport::LiveKit => livekit_answer(state, &session, to),
    };
    match twiml {
        Ok(twiml) => {
            let _ = outcome_tx.send(CallOutcome::Ringing {
                runtime_pod: session.pod.clone(),
            });
            Answer {
                twiml,
                session: Some(session),
                outcome: Outcome::Ok,
            }
        }
        Err(error) => {
            tracing::warn!(call_sid, %error, "call cannot be connected; ending its session");
            let _ = outcome_tx.send(CallOutcome::Failed(CallEndReason::TransportError));
            spawn_end_session(state, session.media_url, session.session_id);
            Answer {
                twiml: twiml::say_hangup(twiml::ERROR_MESSAGE),
                session: None,
                outcome: Outcome::Failed,
            }
        }
    }
}

/// The `<Dial><Sip>` to LiveKit SIP, carrying the session in signed
/// `X-VoiceAgent-*` headers (see [`crate::livekit`]).
fn livekit_answer(state: &State, session: &SessionRef, to: &str) -> Result<String, String> {
    let config = state.config();
    let Some(settings) = config.component.telephony.livekit.as_ref() else {
        return Err("LiveKit is not configured".to_owned());
    };
    let headers = livekit::sip_headers(config.twilio_auth_token.expose(), session);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let uri = twiml::sip_uri_with_headers(&settings.sip_uri, Some(to), &headers)
        .map_err(|e| e.to_string())?;
    Ok(twiml::dial_sip(&uri))
}

/// Ends a runtime session in the background; failures are logged.
fn spawn_end_session(state: &Arc<State>, media_url: String, session_id: String) {
    let state = Arc::clone(state);
    tokio::spawn(async move {
        match state.runtime().end_session(&media_url, &session_id).await {
            Ok(()) => tracing::info!(session_id, "session ended"),
            Err(error) => tracing::warn!(session_id, %error, "ending the session failed"),
        }
    });
}

/// `POST /twilio/status`.
async fn twilio_status(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let params = match verified_form(&state, STATUS_PATH, &headers, &uri, &body) {
        Ok(params) => params,
        Err(refused) => return refused.respond(&state, Route::TwilioStatus),
    };
    state.exporter().request(Route::TwilioStatus, Outcome::Ok);
    let call_sid = form::first(&params, "CallSid").unwrap_or_default();
    let status = form::first(&params, "CallStatus").unwrap_or_default();
    if !TERMINAL_CALL_STATUSES.contains(&status) {
        return StatusCode::NO_CONTENT.into_response();
    }
    match state.answers().get(call_sid).and_then(|a| a.session) {
        Some(session) => {
            tracing::info!(call_sid, status, session_id = %session.session_id, "call over; ending its session");
            spawn_end_session(&state, session.media_url, session.session_id);
        }
        None => tracing::debug!(
            call_sid,
            status,
            "call over; no session known on this replica"
        ),
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /twilio/media`. Twilio signs the WebSocket handshake too: the
/// `X-Twilio-Signature` of the stream's URL (as configured: the public
/// `wss://` URL and the query) with no parameters. A missing or bad
/// signature is refused before the upgrade.
async fn twilio_media(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let mut url = state.config().public_url.ws_url(MEDIA_PATH);
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let signed = headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| {
            signature::validate(state.config().twilio_auth_token.expose(), &url, &[], sig)
        });
    if !signed {
        tracing::warn!("media stream handshake without a valid X-Twilio-Signature refused");
        state
            .exporter()
            .request(Route::TwilioMedia, Outcome::Unauthorized);
        return error_response(
            StatusCode::FORBIDDEN,
            codes::UNAUTHENTICATED,
            "missing or bad X-Twilio-Signature on the media stream handshake",
        );
    }
    upgrade
        .read_buffer_size(voice_agent_proto::mediastreams::WS_READ_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| crate::media::serve(socket, state))
}

/// `POST /livekit/webhook`.
async fn livekit_webhook(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let refuse = |outcome: Outcome, status: StatusCode, code: &str, message: &str| {
        state.exporter().request(Route::LiveKitWebhook, outcome);
        error_response(status, code, message)
    };
    let Some(webhooks) = state.webhooks() else {
        return refuse(
            Outcome::Unauthorized,
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHENTICATED,
            "LiveKit credentials are not configured",
        );
    };
    let Some(authorization) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return refuse(
            Outcome::Unauthorized,
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHENTICATED,
            "missing Authorization",
        );
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return refuse(
            Outcome::Invalid,
            StatusCode::BAD_REQUEST,
            codes::INVALID_ARGUMENT,
            "body is not UTF-8",
        );
    };
    let event = match webhooks.receive(body, authorization) {
        Ok(event) => event,
        Err(livekit_api::webhooks::WebhookError::InvalidData(error)) => {
            tracing::warn!(%error, "authentic LiveKit webhook with an unreadable event");
            return refuse(
                Outcome::Invalid,
                StatusCode::BAD_REQUEST,
                codes::INVALID_ARGUMENT,
                "unreadable webhook event",
            );
        }
        Err(error) => {
            tracing::warn!(%error, "LiveKit webhook refused");
            return refuse(
                Outcome::Unauthorized,
                StatusCode::UNAUTHORIZED,
                codes::UNAUTHENTICATED,
                "webhook authorization does not verify",
            );
        }
    };
    state.exporter().request(Route::LiveKitWebhook, Outcome::Ok);
    match livekit::action(&event, state.config().twilio_auth_token.expose()) {
        EventAction::JoinRoom { session, room } => {
            tracing::info!(session_id = %session.session_id, room, "caller in its LiveKit room; the runtime joins");
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                if let Err(error) = state
                    .runtime()
                    .join_room(&session.media_url, &session.session_id, &room)
                    .await
                {
                    tracing::warn!(session_id = %session.session_id, %error, "the runtime could not join the room; ending the session");
                    spawn_end_session(&state, session.media_url, session.session_id);
                }
            });
        }
        EventAction::EndSession(session) => {
            tracing::info!(session_id = %session.session_id, "caller left its LiveKit room; ending the session");
            spawn_end_session(&state, session.media_url, session.session_id);
        }
        EventAction::Ignore => {}
    }
    StatusCode::OK.into_response()
}

/// `GET /metrics`.
async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE))],
        state.exporter().render(),
    )
        .into_response()
}

/// `GET /readyz`.
async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Response {
    if state.is_ready() {
        "ok".into_response()
    } else {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "not serving (starting or shutting down)",
        )
    }
}
