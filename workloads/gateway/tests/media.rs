//! The Media Streams proxy over real WebSockets: a test client plays Twilio,
//! the stand-in runtime plays the runtime pod.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use axum::extract::ws::{CloseFrame as AxumCloseFrame, Message as AxumMessage};
use common::*;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voice_agent_gateway::NoCluster;
use voice_agent_proto::mediastreams::{Message as Media, StartMeta};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn setup() -> (Runtime, Gateway) {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(
        Options {
            runtime_url: runtime.url(),
            livekit_url: None,
            bound_numbers: vec![],
        },
        Arc::new(NoCluster::default()),
        |_| {},
    )
    .await;
    (runtime, gateway)
}

/// Answers a call and returns the stream URL and parameters of its TwiML.
async fn answer(gateway: &Gateway, n: u32) -> (String, BTreeMap<String, String>) {
    let twiml = gateway
        .voice(&call_sid(n))
        .await
        .text()
        .await
        .expect("twiml");
    parse_stream(&twiml)
}

fn connected() -> String {
    r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned()
}

fn start(n: u32, params: BTreeMap<String, String>) -> String {
    Media::Start {
        sequence_number: Some("1".into()),
        start: StartMeta {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            stream_sid: "MZ1".into(),
            call_sid: call_sid(n),
            tracks: vec!["inbound".into()],
            custom_parameters: params,
            media_format: None,
        },
        stream_sid: "MZ1".into(),
    }
    .to_json()
}

fn inbound_media(seq: u32) -> String {
    format!(
        r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{seq}","timestamp":"{}","payload":"//////////8="}},"streamSid":"MZ1"}}"#,
        seq + 1,
        seq * 20
    )
}

async fn next_text(client: &mut Client) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .expect("no error");
        match message {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The close frame the client receives next.
async fn next_close(client: &mut Client) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a close within 5 s")
        {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(Message::Text(text))) => panic!("unexpected text {text}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error instead of a close: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

async fn runtime_text(media: &mut RuntimeMedia) -> String {
    match tokio::time::timeout(Duration::from_secs(5), media.received.recv())
        .await
        .expect("runtime receives within 5 s")
        .expect("runtime socket open")
    {
        AxumMessage::Text(text) => text.as_str().to_owned(),
        other => panic!("runtime expected text, got {other:?}"),
    }
}

async fn connect(gateway: &Gateway, url: &str) -> Client {
    assert_eq!(url, format!("ws://{}/twilio/media", gateway.addr));
    // Twilio signs the handshake: the stream URL, no parameters.
    let mut request = url.into_client_request().expect("request");
    let signature = voice_agent_gateway::signature::compute(common::AUTH_TOKEN, url, &[]);
    request.headers_mut().insert(
        "x-twilio-signature",
        signature.parse().expect("header value"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("connect to the gateway")
        .0
}

#[tokio::test]
async fn an_unsigned_or_badly_signed_handshake_is_refused() {
    let (_runtime, gateway) = setup().await;
    let url = format!("ws://{}/twilio/media", gateway.addr);
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err(),
        "unsigned handshake accepted"
    );
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert(
        "x-twilio-signature",
        voice_agent_gateway::signature::compute("wrong-token", &url, &[])
            .parse()
            .expect("header value"),
    );
    assert!(
        tokio_tungstenite::connect_async(request).await.is_err(),
        "badly signed handshake accepted"
    );
}

#[tokio::test]
async fn frames_flow_both_ways_in_order() {
    let (runtime, gateway) = setup().await;
    let (url, params) = answer(&gateway, 1).await;
    let mut twilio = connect(&gateway, &url).await;

    let mut sent = vec![connected(), start(1, params)];
    sent.extend((0..5).map(inbound_media));
    sent.push(
        r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"7","dtmf":{"track":"inbound_track","digit":"5"}}"#
            .to_owned(),
    );
    sent.push(
        r#"{"event":"mark","sequenceNumber":"8","streamSid":"MZ1","mark":{"name":"turn-1"}}"#
            .to_owned(),
    );
    for text in &sent {
        twilio
            .send(Message::Text(text.as_str().into()))
            .await
            .expect("send");
    }
    let mut media = runtime.next_media().await;
    assert_eq!(media.session_id, "s-1");
    for expected in &sent {
        assert_eq!(&runtime_text(&mut media).await, expected);
    }

    // The runtime speaks: audio, a mark, a barge-in clear.
    let outbound = [
        Media::outbound_media("MZ1", "//////////8=".into()).to_json(),
        Media::outbound_mark("MZ1", "reply-1").to_json(),
        Media::clear("MZ1").to_json(),
    ];
    for text in &outbound {
        media
            .send
            .send(AxumMessage::Text(text.as_str().into()))
            .expect("runtime send");
    }
    for expected in &outbound {
        assert_eq!(&next_text(&mut twilio).await, expected);
    }

    // Twilio hangs up: stop, then a normal close; the runtime sees both.
    let stop = r#"{"event":"stop","sequenceNumber":"9","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#;
    twilio.send(Message::Text(stop.into())).await.expect("stop");
    assert_eq!(runtime_text(&mut media).await, stop);
    twilio
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "call ended".into(),
        })))
        .await
        .expect("close");
    match tokio::time::timeout(Duration::from_secs(5), media.received.recv())
        .await
        .expect("close reaches the runtime")
    {
        Some(AxumMessage::Close(Some(frame))) => {
            assert_eq!((frame.code, frame.reason.as_str()), (1000, "call ended"));
        }
        other => panic!("expected the close, got {other:?}"),
    }
    // The client's close handshake completes.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = twilio.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the gateway answered the close");

    let exporter = gateway.state.exporter();
    assert_eq!(exporter.media_frames(true), sent.len() as u64 + 1);
    assert_eq!(exporter.media_frames(false), outbound.len() as u64);
    eventually(|| (gateway.state.active_proxies() == 0).then_some(())).await;
    assert_eq!(exporter.media_proxies(), 0);
}

#[tokio::test]
async fn bad_tokens_close_with_policy_violation_and_contact_nothing() {
    let (runtime, gateway) = setup().await;
    let (url, params) = answer(&gateway, 2).await;

    let mut forged = params.clone();
    forged.insert("mediaUrl".into(), "ws://169.254.169.254/latest".into());
    let mut wrong = params.clone();
    wrong.insert("token".into(), "AAAA".into());
    let mut missing = params.clone();
    missing.remove("token");
    let mut no_session = params.clone();
    no_session.remove("sessionId");
    for bad in [forged, wrong, missing, no_session] {
        let mut twilio = connect(&gateway, &url).await;
        twilio
            .send(Message::Text(connected().into()))
            .await
            .expect("send");
        twilio
            .send(Message::Text(start(2, bad).into()))
            .await
            .expect("send");
        let frame = next_close(&mut twilio).await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Policy);
        assert_eq!(frame.reason.as_str(), "invalid stream token");
    }
    // Malformed openings.
    for opening in ["not json", r#"{"event":"media","streamSid":"MZ1"}"#] {
        let mut twilio = connect(&gateway, &url).await;
        twilio
            .send(Message::Text(opening.into()))
            .await
            .expect("send");
        let frame = next_close(&mut twilio).await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Policy, "{opening}");
    }
    let mut binary = connect(&gateway, &url).await;
    binary
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(
        next_close(&mut binary).await.expect("frame").code,
        CloseCode::Policy
    );
    assert_eq!(runtime.media_connects(), 0);
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_start_timeout() {
    let (runtime, gateway) = setup().await;
    let (url, _) = answer(&gateway, 3).await;
    let mut twilio = connect(&gateway, &url).await;
    twilio
        .send(Message::Text(connected().into()))
        .await
        .expect("send");
    let frame = next_close(&mut twilio).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(frame.reason.as_str(), "no start message in time");
    assert_eq!(runtime.media_connects(), 0);
}

#[tokio::test]
async fn the_runtime_closing_closes_the_caller() {
    let (runtime, gateway) = setup().await;
    let (url, params) = answer(&gateway, 4).await;
    let mut twilio = connect(&gateway, &url).await;
    twilio
        .send(Message::Text(connected().into()))
        .await
        .expect("send");
    twilio
        .send(Message::Text(start(4, params).into()))
        .await
        .expect("send");
    let mut media = runtime.next_media().await;
    runtime_text(&mut media).await;
    runtime_text(&mut media).await;
    media
        .send
        .send(AxumMessage::Close(Some(AxumCloseFrame {
            code: 1000,
            reason: "agent hung up".into(),
        })))
        .expect("runtime close");
    let frame = next_close(&mut twilio).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Normal);
    assert_eq!(frame.reason.as_str(), "agent hung up");
    // Reading on answers the close, which ends the proxy at once.
    while let Some(Ok(_)) = twilio.next().await {}
    eventually(|| (gateway.state.active_proxies() == 0).then_some(())).await;
}

#[tokio::test]
async fn an_unreachable_runtime_closes_the_caller() {
    let (runtime, gateway) = setup().await;
    let (url, _) = answer(&gateway, 5).await;
    // A session whose pod is gone: a validly signed URL nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!(
        "ws://{}/api/sessions/s-9/media",
        listener.local_addr().expect("addr")
    );
    drop(listener);
    let params = BTreeMap::from([
        ("sessionId".to_owned(), "s-9".to_owned()),
        ("mediaUrl".to_owned(), dead.clone()),
        (
            "token".to_owned(),
            voice_agent_gateway::signature::media_token(AUTH_TOKEN, "s-9", &dead),
        ),
    ]);
    let mut twilio = connect(&gateway, &url).await;
    twilio
        .send(Message::Text(start(5, params).into()))
        .await
        .expect("send");
    let frame = next_close(&mut twilio).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Error);
    assert_eq!(runtime.media_connects(), 0);
}

#[tokio::test]
async fn shutdown_waits_for_proxied_calls() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let mut gateway = Gateway::start(
        Options {
            runtime_url: runtime.url(),
            livekit_url: None,
            bound_numbers: vec![],
        },
        Arc::new(NoCluster::default()),
        |c| c.drain_timeout = Duration::from_secs(30),
    )
    .await;
    let (url, params) = answer(&gateway, 6).await;
    let mut twilio = connect(&gateway, &url).await;
    twilio
        .send(Message::Text(start(6, params).into()))
        .await
        .expect("send");
    let mut media = runtime.next_media().await;
    runtime_text(&mut media).await;

    let served = gateway.shut_down();
    eventually(|| (!gateway.state.is_ready()).then_some(())).await;
    // The call goes on while the gateway drains.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !served.is_finished(),
        "serve returned with a call still proxied"
    );
    twilio
        .send(Message::Text(inbound_media(0).into()))
        .await
        .expect("media during drain");
    assert_eq!(runtime_text(&mut media).await, inbound_media(0));

    // The call ends; serve returns.
    twilio.send(Message::Close(None)).await.expect("close");
    while let Some(Ok(_)) = twilio.next().await {}
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns once the call ended")
        .expect("serve task");
}
