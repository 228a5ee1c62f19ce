//! The `elevenlabs` provider against a stub that follows ElevenLabs'
//! documented streaming API, and the concurrency limit.
#![allow(missing_docs)]

mod common;

use std::f64::consts::PI;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{error_body, header, serve};
use serde_json::json;
use tokio::sync::Semaphore;
use voice_agent_proto::audio::{encode_mulaw, samples_to_pcm16_le};
use voice_agent_proto::error::codes;
use voice_agent_tts::config::{ProviderKind, Secret};
use voice_agent_tts::{Config, Outcome, State};

const KEY: &str = "sk-test-0123456789";
const VOICE: &str = "21m00Tcm4TlvDq8ikWAM";

/// One request the stub saw.
#[derive(Debug, Clone)]
struct Seen {
    voice: String,
    query: String,
    api_key: Option<String>,
    content_type: Option<String>,
    body: serde_json::Value,
}

struct Stub {
    seen: Mutex<Vec<Seen>>,
    /// Texts starting with "hold" wait for a permit after the first chunk.
    gate: Arc<Semaphore>,
}

/// 0.3 s of a 440 Hz tone at `rate`.
fn tone(rate: u32) -> Vec<i16> {
    let n = rate as usize * 3 / 10;
    (0..n)
        .map(|i| (8_000.0 * (2.0 * PI * 440.0 * i as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

/// The tone's bytes cut at odd offsets, so samples straddle chunks.
fn chunks(rate: u32) -> Vec<Bytes> {
    let bytes = samples_to_pcm16_le(&tone(rate));
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    for size in [1_001, 2_000, 999, 3_333] {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(Bytes::copy_from_slice(head));
        rest = tail;
    }
    out.push(Bytes::copy_from_slice(rest));
    out
}

fn cut() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "stub cut the stream")
}

async fn stream_handler(
    AxumState(stub): AxumState<Arc<Stub>>,
    Path(voice): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let seen = Seen {
        voice,
        query: query.unwrap_or_default(),
        api_key: get("xi-api-key"),
        content_type: get("content-type"),
        body: body.clone(),
    };
    stub.seen.lock().expect("lock").push(seen.clone());
    if seen.api_key.as_deref() != Some(KEY) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}),
            ),
        )
            .into_response();
    }
    let Some(rate) = seen
        .query
        .strip_prefix("output_format=pcm_")
        .and_then(|r| r.parse::<u32>().ok())
    else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "bad output_format").into_response();
    };
    let text = body["text"].as_str().unwrap_or_default().to_owned();
    let pieces = chunks(rate);
    let gate = Arc::clone(&stub.gate);
    let stream = futures::stream::unfold(0usize, move |i| {
        let pieces = pieces.clone();
        let text = text.clone();
        let gate = Arc::clone(&gate);
        async move {
            if text.starts_with("cut before") && i == 0 {
                return Some((Err(cut()), usize::MAX));
            }
            if i >= pieces.len() {
                return None;
            }
            if text.starts_with("cut midway") && i == 2 {
                return Some((Err(cut()), usize::MAX));
            }
            if text.starts_with("hold") && i == 1 {
                gate.acquire().await.expect("gate").forget();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some((Ok::<_, std::io::Error>(pieces[i].clone()), i + 1))
        }
    });
    ([("content-type", "audio/pcm")], Body::from_stream(stream)).into_response()
}

async fn start_stub() -> (Arc<Stub>, SocketAddr) {
    let stub = Arc::new(Stub {
        seen: Mutex::default(),
        gate: Arc::new(Semaphore::new(0)),
    });
    let app = Router::new()
        .route("/v1/text-to-speech/{voice}/stream", post(stream_handler))
        .with_state(Arc::clone(&stub));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("stub");
    });
    (stub, addr)
}

fn config(stub: SocketAddr, key: &str) -> Config {
    Config {
        provider: ProviderKind::ElevenLabs,
        voice: VOICE.into(),
        base_url: format!("http://{stub}"),
        model: "eleven_flash_v2_5".into(),
        api_key: Secret::new(key),
        ..Config::default()
    }
}

async fn start(stub: SocketAddr, key: &str) -> common::Server {
    serve(State::new(config(stub, key)).expect("state")).await
}

#[tokio::test]
async fn streams_vendor_pcm_and_sends_the_documented_request() {
    let (stub, addr) = start_stub().await;
    let server = start(addr, KEY).await;
    assert!(server.state.check_provider().await.is_ok());

    let response = server
        .synth(json!({"text": "Hello from the vendor.", "sampleRate": 16000}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("audio/pcm;rate=16000")
    );
    let body = response.bytes().await.expect("body");
    assert_eq!(
        body.as_ref(),
        samples_to_pcm16_le(&tone(16_000)).as_slice(),
        "the vendor's PCM, unchanged"
    );

    let response = server
        .synth(json!({"text": "Hello again.", "voice": "customVoice1", "format": "mulaw", "sampleRate": 8000}))
        .await;
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("audio/basic;rate=8000")
    );
    let body = response.bytes().await.expect("body");
    assert_eq!(body.as_ref(), encode_mulaw(&tone(8_000)).as_slice());

    let seen = stub.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].voice, VOICE, "the configured default voice");
    assert_eq!(seen[0].query, "output_format=pcm_16000");
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        seen[0].body,
        json!({"text": "Hello from the vendor.", "model_id": "eleven_flash_v2_5"})
    );
    assert_eq!(seen[1].voice, "customVoice1");
    assert_eq!(seen[1].query, "output_format=pcm_8000");

    // The second time is the cache's.
    let again = server
        .synth(json!({"text": "Hello again.", "voice": "customVoice1", "format": "mulaw", "sampleRate": 8000}))
        .await;
    assert!(header(&again, "x-audio-duration-ms").is_some());
    assert_eq!(again.bytes().await.expect("body"), body);
    assert_eq!(stub.seen.lock().expect("lock").len(), 2);
    assert_eq!(server.state.exporter().requests(Outcome::Ok), 2);
}

#[tokio::test]
async fn vendor_401_is_a_502_naming_the_provider_without_the_key() {
    let (_stub, addr) = start_stub().await;
    let server = start(addr, "sk-wrong-key").await;
    for json_answer in [false, true] {
        let response = server
            .synth_raw(json!({"text": "Hello."}).to_string(), json_answer)
            .await;
        assert_eq!(response.status(), 502);
        let err = error_body(response).await;
        assert_eq!(err.error.code, codes::UPSTREAM);
        assert_eq!(err.error.message, "elevenlabs: HTTP 401: Invalid API key");
        assert!(!err.error.message.contains("sk-wrong-key"));
    }
    assert_eq!(server.state.exporter().requests(Outcome::ProviderError), 2);
    assert_eq!(server.state.cache_usage(), (0, 0));
}

#[tokio::test]
async fn a_stream_cut_midway_aborts_the_body_and_is_not_cached() {
    let (stub, addr) = start_stub().await;
    let server = start(addr, KEY).await;
    for attempt in 1..=2 {
        let response = server
            .synth(json!({"text": "cut midway through this sentence"}))
            .await;
        // The vendor had produced audio, so the 200 was committed ...
        assert_eq!(response.status(), 200);
        // ... and the body must end in an error, not a clean short file.
        let read = response.bytes().await;
        assert!(
            read.is_err(),
            "attempt {attempt}: a truncated body read cleanly"
        );
        assert_eq!(stub.seen.lock().expect("lock").len(), attempt, "not cached");
    }
    // The abort is counted once the server has noticed.
    for _ in 0..100 {
        if server.state.exporter().requests(Outcome::Aborted) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.state.exporter().requests(Outcome::Aborted), 2);
    assert_eq!(server.state.exporter().requests(Outcome::Ok), 0);
    assert_eq!(server.state.cache_usage(), (0, 0));
    assert_eq!(server.state.exporter().in_flight(), 0);

    // With Accept: application/json nothing is committed early: a 502.
    let response = server
        .synth_json(json!({"text": "cut midway through this sentence"}))
        .await;
    assert_eq!(response.status(), 502);
    let err = error_body(response).await;
    assert!(
        err.error
            .message
            .starts_with("elevenlabs: stream interrupted"),
        "{}",
        err.error.message
    );
}

#[tokio::test]
async fn a_stream_cut_before_any_audio_is_a_502_never_a_200() {
    let (_stub, addr) = start_stub().await;
    let server = start(addr, KEY).await;
    let response = server.synth(json!({"text": "cut before anything"})).await;
    assert_eq!(response.status(), 502);
    let err = error_body(response).await;
    assert_eq!(err.error.code, codes::UPSTREAM);
    assert!(
        err.error.message.starts_with("elevenlabs: "),
        "{}",
        err.error.message
    );
    assert_eq!(server.state.exporter().requests(Outcome::ProviderError), 1);
}

#[tokio::test]
async fn an_unreachable_vendor_is_a_502() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let server = start(closed, KEY).await;
    let response = server.synth(json!({"text": "Hello."})).await;
    assert_eq!(response.status(), 502);
    let err = error_body(response).await;
    assert!(
        err.error.message.starts_with("elevenlabs: request failed"),
        "{}",
        err.error.message
    );
}

/// With one slot, a second synthesis waits up to the queue timeout and is
/// then refused with 503 and `Retry-After`; one that gets the slot within
/// the timeout proceeds; cache hits never need a slot.
#[tokio::test]
async fn concurrency_limit_queues_then_refuses() {
    let (stub, addr) = start_stub().await;
    let server = serve(
        State::new(Config {
            max_concurrent: 1,
            queue_timeout: Duration::from_millis(300),
            ..config(addr, KEY)
        })
        .expect("state"),
    )
    .await;
    // A phrase cached beforehand.
    server
        .synth(json!({"text": "cached greeting"}))
        .await
        .bytes()
        .await
        .expect("body");

    // A holds the only slot: it has sent its first chunk and waits.
    let a = server.synth(json!({"text": "hold A"})).await;
    assert_eq!(a.status(), 200);
    assert_eq!(server.state.exporter().in_flight(), 1);

    // B waits 300 ms, then 503.
    let started = std::time::Instant::now();
    let b = server.synth(json!({"text": "B"})).await;
    assert_eq!(b.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(header(&b, "retry-after").as_deref(), Some("1"));
    let err = error_body(b).await;
    assert_eq!(err.error.code, codes::UNAVAILABLE);
    assert!(
        err.error.message.contains("all 1 synthesis slots"),
        "{}",
        err.error.message
    );
    assert_eq!(server.state.exporter().requests(Outcome::Busy), 1);

    // The cached phrase is served while the slot is taken.
    let hit = server.synth(json!({"text": "cached greeting"})).await;
    assert_eq!(hit.status(), 200);
    assert!(header(&hit, "x-audio-duration-ms").is_some());

    // C queues; A finishes within C's wait; C then proceeds.
    let c = tokio::spawn({
        let client = server.client.clone();
        let url = server.url("/v1/synthesize");
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(json!({"text": "C"}).to_string())
                .send()
                .await
                .expect("send")
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stub.gate.add_permits(1);
    assert_eq!(a.bytes().await.expect("A completes").len(), 2 * 4_800);
    let c = c.await.expect("task");
    assert_eq!(c.status(), 200);
    c.bytes().await.expect("C completes");
    assert_eq!(server.state.exporter().in_flight(), 0);
    assert_eq!(server.state.exporter().requests(Outcome::Busy), 1);
}
