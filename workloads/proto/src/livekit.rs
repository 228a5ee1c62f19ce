//! How a LiveKit call finds its runtime session.
//!
//! LiveKit's SIP dispatch rule, not the gateway, chooses the room an inbound
//! call lands in (a new room per caller, `{agent}-…`). So the gateway puts
//! the session into the SIP INVITE instead: Twilio's `<Dial><Sip>` carries
//! the [`HEADERS`] as `X-` headers, the PhoneNumber's inbound trunk maps them
//! onto the SIP participant's attributes (`headers_to_attributes`), and the
//! gateway reads them back from the `participant_joined` webhook to ask the
//! runtime pod to join that room.

/// SIP header with the runtime session id.
pub const SESSION_HEADER: &str = "X-VoiceAgent-Session";
/// SIP header with the session's media URL (names the runtime pod).
pub const MEDIA_URL_HEADER: &str = "X-VoiceAgent-Media";
/// SIP header with the gateway's signature over session and media URL.
pub const TOKEN_HEADER: &str = "X-VoiceAgent-Token";

/// Participant attribute carrying [`SESSION_HEADER`].
pub const SESSION_ATTRIBUTE: &str = "voiceagent.io/session";
/// Participant attribute carrying [`MEDIA_URL_HEADER`].
pub const MEDIA_URL_ATTRIBUTE: &str = "voiceagent.io/media-url";
/// Participant attribute carrying [`TOKEN_HEADER`].
pub const TOKEN_ATTRIBUTE: &str = "voiceagent.io/token";

/// SIP header → participant attribute, as the inbound trunk maps them.
pub const HEADERS: [(&str, &str); 3] = [
    (SESSION_HEADER, SESSION_ATTRIBUTE),
    (MEDIA_URL_HEADER, MEDIA_URL_ATTRIBUTE),
    (TOKEN_HEADER, TOKEN_ATTRIBUTE),
];
