//! The runtime's sessions API (`/api/sessions`, `/api/load`).

use serde::{Deserialize, Serialize};

/// How caller audio reaches the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Transport {
    /// Twilio Media Streams over WebSocket, proxied by the gateway.
    MediaStreams,
    /// A LiveKit room joined through LiveKit SIP.
    // Spelled `livekit` on the wire like the CRD's `telephony.transport`,
    // not the `liveKit` that camelCase would derive.
    #[serde(rename = "livekit")]
    LiveKit,
}

impl Transport {
    /// The wire name, identical to the serde form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::MediaStreams => "mediaStreams",
            Transport::LiveKit => "livekit",
        }
    }
}

/// `POST /api/sessions`: the gateway asks a runtime pod to take a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionRequest {
    /// Twilio's call SID (`CA...`), the call's identity across components.
    pub call_sid: String,
    /// Name of the VoiceAgent the call belongs to.
    pub voice_agent: String,
    /// Caller number, E.164.
    pub from: String,
    /// Called number, E.164.
    pub to: String,
    /// How the caller's audio will arrive.
    pub transport: Transport,
}

/// `201` answer to [`CreateSessionRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionResponse {
    /// Runtime-assigned session id.
    pub session_id: String,
    /// WebSocket URL of this session's media endpoint on the pod that holds it
    /// (`.../api/sessions/{id}/media`); the gateway proxies Media Streams here.
    pub media_url: String,
    /// Name of the runtime pod that holds the session.
    pub pod: String,
}

/// `POST /api/sessions/{id}/livekit`: the gateway tells the runtime pod
/// which LiveKit room the session's caller is in (from LiveKit's
/// `participant_joined` webhook); the pod joins it as the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRoomRequest {
    /// The room's name.
    pub room: String,
}

/// Lifecycle of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionState {
    /// Created, waiting for caller media.
    Connecting,
    /// Media flowing, conversation in progress.
    Active,
    /// Hung up or torn down; kept briefly for inspection.
    Ended,
}

/// `GET /api/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Runtime-assigned session id.
    pub session_id: String,
    /// Twilio's call SID.
    pub call_sid: String,
    /// Name of the VoiceAgent.
    pub voice_agent: String,
    /// Current lifecycle state.
    pub state: SessionState,
    /// When the session was created, Unix epoch milliseconds.
    pub started_at_ms: i64,
    /// Completed caller/agent turns.
    pub turns: u32,
    /// Times the caller barged in over agent audio.
    pub interruptions: u32,
}

/// `GET /api/load`: what the operator reads to scale and drain runtime pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Sessions currently held (connecting or active).
    pub active_sessions: u32,
    /// Most sessions this pod accepts (`runtime.maxCallsPerPod`).
    pub capacity: u32,
    /// True once `POST /admin/drain` or SIGTERM stopped new sessions.
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_session_request_wire_format() {
        let json = r#"{"callSid":"CA123","voiceAgent":"support","from":"+15550100","to":"+15550142","transport":"mediaStreams"}"#;
        let req: CreateSessionRequest = serde_json::from_str(json).expect("deserialize");
        assert_eq!(
            req,
            CreateSessionRequest {
                call_sid: "CA123".into(),
                voice_agent: "support".into(),
                from: "+15550100".into(),
                to: "+15550142".into(),
                transport: Transport::MediaStreams,
            }
        );
        assert_eq!(serde_json::to_string(&req).expect("serialize"), json);
    }

    #[test]
    fn transport_names() {
        for t in [Transport::MediaStreams, Transport::LiveKit] {
            let json = serde_json::to_string(&t).expect("serialize");
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(
            serde_json::from_str::<Transport>("\"livekit\"").expect("livekit"),
            Transport::LiveKit
        );
        assert!(serde_json::from_str::<Transport>("\"liveKit\"").is_err());
        assert!(serde_json::from_str::<Transport>("\"sip\"").is_err());
    }

    #[test]
    fn create_session_request_refuses_malformed() {
        // Missing transport.
        assert!(
            serde_json::from_str::<CreateSessionRequest>(
                r#"{"callSid":"CA1","voiceAgent":"a","from":"+1","to":"+2"}"#
            )
            .is_err()
        );
        // snake_case field names are not the contract.
        assert!(
            serde_json::from_str::<CreateSessionRequest>(
                r#"{"call_sid":"CA1","voice_agent":"a","from":"+1","to":"+2","transport":"livekit"}"#
            )
            .is_err()
        );
        // Wrong type.
        assert!(
            serde_json::from_str::<CreateSessionRequest>(
                r#"{"callSid":7,"voiceAgent":"a","from":"+1","to":"+2","transport":"livekit"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn create_session_response_wire_format() {
        let json = r#"{"sessionId":"s-1","mediaUrl":"ws://10.0.0.7:8080/api/sessions/s-1/media","pod":"support-runtime-0"}"#;
        let resp: CreateSessionResponse = serde_json::from_str(json).expect("deserialize");
        assert_eq!(resp.session_id, "s-1");
        assert_eq!(resp.pod, "support-runtime-0");
        assert_eq!(serde_json::to_string(&resp).expect("serialize"), json);
    }

    #[test]
    fn session_info_wire_format() {
        let json = r#"{"sessionId":"s-1","callSid":"CA1","voiceAgent":"support","state":"active","startedAtMs":1700000000000,"turns":3,"interruptions":1}"#;
        let info: SessionInfo = serde_json::from_str(json).expect("deserialize");
        assert_eq!(info.state, SessionState::Active);
        assert_eq!(info.started_at_ms, 1_700_000_000_000);
        assert_eq!(serde_json::to_string(&info).expect("serialize"), json);
        for (s, name) in [
            (SessionState::Connecting, "connecting"),
            (SessionState::Active, "active"),
            (SessionState::Ended, "ended"),
        ] {
            assert_eq!(
                serde_json::to_string(&s).expect("serialize"),
                format!("\"{name}\"")
            );
        }
        assert!(serde_json::from_str::<SessionState>("\"ringing\"").is_err());
        // Negative counters are not u32.
        let bad = json.replace("\"turns\":3", "\"turns\":-1");
        assert!(serde_json::from_str::<SessionInfo>(&bad).is_err());
    }

    #[test]
    fn load_report_wire_format() {
        let json = r#"{"activeSessions":4,"capacity":20,"draining":false}"#;
        let load: LoadReport = serde_json::from_str(json).expect("deserialize");
        assert_eq!(
            load,
            LoadReport {
                active_sessions: 4,
                capacity: 20,
                draining: false
            }
        );
        assert_eq!(serde_json::to_string(&load).expect("serialize"), json);
        assert!(
            serde_json::from_str::<LoadReport>(
                r#"{"activeSessions":4,"capacity":20,"draining":"no"}"#
            )
            .is_err()
        );
    }
}
