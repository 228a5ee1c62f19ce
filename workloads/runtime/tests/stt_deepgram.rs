//! The Deepgram provider against an in-test WebSocket stub that follows
//! Deepgram's documented wire format: query parameters and `Authorization:
//! Token` checked, binary PCM16 audio received, `Results` / `SpeechStarted` /
//! `UtteranceEnd` / `Metadata` replayed, control messages (`KeepAlive`,
//! `Finalize`, `CloseStream`) observed; dropped sockets, 401 and malformed
//! messages.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use voice_agent_http::env::Secret;
use voice_agent_runtime::stt::deepgram::{DeepgramConfig, DeepgramStt};
use voice_agent_runtime::stt::{SttEvent, SttInput, SttParams, SttProvider, SttStream};

const KEY: &str = "dg-test-key-123";
const WAIT: Duration = Duration::from_secs(5);

/// One accepted connection, with what the handshake carried.
struct Accepted {
    uri: String,
    authorization: Option<String>,
    ws: WebSocketStream<TcpStream>,
}

/// The stub server: every connection attempt is counted; a refusal status
/// rejects the handshake, otherwise the socket is handed to the test.
struct Stub {
    addr: SocketAddr,
    attempts: Arc<AtomicUsize>,
    accepted: mpsc::Receiver<Accepted>,
}

/// The request URI and `Authorization` header of a handshake.
type Handshake = Arc<Mutex<Option<(String, Option<String>)>>>;

async fn stub(refuse: Option<u16>) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let attempts = Arc::new(AtomicUsize::new(0));
    let (tx, accepted) = mpsc::channel(8);
    let counter = Arc::clone(&attempts);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let seen: Handshake = Arc::default();
                let record = Arc::clone(&seen);
                // The callback type is tungstenite's (its error is an HTTP response).
                #[allow(clippy::result_large_err)]
                let callback = move |req: &Request, resp: Response| {
                    let auth = req
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    *record.lock().expect("lock") = Some((req.uri().to_string(), auth));
                    match refuse {
                        Some(status) => {
                            let refusal: ErrorResponse = http::Response::builder()
                                .status(status)
                                .header("dg-error", "Invalid credentials.")
                                .body(Some("refused".to_owned()))
                                .expect("response");
                            Err(refusal)
                        }
                        None => Ok(resp),
                    }
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await {
                    let (uri, authorization) = seen.lock().expect("lock").take().expect("request");
                    let _ = tx
                        .send(Accepted {
                            uri,
                            authorization,
                            ws,
                        })
                        .await;
                }
            });
        }
    });
    Stub {
        addr,
        attempts,
        accepted,
    }
}

impl Stub {
    async fn next(&mut self) -> Accepted {
        tokio::time::timeout(WAIT, self.accepted.recv())
            .await
            .expect("a connection")
            .expect("stub running")
    }
}

fn config(addr: SocketAddr) -> DeepgramConfig {
    let mut c = DeepgramConfig::new(Secret::new(KEY));
    c.base_url = format!("ws://{addr}");
    c.initial_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(100);
    c
}

fn params() -> SttParams {
    SttParams {
        sample_rate: 8_000,
        language: "en-US".into(),
        model: Some("nova-3".into()),
        endpointing_ms: 300,
    }
}

fn frame(index: i16) -> Vec<i16> {
    let mut f = vec![0i16; 160];
    f[0] = index;
    f
}

async fn next_event(stream: &mut SttStream) -> SttEvent {
    tokio::time::timeout(WAIT, stream.events.recv())
        .await
        .expect("an event in time")
        .expect("stream open")
}

/// The next message the stub receives, skipping keep-alives unless asked.
async fn receive(ws: &mut WebSocketStream<TcpStream>) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .expect("socket open")
        .expect("valid frame")
}

fn text(message: &Message) -> Option<serde_json::Value> {
    match message {
        Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
        _ => None,
    }
}

fn results(transcript: &str, is_final: bool, speech_final: bool) -> Message {
    Message::text(
        serde_json::json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": 0.8,
            "start": 1.2,
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": false,
            "channel": {"alternatives": [{
                "transcript": transcript,
                "confidence": 0.97,
                "words": []
            }]},
            "metadata": {
                "request_id": "5d1a2b",
                "model_info": {"name": "2-general-nova", "version": "2024-01-09", "arch": "nova-3"},
                "model_uuid": "c0d1"
            }
        })
        .to_string(),
    )
}

#[tokio::test]
async fn streams_audio_and_relays_documented_results() {
    let mut stub = stub(None).await;
    let stt = DeepgramStt::new(config(stub.addr)).expect("provider");
    assert_eq!(stt.name(), "deepgram");
    let mut stream = stt.open(&params()).expect("open");
    for i in 0..10 {
        stream
            .input
            .send(SttInput::Audio(frame(i)))
            .await
            .expect("send");
    }
    let mut conn = stub.next().await;

    // The handshake: path, every documented query parameter, the key.
    let (path, query) = conn.uri.split_once('?').expect("query");
    assert_eq!(path, "/v1/listen");
    let mut pairs: Vec<&str> = query.split('&').collect();
    pairs.sort_unstable();
    assert_eq!(
        pairs,
        [
            "channels=1",
            "encoding=linear16",
            "endpointing=300",
            "interim_results=true",
            "language=en-US",
            "model=nova-3",
            "sample_rate=8000",
            "smart_format=true",
            "utterance_end_ms=1000",
            "vad_events=true",
        ]
    );
    assert_eq!(conn.authorization.as_deref(), Some("Token dg-test-key-123"));

    // Audio arrives as binary PCM16 LE frames, in order.
    for i in 0..10i16 {
        match receive(&mut conn.ws).await {
            Message::Binary(bytes) => {
                assert_eq!(bytes.len(), 320);
                assert_eq!(i16::from_le_bytes([bytes[0], bytes[1]]), i);
            }
            other => panic!("expected audio, got {other:?}"),
        }
    }

    // Deepgram's replies, in the documented shapes.
    let replies = [
        Message::text(r#"{"type":"SpeechStarted","channel":[0,1],"timestamp":0.62}"#),
        results("what time", false, false),
        results("what time do you", false, false),
        results("What time do you open", true, false),
        results("on Saturday?", true, true),
        Message::text(r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.9}"#),
    ];
    for r in replies {
        conn.ws.send(r).await.expect("reply");
    }
    let expected = [
        SttEvent::SpeechStarted,
        SttEvent::Interim {
            text: "what time".into(),
        },
        SttEvent::Interim {
            text: "what time do you".into(),
        },
        SttEvent::Final {
            text: "What time do you open".into(),
            speech_final: false,
        },
        SttEvent::Final {
            text: "on Saturday?".into(),
            speech_final: true,
        },
        SttEvent::UtteranceEnd,
    ];
    for e in expected {
        assert_eq!(next_event(&mut stream).await, e);
    }

    // Close: CloseStream, the last results and Metadata, then the end.
    stream.input.send(SttInput::Close).await.expect("close");
    let close = receive(&mut conn.ws).await;
    assert_eq!(
        text(&close),
        Some(serde_json::json!({"type": "CloseStream"}))
    );
    conn.ws
        .send(results("thanks", true, true))
        .await
        .expect("last");
    conn.ws
        .send(Message::text(
            r#"{"type":"Metadata","transaction_key":"deprecated","request_id":"5d1a2b","sha256":"ab","created":"2025-01-01T00:00:00.000Z","duration":3.2,"channels":1,"models":["c0d1"],"model_info":{}}"#,
        ))
        .await
        .expect("metadata");
    conn.ws.close(None).await.expect("close");
    assert_eq!(
        next_event(&mut stream).await,
        SttEvent::Final {
            text: "thanks".into(),
            speech_final: true
        }
    );
    let end = tokio::time::timeout(WAIT, stream.events.recv()).await;
    assert_eq!(end.expect("stream ends"), None);
    assert_eq!(stub.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keepalive_during_silence_and_finalize_on_request() {
    let mut stub = stub(None).await;
    let mut c = config(stub.addr);
    c.keepalive_interval = Duration::from_millis(100);
    let stt = DeepgramStt::new(c).expect("provider");
    let mut stream = stt.open(&params()).expect("open");
    let mut conn = stub.next().await;

    // No audio: KeepAlive text frames, repeatedly.
    for _ in 0..3 {
        let m = receive(&mut conn.ws).await;
        assert_eq!(text(&m), Some(serde_json::json!({"type": "KeepAlive"})));
    }

    // Finalize is sent as a control message; Deepgram's flushed result
    // comes back as a final.
    stream
        .input
        .send(SttInput::Audio(frame(1)))
        .await
        .expect("audio");
    stream
        .input
        .send(SttInput::Finalize)
        .await
        .expect("finalize");
    let mut saw_audio = false;
    loop {
        let m = receive(&mut conn.ws).await;
        if matches!(m, Message::Binary(_)) {
            saw_audio = true;
            continue;
        }
        match text(&m) {
            Some(v) if v["type"] == "KeepAlive" => continue,
            Some(v) => {
                assert_eq!(v, serde_json::json!({"type": "Finalize"}));
                break;
            }
            None => panic!("unexpected {m:?}"),
        }
    }
    assert!(saw_audio);
    let mut flushed = serde_json::json!({
        "type": "Results", "is_final": true, "speech_final": false, "from_finalize": true,
        "channel": {"alternatives": [{"transcript": "hold on", "confidence": 0.9, "words": []}]}
    });
    flushed["start"] = serde_json::json!(0.0);
    conn.ws
        .send(Message::text(flushed.to_string()))
        .await
        .expect("flushed");
    assert_eq!(
        next_event(&mut stream).await,
        SttEvent::Final {
            text: "hold on".into(),
            speech_final: false
        }
    );
    drop(stream);
}

#[tokio::test]
async fn a_dropped_socket_reconnects_and_keeps_streaming() {
    let mut stub = stub(None).await;
    let stt = DeepgramStt::new(config(stub.addr)).expect("provider");
    let mut stream = stt.open(&params()).expect("open");
    for i in 0..5 {
        stream
            .input
            .send(SttInput::Audio(frame(i)))
            .await
            .expect("send");
    }
    let mut first = stub.next().await;
    for _ in 0..5 {
        assert!(matches!(receive(&mut first.ws).await, Message::Binary(_)));
    }
    // Forced disconnect: the TCP connection goes away without a close
    // handshake.
    drop(first);

    // The caller keeps talking; the client reconnects and streams on.
    let sender = {
        let input = stream.input.clone();
        tokio::spawn(async move {
            for i in 5..40 {
                input.send(SttInput::Audio(frame(i))).await.expect("send");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut second = stub.next().await;
    assert_eq!(
        second.authorization.as_deref(),
        Some("Token dg-test-key-123")
    );
    assert!(second.uri.starts_with("/v1/listen?"));
    assert_eq!(next_event(&mut stream).await, SttEvent::Reconnected);
    let mut received = Vec::new();
    while received.last() != Some(&39) {
        if let Message::Binary(b) = receive(&mut second.ws).await {
            received.push(i16::from_le_bytes([b[0], b[1]]));
        }
    }
    sender.await.expect("sender");
    // In order, nothing duplicated; the audio sent meanwhile was buffered.
    assert!(received.windows(2).all(|w| w[0] < w[1]), "{received:?}");
    assert!(received.len() >= 30, "{received:?}");
    second
        .ws
        .send(results("still here", true, true))
        .await
        .expect("results");
    assert_eq!(
        next_event(&mut stream).await,
        SttEvent::Final {
            text: "still here".into(),
            speech_final: true
        }
    );
    assert_eq!(stub.attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unauthorized_fails_at_once_without_retries() {
    let stub = stub(Some(401)).await;
    let stt = DeepgramStt::new(config(stub.addr)).expect("provider");
    let mut stream = stt.open(&params()).expect("open");
    stream
        .input
        .send(SttInput::Audio(frame(0)))
        .await
        .expect("send");
    match next_event(&mut stream).await {
        SttEvent::Failed { reason } => {
            assert!(reason.contains("401"), "{reason}");
            assert!(reason.contains("Invalid credentials"), "{reason}");
            assert!(!reason.contains(KEY), "the key leaked: {reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, stream.events.recv()).await;
    assert_eq!(end.expect("stream ends"), None);
    // Longer than several backoffs would take: still one attempt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let stub = stub(Some(503)).await;
    let mut c = config(stub.addr);
    c.max_reconnect_attempts = 2;
    let stt = DeepgramStt::new(c).expect("provider");
    let mut stream = stt.open(&params()).expect("open");
    match next_event(&mut stream).await {
        SttEvent::Failed { reason } => assert!(reason.contains("503"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(stub.attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn malformed_messages_are_skipped() {
    let mut stub = stub(None).await;
    let stt = DeepgramStt::new(config(stub.addr)).expect("provider");
    let mut stream = stt.open(&params()).expect("open");
    let mut conn = stub.next().await;
    for junk in [
        "not json",
        "{}",
        r#"{"type":"Results"}"#,
        r#"{"type":"Results","channel":{"alternatives":[]},"is_final":true}"#,
        r#"{"type":"Results","channel":{"alternatives":[{"transcript":42}]}}"#,
        r#"{"type":"SomethingNew"}"#,
        r#"{"type":"Error","description":"Bad data","message":"x","variant":"y"}"#,
    ] {
        conn.ws.send(Message::text(junk)).await.expect("junk");
    }
    conn.ws
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("binary");
    conn.ws
        .send(results("after the junk", false, false))
        .await
        .expect("valid");
    assert_eq!(
        next_event(&mut stream).await,
        SttEvent::Interim {
            text: "after the junk".into()
        }
    );
    // The connection survived it all.
    assert_eq!(stub.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn configuration_errors() {
    assert!(DeepgramStt::new(DeepgramConfig::new(Secret::new(""))).is_err());
    let mut c = DeepgramConfig::new(Secret::new(KEY));
    c.base_url = "ftp://example.com".into();
    assert!(DeepgramStt::new(c).is_err());
    let mut c = DeepgramConfig::new(Secret::new(KEY));
    c.base_url = "ws://127.0.0.1:9".into();
    let stt = DeepgramStt::new(c).expect("provider");
    let mut p = params();
    p.sample_rate = 0;
    assert!(stt.open(&p).is_err());
    // The public endpoint needs TLS: the connector is built from the
    // system's roots (present on these machines and in the image).
    assert!(DeepgramStt::new(DeepgramConfig::new(Secret::new(KEY))).is_ok());
}
