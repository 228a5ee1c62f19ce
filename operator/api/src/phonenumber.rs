//! The `PhoneNumber` kind: binds a Twilio number to a VoiceAgent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{E164_PATTERN, LocalObjectRef, SecretKeyRef};

/// Binds an E.164 phone number at a telephony provider to a VoiceAgent. The
/// operator points the number's webhooks at the agent's gateway and, for the
/// `livekit` transport, creates the LiveKit SIP trunk and dispatch rule.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "voiceagent.io",
    version = "v1alpha1",
    kind = "PhoneNumber",
    plural = "phonenumbers",
    singular = "phonenumber",
    shortname = "pn",
    category = "voice",
    namespaced,
    status = "PhoneNumberStatus",
    derive = "PartialEq",
    doc = "A phone number bound to a VoiceAgent.",
    printcolumn = r#"{"name":"Number","type":"string","jsonPath":".spec.number","description":"E.164 number"}"#,
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".spec.voiceAgentRef.name","description":"Bound VoiceAgent"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'twilio' || has(self.twilio)").message("provider 'twilio' requires the twilio block"))]
pub struct PhoneNumberSpec {
    /// The phone number in E.164 form (`+15551230142`). Immutable: create a
    /// new PhoneNumber to change it.
    #[schemars(pattern(E164_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("number is immutable; create a new PhoneNumber instead"))]
    pub number: String,
    /// The VoiceAgent that answers calls to this number.
    pub voice_agent_ref: LocalObjectRef,
    /// The telephony provider that owns the number.
    #[serde(default)]
    pub provider: NumberProvider,
    /// Twilio account and credentials. Required for provider `twilio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio: Option<TwilioNumberSpec>,
}

/// Telephony providers that own numbers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum NumberProvider {
    /// Twilio: the number is an IncomingPhoneNumber of the account.
    #[default]
    Twilio,
}

/// The Twilio account a number belongs to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TwilioNumberSpec {
    /// The Twilio account SID (`AC` followed by 32 hex digits).
    #[schemars(pattern(r"^AC[0-9a-fA-F]{32}$"))]
    pub account_sid: String,
    /// The Secret key holding the account's auth token, used for the REST API.
    pub credentials_secret_ref: SecretKeyRef,
}

/// Observed state of a PhoneNumber.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhoneNumberStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Provisioned` and `Conflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Twilio IncomingPhoneNumber SID (`PN…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_number_sid: Option<String>,
    /// The voice webhook URL the number points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The LiveKit inbound SIP trunk id (transport `livekit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit_trunk_id: Option<String>,
    /// The LiveKit SIP dispatch rule id (transport `livekit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit_dispatch_rule_id: Option<String>,
    /// The number's webhook settings before the operator changed them,
    /// restored when the PhoneNumber is deleted (cleared when there were
    /// none). A URL with credentials in it (`https://user:pass@…`) is not
    /// recorded, so it is cleared rather than restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousTwilioConfig>,
}

/// A Twilio number's webhook settings before the operator changed them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviousTwilioConfig {
    /// The previous `VoiceUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_url: Option<String>,
    /// The previous `VoiceMethod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_method: Option<String>,
    /// The previous `StatusCallback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_callback: Option<String>,
    /// The previous `StatusCallbackMethod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_callback_method: Option<String>,
}
