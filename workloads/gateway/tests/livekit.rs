//! The LiveKit side over real HTTP: `<Dial><Sip>` carrying the session in
//! signed SIP headers, and signed webhooks whose SIP participant (with those
//! headers as attributes, as the PhoneNumber's trunk maps them) has the
//! runtime join the caller's room or end the session.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use livekit_api::access_token::AccessToken;
use livekit_protocol::participant_info::Kind;
use livekit_protocol::{ParticipantInfo, Room, WebhookEvent};
use sha2::{Digest, Sha256};
use voice_agent_gateway::{NoCluster, signature};
use voice_agent_proto::Transport;
use voice_agent_proto::livekit::HEADERS;

/// The gateway reads nothing from the LiveKit server itself (rooms are the
/// dispatch rule's), so the URL only selects the `livekit` transport.
fn options(runtime: &Runtime, livekit: bool) -> Options {
    Options {
        runtime_url: runtime.url(),
        livekit_url: livekit.then(|| "https://lk.example.test".to_owned()),
        bound_numbers: vec![AGENT_NUMBER.to_owned()],
    }
}

/// The SIP headers in a `<Dial><Sip>` TwiML, decoded.
fn sip_headers(twiml: &str) -> HashMap<String, String> {
    let start = twiml.find("<Sip>").expect("<Sip>") + "<Sip>".len();
    let end = twiml.find("</Sip>").expect("</Sip>");
    let uri = unescape(&twiml[start..end]);
    let (_, query) = uri.split_once('?').expect("headers");
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("k=v");
            (k.to_owned(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// The SIP participant LiveKit reports for an INVITE with `headers`: the
/// trunk's `headers_to_attributes` turns them into attributes.
fn sip_participant(headers: &HashMap<String, String>) -> ParticipantInfo {
    let attributes = HEADERS
        .iter()
        .filter_map(|(header, attribute)| {
            headers
                .get(*header)
                .map(|v| ((*attribute).to_owned(), v.clone()))
        })
        .collect();
    ParticipantInfo {
        identity: "sip_+15551230142".into(),
        kind: Kind::Sip as i32,
        attributes,
        ..ParticipantInfo::default()
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

fn event(kind: &str, room: &str, participant: Option<ParticipantInfo>) -> WebhookEvent {
    WebhookEvent {
        event: kind.into(),
        id: "EV_1".into(),
        created_at: 1_700_000_000,
        room: Some(Room {
            sid: "RM_test".into(),
            name: room.into(),
            ..Room::default()
        }),
        participant,
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

/// The room LiveKit's Individual dispatch rule makes for a caller.
const ROOM: &str = "front-desk-_+15551230142_Xa8kPq2";

#[tokio::test]
async fn the_livekit_transport_dials_sip_with_the_session_in_signed_headers() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(
        options(&runtime, true),
        Arc::new(NoCluster::default()),
        |_| {},
    )
    .await;
    let response = gateway.voice(&call_sid(1)).await;
    assert_eq!(response.status(), 200);
    let twiml = response.text().await.expect("body");
    assert!(
        twiml.contains("<Response><Dial><Sip>sip:+15559870000@abc.sip.livekit.cloud?"),
        "{twiml}"
    );
    let headers = sip_headers(&twiml);
    let media_url = format!("ws://{}/api/sessions/s-1/media", runtime.addr);
    assert_eq!(headers["X-VoiceAgent-Session"], "s-1");
    assert_eq!(headers["X-VoiceAgent-Media"], media_url);
    assert!(signature::verify_media_token(
        AUTH_TOKEN,
        "s-1",
        &media_url,
        &headers["X-VoiceAgent-Token"]
    ));
    let sessions = runtime.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].transport, Transport::LiveKit);
    // A replay answers the same, with no second session.
    assert_eq!(
        gateway
            .voice(&call_sid(1))
            .await
            .text()
            .await
            .expect("body"),
        twiml
    );
    assert_eq!(runtime.sessions().len(), 1);
    assert!(runtime.joins().is_empty(), "nobody joins before the caller");
}

#[tokio::test]
async fn the_callers_room_is_joined_on_participant_joined_and_left_ends_it_on_any_replica() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(
        options(&runtime, true),
        Arc::new(NoCluster::default()),
        |_| {},
    )
    .await;
    let twiml = gateway
        .voice(&call_sid(1))
        .await
        .text()
        .await
        .expect("body");
    let caller = sip_participant(&sip_headers(&twiml));
    // Another replica gets the webhooks: it needs nothing but the event.
    let replica = Gateway::start(
        options(&runtime, true),
        Arc::new(NoCluster::default()),
        |_| {},
    )
    .await;
    let (body, jwt) = signed(
        &event("participant_joined", ROOM, Some(caller.clone())),
        LIVEKIT_KEY,
        LIVEKIT_SECRET,
    );
    let response = post_webhook(&replica, &body, Some(&format!("Bearer {jwt}"))).await;
    assert_eq!(response.status(), 200);
    let joins = eventually(|| {
        let j = runtime.joins();
        (!j.is_empty()).then_some(j)
    })
    .await;
    assert_eq!(joins, [("s-1".to_owned(), ROOM.to_owned())]);

    let (body, jwt) = signed(
        &event("participant_left", ROOM, Some(caller)),
        LIVEKIT_KEY,
        LIVEKIT_SECRET,
    );
    assert_eq!(
        post_webhook(&replica, &body, Some(&jwt)).await.status(),
        200
    );
    assert_eq!(runtime.wait_deletes(1).await, ["s-1"]);
}

#[tokio::test]
async fn without_a_livekit_block_the_caller_hears_an_apology_and_the_session_ends() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let (fake, recorder) = kube().await;
    // Transport livekit, but the gateway's config has no SIP URI to dial.
    let gateway = Gateway::start(options(&runtime, true), recorder, |c| {
        c.component.telephony.livekit = None;
    })
    .await;
    let sid = call_sid(2);
    let twiml = gateway.voice(&sid).await.text().await.expect("body");
    assert!(
        twiml.contains("<Say>") && twiml.ends_with("<Hangup/></Response>"),
        "{twiml}"
    );
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
async fn unauthentic_webhooks_are_401_and_forged_participants_do_nothing() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(
        options(&runtime, true),
        Arc::new(NoCluster::default()),
        |_| {},
    )
    .await;
    let media_url = format!("ws://{}/api/sessions/s-8/media", runtime.addr);
    let headers: HashMap<String, String> = [
        ("X-VoiceAgent-Session", "s-8".to_owned()),
        ("X-VoiceAgent-Media", media_url.clone()),
        (
            "X-VoiceAgent-Token",
            signature::media_token(AUTH_TOKEN, "s-8", &media_url),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let caller = sip_participant(&headers);
    let joined = event("participant_joined", ROOM, Some(caller.clone()));
    let (body, good_jwt) = signed(&joined, LIVEKIT_KEY, LIVEKIT_SECRET);
    let (_, wrong_secret) = signed(&joined, LIVEKIT_KEY, "not-the-livekit-secret-at-all");
    let (_, wrong_issuer) = signed(&joined, "APIotherkey", LIVEKIT_SECRET);
    let tampered = body.replace("front-desk-", "other-desk-");
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
    // Authentic events, but a forged media URL cannot redirect the runtime
    // calls, a participant that is not the SIP caller does not count, and
    // other events do nothing.
    let mut forged = caller.clone();
    forged.attributes.insert(
        "voiceagent.io/media-url".into(),
        "ws://169.254.169.254:80/api/sessions/s-8/media".into(),
    );
    let mut agent = caller.clone();
    agent.kind = Kind::Agent as i32;
    for event in [
        event("participant_joined", ROOM, Some(forged.clone())),
        event("participant_left", ROOM, Some(forged)),
        event("participant_joined", ROOM, Some(agent.clone())),
        event("participant_left", ROOM, Some(agent)),
        event("room_started", ROOM, None),
        event("room_finished", ROOM, None),
    ] {
        let (body, jwt) = signed(&event, LIVEKIT_KEY, LIVEKIT_SECRET);
        assert_eq!(
            post_webhook(&gateway, &body, Some(&jwt)).await.status(),
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(runtime.deletes().is_empty());
    assert!(runtime.joins().is_empty());
}
