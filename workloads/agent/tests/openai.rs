//! The `openai` provider against a stub server that speaks the Chat
//! Completions streaming wire format: `data: {"choices":[{"delta":
//! {"content":"..."}}]}` lines ending with `data: [DONE]`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use support::{Server, config, json_of, parse_sse, post_json, read_body};
use tokio::net::TcpListener;
use voice_agent_agent::testing::FAQ_MARKDOWN;
use voice_agent_agent::{Config, Secret, State};
use voice_agent_api::voiceagent::LlmProvider;
use voice_agent_proto::agent::{CitationsEvent, DeltaEvent, DoneEvent};
use voice_agent_proto::{ErrorBody, RespondResponse};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ok,
    CutMidway,
    RateLimitedOnce,
    AlwaysFailing,
    BadRequest,
    Slow,
}

struct Stub {
    mode: Mode,
    calls: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
    auth: Mutex<Vec<String>>,
    dropped: tokio::sync::Notify,
}

const PIECES: [&str; 3] = ["On Saturdays", " we open from 10 am", " to 4 pm."];

fn chunk(content: &str) -> Bytes {
    let v = json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    Bytes::from(format!("data: {v}\n\n"))
}

/// Signals when the response body is dropped (client went away or done).
struct DropGuard(Arc<Stub>);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.dropped.notify_one();
    }
}

async fn completions(
    AxumState(stub): AxumState<Arc<Stub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = stub.calls.fetch_add(1, Ordering::SeqCst);
    stub.bodies
        .lock()
        .expect("lock")
        .push(serde_json::from_slice(&body).expect("request JSON"));
    stub.auth.lock().expect("lock").push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    );
    let error = |status: StatusCode, msg: &str| {
        (
            status,
            [("content-type", "application/json"), ("retry-after", "0")],
            json!({"error": {"message": msg, "type": "x"}}).to_string(),
        )
            .into_response()
    };
    match stub.mode {
        Mode::RateLimitedOnce if n == 0 => {
            return error(StatusCode::TOO_MANY_REQUESTS, "slow down");
        }
        Mode::AlwaysFailing => return error(StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        Mode::BadRequest => return error(StatusCode::BAD_REQUEST, "model does not exist"),
        _ => {}
    }
    let mode = stub.mode;
    let guard = DropGuard(Arc::clone(&stub));
    let role = Bytes::from(format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    ));
    let stream = futures::stream::unfold(0usize, move |i| {
        let _keep = &guard;
        let role = role.clone();
        async move {
            let item: Result<Bytes, std::io::Error> = match (mode, i) {
                (_, 0) => Ok(role),
                (Mode::CutMidway, 2) => Err(std::io::Error::other("cut")),
                (Mode::Slow, 2) => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(chunk("never"))
                }
                (_, i @ 1..=3) => Ok(chunk(PIECES[i - 1])),
                (_, 4) => Ok(Bytes::from(format!(
                    "data: {}\n\ndata: [DONE]\n\n",
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                ))),
                _ => return None,
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some((item, i + 1))
        }
    });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn stub(mode: Mode) -> (Arc<Stub>, String) {
    let stub = Arc::new(Stub {
        mode,
        calls: AtomicUsize::new(0),
        bodies: Mutex::new(Vec::new()),
        auth: Mutex::new(Vec::new()),
        dropped: tokio::sync::Notify::new(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(Arc::clone(&stub));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("stub");
    });
    (stub, format!("http://{addr}/v1"))
}

fn openai_config(base_url: &str) -> Config {
    let mut c = config();
    c.component.llm.provider = LlmProvider::Openai;
    c.component.llm.base_url = Some(base_url.to_owned());
    c.component.llm.model = Some("test-model".into());
    c.llm_api_key = Some(Secret::new("sk-test-key"));
    c.llm.backoff = Duration::from_millis(10);
    c
}

async fn server(mode: Mode) -> (Arc<Stub>, Server) {
    let (stub, base) = stub(mode).await;
    // State::new builds the LLM from the config, as in a pod.
    let state = State::new(openai_config(&base)).await.expect("state");
    let s = Server::start(state).await;
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"id": "faq", "title": "Acme Bikes FAQ", "content": FAQ_MARKDOWN, "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 201);
    (stub, s)
}

fn question() -> Value {
    json!({
        "sessionId": "call-1", "voiceAgent": "support", "utterance": "When are you open on Saturdays?",
        "history": [{"role": "agent", "text": "Hi, how can I help?"}]
    })
}

#[tokio::test]
async fn streams_deltas_and_sends_the_grounded_prompt() {
    let (stub, s) = server(Mode::Ok).await;
    let resp = post_json(
        &s.url("/v1/respond"),
        &question(),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = parse_sse(&read_body(resp).await);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["delta", "delta", "delta", "citations", "done"]);
    let deltas: Vec<String> = events[..3]
        .iter()
        .map(|e| {
            serde_json::from_str::<DeltaEvent>(&e.data)
                .expect("delta")
                .text
        })
        .collect();
    assert_eq!(deltas, PIECES);
    let done: DoneEvent = serde_json::from_str(&events[4].data).expect("done");
    assert_eq!(done.reply, PIECES.concat());
    assert!(
        done.latency.llm_ttft_ms > 0.0 && done.latency.llm_total_ms >= done.latency.llm_ttft_ms
    );
    let cites: CitationsEvent = serde_json::from_str(&events[3].data).expect("citations");
    assert_eq!(cites.citations[0].chunk_id, "faq#0");

    let body = stub.bodies.lock().expect("lock")[0].clone();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 256);
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().expect("system");
    assert!(
        system.starts_with("You are the phone assistant of Acme Bikes."),
        "{system}"
    );
    assert!(
        system.contains("On Saturdays we open from 10 am to 4 pm."),
        "{system}"
    );
    assert!(
        system.contains("Acme Bikes FAQ > Acme Bikes FAQ > Opening hours"),
        "{system}"
    );
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": "Hi, how can I help?"})
    );
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": "When are you open on Saturdays?"})
    );
    assert_eq!(stub.auth.lock().expect("lock")[0], "Bearer sk-test-key");

    // JSON mode: the same reply, and the turn is stored.
    let resp = post_json(&s.url("/v1/respond"), &question(), &[]).await;
    assert_eq!(resp.status(), 200);
    let r: RespondResponse = json_of(resp).await;
    assert_eq!(r.reply, PIECES.concat());
    assert_eq!(
        s.state
            .parts()
            .store
            .turns("call-1")
            .await
            .expect("turns")
            .len(),
        4
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event_not_done() {
    let (_stub, s) = server(Mode::CutMidway).await;
    let resp = post_json(
        &s.url("/v1/respond"),
        &question(),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = parse_sse(&read_body(resp).await);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["delta", "error"]);
    let err: ErrorBody = serde_json::from_str(&events[1].data).expect("error body");
    assert_eq!(err.error.code, "upstream");
    assert!(
        err.error.message.contains("ended early"),
        "{}",
        err.error.message
    );
    // JSON mode: 502, and nothing stored either way.
    let resp = post_json(&s.url("/v1/respond"), &question(), &[]).await;
    assert_eq!(resp.status(), 502);
    assert!(
        s.state
            .parts()
            .store
            .turns("call-1")
            .await
            .expect("turns")
            .is_empty()
    );
    s.shutdown().await;
}

#[tokio::test]
async fn retries_429_before_the_first_byte() {
    let (stub, s) = server(Mode::RateLimitedOnce).await;
    let resp = post_json(&s.url("/v1/respond"), &question(), &[]).await;
    assert_eq!(resp.status(), 200);
    let r: RespondResponse = json_of(resp).await;
    assert_eq!(r.reply, PIECES.concat());
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn gives_up_after_the_attempts_and_does_not_retry_4xx() {
    let (stub, s) = server(Mode::AlwaysFailing).await;
    let resp = post_json(
        &s.url("/v1/respond"),
        &question(),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(resp.status(), 502);
    let body: ErrorBody = json_of(resp).await;
    assert!(
        body.error.message.contains("HTTP 503: overloaded"),
        "{}",
        body.error.message
    );
    assert!(
        body.error.message.contains("after 3 attempts"),
        "{}",
        body.error.message
    );
    assert!(!body.error.message.contains("sk-test-key"));
    assert_eq!(stub.calls.load(Ordering::SeqCst), 3);
    s.shutdown().await;

    let (stub, s) = server(Mode::BadRequest).await;
    let resp = post_json(&s.url("/v1/respond"), &question(), &[]).await;
    assert_eq!(resp.status(), 502);
    let body: ErrorBody = json_of(resp).await;
    assert!(
        body.error.message.contains("model does not exist"),
        "{}",
        body.error.message
    );
    assert_eq!(stub.calls.load(Ordering::SeqCst), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_llm_stream() {
    let (stub, s) = server(Mode::Slow).await;
    let resp = post_json(
        &s.url("/v1/respond"),
        &question(),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("first chunk").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("event: delta"));
    // Hang up mid-reply: the agent must drop its LLM request at once.
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), stub.dropped.notified())
        .await
        .expect("the LLM stream was not cancelled");
    assert!(
        s.state
            .parts()
            .store
            .turns("call-1")
            .await
            .expect("turns")
            .is_empty()
    );
    s.shutdown().await;
}
