//! LiveKit: the call's room (created through RoomService before Twilio
//! dials LiveKit SIP) and the webhook events that end sessions.
//!
//! The room of a session is named [`room_name`] (`call-{sessionId}`). Its
//! metadata carries the session id, the runtime media URL and the media
//! token ([`RoomMetadata`]), so that any gateway replica receiving
//! `room_finished` can find the runtime pod that holds the session, and
//! cannot be pointed anywhere else.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use livekit_api::access_token::TokenVerifier;
use livekit_api::services::room::{CreateRoomOptions, RoomClient};
use livekit_api::webhooks::{WebhookError, WebhookReceiver};
use livekit_protocol::WebhookEvent;
use livekit_protocol::participant_info::Kind as ParticipantKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::answers::SessionRef;
use crate::runtime::is_session_id;
use crate::signature;

/// Prefix of the room names of calls.
pub const ROOM_PREFIX: &str = "call-";
/// Seconds an empty room waits for its first participant (the SIP caller).
pub const EMPTY_TIMEOUT_SECONDS: u32 = 120;
/// Seconds a room stays after its last participant left.
pub const DEPARTURE_TIMEOUT_SECONDS: u32 = 10;

/// The room of `session_id`.
pub fn room_name(session_id: &str) -> String {
    format!("{ROOM_PREFIX}{session_id}")
}

/// The session id in a room name made by [`room_name`].
pub fn session_id_from_room(room: &str) -> Option<&str> {
    room.strip_prefix(ROOM_PREFIX)
        .filter(|id| is_session_id(id))
}

/// The metadata of a call's room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMetadata {
    /// The runtime session.
    pub session_id: String,
    /// The session's media URL (names the runtime pod).
    pub media_url: String,
    /// [`signature::media_token`] of the two.
    pub token: String,
}

impl RoomMetadata {
    /// The metadata of `session`, signed with `key`.
    pub fn new(key: &str, session: &SessionRef) -> Self {
        RoomMetadata {
            session_id: session.session_id.clone(),
            media_url: session.media_url.clone(),
            token: signature::media_token(key, &session.session_id, &session.media_url),
        }
    }

    /// The metadata in `json`, if it parses and its token verifies with
    /// `key`.
    pub fn verified(json: &str, key: &str) -> Option<Self> {
        let meta: RoomMetadata = serde_json::from_str(json).ok()?;
        signature::verify_media_token(key, &meta.session_id, &meta.media_url, &meta.token)
            .then_some(meta)
    }

    /// The metadata as the room's metadata string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A failed LiveKit API call.
#[derive(Debug, Error)]
pub enum LiveKitError {
    /// The service refused or failed.
    #[error("livekit: {0}")]
    Service(String),
    /// No answer in time.
    #[error("livekit did not answer within {0:?}")]
    Timeout(Duration),
}

/// Creates rooms.
pub trait Rooms: Send + Sync + fmt::Debug {
    /// Creates room `name` with `metadata` (an existing room is reused by
    /// LiveKit, which makes replays harmless).
    fn create_room<'a>(
        &'a self,
        name: &'a str,
        metadata: String,
    ) -> BoxFuture<'a, Result<(), LiveKitError>>;
}

/// LiveKit's RoomService over Twirp, authenticated with a short-lived token
/// carrying the `roomCreate` grant.
pub struct LiveKitRooms {
    client: RoomClient,
    timeout: Duration,
}

impl fmt::Debug for LiveKitRooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveKitRooms").finish_non_exhaustive()
    }
}

impl LiveKitRooms {
    /// A client of the LiveKit server at `url` (`wss://`, `https://`, ...).
    pub fn new(url: &str, api_key: &str, api_secret: &str, timeout: Duration) -> Self {
        LiveKitRooms {
            client: RoomClient::with_api_key(url, api_key, api_secret)
                .with_request_timeout(timeout),
            timeout,
        }
    }
}

impl Rooms for LiveKitRooms {
    fn create_room<'a>(
        &'a self,
        name: &'a str,
        metadata: String,
    ) -> BoxFuture<'a, Result<(), LiveKitError>> {
        Box::pin(async move {
            let options = CreateRoomOptions {
                empty_timeout: EMPTY_TIMEOUT_SECONDS,
                departure_timeout: DEPARTURE_TIMEOUT_SECONDS,
                metadata,
                ..CreateRoomOptions::default()
            };
            // The client's own timeout is per attempt; this bounds the whole
            // call, region failover included.
            match tokio::time::timeout(self.timeout, self.client.create_room(name, options)).await {
                Err(_) => Err(LiveKitError::Timeout(self.timeout)),
                Ok(Err(e)) => Err(LiveKitError::Service(e.to_string())),
                Ok(Ok(_room)) => Ok(()),
            }
        })
    }
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
    /// End the session of a call's room.
    EndSession {
        /// From the room name.
        session_id: String,
        /// The room's metadata, when present (verified by the caller).
        room_metadata: Option<String>,
    },
    /// Nothing to do.
    Ignore,
}

/// The action for `event`: the room of a call finished, or its SIP
/// participant (the caller) left.
pub fn action(event: &WebhookEvent) -> EventAction {
    let ends = match event.event.as_str() {
        "room_finished" => true,
        "participant_left" => event
            .participant
            .as_ref()
            .is_some_and(|p| p.kind() == ParticipantKind::Sip),
        _ => false,
    };
    let Some(room) = event.room.as_ref().filter(|_| ends) else {
        return EventAction::Ignore;
    };
    match session_id_from_room(&room.name) {
        Some(id) => EventAction::EndSession {
            session_id: id.to_owned(),
            room_metadata: Some(room.metadata.clone()).filter(|m| !m.is_empty()),
        },
        None => EventAction::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol::{ParticipantInfo, Room};

    fn event(kind: &str, room: &str, participant: Option<ParticipantKind>) -> WebhookEvent {
        WebhookEvent {
            event: kind.to_owned(),
            room: Some(Room {
                name: room.to_owned(),
                metadata: "{}".to_owned(),
                ..Room::default()
            }),
            participant: participant.map(|k| ParticipantInfo {
                kind: k as i32,
                ..ParticipantInfo::default()
            }),
            ..WebhookEvent::default()
        }
    }

    #[test]
    fn room_names_round_trip() {
        assert_eq!(room_name("s-1"), "call-s-1");
        assert_eq!(session_id_from_room("call-s-1"), Some("s-1"));
        assert_eq!(session_id_from_room("lobby"), None);
        assert_eq!(session_id_from_room("call-"), None);
        assert_eq!(session_id_from_room("call-a/b"), None);
    }

    #[test]
    fn actions() {
        let end = EventAction::EndSession {
            session_id: "s-1".to_owned(),
            room_metadata: Some("{}".to_owned()),
        };
        assert_eq!(action(&event("room_finished", "call-s-1", None)), end);
        assert_eq!(
            action(&event(
                "participant_left",
                "call-s-1",
                Some(ParticipantKind::Sip)
            )),
            end
        );
        assert_eq!(
            action(&event(
                "participant_left",
                "call-s-1",
                Some(ParticipantKind::Agent)
            )),
            EventAction::Ignore
        );
        assert_eq!(
            action(&event("room_started", "call-s-1", None)),
            EventAction::Ignore
        );
        assert_eq!(
            action(&event("room_finished", "other", None)),
            EventAction::Ignore
        );
    }

    #[test]
    fn metadata_is_signed() {
        let session = SessionRef {
            session_id: "s-1".to_owned(),
            media_url: "ws://10.0.0.7:8080/api/sessions/s-1/media".to_owned(),
            pod: "rt-0".to_owned(),
        };
        let json = RoomMetadata::new("key", &session).to_json();
        let meta = RoomMetadata::verified(&json, "key").expect("verifies");
        assert_eq!(meta.media_url, session.media_url);
        assert!(RoomMetadata::verified(&json, "other").is_none());
        let forged = json.replace("10.0.0.7", "169.254.169.254");
        assert!(RoomMetadata::verified(&forged, "key").is_none());
        assert!(RoomMetadata::verified("not json", "key").is_none());
    }
}
