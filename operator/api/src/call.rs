//! The `Call` kind: one phone call, live or recent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LatencySummary, LocalObjectRef};

/// One phone call. Created by the gateway when the phone rings, updated by
/// the runtime (at most three status writes per call) and deleted by the
/// operator after the VoiceAgent's `callRetention`. Caller numbers are stored
/// masked; full numbers live only in the database.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "voiceagent.io",
    version = "v1alpha1",
    kind = "Call",
    plural = "calls",
    singular = "call",
    shortname = "vc",
    category = "voice",
    namespaced,
    status = "CallStatus",
    derive = "PartialEq",
    doc = "A phone call handled by a VoiceAgent.",
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".spec.voiceAgentRef.name"}"#,
    printcolumn = r#"{"name":"From","type":"string","jsonPath":".spec.from","description":"Caller (masked)"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Duration","type":"integer","jsonPath":".status.durationSeconds","description":"Seconds"}"#,
    printcolumn = r#"{"name":"Turns","type":"integer","jsonPath":".status.turns"}"#,
    printcolumn = r#"{"name":"P95","type":"integer","jsonPath":".status.latency.p95Ms","description":"95th percentile turn latency (ms)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"End Reason","type":"string","jsonPath":".status.endReason","priority":1}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".status.runtimePod","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
pub struct CallSpec {
    /// The provider's call id (Twilio `CallSid`).
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub call_sid: String,
    /// The VoiceAgent that answered.
    pub voice_agent_ref: LocalObjectRef,
    /// The PhoneNumber that was called, when the call came in on a bound number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_ref: Option<LocalObjectRef>,
    /// The caller, masked (`+1555•••0142`).
    #[schemars(length(max = 64))]
    pub from: String,
    /// The called number, masked.
    #[schemars(length(max = 64))]
    pub to: String,
    /// `inbound` or `outbound`.
    #[serde(default)]
    pub direction: CallDirection,
}

/// Call directions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CallDirection {
    /// A caller dialed the agent.
    #[default]
    Inbound,
    /// The agent dialed out.
    Outbound,
}

/// Lifecycle phases of a Call.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallPhase {
    /// The webhook arrived; no media yet.
    Ringing,
    /// A runtime session exists; media is being connected.
    Connecting,
    /// Caller and agent are talking.
    Active,
    /// The call ended normally.
    Ended,
    /// The call could not be connected or broke; see `endReason`.
    Failed,
}

/// Why a call ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CallEndReason {
    /// The caller hung up.
    CallerHangup,
    /// The agent said goodbye and hung up.
    AgentHangup,
    /// The call reached its maximum duration.
    MaxDuration,
    /// No runtime could take the call (all full or draining).
    NoCapacity,
    /// The media connection failed or was lost.
    TransportError,
    /// The runtime pod stopped before the call ended (drain timeout).
    DrainTimeout,
    /// An internal error; see the Call's conditions and the runtime logs.
    Error,
}

/// Observed state of a Call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ringing, Connecting, Active, Ended or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CallPhase>,
    /// Conditions reported by the gateway and the runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// When the webhook arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the agent's audio connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<Time>,
    /// When the call ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
    /// Seconds from answer to end (so far, while active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub duration_seconds: Option<i64>,
    /// Completed caller–agent exchanges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub turns: Option<i32>,
    /// Times the caller interrupted the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub interruptions: Option<i32>,
    /// End-to-end turn latency of this call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySummary>,
    /// Why the call ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<CallEndReason>,
    /// The runtime pod that held the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_pod: Option<String>,
}

impl CallPhase {
    /// Whether the call is over (Ended or Failed).
    pub fn is_terminal(self) -> bool {
        matches!(self, CallPhase::Ended | CallPhase::Failed)
    }
}
