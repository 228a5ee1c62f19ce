//! The `openai` embedder against a stub server that speaks the OpenAI
//! embeddings wire format: `POST /v1/embeddings` `{"model", "input": [..]}`
//! → `{"object": "list", "data": [{"object": "embedding", "embedding": [..],
//! "index": n}], "model", "usage"}`. The stub's vectors are the local
//! embedder's, so they are deterministic and similar texts stay similar.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use support::{Server, config, json_of, post_json};
use tokio::net::TcpListener;
use voice_agent_agent::embed::openai::EmbedderTimeouts;
use voice_agent_agent::testing::FAQ_MARKDOWN;
use voice_agent_agent::{
    Embedder, LocalEmbedder, OpenAiEmbedder, OpenAiEmbedderSettings, Secret, State,
};
use voice_agent_api::voiceagent::EmbedderProvider;
use voice_agent_proto::RespondResponse;

const DIMS: usize = 64;
const KEY: &str = "sk-embed-test";
const MODEL: &str = "stub-embed-1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ok,
    RateLimitedOnce,
    AlwaysFailing,
    BadRequest,
    WrongDimension,
    MissingIndex,
    NotJson,
    TooFew,
    Slow,
}

struct Stub {
    mode: Mode,
    calls: AtomicUsize,
    inputs: Mutex<Vec<Vec<String>>>,
    problems: Mutex<Vec<String>>,
}

async fn embeddings(
    AxumState(stub): AxumState<Arc<Stub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = stub.calls.fetch_add(1, Ordering::SeqCst);
    let mut problems = Vec::new();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {KEY}") {
        problems.push(format!("authorization: {auth:?}"));
    }
    if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|c| !c.starts_with("application/json"))
    {
        problems.push("content-type".into());
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body["model"] != MODEL {
        problems.push(format!("model: {}", body["model"]));
    }
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if inputs.is_empty() || inputs.iter().any(|i| i.trim().is_empty()) {
        problems.push(format!("input: {}", body["input"]));
    }
    stub.inputs.lock().expect("lock").push(inputs.clone());
    if !problems.is_empty() {
        stub.problems.lock().expect("lock").extend(problems);
        return (StatusCode::UNAUTHORIZED, "bad request to the stub").into_response();
    }
    let error = |status: StatusCode, msg: &str| {
        (
            status,
            [("content-type", "application/json"), ("retry-after", "0")],
            json!({"error": {"message": msg, "type": "x"}}).to_string(),
        )
            .into_response()
    };
    match stub.mode {
        Mode::RateLimitedOnce if n == 0 => return error(StatusCode::TOO_MANY_REQUESTS, "slow"),
        Mode::AlwaysFailing => return error(StatusCode::BAD_GATEWAY, "overloaded"),
        Mode::BadRequest => return error(StatusCode::BAD_REQUEST, "no such model"),
        Mode::NotJson => return (StatusCode::OK, "<html>proxy error</html>").into_response(),
        Mode::Slow => tokio::time::sleep(Duration::from_secs(30)).await,
        _ => {}
    }
    let local = LocalEmbedder::new(DIMS);
    // Reverse order: the client must place vectors by `index`.
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| {
            // Not unit length: the client normalizes.
            let v: Vec<f32> = local.embed_one(text).iter().map(|x| x * 3.0).collect();
            json!({"object": "embedding", "embedding": v, "index": i})
        })
        .collect();
    match stub.mode {
        Mode::WrongDimension => data[0]["embedding"] = json!([0.5, 0.5]),
        Mode::MissingIndex if data.len() > 1 => data[0]["index"] = data[1]["index"].clone(),
        Mode::MissingIndex => data[0]["index"] = json!(7),
        Mode::TooFew => {
            data.pop();
        }
        _ => {}
    }
    let out = json!({"object": "list", "data": data, "model": MODEL,
        "usage": {"prompt_tokens": 1, "total_tokens": 1}});
    ([("content-type", "application/json")], out.to_string()).into_response()
}

async fn stub(mode: Mode) -> (Arc<Stub>, String) {
    let stub = Arc::new(Stub {
        mode,
        calls: AtomicUsize::new(0),
        inputs: Mutex::new(Vec::new()),
        problems: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(Arc::clone(&stub));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("stub");
    });
    // A trailing slash is tolerated.
    (stub, format!("http://{addr}/v1/"))
}

fn settings(base: &str) -> OpenAiEmbedderSettings {
    OpenAiEmbedderSettings {
        api_key: Some(Secret::new(KEY)),
        batch_size: 2,
        timeouts: EmbedderTimeouts {
            backoff: Duration::from_millis(10),
            request: Duration::from_secs(5),
            ..EmbedderTimeouts::default()
        },
        ..OpenAiEmbedderSettings::new(base, MODEL)
    }
}

fn texts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn embeds_in_batches_in_order_and_learns_the_dimension() {
    let (stub, base) = stub(Mode::Ok).await;
    let e = OpenAiEmbedder::connect(settings(&base))
        .await
        .expect("connect");
    assert_eq!(e.dimensions(), DIMS, "learned by the probe");
    assert_eq!(e.name(), "openai:stub-embed-1");
    assert!(!format!("{e:?}").contains(KEY));
    let input = texts(&[
        "Opening hours on Saturday",
        "We repair electric bikes",
        "   ",
        "Rentals cost 20 euros a day",
        "Where is the shop?",
    ]);
    let vectors = e.embed(&input).await.expect("embed");
    assert_eq!(vectors.len(), 5);
    let local = LocalEmbedder::new(DIMS);
    for (text, v) in input.iter().zip(&vectors) {
        assert_eq!(v.len(), DIMS);
        if text.trim().is_empty() {
            assert!(v.iter().all(|&x| x == 0.0), "blank → zero vector");
            continue;
        }
        let want = local.embed_one(text);
        let diff: f32 = want.iter().zip(v).map(|(a, b)| (a - b).abs()).sum();
        assert!(diff < 1e-4, "{text}: vector differs by {diff}");
    }
    assert!(stub.problems.lock().expect("lock").is_empty());
    let sent = stub.inputs.lock().expect("lock").clone();
    // The probe, then 4 non-blank texts in batches of 2.
    assert_eq!(
        sent,
        [
            texts(&["dimension probe"]),
            texts(&["Opening hours on Saturday", "We repair electric bikes"]),
            texts(&["Rentals cost 20 euros a day", "Where is the shop?"]),
        ]
    );
    assert!(e.embed(&[]).await.expect("nothing").is_empty());
}

#[tokio::test]
async fn retries_429_then_succeeds() {
    let (stub, base) = stub(Mode::RateLimitedOnce).await;
    let e = OpenAiEmbedder::with_dimensions(settings(&base), DIMS).expect("build");
    let v = e.embed(&texts(&["hello there"])).await.expect("embed");
    assert_eq!(v[0].len(), DIMS);
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn gives_up_after_the_attempts() {
    let (stub, base) = stub(Mode::AlwaysFailing).await;
    let e = OpenAiEmbedder::with_dimensions(settings(&base), DIMS).expect("build");
    let err = e.embed(&texts(&["hello"])).await.expect_err("502");
    assert!(
        err.to_string().contains("502") && err.to_string().contains("3 attempts"),
        "{err}"
    );
    assert_eq!(stub.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn does_not_retry_4xx() {
    let (stub, base) = stub(Mode::BadRequest).await;
    let e = OpenAiEmbedder::with_dimensions(settings(&base), DIMS).expect("build");
    let err = e.embed(&texts(&["hello"])).await.expect_err("400");
    assert!(err.to_string().contains("no such model"), "{err}");
    assert!(!err.to_string().contains(KEY));
    assert_eq!(stub.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_responses_are_errors() {
    for (mode, expect) in [
        (Mode::WrongDimension, "dimensions"),
        (Mode::MissingIndex, "twice"),
        (Mode::NotJson, "malformed"),
        (Mode::TooFew, "1 vectors for 2 inputs"),
    ] {
        let (_stub, base) = stub(mode).await;
        let e = OpenAiEmbedder::with_dimensions(settings(&base), DIMS).expect("build");
        let err = e
            .embed(&texts(&["one text", "another text"]))
            .await
            .expect_err("malformed");
        assert!(err.to_string().contains(expect), "{mode:?}: {err}");
    }
    // An index out of range (single input).
    let (_stub, base) = stub(Mode::MissingIndex).await;
    let e = OpenAiEmbedder::with_dimensions(settings(&base), DIMS).expect("build");
    let err = e.embed(&texts(&["one"])).await.expect_err("range");
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[tokio::test]
async fn times_out_per_attempt() {
    let (stub, base) = stub(Mode::Slow).await;
    let mut s = settings(&base);
    s.timeouts.request = Duration::from_millis(100);
    s.timeouts.attempts = 2;
    let e = OpenAiEmbedder::with_dimensions(s, DIMS).expect("build");
    let err = e.embed(&texts(&["hello"])).await.expect_err("timeout");
    assert!(
        err.to_string().contains("no response within 100 ms"),
        "{err}"
    );
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_service_ingests_and_retrieves_with_the_openai_embedder() {
    let (stub, base) = stub(Mode::Ok).await;
    let mut c = config();
    c.component.knowledge.embedder.provider = EmbedderProvider::Openai;
    c.component.knowledge.embedder.base_url = Some(base);
    c.component.knowledge.embedder.model = Some(MODEL.into());
    c.embedder_api_key = Some(Secret::new(KEY));
    // State::new builds the embedder from the config, as in a pod.
    let state = State::new(c).await.expect("state");
    assert_eq!(state.parts().embedder.dimensions(), DIMS);
    let s = Server::start(state).await;
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"id": "faq", "title": "Acme Bikes FAQ", "content": FAQ_MARKDOWN, "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 201);
    let resp = post_json(
        &s.url("/v1/respond"),
        &json!({"sessionId": "c1", "voiceAgent": "support",
            "utterance": "When are you open on Saturdays?", "history": []}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r: RespondResponse = json_of(resp).await;
    assert!(r.reply.contains("10 am"), "{}", r.reply);
    assert_eq!(
        r.citations.first().map(|c| c.document_id.as_str()),
        Some("faq")
    );
    assert!(stub.problems.lock().expect("lock").is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn a_failing_dimension_probe_fails_the_start() {
    // Unknown model, endpoint refusing: the dimension probe fails the start.
    let (_stub, base) = stub(Mode::BadRequest).await;
    let mut c = config();
    c.component.knowledge.embedder.provider = EmbedderProvider::Openai;
    c.component.knowledge.embedder.base_url = Some(base);
    c.component.knowledge.embedder.model = Some(MODEL.into());
    c.embedder_api_key = Some(Secret::new(KEY));
    let err = State::new(c).await.expect_err("start fails");
    assert!(err.to_string().contains("no such model"), "{err}");
}
