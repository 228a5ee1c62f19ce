//! The `VoiceAgent` kind: one phone voice agent and how it runs.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DNS_SUBDOMAIN, E164_PATTERN, HTTP_URL, LatencySummary, SecretKeyRef};

/// A phone voice agent: its persona, language model, speech recognition and
/// synthesis, knowledge base, database, telephony and how its four components
/// (gateway, runtime, agent, tts) are scaled.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "voiceagent.io",
    version = "v1alpha1",
    kind = "VoiceAgent",
    plural = "voiceagents",
    singular = "voiceagent",
    shortname = "va",
    category = "voice",
    namespaced,
    status = "VoiceAgentStatus",
    derive = "PartialEq",
    doc = "A phone voice agent run by the Voice Agent Operator.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Pending, Progressing, Ready or Degraded"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready","description":"Ready components out of four"}"#,
    printcolumn = r#"{"name":"Calls","type":"integer","jsonPath":".status.activeCalls","description":"Calls in progress"}"#,
    printcolumn = r#"{"name":"P95","type":"integer","jsonPath":".status.latency.p95Ms","description":"95th percentile turn latency (ms)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".spec.telephony.transport","priority":1,"description":"mediaStreams or livekit"}"#,
    printcolumn = r#"{"name":"Webhook URL","type":"string","jsonPath":".status.webhookUrl","priority":1,"description":"URL to configure as the Twilio voice webhook"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VoiceAgentSpec {
    /// What the agent says and how it behaves.
    pub persona: Persona,
    /// The language model that writes the agent's replies.
    #[serde(default)]
    pub llm: LlmSpec,
    /// Speech to text: how the caller's audio becomes text.
    #[serde(default)]
    pub stt: SttSpec,
    /// Text to speech: how the agent's replies become audio.
    #[serde(default)]
    pub tts: TtsSpec,
    /// The knowledge base the agent answers from, with citations.
    #[serde(default)]
    pub knowledge: KnowledgeSpec,
    /// Durable storage for conversation history, documents and call records.
    /// Without it, the agent keeps them in memory and loses them on restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,
    /// How calls reach the agent: Twilio webhooks and the media transport.
    pub telephony: TelephonySpec,
    /// Replicas and resources of each component.
    #[serde(default)]
    pub components: ComponentsSpec,
    /// How the operator scales the components on latency and load.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// The container image of the components. Defaults to the operator's own
    /// image (set by the Helm chart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
    /// How long ended Calls are kept.
    #[serde(default)]
    pub call_retention: CallRetention,
}

/// What the agent says and how it behaves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Persona {
    /// The first thing the agent says when it answers a call.
    #[schemars(length(min = 1, max = 1000))]
    pub greeting: String,
    /// Instructions for the language model: role, tone, what to do and not do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20000))]
    pub instructions: Option<String>,
    /// The conversation language as a BCP-47 tag (`en-US`, `de-DE`, `es`).
    #[serde(default = "default_language")]
    #[schemars(pattern(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$"))]
    pub language: String,
    /// What the agent says before it hangs up. Without it, the agent ends
    /// calls without a closing phrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub goodbye: Option<String>,
}

fn default_language() -> String {
    "en-US".to_string()
}

/// Language model providers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LlmProvider {
    /// The built-in retrieval-grounded responder: answers from the best
    /// matching knowledge chunks, with citations. Needs no vendor account.
    #[default]
    Local,
    /// Any OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI,
    /// vLLM, Ollama, ...).
    Openai,
}

/// The language model that writes the agent's replies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'openai' || has(self.apiKeySecretRef)").message("llm.provider 'openai' requires llm.apiKeySecretRef"))]
pub struct LlmSpec {
    /// `local` (built-in, offline) or `openai` (any OpenAI-compatible endpoint).
    #[serde(default)]
    pub provider: LlmProvider,
    /// Model name sent to the provider (e.g. `gpt-4o-mini`). Ignored by `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub model: Option<String>,
    /// Base URL of the OpenAI-compatible API (e.g. `https://api.openai.com/v1`).
    /// Defaults to OpenAI's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HTTP_URL), length(max = 2048))]
    pub base_url: Option<String>,
    /// The Secret key holding the API key. Required for `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Sampling temperature, from 0 (deterministic) to 2.
    #[serde(default = "default_temperature")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: f64,
    /// Upper bound on the tokens of one reply. Phone replies should be short.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1, max = 16384))]
    pub max_tokens: i32,
}

fn default_temperature() -> f64 {
    0.3
}

fn default_max_tokens() -> i32 {
    256
}

impl Default for LlmSpec {
    fn default() -> Self {
        Self {
            provider: LlmProvider::default(),
            model: None,
            base_url: None,
            api_key_secret_ref: None,
            temperature: default_temperature(),
            max_tokens: default_max_tokens(),
        }
    }
}

/// Speech-to-text providers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SttProvider {
    /// The built-in offline recognizer. Needs no vendor account.
    #[default]
    Local,
    /// Deepgram streaming recognition over WebSocket.
    Deepgram,
}

/// Speech to text: how the caller's audio becomes text.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'deepgram' || has(self.apiKeySecretRef)").message("stt.provider 'deepgram' requires stt.apiKeySecretRef"))]
pub struct SttSpec {
    /// `local` (built-in, offline) or `deepgram`.
    #[serde(default)]
    pub provider: SttProvider,
    /// Recognition model (e.g. `nova-3` for Deepgram). Provider default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub model: Option<String>,
    /// Recognition language as a BCP-47 tag. Defaults to `persona.language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$"))]
    pub language: Option<String>,
    /// Silence, in milliseconds, after which the caller's turn may end.
    /// Lower is snappier; higher interrupts slow speakers less.
    #[serde(default = "default_endpointing_ms")]
    #[schemars(range(min = 10, max = 5000))]
    pub endpointing_ms: i32,
    /// Base URL of the provider's API, for self-hosted or regional endpoints
    /// (e.g. `wss://api.eu.deepgram.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        pattern(r"^(https?|wss?)://[^\s/?#]+(/[^\s?#]*)?$"),
        length(max = 2048)
    )]
    pub base_url: Option<String>,
    /// The Secret key holding the API key. Required for `deepgram`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

fn default_endpointing_ms() -> i32 {
    300
}

impl Default for SttSpec {
    fn default() -> Self {
        Self {
            provider: SttProvider::default(),
            model: None,
            language: None,
            endpointing_ms: default_endpointing_ms(),
            base_url: None,
            api_key_secret_ref: None,
        }
    }
}

/// Text-to-speech providers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TtsProvider {
    /// espeak-ng, built into the image. Needs no vendor account.
    #[default]
    Local,
    /// ElevenLabs streaming synthesis.
    Elevenlabs,
    /// OpenAI speech synthesis.
    Openai,
    /// Deepgram Aura speech synthesis.
    Deepgram,
}

/// Text to speech: how the agent's replies become audio.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider == 'local' || has(self.apiKeySecretRef)").message("tts.provider other than 'local' requires tts.apiKeySecretRef"))]
pub struct TtsSpec {
    /// `local` (espeak-ng), `elevenlabs`, `openai` or `deepgram`.
    #[serde(default)]
    pub provider: TtsProvider,
    /// Voice name or id at the provider (e.g. `en-us` for espeak-ng, a voice
    /// id for ElevenLabs, `alloy` for OpenAI). Provider default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub voice: Option<String>,
    /// Synthesis model at the provider (e.g. `eleven_flash_v2_5`, `tts-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub model: Option<String>,
    /// Base URL of the provider's API, for self-hosted or regional endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HTTP_URL), length(max = 2048))]
    pub base_url: Option<String>,
    /// The Secret key holding the API key. Required for every provider but `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

/// The knowledge base the agent answers from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeSpec {
    /// Where chunk vectors are stored and searched.
    #[serde(default)]
    pub vector_store: VectorStoreSpec,
    /// How text is turned into vectors.
    #[serde(default)]
    pub embedder: EmbedderSpec,
    /// Documents ingested when the agent starts and again when they change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub sources: Vec<KnowledgeSource>,
}

/// Vector store types.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum VectorStoreType {
    /// An in-process index in the agent pods, persisted to the database.
    #[default]
    Embedded,
    /// A Qdrant server.
    Qdrant,
}

/// Where chunk vectors are stored and searched.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'qdrant' || has(self.qdrant)").message("knowledge.vectorStore.type 'qdrant' requires the knowledge.vectorStore.qdrant block"))]
#[x_kube(validation = Rule::new("self.type == 'qdrant' || !has(self.qdrant)").message("knowledge.vectorStore.qdrant is only allowed with type 'qdrant'"))]
pub struct VectorStoreSpec {
    /// `embedded` (in-process, persisted to the database) or `qdrant`.
    #[serde(default, rename = "type")]
    pub type_: VectorStoreType,
    /// Connection to a Qdrant server. Required when `type` is `qdrant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<QdrantSpec>,
}

/// Connection to a Qdrant server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QdrantSpec {
    /// gRPC URL of the Qdrant server (e.g. `http://qdrant.db:6334`).
    #[schemars(pattern(HTTP_URL), length(max = 2048))]
    pub url: String,
    /// Collection name. Created if missing; points are filtered per VoiceAgent.
    #[serde(default = "default_collection")]
    #[schemars(pattern(r"^[a-zA-Z0-9_-]{1,255}$"))]
    pub collection: String,
    /// The Secret key holding the Qdrant API key, when the server requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

fn default_collection() -> String {
    "voice-agent".to_string()
}

/// Embedder providers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EmbedderProvider {
    /// A built-in, deterministic embedder (hashed word n-grams). Offline.
    #[default]
    Local,
    /// An OpenAI-compatible embeddings endpoint.
    Openai,
}

/// How text is turned into vectors.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'openai' || has(self.apiKeySecretRef)").message("knowledge.embedder.provider 'openai' requires knowledge.embedder.apiKeySecretRef"))]
pub struct EmbedderSpec {
    /// `local` (built-in, offline) or `openai`.
    #[serde(default)]
    pub provider: EmbedderProvider,
    /// Embedding model (e.g. `text-embedding-3-small`). Ignored by `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub model: Option<String>,
    /// Base URL of the OpenAI-compatible API. Defaults to OpenAI's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HTTP_URL), length(max = 2048))]
    pub base_url: Option<String>,
    /// The Secret key holding the API key. Required for `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

/// Document formats.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum DocumentFormat {
    /// Markdown: chunked by headings, then sentences.
    #[default]
    Markdown,
    /// Plain text: chunked by paragraphs, then sentences.
    Text,
}

/// One knowledge document or set of documents, from a ConfigMap or inline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.inline)").message("a knowledge source sets exactly one of configMap or inline"))]
pub struct KnowledgeSource {
    /// Unique name of the source within this VoiceAgent; the document id of
    /// inline sources.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Title shown in citations. Defaults to the first heading, else the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub title: Option<String>,
    /// How the content is chunked.
    #[serde(default)]
    pub format: DocumentFormat,
    /// Documents stored in a ConfigMap in the same namespace: each selected
    /// key is one document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// The document's text, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 262144))]
    pub inline: Option<String>,
}

/// Documents stored in a ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// Name of the ConfigMap, in the VoiceAgent's namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub name: String,
    /// Keys to ingest. All keys when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 253)))]
    pub keys: Vec<String>,
}

/// Durable storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// A PostgreSQL database (version 13 or later).
    pub postgres: PostgresSpec,
}

/// A PostgreSQL database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// The Secret key holding the connection URL
    /// (`postgres://user:password@host:5432/db?sslmode=require`).
    pub url_secret_ref: SecretKeyRef,
}

/// Media transports between the caller and the runtime.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Transport {
    /// Twilio Media Streams: Twilio sends the call's audio over a WebSocket to
    /// the gateway. Needs nothing but Twilio.
    #[default]
    MediaStreams,
    /// Twilio dials a LiveKit SIP trunk and the runtime joins the LiveKit room.
    Livekit,
}

/// How calls reach the agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.transport != 'livekit' || has(self.livekit)").message("telephony.transport 'livekit' requires the telephony.livekit block"))]
pub struct TelephonySpec {
    /// `mediaStreams` (Twilio Media Streams, the default) or `livekit`.
    #[serde(default)]
    pub transport: Transport,
    /// The gateway's external base URL as Twilio sees it, without a trailing
    /// slash (e.g. `https://voice.example.com`). Twilio webhooks are sent to
    /// `{publicUrl}/twilio/voice` and signatures are checked against it.
    #[schemars(pattern(HTTP_URL), length(max = 2048))]
    pub public_url: String,
    /// Twilio settings.
    pub twilio: TwilioSpec,
    /// LiveKit settings. Required when `transport` is `livekit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit: Option<LivekitSpec>,
}

/// Twilio settings of a VoiceAgent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TwilioSpec {
    /// The Secret key holding the Twilio auth token that signs webhooks
    /// (`X-Twilio-Signature`).
    pub auth_token_secret_ref: SecretKeyRef,
}

/// LiveKit settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LivekitSpec {
    /// URL of the LiveKit server (e.g. `wss://example.livekit.cloud`).
    #[schemars(
        pattern(r"^(https?|wss?)://[^\s/?#]+(/[^\s?#]*)?$"),
        length(max = 2048)
    )]
    pub url: String,
    /// The Secret key holding the LiveKit API key.
    pub api_key_secret_ref: SecretKeyRef,
    /// The Secret key holding the LiveKit API secret.
    pub api_secret_secret_ref: SecretKeyRef,
    /// The LiveKit SIP URI that Twilio dials (e.g. `sip:xyz.sip.livekit.cloud`).
    #[schemars(pattern(r"^sips?:[^\s]+$"), length(max = 2048))]
    pub sip_uri: String,
    /// IPv4/IPv6 addresses or CIDR ranges LiveKit accepts SIP calls from on
    /// the inbound trunks of this agent's PhoneNumbers (e.g. Twilio's SIP
    /// signalling ranges for your region). Empty: the operator leaves the
    /// trunks' lists as it finds them (LiveKit's default accepts any
    /// address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(pattern(ADDRESS_PATTERN)))]
    pub allowed_addresses: Vec<String>,
}

/// An IPv4 or IPv6 address, optionally with a prefix length.
pub const ADDRESS_PATTERN: &str = r"^(((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?|[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){2,7}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$";

/// Replicas and resources of each component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsSpec {
    /// The gateway: Twilio/LiveKit webhooks and the Media Streams edge.
    #[serde(default)]
    pub gateway: ComponentSpec,
    /// The runtime: one voice loop per call.
    #[serde(default)]
    pub runtime: RuntimeComponentSpec,
    /// The agent workers: retrieval and the language model.
    #[serde(default)]
    pub agent: ComponentSpec,
    /// The TTS workers: speech synthesis.
    #[serde(default)]
    pub tts: ComponentSpec,
}

/// Replicas and resources of a component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be less than or equal to maxReplicas"))]
pub struct ComponentSpec {
    /// The fewest replicas the autoscaler keeps.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// The most replicas the autoscaler creates.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// CPU and memory requests and limits of the component's container.
    /// Sensible defaults when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_min_replicas() -> i32 {
    1
}

fn default_max_replicas() -> i32 {
    10
}

impl Default for ComponentSpec {
    fn default() -> Self {
        Self {
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            resources: None,
        }
    }
}

/// Replicas, resources and call capacity of the runtime.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be less than or equal to maxReplicas"))]
pub struct RuntimeComponentSpec {
    /// The fewest replicas the autoscaler keeps.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// The most replicas the autoscaler creates.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// CPU and memory requests and limits of the runtime container.
    /// Sensible defaults when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Calls one runtime pod accepts; further calls go to other pods or are
    /// refused politely.
    #[serde(default = "default_max_calls_per_pod")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_calls_per_pod: i32,
    /// How long a draining runtime pod waits for its calls to end before it
    /// stops anyway. The pod's termination grace period is this plus 30 s.
    #[serde(default = "default_drain_timeout_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub drain_timeout_seconds: i32,
}

fn default_max_calls_per_pod() -> i32 {
    20
}

fn default_drain_timeout_seconds() -> i32 {
    600
}

impl Default for RuntimeComponentSpec {
    fn default() -> Self {
        Self {
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            resources: None,
            max_calls_per_pod: default_max_calls_per_pod(),
            drain_timeout_seconds: default_drain_timeout_seconds(),
        }
    }
}

/// Autoscaling engines.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AutoscalingEngine {
    /// The operator scales every component from the metrics service's
    /// signals every 2 s, with panic mode and drain-aware runtime scale-down.
    #[default]
    Operator,
    /// HorizontalPodAutoscalers with External metrics scale gateway, agent and
    /// tts; the runtime stays operator-scaled because an HPA cannot drain.
    Hpa,
}

/// How the components are scaled.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// `operator` (default) or `hpa`.
    #[serde(default)]
    pub engine: AutoscalingEngine,
    /// The latency and load each component is scaled to hold.
    #[serde(default)]
    pub targets: AutoscalingTargets,
    /// Stabilization windows, as in HPA v2.
    #[serde(default)]
    pub behavior: ScalingBehavior,
}

/// The latency and load each component is scaled to hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingTargets {
    /// Target 95th percentile end-to-end turn latency (end of caller speech to
    /// first agent audio), in milliseconds. Scales the runtime.
    #[serde(default = "default_turn_latency")]
    #[schemars(range(min = 50, max = 60000))]
    pub turn_latency_p95_ms: i32,
    /// Target calls per runtime pod. Defaults to 80 % of
    /// `components.runtime.maxCallsPerPod`, rounded down, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub calls_per_pod: Option<i32>,
    /// Target 95th percentile webhook latency of the gateway, in milliseconds.
    #[serde(default = "default_gateway_latency")]
    #[schemars(range(min = 1, max = 60000))]
    pub gateway_latency_p95_ms: i32,
    /// Target concurrent requests per gateway pod.
    #[serde(default = "default_gateway_concurrency")]
    #[schemars(range(min = 1, max = 100000))]
    pub gateway_concurrency_per_pod: i32,
    /// Target 95th percentile time to first token of the agent, in milliseconds.
    #[serde(default = "default_agent_latency")]
    #[schemars(range(min = 1, max = 60000))]
    pub agent_latency_p95_ms: i32,
    /// Target concurrent requests per agent pod.
    #[serde(default = "default_agent_concurrency")]
    #[schemars(range(min = 1, max = 100000))]
    pub agent_concurrency_per_pod: i32,
    /// Target 95th percentile time to first audio byte of the TTS service, in milliseconds.
    #[serde(default = "default_tts_latency")]
    #[schemars(range(min = 1, max = 60000))]
    pub tts_latency_p95_ms: i32,
    /// Target concurrent requests per TTS pod.
    #[serde(default = "default_tts_concurrency")]
    #[schemars(range(min = 1, max = 100000))]
    pub tts_concurrency_per_pod: i32,
}

fn default_turn_latency() -> i32 {
    1200
}
fn default_gateway_latency() -> i32 {
    100
}
fn default_gateway_concurrency() -> i32 {
    50
}
fn default_agent_latency() -> i32 {
    600
}
fn default_agent_concurrency() -> i32 {
    16
}
fn default_tts_latency() -> i32 {
    250
}
fn default_tts_concurrency() -> i32 {
    16
}

impl Default for AutoscalingTargets {
    fn default() -> Self {
        Self {
            turn_latency_p95_ms: default_turn_latency(),
            calls_per_pod: None,
            gateway_latency_p95_ms: default_gateway_latency(),
            gateway_concurrency_per_pod: default_gateway_concurrency(),
            agent_latency_p95_ms: default_agent_latency(),
            agent_concurrency_per_pod: default_agent_concurrency(),
            tts_latency_p95_ms: default_tts_latency(),
            tts_concurrency_per_pod: default_tts_concurrency(),
        }
    }
}

impl AutoscalingTargets {
    /// The calls-per-pod target in effect: the explicit one, else 80 % of the
    /// runtime's capacity (at least 1).
    pub fn effective_calls_per_pod(&self, max_calls_per_pod: i32) -> i32 {
        self.calls_per_pod
            .unwrap_or_else(|| (max_calls_per_pod * 4 / 5).max(1))
    }
}

/// Stabilization windows for scaling up and down.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingBehavior {
    /// Scale-up rules.
    #[serde(default)]
    pub scale_up: ScaleUpRules,
    /// Scale-down rules.
    #[serde(default)]
    pub scale_down: ScaleDownRules,
}

/// Scale-up rules.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleUpRules {
    /// Seconds the recommendation must stay above the current replicas
    /// before scaling up (the lowest recommendation in the window wins).
    /// Panic mode ignores it.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: i32,
}

/// Scale-down rules.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownRules {
    /// Seconds the recommendation must stay below the current replicas
    /// before scaling down (the highest recommendation in the window wins).
    #[serde(default = "default_scale_down_window")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: i32,
}

fn default_scale_down_window() -> i32 {
    300
}

impl Default for ScaleDownRules {
    fn default() -> Self {
        Self {
            stabilization_window_seconds: default_scale_down_window(),
        }
    }
}

/// Image pull policies.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// The container image of the components.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository (e.g. `ghcr.io/voice-agent-operator/voice-agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub repository: Option<String>,
    /// Image tag or `@sha256:` digest. Defaults to the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub tag: Option<String>,
    /// Image pull policy. Kubernetes' default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

/// How long ended Calls are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallRetention {
    /// Seconds after a Call ends before the operator deletes it.
    #[serde(default = "default_ttl_after_ended")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_ended: i32,
    /// The most ended Calls kept per VoiceAgent; the oldest go first.
    #[serde(default = "default_max_ended_calls")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_ended_calls: i32,
}

fn default_ttl_after_ended() -> i32 {
    86400
}

fn default_max_ended_calls() -> i32 {
    1000
}

impl Default for CallRetention {
    fn default() -> Self {
        Self {
            ttl_seconds_after_ended: default_ttl_after_ended(),
            max_ended_calls: default_max_ended_calls(),
        }
    }
}

/// Lifecycle phases of a VoiceAgent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoiceAgentPhase {
    /// Accepted; nothing rolled out yet.
    Pending,
    /// Components are being created or updated.
    Progressing,
    /// Every component is available.
    Ready,
    /// The agent cannot reach its desired state; see the Degraded condition.
    Degraded,
}

/// Observed state of a VoiceAgent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VoiceAgentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of the conditions: Pending, Progressing, Ready or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VoiceAgentPhase>,
    /// Ready components out of four, e.g. `4/4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// `Ready`, `Progressing`, `Degraded` and `ScalingActive`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Replicas of each component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentsStatus>,
    /// The URL to set as the Twilio voice webhook: `{publicUrl}/twilio/voice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Calls in progress, as last reported by the metrics service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_calls: Option<i32>,
    /// Recent end-to-end turn latency, as reported by the metrics service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySummary>,
    /// The PhoneNumbers bound to this agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub bound_numbers: Vec<BoundNumber>,
}

/// Replicas of each component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsStatus {
    /// The gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<ComponentStatus>,
    /// The runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<ComponentStatus>,
    /// The agent workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<ComponentStatus>,
    /// The TTS workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts: Option<ComponentStatus>,
}

/// Replicas of one component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Replicas the autoscaler wants.
    #[serde(default)]
    pub desired_replicas: i32,
    /// When the autoscaler last changed the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the autoscaler chose the current replicas (e.g. `LatencyAboveTarget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A PhoneNumber bound to a VoiceAgent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BoundNumber {
    /// Name of the PhoneNumber.
    pub name: String,
    /// The E.164 number.
    #[schemars(pattern(E164_PATTERN))]
    pub number: String,
    /// Whether the number is provisioned and routing calls to this agent.
    #[serde(default)]
    pub ready: bool,
}

impl VoiceAgentSpec {
    /// The Twilio voice webhook URL of this agent: `{publicUrl}/twilio/voice`.
    pub fn webhook_url(&self) -> String {
        format!(
            "{}/twilio/voice",
            self.telephony.public_url.trim_end_matches('/')
        )
    }

    /// Every Secret key this spec refers to, with the field that refers to it,
    /// so the operator can check that they exist without reading values.
    pub fn secret_refs(&self) -> Vec<(&'static str, &SecretKeyRef)> {
        let livekit = self.telephony.livekit.as_ref();
        let candidates: [(&'static str, Option<&SecretKeyRef>); 9] = [
            (
                "spec.llm.apiKeySecretRef",
                self.llm.api_key_secret_ref.as_ref(),
            ),
            (
                "spec.stt.apiKeySecretRef",
                self.stt.api_key_secret_ref.as_ref(),
            ),
            (
                "spec.tts.apiKeySecretRef",
                self.tts.api_key_secret_ref.as_ref(),
            ),
            (
                "spec.knowledge.embedder.apiKeySecretRef",
                self.knowledge.embedder.api_key_secret_ref.as_ref(),
            ),
            (
                "spec.knowledge.vectorStore.qdrant.apiKeySecretRef",
                self.knowledge
                    .vector_store
                    .qdrant
                    .as_ref()
                    .and_then(|q| q.api_key_secret_ref.as_ref()),
            ),
            (
                "spec.database.postgres.urlSecretRef",
                self.database.as_ref().map(|d| &d.postgres.url_secret_ref),
            ),
            (
                "spec.telephony.twilio.authTokenSecretRef",
                Some(&self.telephony.twilio.auth_token_secret_ref),
            ),
            (
                "spec.telephony.livekit.apiKeySecretRef",
                livekit.map(|l| &l.api_key_secret_ref),
            ),
            (
                "spec.telephony.livekit.apiSecretSecretRef",
                livekit.map(|l| &l.api_secret_secret_ref),
            ),
        ];
        candidates
            .into_iter()
            .filter_map(|(field, r)| r.map(|r| (field, r)))
            .collect()
    }
}
