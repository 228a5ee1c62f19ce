//! Twilio Media Streams: the JSON messages of the bidirectional `<Connect><Stream>`
//! WebSocket, as Twilio documents them. The gateway reads `start` to find the
//! session; the runtime speaks the whole protocol; the simulated caller plays
//! Twilio's side.
//!
//! Twilio sends `connected`, `start`, `media`, `dtmf`, `mark` and `stop`; the
//! application sends `media`, `mark` and `clear`. Audio is 8 kHz G.711 mu-law,
//! base64 in `media.payload`. Numbers on the wire (`sequenceNumber`, `chunk`,
//! `timestamp`) are strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Sample rate of Media Streams audio.
pub const SAMPLE_RATE: u32 = 8_000;
/// The only encoding Media Streams carries.
pub const ENCODING: &str = "audio/x-mulaw";
/// Name of the custom `<Parameter>` that carries the runtime session id.
pub const SESSION_PARAMETER: &str = "sessionId";
/// Largest text frame either side accepts. A 20 ms frame is ~250 bytes; even
/// a second of audio in one message stays far below this.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Read buffer of a Media Streams WebSocket. tungstenite zero-fills its
/// whole read buffer before each read (128 KiB by default) and a call reads
/// ~300-byte frames 50 times a second, so the default made `memset` a third
/// of the runtime's CPU at 500 calls; 8 KiB holds a dozen frames and larger
/// messages still assemble across reads.
pub const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

/// A message on the Media Streams WebSocket, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Message {
    /// First message from Twilio once the socket is open.
    Connected {
        /// Always `Call`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<String>,
        /// Protocol version, e.g. `1.0.0`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Stream metadata; sent once by Twilio before any media.
    #[serde(rename_all = "camelCase")]
    Start {
        /// Message counter (a decimal string).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// Stream metadata.
        start: StartMeta,
        /// The stream's id (`MZ...`).
        stream_sid: String,
    },
    /// Audio. From Twilio it carries track, chunk and timestamp; to Twilio
    /// only the payload.
    #[serde(rename_all = "camelCase")]
    Media {
        /// Message counter (a decimal string); absent in outbound messages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The audio.
        media: MediaPayload,
        /// The stream's id.
        stream_sid: String,
    },
    /// A touch-tone key the caller pressed.
    #[serde(rename_all = "camelCase")]
    Dtmf {
        /// Message counter (a decimal string).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The key.
        dtmf: Dtmf,
        /// The stream's id.
        stream_sid: String,
    },
    /// Sent by the application after audio; Twilio echoes it back once the
    /// audio before it has played (or was cleared).
    #[serde(rename_all = "camelCase")]
    Mark {
        /// Message counter (a decimal string); absent in outbound messages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The label.
        mark: MarkName,
        /// The stream's id.
        stream_sid: String,
    },
    /// Application → Twilio: drop all buffered outbound audio at once
    /// (barge-in). Pending marks are echoed back.
    #[serde(rename_all = "camelCase")]
    Clear {
        /// The stream's id.
        stream_sid: String,
    },
    /// The stream ended (hang-up or `<Stop>`).
    #[serde(rename_all = "camelCase")]
    Stop {
        /// Message counter (a decimal string).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// Which call ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop: Option<StopMeta>,
        /// The stream's id.
        stream_sid: String,
    },
}

/// The `start` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMeta {
    /// The Twilio account (`AC...`).
    #[serde(default)]
    pub account_sid: String,
    /// The stream's id (`MZ...`).
    #[serde(default)]
    pub stream_sid: String,
    /// The call (`CA...`).
    pub call_sid: String,
    /// Tracks in the stream (`inbound`, `outbound`).
    #[serde(default)]
    pub tracks: Vec<String>,
    /// `<Parameter>`s of the `<Stream>` TwiML noun.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    /// Audio format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_format: Option<MediaFormat>,
}

/// The audio format announced in `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// Always `audio/x-mulaw`.
    pub encoding: String,
    /// Always 8000.
    pub sample_rate: u32,
    /// Always 1.
    pub channels: u32,
}

/// The `media` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaPayload {
    /// `inbound` or `outbound`; absent in outbound messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// Chunk counter (a decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<String>,
    /// Milliseconds since the stream started (a decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Base64 mu-law audio.
    pub payload: String,
}

/// The `dtmf` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dtmf {
    /// Always `inbound_track`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// The key: `0`-`9`, `*`, `#`.
    pub digit: String,
}

/// The `mark` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkName {
    /// The label chosen by the application.
    pub name: String,
}

/// The `stop` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopMeta {
    /// The Twilio account.
    #[serde(default)]
    pub account_sid: String,
    /// The call that ended.
    #[serde(default)]
    pub call_sid: String,
}

impl Message {
    /// Parses one text frame, refusing oversized ones before parsing.
    pub fn parse(text: &str) -> Result<Self, crate::ProtoError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(crate::ProtoError::Malformed(format!(
                "media streams message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                text.len()
            )));
        }
        serde_json::from_str(text)
            .map_err(|e| crate::ProtoError::Malformed(format!("media streams message: {e}")))
    }

    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An outbound audio message.
    pub fn outbound_media(stream_sid: &str, payload_base64: String) -> Self {
        Message::Media {
            sequence_number: None,
            media: MediaPayload {
                track: None,
                chunk: None,
                timestamp: None,
                payload: payload_base64,
            },
            stream_sid: stream_sid.to_string(),
        }
    }

    /// An outbound mark.
    pub fn outbound_mark(stream_sid: &str, name: impl Into<String>) -> Self {
        Message::Mark {
            sequence_number: None,
            mark: MarkName { name: name.into() },
            stream_sid: stream_sid.to_string(),
        }
    }

    /// An outbound clear.
    pub fn clear(stream_sid: &str) -> Self {
        Message::Clear {
            stream_sid: stream_sid.to_string(),
        }
    }

    /// The stream id, if the message has one.
    pub fn stream_sid(&self) -> Option<&str> {
        match self {
            Message::Connected { .. } => None,
            Message::Start { stream_sid, .. }
            | Message::Media { stream_sid, .. }
            | Message::Dtmf { stream_sid, .. }
            | Message::Mark { stream_sid, .. }
            | Message::Clear { stream_sid }
            | Message::Stop { stream_sid, .. } => Some(stream_sid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Messages as Twilio's Media Streams documentation shows them.
    const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","callSid":"CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"FirstName":"Jane","LastName":"Doe","RemoteParty":"Bob"}},"streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#;
    const MEDIA: &str = r#"{"event":"media","sequenceNumber":"3","media":{"track":"outbound","chunk":"1","timestamp":"5","payload":"no+JhoaJjpzSHxAKBgYJDhtEopGKh4aIjZm7JhQMBwYIDBa4n5OLh4aIjJevLBcOCAYHCxQ"},"streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#;
    const DTMF: &str = r#"{"event":"dtmf","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#;
    const MARK: &str = r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","mark":{"name":"my label"}}"#;
    const STOP: &str = r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","stop":{"accountSid":"ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","callSid":"CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}}"#;

    #[test]
    fn parses_twilio_documented_messages() {
        assert!(matches!(
            Message::parse(CONNECTED),
            Ok(Message::Connected { .. })
        ));
        match Message::parse(START).expect("start") {
            Message::Start {
                start, stream_sid, ..
            } => {
                assert_eq!(start.call_sid, "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
                assert_eq!(stream_sid, start.stream_sid);
                assert_eq!(start.custom_parameters["FirstName"], "Jane");
                let fmt = start.media_format.expect("format");
                assert_eq!(
                    (fmt.encoding.as_str(), fmt.sample_rate),
                    (ENCODING, SAMPLE_RATE)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        match Message::parse(MEDIA).expect("media") {
            Message::Media { media, .. } => {
                assert_eq!(media.track.as_deref(), Some("outbound"));
                assert!(crate::base64::decode(&media.payload).is_ok());
            }
            other => panic!("unexpected {other:?}"),
        }
        match Message::parse(DTMF).expect("dtmf") {
            Message::Dtmf { dtmf, .. } => assert_eq!(dtmf.digit, "1"),
            other => panic!("unexpected {other:?}"),
        }
        match Message::parse(MARK).expect("mark") {
            Message::Mark { mark, .. } => assert_eq!(mark.name, "my label"),
            other => panic!("unexpected {other:?}"),
        }
        match Message::parse(STOP).expect("stop") {
            Message::Stop { stop, .. } => {
                assert_eq!(
                    stop.expect("stop").call_sid,
                    "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn outbound_messages_match_twilio_shapes() {
        assert_eq!(
            Message::outbound_media("MZ1", "AAAA".into()).to_json(),
            r#"{"event":"media","media":{"payload":"AAAA"},"streamSid":"MZ1"}"#
        );
        assert_eq!(
            Message::outbound_mark("MZ1", "turn-1").to_json(),
            r#"{"event":"mark","mark":{"name":"turn-1"},"streamSid":"MZ1"}"#
        );
        assert_eq!(
            Message::clear("MZ1").to_json(),
            r#"{"event":"clear","streamSid":"MZ1"}"#
        );
        for m in [START, MEDIA, DTMF, MARK, STOP] {
            let parsed = Message::parse(m).expect("parse");
            assert_eq!(Message::parse(&parsed.to_json()).expect("reparse"), parsed);
        }
    }

    #[test]
    fn refuses_malformed_messages() {
        for bad in [
            "",
            "{",
            "null",
            "[]",
            r#"{"event":"dance"}"#,
            r#"{"streamSid":"MZ1"}"#,
            r#"{"event":"media","streamSid":"MZ1"}"#,
            r#"{"event":"media","media":{"payload":7},"streamSid":"MZ1"}"#,
            r#"{"event":"start","start":{},"streamSid":"MZ1"}"#,
            r#"{"event":"dtmf","dtmf":{},"streamSid":"MZ1"}"#,
            r#"{"event":"clear"}"#,
        ] {
            assert!(Message::parse(bad).is_err(), "accepted {bad:?}");
        }
        let huge = format!(
            r#"{{"event":"media","media":{{"payload":"{}"}},"streamSid":"MZ1"}}"#,
            "A".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(Message::parse(&huge).is_err());
    }
}
