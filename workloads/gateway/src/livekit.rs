//! LiveKit: which runtime session a SIP caller's room belongs to, and the
//! webhook events that start and end the agent's part in it.
//!
//! LiveKit's dispatch rule (provisioned by the PhoneNumber controller) puts
//! every inbound SIP call into a new room of its own; its name is LiveKit's
//! choice, so the gateway cannot point a call at a room made in advance.
//! Instead the session travels in the SIP INVITE: `<Dial><Sip>` carries the
//! session id, the runtime media URL and the gateway's signature over both
//! as `X-VoiceAgent-*` headers ([`voice_agent_proto::livekit::HEADERS`]),
//! the inbound trunk maps them onto the SIP participant's attributes, and
//! LiveKit's `participant_joined` webhook hands them back with the room's
//! name. The gateway then asks the runtime pod to join that room
//! ([`EventAction::JoinRoom`]); `participant_left` ends the session. Any
//! replica can act on either event, and the signature keeps a participant's
//! attributes from pointing the gateway anywhere else.

use livekit_api::access_token::TokenVerifier;
use livekit_api::webhooks::{WebhookError, WebhookReceiver};
use livekit_protocol::participant_info::Kind as ParticipantKind;
use livekit_protocol::{ParticipantInfo, WebhookEvent};
use voice_agent_proto::livekit::{MEDIA_URL_ATTRIBUTE, SESSION_ATTRIBUTE, TOKEN_ATTRIBUTE};

use crate::answers::SessionRef;
use crate::runtime::is_session_id;
use crate::signature;

/// Longest room name accepted from an event (LiveKit's own limit is lower).
const MAX_ROOM_NAME: usize = 256;

/// The SIP headers for `session`'s `<Dial><Sip>`, signed with `key`.
pub fn sip_headers(key: &str, session: &SessionRef) -> [(&'static str, String); 3] {
    use voice_agent_proto::livekit::{MEDIA_URL_HEADER, SESSION_HEADER, TOKEN_HEADER};
    [
        (SESSION_HEADER, session.session_id.clone()),
        (MEDIA_URL_HEADER, session.media_url.clone()),
        (
            TOKEN_HEADER,
            signature::media_token(key, &session.session_id, &session.media_url),
        ),
    ]
}

/// The session a SIP participant carries in its attributes, if the
/// gateway's signature (with `key`) vouches for it.
pub fn participant_session(participant: &ParticipantInfo, key: &str) -> Option<CallSession> {
    let attr = |name: &str| participant.attributes.get(name).map(String::as_str);
    let session_id = attr(SESSION_ATTRIBUTE)?;
    let media_url = attr(MEDIA_URL_ATTRIBUTE)?;
    let token = attr(TOKEN_ATTRIBUTE)?;
    (is_session_id(session_id) && signature::verify_media_token(key, session_id, media_url, token))
        .then(|| CallSession {
            session_id: session_id.to_owned(),
            media_url: media_url.to_owned(),
        })
}

/// A runtime session named by a SIP participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSession {
    /// The runtime session.
    pub session_id: String,
    /// Its media URL (names the runtime pod).
    pub media_url: String,
}

/// Verifies LiveKit's webhook requests: an HS256 JWT signed with the API
/// secret, issued by the API key, whose `sha256` claim is the Base64
/// SHA-256 of the raw body.
#[derive(Debug, Clone)]
pub struct Webhooks {
    receiver: WebhookReceiver,
}

impl Webhooks {
    /// A verifier for `api_key` / `api_secret`.
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Webhooks {
            receiver: WebhookReceiver::new(TokenVerifier::with_api_key(api_key, api_secret)),
        }
    }

    /// The event in `body`, if `authorization` (the header value, with or
    /// without `Bearer `) vouches for it.
    pub fn receive(&self, body: &str, authorization: &str) -> Result<WebhookEvent, WebhookError> {
        let token = authorization.trim();
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .unwrap_or(token);
        self.receiver.receive(body, token)
    }
}

/// What a webhook event asks of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// The caller is in `room`: the session's runtime pod joins it.
    JoinRoom {
        /// The session the caller's SIP INVITE named.
        session: CallSession,
        /// The room LiveKit put the caller in.
        room: String,
    },
    /// The caller left: end the session.
    EndSession(CallSession),
    /// Nothing to do.
    Ignore,
}

/// The action for `event`, whose participant attributes are checked with
/// `key` (the Twilio auth token the gateway signs its headers with). Only
/// SIP participants count: the agent joining or leaving is the runtime's
/// own doing. `room_finished` needs nothing: its SIP participant has left
/// (and said so) first, and the runtime sees the room close.
pub fn action(event: &WebhookEvent, key: &str) -> EventAction {
    let Some(participant) = event
        .participant
        .as_ref()
        .filter(|p| p.kind() == ParticipantKind::Sip)
    else {
        return EventAction::Ignore;
    };
    let Some(session) = participant_session(participant, key) else {
        return EventAction::Ignore;
    };
    match event.event.as_str() {
        "participant_joined" => match event.room.as_ref().map(|r| r.name.as_str()) {
            Some(room)
                if !room.is_empty()
                    && room.len() <= MAX_ROOM_NAME
                    && !room.chars().any(char::is_control) =>
            {
                EventAction::JoinRoom {
                    session,
                    room: room.to_owned(),
                }
            }
            _ => EventAction::Ignore,
        },
        "participant_left" => EventAction::EndSession(session),
        _ => EventAction::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol::Room;

    const KEY: &str = "twilio-auth-token";

    fn session() -> SessionRef {
        SessionRef {
            session_id: "s-1".to_owned(),
            media_url: "ws://10.0.0.7:8080/api/sessions/s-1/media".to_owned(),
            pod: "rt-0".to_owned(),
        }
    }

    fn sip_participant(key: &str) -> ParticipantInfo {
        let headers = sip_headers(key, &session());
        let attributes = voice_agent_proto::livekit::HEADERS
            .iter()
            .zip(headers)
            .map(|((_, attribute), (_, value))| ((*attribute).to_owned(), value))
            .collect();
        ParticipantInfo {
            identity: "sip_+15551230142".to_owned(),
            kind: ParticipantKind::Sip as i32,
            attributes,
            ..ParticipantInfo::default()
        }
    }

    fn event(kind: &str, room: &str, participant: Option<ParticipantInfo>) -> WebhookEvent {
        WebhookEvent {
            event: kind.to_owned(),
            room: Some(Room {
                name: room.to_owned(),
                ..Room::default()
            }),
            participant,
            ..WebhookEvent::default()
        }
    }

    #[test]
    fn headers_are_named_as_the_trunk_maps_them() {
        let headers = sip_headers(KEY, &session());
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let mapped: Vec<&str> = voice_agent_proto::livekit::HEADERS
            .iter()
            .map(|(h, _)| *h)
            .collect();
        assert_eq!(names, mapped);
        assert_eq!(headers[0].1, "s-1");
    }

    #[test]
    fn actions() {
        let call = CallSession {
            session_id: "s-1".to_owned(),
            media_url: session().media_url,
        };
        assert_eq!(
            action(
                &event(
                    "participant_joined",
                    "front-desk-_+1555_x7Yz",
                    Some(sip_participant(KEY))
                ),
                KEY
            ),
            EventAction::JoinRoom {
                session: call.clone(),
                room: "front-desk-_+1555_x7Yz".to_owned()
            }
        );
        assert_eq!(
            action(
                &event("participant_left", "r", Some(sip_participant(KEY))),
                KEY
            ),
            EventAction::EndSession(call)
        );
        let mut agent = sip_participant(KEY);
        agent.kind = ParticipantKind::Agent as i32;
        for (kind, room, participant) in [
            ("participant_joined", "r", Some(agent)),
            ("participant_joined", "r", None),
            ("participant_joined", "", Some(sip_participant(KEY))),
            ("participant_joined", "a\nb", Some(sip_participant(KEY))),
            ("room_finished", "r", None),
            ("room_started", "r", Some(sip_participant(KEY))),
            // Signed with another key: not ours.
            ("participant_joined", "r", Some(sip_participant("other"))),
        ] {
            assert_eq!(
                action(&event(kind, room, participant), KEY),
                EventAction::Ignore,
                "{kind} {room:?}"
            );
        }
    }

    #[test]
    fn forged_attributes_are_ignored() {
        let mut p = sip_participant(KEY);
        p.attributes.insert(
            MEDIA_URL_ATTRIBUTE.to_owned(),
            "ws://169.254.169.254/api/sessions/s-1/media".to_owned(),
        );
        assert_eq!(participant_session(&p, KEY), None);
        let mut p = sip_participant(KEY);
        p.attributes.remove(TOKEN_ATTRIBUTE);
        assert_eq!(participant_session(&p, KEY), None);
        assert!(participant_session(&sip_participant(KEY), KEY).is_some());
    }
}
