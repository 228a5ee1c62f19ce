//! Configuration of the runtime: the VoiceAgent's rendered component config
//! (persona, STT, TTS, capacity, where the other components are) plus
//! `VOICE_AGENT_RUNTIME_*` environment variables for the pod-level settings
//! and the secrets the operator wires from Secrets.

use std::net::SocketAddr;
use std::time::Duration;

use voice_agent_api::deploy::{ComponentConfig, env};
use voice_agent_api::voiceagent::SttProvider as SttProviderKind;
use voice_agent_http::env::{EnvError, EnvVars, Secret};

use crate::turn::TurnConfig;

/// Prefix of the runtime's own environment variables.
pub const ENV_PREFIX: &str = "VOICE_AGENT_RUNTIME_";

/// Speech-to-text settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SttConfig {
    /// `local` or `deepgram`.
    pub provider: SttProviderKind,
    /// Provider model, if set.
    pub model: Option<String>,
    /// BCP-47 language.
    pub language: String,
    /// Silence that ends an utterance, ms.
    pub endpointing_ms: u32,
    /// Provider base URL override.
    pub base_url: Option<String>,
    /// Vendor API key (`VOICE_AGENT_STT_API_KEY`).
    pub api_key: Secret,
}

/// Everything the runtime needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`VOICE_AGENT_RUNTIME_LISTEN`, default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// Namespace of the VoiceAgent.
    pub namespace: String,
    /// Name of the VoiceAgent.
    pub voice_agent: String,
    /// This pod's name (`POD_NAME`, default `runtime-local`).
    pub pod: String,
    /// Base of the media WebSocket URLs handed to the gateway, reaching this
    /// very pod (`VOICE_AGENT_RUNTIME_MEDIA_BASE_URL`, default
    /// `ws://{POD_IP}:8080`, or `ws://127.0.0.1:{port}` without `POD_IP`).
    pub media_base_url: String,
    /// Sessions this pod accepts (`runtime.maxCallsPerPod`).
    pub capacity: u32,
    /// How long a drain waits for calls to end (`runtime.drainTimeoutSeconds`).
    pub drain_timeout: Duration,
    /// Said when the call connects.
    pub greeting: String,
    /// Said before the agent hangs up.
    pub goodbye: Option<String>,
    /// Speech to text.
    pub stt: SttConfig,
    /// TTS voice, if the VoiceAgent names one.
    pub tts_voice: Option<String>,
    /// Base URL of the agent service.
    pub agent_url: String,
    /// Base URL of the TTS service.
    pub tts_url: String,
    /// Base URL of the metrics service, if any.
    pub metrics_url: Option<String>,
    /// Turn-taking tuning (`VOICE_AGENT_RUNTIME_MIN_BARGE_IN_MS`,
    /// `..._MAX_TURN_MS`, `..._FALSE_INTERRUPTION_MS`; endpointing from the
    /// STT settings).
    pub turn: TurnConfig,
    /// A session whose media does not connect within this is dropped
    /// (`VOICE_AGENT_RUNTIME_MEDIA_CONNECT_TIMEOUT_MS`, default 30 s).
    pub media_connect_timeout: Duration,
    /// Longest call (`VOICE_AGENT_RUNTIME_MAX_CALL_SECONDS`, default 3600).
    pub max_call: Duration,
    /// Deadline for the agent's first reply event and for each TTS response's
    /// headers (`VOICE_AGENT_RUNTIME_UPSTREAM_TIMEOUT_MS`, default 10 s).
    pub upstream_timeout: Duration,
    /// Ended sessions kept for `GET /api/sessions/{id}`
    /// (`VOICE_AGENT_RUNTIME_ENDED_RETENTION_SECONDS`, default 300).
    pub ended_retention: Duration,
    /// The LiveKit server the `livekit` transport joins rooms on
    /// (`telephony.livekit.url`).
    pub livekit_url: Option<String>,
}

impl Config {
    /// Builds the config from the component config and environment lookups.
    pub fn from_component_config(
        cc: &ComponentConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, EnvError> {
        let vars = EnvVars::new(ENV_PREFIX, &lookup);
        let listen = vars.listen("LISTEN", SocketAddr::from(([0, 0, 0, 0], 8080)))?;
        let pod = lookup(env::POD_NAME)
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| "runtime-local".to_string());
        let media_base_url = match vars.get("MEDIA_BASE_URL") {
            Some((_, url)) => url.trim_end_matches('/').to_string(),
            None => match lookup(env::POD_IP).filter(|ip| !ip.trim().is_empty()) {
                Some(ip) if ip.contains(':') => format!("ws://[{ip}]:{}", listen.port()),
                Some(ip) => format!("ws://{ip}:{}", listen.port()),
                None => format!("ws://127.0.0.1:{}", listen.port()),
            },
        };
        let endpointing_ms = cc.stt.endpointing_ms.clamp(10, 5_000) as u32;
        let turn = TurnConfig {
            endpointing_ms: u64::from(endpointing_ms),
            min_barge_in_ms: vars.number("MIN_BARGE_IN_MS", 250, 20)?,
            false_interruption_ms: vars.number("FALSE_INTERRUPTION_MS", 1_500, 100)?,
            max_turn_ms: vars.number("MAX_TURN_MS", 30_000, 1_000)?,
            ..TurnConfig::default()
        };
        let language = cc
            .stt
            .language
            .clone()
            .unwrap_or_else(|| cc.persona.language.clone());
        Ok(Self {
            listen,
            namespace: cc.namespace.clone(),
            voice_agent: cc.voice_agent.clone(),
            pod,
            media_base_url,
            capacity: cc.runtime.max_calls_per_pod.max(1) as u32,
            drain_timeout: Duration::from_secs(cc.runtime.drain_timeout_seconds.max(0) as u64),
            greeting: cc.persona.greeting.clone(),
            goodbye: cc.persona.goodbye.clone(),
            stt: SttConfig {
                provider: cc.stt.provider,
                model: cc.stt.model.clone(),
                language,
                endpointing_ms,
                base_url: cc.stt.base_url.clone(),
                api_key: Secret::new(lookup(env::STT_API_KEY).unwrap_or_default()),
            },
            tts_voice: cc.tts.voice.clone(),
            agent_url: cc.endpoints.agent.trim_end_matches('/').to_string(),
            tts_url: cc.endpoints.tts.trim_end_matches('/').to_string(),
            metrics_url: cc.endpoints.metrics.clone(),
            turn,
            media_connect_timeout: Duration::from_millis(vars.number(
                "MEDIA_CONNECT_TIMEOUT_MS",
                30_000,
                100,
            )?),
            max_call: Duration::from_secs(vars.number("MAX_CALL_SECONDS", 3_600, 10)?),
            upstream_timeout: Duration::from_millis(vars.number(
                "UPSTREAM_TIMEOUT_MS",
                10_000,
                100,
            )?),
            ended_retention: Duration::from_secs(vars.number("ENDED_RETENTION_SECONDS", 300, 0)?),
            livekit_url: cc.telephony.livekit.as_ref().map(|l| l.url.clone()),
        })
    }
}
