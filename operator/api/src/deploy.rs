//! The configuration the operator renders for a VoiceAgent's components and
//! the `voice-agent` binary reads: the non-secret parts of the spec that the
//! workloads use, plus where the sibling components and the metrics service
//! are. Secrets are never part of it; components read them from environment
//! variables the operator wires with `secretKeyRef` (see [`env`]).
//!
//! Scaling settings (`components.*.minReplicas`, `autoscaling`, `image`,
//! `callRetention`) are deliberately left out: changing them must not roll
//! the pods, and the config hash covers exactly this struct.

use serde::{Deserialize, Serialize};

use crate::voiceagent::{
    KnowledgeSpec, LlmSpec, Persona, SttSpec, TelephonySpec, TtsSpec, VoiceAgent,
};

/// File name of the rendered config in the ConfigMap and in the pod.
pub const CONFIG_FILE: &str = "config.yaml";
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/voice-agent";
/// Environment variable that points components at the config file.
pub const CONFIG_ENV: &str = "VOICE_AGENT_CONFIG";
/// Port every component serves HTTP on (API, probes, metrics).
pub const HTTP_PORT: i32 = 8080;

/// Environment variables that carry secret values into components. The
/// operator sets them from `secretKeyRef`s; values never enter a ConfigMap.
pub mod env {
    /// Twilio auth token (gateway: webhook signatures).
    pub const TWILIO_AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
    /// LiveKit API key (gateway, runtime).
    pub const LIVEKIT_API_KEY: &str = "LIVEKIT_API_KEY";
    /// LiveKit API secret (gateway, runtime).
    pub const LIVEKIT_API_SECRET: &str = "LIVEKIT_API_SECRET";
    /// Speech-to-text vendor API key (runtime).
    pub const STT_API_KEY: &str = "VOICE_AGENT_STT_API_KEY";
    /// LLM API key (agent).
    pub const LLM_API_KEY: &str = "VOICE_AGENT_LLM_API_KEY";
    /// Embeddings API key (agent).
    pub const EMBEDDER_API_KEY: &str = "VOICE_AGENT_EMBEDDER_API_KEY";
    /// Qdrant API key (agent).
    pub const QDRANT_API_KEY: &str = "VOICE_AGENT_QDRANT_API_KEY";
    /// PostgreSQL connection URL (agent).
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// Text-to-speech vendor API key (tts).
    pub const TTS_API_KEY: &str = "VOICE_AGENT_TTS_API_KEY";
    /// The pod's name (downward API).
    pub const POD_NAME: &str = "POD_NAME";
    /// The pod's namespace (downward API).
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The pod's IP (downward API), for media URLs that reach this pod.
    pub const POD_IP: &str = "POD_IP";
}

/// Where a component reaches the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Base URL of the gateway service.
    pub gateway: String,
    /// Base URL of the runtime service (session creation; media goes to pods).
    pub runtime: String,
    /// Base URL of the agent service.
    pub agent: String,
    /// Base URL of the TTS service.
    pub tts: String,
    /// Base URL of the cluster's metrics service, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// Runtime capacity settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSettings {
    /// Calls one runtime pod accepts.
    pub max_calls_per_pod: i32,
    /// How long a draining pod waits for calls to end.
    pub drain_timeout_seconds: i32,
}

/// The rendered configuration of one VoiceAgent's components.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentConfig {
    /// Name of the VoiceAgent.
    pub voice_agent: String,
    /// Namespace of the VoiceAgent.
    pub namespace: String,
    /// Persona.
    pub persona: Persona,
    /// Language model (secret references name the Secret; values come from env).
    pub llm: LlmSpec,
    /// Speech to text.
    pub stt: SttSpec,
    /// Text to speech.
    pub tts: TtsSpec,
    /// Knowledge base.
    pub knowledge: KnowledgeSpec,
    /// Whether a PostgreSQL database is configured (`DATABASE_URL` is set).
    pub database: bool,
    /// Telephony settings.
    pub telephony: TelephonySpec,
    /// Runtime capacity.
    pub runtime: RuntimeSettings,
    /// Where the components are.
    pub endpoints: Endpoints,
    /// E.164 numbers bound to this agent; the gateway accepts calls only to
    /// these (all numbers when empty).
    #[serde(default)]
    pub bound_numbers: Vec<String>,
}

impl ComponentConfig {
    /// Renders the config of a VoiceAgent.
    pub fn from_voice_agent(
        va: &VoiceAgent,
        namespace: &str,
        endpoints: Endpoints,
        bound_numbers: Vec<String>,
    ) -> Self {
        let spec = &va.spec;
        Self {
            voice_agent: va.metadata.name.clone().unwrap_or_default(),
            namespace: namespace.to_string(),
            persona: spec.persona.clone(),
            llm: spec.llm.clone(),
            stt: spec.stt.clone(),
            tts: spec.tts.clone(),
            knowledge: spec.knowledge.clone(),
            database: spec.database.is_some(),
            telephony: spec.telephony.clone(),
            runtime: RuntimeSettings {
                max_calls_per_pod: spec.components.runtime.max_calls_per_pod,
                drain_timeout_seconds: spec.components.runtime.drain_timeout_seconds,
            },
            endpoints,
            bound_numbers,
        }
    }

    /// The config as the YAML stored in the ConfigMap.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        serde_yaml_ng::to_string(self)
    }

    /// Parses the YAML a component finds in its config file.
    pub fn from_yaml(yaml: &str) -> Result<Self, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(yaml)
    }

    /// Reads the config file named by [`CONFIG_ENV`] (looked up with
    /// `lookup`), as every component does at start.
    pub fn load(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, LoadError> {
        let path = lookup(CONFIG_ENV)
            .filter(|p| !p.trim().is_empty())
            .ok_or(LoadError::NoConfigFile)?;
        let yaml = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        Self::from_yaml(&yaml).map_err(|e| LoadError::Parse {
            path,
            message: e.to_string(),
        })
    }
}

/// Why a component's config file cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `VOICE_AGENT_CONFIG` is not set.
    #[error(
        "{CONFIG_ENV} is not set: it must name the rendered VoiceAgent config file (e.g. {CONFIG_DIR}/{CONFIG_FILE})"
    )]
    NoConfigFile,
    /// The config file cannot be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not a ComponentConfig.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The YAML error.
        message: String,
    },
}
