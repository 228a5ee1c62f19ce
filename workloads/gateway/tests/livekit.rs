//! The LiveKit side over real HTTP: RoomService.CreateRoom against a Twirp
//! stub that checks the bearer JWT, and signed webhooks that end sessions.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::*;
use livekit_api::access_token::{AccessToken, TokenVerifier};
use livekit_protocol::participant_info::Kind;
use livekit_protocol::{CreateRoomRequest, ParticipantInfo, Room, WebhookEvent};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use voice_agent_gateway::livekit::RoomMetadata;
use voice_agent_gateway::{NoCluster, SessionRef};
use voice_agent_proto::Transport;

/// A LiveKit server stub: `POST /twirp/livekit.RoomService/CreateRoom`.
struct LiveKit {
    url: String,
    rooms: Arc<Mutex<Vec<CreateRoomRequest>>>,
}

impl LiveKit {
    /// Verifies bearer tokens with `secret` (the gateway's is
    /// [`LIVEKIT_SECRET`]).
    async fn start(secret: &'static str) -> LiveKit {
        let rooms = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&rooms);
        let app = axum::Router::new().route(
            "/twirp/livekit.RoomService/CreateRoom",
            post(move |headers: HeaderMap, body: Bytes| {
                let recorded = Arc::clone(&recorded);
                async move { create_room(&headers, &body, secret, &recorded) }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        LiveKit {
            url: format!("http://{addr}"),
            rooms,
        }
    }

    fn rooms(&self) -> Vec<CreateRoomRequest> {
        self.rooms.lock().expect("lock").clone()
    }
}

fn twirp_error(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({"code": code, "msg": msg}).to_string(),
    )
        .into_response()
}

fn create_room(
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
    recorded: &Mutex<Vec<CreateRoomRequest>>,
) -> Response {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "no bearer");
    };
    let claims = match TokenVerifier::with_api_key(LIVEKIT_KEY, secret).verify(token) {
        Ok(claims) => claims,
        Err(_) => return twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "bad token"),
    };
    if !claims.video.room_create {
        return twirp_error(StatusCode::FORBIDDEN, "permission_denied", "no roomCreate");
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/protobuf") {
        return twirp_error(StatusCode::BAD_REQUEST, "malformed", "not protobuf");
    }
    let Ok(request) = CreateRoomRequest::decode(body) else {
        return twirp_error(StatusCode::BAD_REQUEST, "malformed", "bad body");
    };
    let room = Room {
        sid: "RM_test".into(),
        name: request.name.clone(),
        metadata: request.metadata.clone(),
        empty_timeout: request.empty_timeout,
        ..Room::default()
    };
    recorded.lock().expect("lock").push(request);
    (
        [("content-type", "application/protobuf")],
        room.encode_to_vec(),
    )
        .into_response()
}

fn options(runtime: &Runtime, livekit: Option<&LiveKit>) -> Options {
    Options {
        runtime_url: runtime.url(),
        livekit_url: livekit.map(|l| l.url.clone()),
        bound_numbers: vec![AGENT_NUMBER.to_owned()],
    }
}

/// A webhook body and its `Authorization`, signed with `secret` by `key`.
fn signed(event: &WebhookEvent, key: &str, secret: &str) -> (String, String) {
    let body = serde_json::to_string(event).expect("json");
    let hash = voice_agent_proto::base64::encode(&Sha256::digest(body.as_bytes()));
    let jwt = AccessToken::with_api_key(key, secret)
        .with_sha256(&hash)
        .to_jwt()
        .expect("jwt");
    (body, jwt)
}

fn event(kind: &str, room: &str, metadata: &str, participant: Option<Kind>) -> WebhookEvent {
    WebhookEvent {
        event: kind.into(),
        id: "EV_1".into(),
        created_at: 1_700_000_000,
        room: Some(Room {
            sid: "RM_test".into(),
            name: room.into(),
            metadata: metadata.into(),
            ..Room::default()
        }),
        participant: participant.map(|k| ParticipantInfo {
            identity: "sip_+15551230142".into(),
            kind: k as i32,
            ..ParticipantInfo::default()
        }),
        ..WebhookEvent::default()
    }
}

async fn post_webhook(
    gateway: &Gateway,
    body: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = gateway
        .http
        .post(gateway.url("/livekit/webhook"))
        .header("content-type", "application/webhook+json")
        .body(body.to_owned());
    if let Some(auth) = authorization {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("send")
}

#[tokio::test]
async fn the_livekit_transport_creates_the_room_and_dials_sip() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let livekit = LiveKit::start(LIVEKIT_SECRET).await;
    let gateway = Gateway::start(
        options(&runtime, Some(&livekit)),
        Arc::new(NoCluster::default()),
        |_| {},
    )
    .await;
    let response = gateway.voice(&call_sid(1)).await;
    assert_eq!(response.status(), 200);
    let twiml = response.text().await.expect("body");
    assert!(
        twiml.ends_with(
            "<Response><Dial><Sip>sip:+15559870000@abc.sip.livekit.cloud\
             ?X-VoiceAgent-Room=call-s-1&amp;X-VoiceAgent-Session=s-1</Sip></Dial></Response>"
        ),
        "{twiml}"
    );
    let sessions = runtime.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].transport, Transport::LiveKit);
    let rooms = livekit.rooms();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].name, "call-s-1");
    let meta = RoomMetadata::verified(&rooms[0].metadata, AUTH_TOKEN).expect("signed metadata");
    assert_eq!(meta.session_id, "s-1");
    assert_eq!(
        meta.media_url,
        format!("ws://{}/api/sessions/s-1/media", runtime.addr)
    );
    // A replay creates no second room.
    assert_eq!(
        gateway
            .voice(&call_sid(1))
            .await
            .text()
            .await
            .expect("body"),
        twiml
    );
    assert_eq!(livekit.rooms().len(), 1);

    // LiveKit reports the caller gone: the session ends (known locally).
    let (body, jwt) = signed(
        &event(
            "participant_left",
            "call-s-1",
            &rooms[0].metadata,
            Some(Kind::Sip),
        ),
        LIVEKIT_KEY,
        LIVEKIT_SECRET,
    );
    assert_eq!(
        post_webhook(&gateway, &body, Some(&jwt)).await.status(),
        200
    );
    assert_eq!(runtime.wait_deletes(1).await, ["s-1"]);
}

#[tokio::test]
async fn a_refused_room_apologises_and_ends_the_session() {
    let runtime = Runtime::start(Sessions::Accept).await;
    // The stub knows another secret: every CreateRoom is unauthenticated.
    let livekit = LiveKit::start("some-other-secret-entirely").await;
    let (fake, recorder) = kube().await;
    let gateway = Gateway::start(options(&runtime, Some(&livekit)), recorder, |_| {}).await;
    let sid = call_sid(2);
    let twiml = gateway.voice(&sid).await.text().await.expect("body");
    assert!(
        twiml.contains("<Say>") && twiml.ends_with("<Hangup/></Response>"),
        "{twiml}"
    );
    assert!(livekit.rooms().is_empty());
    assert_eq!(runtime.wait_deletes(1).await, ["s-1"]);
    let call = eventually(|| {
        fake.get("calls", Some(NAMESPACE), &sid.to_ascii_lowercase())
            .filter(|c| c["status"]["phase"].is_string())
    })
    .await;
    assert_eq!(call["status"]["phase"], "Failed");
    assert_eq!(call["status"]["endReason"], "transportError");
}

#[tokio::test]
async fn room_finished_on_another_replica_ends_the_session_from_room_metadata() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(
        options(&runtime, None),
        Arc::new(NoCluster::default()),
        |_| {},
    )
    .await;
    let media_url = format!("ws://{}/api/sessions/s-7/media", runtime.addr);
    let metadata = RoomMetadata::new(
        AUTH_TOKEN,
        &SessionRef {
            session_id: "s-7".into(),
            media_url,
            pod: "support-runtime-0".into(),
        },
    )
    .to_json();
    let (body, jwt) = signed(
        &event("room_finished", "call-s-7", &metadata, None),
        LIVEKIT_KEY,
        LIVEKIT_SECRET,
    );
    let response = post_webhook(&gateway, &body, Some(&format!("Bearer {jwt}"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(runtime.wait_deletes(1).await, ["s-7"]);
}

#[tokio::test]
async fn unauthentic_webhooks_are_401_and_do_nothing() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(
        options(&runtime, None),
        Arc::new(NoCluster::default()),
        |_| {},
    )
    .await;
    let media_url = format!("ws://{}/api/sessions/s-8/media", runtime.addr);
    let metadata = RoomMetadata::new(
        AUTH_TOKEN,
        &SessionRef {
            session_id: "s-8".into(),
            media_url,
            pod: "support-runtime-0".into(),
        },
    )
    .to_json();
    let finished = event("room_finished", "call-s-8", &metadata, None);
    let (body, good_jwt) = signed(&finished, LIVEKIT_KEY, LIVEKIT_SECRET);
    let (_, wrong_secret) = signed(&finished, LIVEKIT_KEY, "not-the-livekit-secret-at-all");
    let (_, wrong_issuer) = signed(&finished, "APIotherkey", LIVEKIT_SECRET);
    let tampered = body.replace("call-s-8", "call-s-9");
    for (body, auth) in [
        (body.as_str(), Some(wrong_secret.as_str())),
        (body.as_str(), Some(wrong_issuer.as_str())),
        (tampered.as_str(), Some(good_jwt.as_str())),
        (body.as_str(), None),
        (body.as_str(), Some("Bearer not.a.jwt")),
    ] {
        let response = post_webhook(&gateway, body, auth).await;
        assert_eq!(response.status(), 401, "{auth:?}");
        let error: serde_json::Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "unauthenticated");
    }
    // Authentic, but a forged room metadata cannot redirect the DELETE,
    // and events that do not end a call do nothing.
    let forged = metadata.replace(&runtime.addr.to_string(), "169.254.169.254:80");
    for event in [
        event("room_finished", "call-s-8", &forged, None),
        event(
            "participant_left",
            "call-s-8",
            &metadata,
            Some(Kind::Standard),
        ),
        event("room_started", "call-s-8", &metadata, None),
        event("room_finished", "lobby", &metadata, None),
    ] {
        let (body, jwt) = signed(&event, LIVEKIT_KEY, LIVEKIT_SECRET);
        assert_eq!(
            post_webhook(&gateway, &body, Some(&jwt)).await.status(),
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(runtime.deletes().is_empty());
}
