//! The HTTP API: routes, handlers and the layers around them.
//!
//! | Route                          | Answer                                               |
//! |--------------------------------|------------------------------------------------------|
//! | `POST /v1/respond`             | [`RespondResponse`]; with `Accept: text/event-stream` SSE `delta`*, `citations`, `done` (or `error`) |
//! | `POST /v1/documents`           | 201 [`DocumentInfo`]                                 |
//! | `GET /v1/documents`            | [`DocumentList`] (`?voiceAgent=` optional)           |
//! | `DELETE /v1/documents/{id}`    | 204; 404 when unknown                                |
//! | `GET /metrics`                 | Prometheus text exposition                           |
//! | `GET /healthz`                 | 200 `ok`                                             |
//! | `GET /readyz`                  | 200 `ok` when the store answers, else 503            |
//!
//! Every error, including the layers' own (404, 405, 408, 413), is an
//! [`ErrorBody`](voice_agent_proto::ErrorBody).
//!
//! [`RespondResponse`]: voice_agent_proto::RespondResponse
//! [`DocumentInfo`]: voice_agent_proto::DocumentInfo

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use voice_agent_http::{Limits, accepts, is_json, standard_layers};
use voice_agent_proto::agent::{
    CitationsEvent, DeltaEvent, DoneEvent, SSE_CITATIONS, SSE_CONTENT_TYPE, SSE_DELTA, SSE_DONE,
    SSE_ERROR,
};
use voice_agent_proto::{CreateDocumentRequest, DocumentList, RespondRequest};

use crate::State;
use crate::error::AgentError;
use crate::exporter::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::llm::{LlmEvent, LlmStream};
use crate::respond::{LlmOutcome, Prepared};

/// The service's router: every route plus the tracing, error-body, timeout
/// and body-limit layers (outermost first).
pub fn router(state: Arc<State>) -> Router {
    let config = state.config();
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
    };
    let routes = Router::new()
        .route("/v1/respond", post(post_respond))
        .route("/v1/documents", post(post_document).get(get_documents))
        .route("/v1/documents/{id}", delete(delete_document))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(ok))
        .route("/readyz", get(readyz));
    standard_layers(routes, limits, None).with_state(state)
}

/// Parses a JSON request body; no `Content-Type` is accepted, a wrong one
/// is 415.
fn parse_json<T: DeserializeOwned>(
    state: &State,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AgentError> {
    if let Some(ct) = headers.get(CONTENT_TYPE).filter(|ct| !is_json(ct)) {
        return Err(AgentError::UnsupportedMediaType(format!(
            "Content-Type {:?} is not JSON; send application/json",
            ct.to_str().unwrap_or("?")
        )));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AgentError::TooLarge(format!(
                "request body larger than {} bytes",
                state.config().max_body_bytes
            ))
        } else {
            AgentError::Invalid(rejection.body_text())
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| AgentError::Invalid(format!("invalid JSON body: {e}")))
}

/// Answers an error and counts it.
fn fail(state: &State, route: &str, err: AgentError) -> Response {
    if err.status().is_server_error() {
        tracing::warn!(route, error = %err, "request failed");
    } else {
        tracing::debug!(route, error = %err, "request refused");
    }
    state.exporter().count(route, err.result_label());
    err.into_response()
}

async fn post_respond(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const ROUTE: &str = "respond";
    let req: RespondRequest = match parse_json(&state, &headers, body) {
        Ok(r) => r,
        Err(e) => return fail(&state, ROUTE, e),
    };
    if !accepts(&headers, SSE_CONTENT_TYPE) {
        return match state.respond(req).await {
            Ok(resp) => {
                state.exporter().count(ROUTE, "ok");
                axum::Json(resp).into_response()
            }
            Err(e) => fail(&state, ROUTE, e),
        };
    }
    let prepared = match state.prepare(req).await {
        Ok(p) => p,
        Err(e) => return fail(&state, ROUTE, e),
    };
    let (mut stream, llm_started) = state.start_llm(&prepared);
    let mut outcome = LlmOutcome {
        reply: String::new(),
        sources: None,
        ttft_ms: 0.0,
        total_ms: 0.0,
    };
    // Wait for the first text (or the end) before answering, so that a
    // model that fails before saying anything is a proper 502/504.
    let mut first = None;
    loop {
        match stream.next().await {
            Some(Ok(LlmEvent::Sources(ids))) => outcome.sources = Some(ids),
            Some(Ok(LlmEvent::Delta(text))) => {
                outcome.ttft_ms = llm_started.elapsed().as_secs_f64() * 1000.0;
                first = Some(text);
                break;
            }
            Some(Err(e)) => return fail(&state, ROUTE, e.into()),
            None => break,
        }
    }
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(drive_sse(
        Arc::clone(&state),
        prepared,
        stream,
        llm_started,
        outcome,
        first,
        tx,
    ));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(events).into_response()
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Event::default().event(name).data(json)
}

/// Streams the rest of a reply as SSE events, then stores the turn and
/// sends `citations` and `done`, or an `error` event. Stops at once when
/// the client goes away: the LLM stream is dropped, nothing is stored.
async fn drive_sse(
    state: Arc<State>,
    prepared: Prepared,
    mut stream: LlmStream,
    llm_started: Instant,
    mut outcome: LlmOutcome,
    first: Option<String>,
    tx: mpsc::Sender<Event>,
) {
    const ROUTE: &str = "respond";
    let cancelled = || {
        tracing::debug!("client went away; reply cancelled");
        state.exporter().count(ROUTE, "cancelled");
    };
    if let Some(text) = first {
        outcome.reply.push_str(&text);
        if tx
            .send(json_event(SSE_DELTA, &DeltaEvent { text }))
            .await
            .is_err()
        {
            return cancelled();
        }
        loop {
            let event = tokio::select! {
                () = tx.closed() => return cancelled(),
                event = stream.next() => event,
            };
            match event {
                None => break,
                Some(Ok(LlmEvent::Sources(ids))) => outcome.sources = Some(ids),
                Some(Ok(LlmEvent::Delta(text))) => {
                    outcome.reply.push_str(&text);
                    if tx
                        .send(json_event(SSE_DELTA, &DeltaEvent { text }))
                        .await
                        .is_err()
                    {
                        return cancelled();
                    }
                }
                Some(Err(e)) => {
                    let err = AgentError::from(e);
                    tracing::warn!(error = %err, "reply stream failed");
                    state.exporter().count(ROUTE, err.result_label());
                    let _ = tx.send(json_event(SSE_ERROR, &err.body())).await;
                    return;
                }
            }
        }
    }
    drop(stream);
    outcome.total_ms = llm_started.elapsed().as_secs_f64() * 1000.0;
    let finished = tokio::select! {
        () = tx.closed() => return cancelled(),
        r = state.finish(prepared, outcome) => r,
    };
    match finished {
        Ok(resp) => {
            state.exporter().count(ROUTE, "ok");
            let _ = tx
                .send(json_event(
                    SSE_CITATIONS,
                    &CitationsEvent {
                        citations: resp.citations,
                    },
                ))
                .await;
            let _ = tx
                .send(json_event(
                    SSE_DONE,
                    &DoneEvent {
                        reply: resp.reply,
                        latency: resp.latency,
                    },
                ))
                .await;
        }
        Err(err) => {
            tracing::warn!(error = %err, "turn not completed");
            state.exporter().count(ROUTE, err.result_label());
            let _ = tx.send(json_event(SSE_ERROR, &err.body())).await;
        }
    }
}

async fn post_document(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const ROUTE: &str = "documents_create";
    let req: CreateDocumentRequest = match parse_json(&state, &headers, body) {
        Ok(r) => r,
        Err(e) => return fail(&state, ROUTE, e),
    };
    match state.ingest(req).await {
        Ok(info) => {
            state.exporter().count(ROUTE, "ok");
            (StatusCode::CREATED, axum::Json(info)).into_response()
        }
        Err(e) => fail(&state, ROUTE, e),
    }
}

/// The optional `voiceAgent` query parameter; any other parameter is 400.
fn voice_agent_param(query: Option<&str>) -> Result<Option<String>, AgentError> {
    let mut voice_agent = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "voiceAgent" {
            return Err(AgentError::Invalid(format!(
                "unknown query parameter {key:?}; the only one is voiceAgent"
            )));
        }
        // VoiceAgent names are DNS labels: nothing to percent-decode.
        voice_agent = Some(value.to_owned());
    }
    Ok(voice_agent)
}

async fn get_documents(
    AxumState(state): AxumState<Arc<State>>,
    RawQuery(query): RawQuery,
) -> Response {
    const ROUTE: &str = "documents_list";
    let result = async {
        if let Some(va) = voice_agent_param(query.as_deref())? {
            state.check_voice_agent(&va)?;
        }
        state.list_documents().await
    }
    .await;
    match result {
        Ok(documents) => {
            state.exporter().count(ROUTE, "ok");
            axum::Json(DocumentList { documents }).into_response()
        }
        Err(e) => fail(&state, ROUTE, e),
    }
}

async fn delete_document(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    const ROUTE: &str = "documents_delete";
    let result = async {
        if let Some(va) = voice_agent_param(query.as_deref())? {
            state.check_voice_agent(&va)?;
        }
        state.delete_document(&id).await
    }
    .await;
    match result {
        Ok(()) => {
            state.exporter().count(ROUTE, "ok");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => fail(&state, ROUTE, e),
    }
}

async fn get_metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE))],
        state.exporter().render(),
    )
        .into_response()
}

async fn ok() -> &'static str {
    "ok\n"
}

async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Response {
    match state.ready().await {
        Ok(()) => "ok\n".into_response(),
        Err(e) => e.into_response(),
    }
}
