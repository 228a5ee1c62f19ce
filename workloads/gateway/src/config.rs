//! Configuration of the gateway: the [`ComponentConfig`] the operator renders
//! (file named by `VOICE_AGENT_CONFIG`), the secrets from their environment
//! variables (`TWILIO_AUTH_TOKEN`, `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`),
//! the pod's identity (`POD_NAME`, `POD_NAMESPACE`) and `VOICE_AGENT_GATEWAY_*`
//! overrides for the listen address, limits and timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use voice_agent_api::deploy::{self, ComponentConfig};
use voice_agent_api::voiceagent::Transport as TelephonyTransport;
use voice_agent_http::env::{EnvError, EnvVars};
use voice_agent_proto::Transport;

/// Prefix of the gateway's own environment variables.
pub const ENV_PREFIX: &str = "VOICE_AGENT_GATEWAY_";

pub use voice_agent_http::env::Secret;

/// Where `Call` resources are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallRecording {
    /// In the cluster when `kube::Config::infer()` finds one, else nowhere
    /// (logged once).
    #[default]
    Auto,
    /// Never (`VOICE_AGENT_GATEWAY_CALLS=off`), e.g. on a laptop.
    Off,
}

/// LiveKit API credentials (`LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKitCredentials {
    /// The API key (the JWT issuer); not secret.
    pub api_key: String,
    /// The API secret (the HMAC key of LiveKit JWTs).
    pub api_secret: Secret,
}

/// The parts of the public URL the gateway signs and advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https` or `http`.
    pub scheme: String,
    /// Host and optional port.
    pub authority: String,
    /// Path prefix without a trailing slash (often empty).
    pub path: String,
}

impl PublicUrl {
    /// Parses `http(s)://authority[/path]`, refusing queries, fragments,
    /// user info and whitespace.
    pub fn parse(url: &str) -> Option<Self> {
        let url = url.trim().trim_end_matches('/');
        let (scheme, rest) = url.split_once("://")?;
        if !matches!(scheme, "http" | "https") {
            return None;
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains('@')
            || url.contains(['?', '#'])
            || url.chars().any(char::is_whitespace)
        {
            return None;
        }
        Some(PublicUrl {
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The URL Twilio requests for `route` (e.g. `/twilio/voice`), which is
    /// also the URL its signature covers (plus the query).
    pub fn http_url(&self, route: &str) -> String {
        format!("{}://{}{}{route}", self.scheme, self.authority, self.path)
    }

    /// The WebSocket URL of `route`: `wss` for an `https` public URL, `ws`
    /// for `http` (local development).
    pub fn ws_url(&self, route: &str) -> String {
        let scheme = if self.scheme == "https" { "wss" } else { "ws" };
        format!("{scheme}://{}{}{route}", self.authority, self.path)
    }
}

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`VOICE_AGENT_GATEWAY_LISTEN`, default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// The rendered VoiceAgent config: telephony, bound numbers, endpoints.
    pub component: ComponentConfig,
    /// `component.telephony.publicUrl`, parsed.
    pub public_url: PublicUrl,
    /// Twilio auth token (`TWILIO_AUTH_TOKEN`): verifies webhook signatures
    /// and keys the media-stream tokens. Required.
    pub twilio_auth_token: Secret,
    /// LiveKit credentials; required with transport `livekit`, optional
    /// otherwise (without them `/livekit/webhook` refuses everything).
    pub livekit: Option<LiveKitCredentials>,
    /// This pod's name (`POD_NAME`, default `voice-agent-gateway`), for
    /// metrics samples.
    pub pod_name: String,
    /// Namespace for `Call` resources (`POD_NAMESPACE`, default the
    /// config's `namespace`).
    pub namespace: String,
    /// Where `Call`s are recorded (`VOICE_AGENT_GATEWAY_CALLS`: `auto` or
    /// `off`, default `auto`).
    pub call_recording: CallRecording,
    /// Deadline of one `POST /api/sessions` attempt
    /// (`VOICE_AGENT_GATEWAY_SESSION_TIMEOUT_MS`, default 1.5 s); a timeout,
    /// 503 or connection error is retried once.
    pub session_timeout: Duration,
    /// Deadline of one Kubernetes write (`VOICE_AGENT_GATEWAY_KUBE_TIMEOUT_MS`,
    /// default 10 s); writes run in the background.
    pub kube_timeout: Duration,
    /// How long an answered CallSid is remembered so that Twilio's replays
    /// get the same answer (`VOICE_AGENT_GATEWAY_REPLAY_TTL_MS`, default 15 min).
    pub replay_ttl: Duration,
    /// Most CallSids remembered (`VOICE_AGENT_GATEWAY_REPLAY_CAPACITY`,
    /// default 10,000); the oldest are forgotten first.
    pub replay_capacity: usize,
    /// How long a Media Streams socket may take to send `start`
    /// (`VOICE_AGENT_GATEWAY_MEDIA_START_TIMEOUT_MS`, default 10 s).
    pub media_start_timeout: Duration,
    /// Deadline of the WebSocket connect to the runtime
    /// (`VOICE_AGENT_GATEWAY_MEDIA_CONNECT_TIMEOUT_MS`, default 3 s).
    pub media_connect_timeout: Duration,
    /// How long shutdown waits for proxied calls to end
    /// (`VOICE_AGENT_GATEWAY_DRAIN_TIMEOUT_MS`, default 30 s).
    pub drain_timeout: Duration,
    /// Largest accepted request body (`VOICE_AGENT_GATEWAY_MAX_BODY_BYTES`,
    /// default 64 KiB; Twilio's webhooks are a few KiB).
    pub max_body_bytes: usize,
    /// Deadline until a response head (`VOICE_AGENT_GATEWAY_REQUEST_TIMEOUT_MS`,
    /// default 10 s; Twilio gives up after 15 s).
    pub request_timeout: Duration,
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file named by `VOICE_AGENT_CONFIG` cannot be loaded.
    #[error(transparent)]
    File(#[from] deploy::LoadError),
    /// A required secret is not set.
    #[error("{var} is not set: {why}")]
    MissingSecret {
        /// The environment variable.
        var: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// A config value is unusable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `telephony.publicUrl`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable has an unusable value.
    #[error(transparent)]
    Env(#[from] EnvError),
}

impl Config {
    /// A config with defaults around a rendered component config and the
    /// Twilio auth token; LiveKit credentials from nowhere.
    pub fn new(component: ComponentConfig, twilio_auth_token: Secret) -> Result<Self, ConfigError> {
        let public_url = PublicUrl::parse(&component.telephony.public_url).ok_or_else(|| {
            ConfigError::Invalid {
                field: "telephony.publicUrl",
                reason: format!(
                    "{:?} is not an http(s) URL without query",
                    component.telephony.public_url
                ),
            }
        })?;
        if twilio_auth_token.is_empty() {
            return Err(ConfigError::MissingSecret {
                var: deploy::env::TWILIO_AUTH_TOKEN,
                why: "it verifies Twilio's webhook signatures",
            });
        }
        Ok(Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            namespace: component.namespace.clone(),
            component,
            public_url,
            twilio_auth_token,
            livekit: None,
            pod_name: "voice-agent-gateway".to_owned(),
            call_recording: CallRecording::Auto,
            session_timeout: Duration::from_millis(1500),
            kube_timeout: Duration::from_secs(10),
            replay_ttl: Duration::from_secs(15 * 60),
            replay_capacity: 10_000,
            media_start_timeout: Duration::from_secs(10),
            media_connect_timeout: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
        })
    }

    /// The config file named by `VOICE_AGENT_CONFIG`, with the process
    /// environment's secrets and overrides.
    pub fn from_env() -> Result<Self, ConfigError> {
        let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let component = ComponentConfig::load(lookup)?;
        Self::from_lookup(component, lookup)
    }

    /// Defaults around `component`, with secrets and overrides read through
    /// `lookup(variable)`; testable without touching the process environment.
    pub fn from_lookup(
        component: ComponentConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let secret = |var: &str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let token = Secret::new(secret(deploy::env::TWILIO_AUTH_TOKEN).unwrap_or_default());
        let mut c = Config::new(component, token)?;
        c.livekit = match (
            secret(deploy::env::LIVEKIT_API_KEY),
            secret(deploy::env::LIVEKIT_API_SECRET),
        ) {
            (Some(api_key), Some(api_secret)) => Some(LiveKitCredentials {
                api_key,
                api_secret: Secret::new(api_secret),
            }),
            _ => None,
        };
        if c.transport() == Transport::LiveKit {
            if c.livekit.is_none() {
                return Err(ConfigError::MissingSecret {
                    var: if secret(deploy::env::LIVEKIT_API_KEY).is_none() {
                        deploy::env::LIVEKIT_API_KEY
                    } else {
                        deploy::env::LIVEKIT_API_SECRET
                    },
                    why: "telephony.transport is livekit",
                });
            }
            if c.component.telephony.livekit.is_none() {
                return Err(ConfigError::Invalid {
                    field: "telephony.livekit",
                    reason: "required when telephony.transport is livekit".to_owned(),
                });
            }
        }
        if let Some(pod) = secret(deploy::env::POD_NAME) {
            c.pod_name = pod;
        }
        if let Some(ns) = secret(deploy::env::POD_NAMESPACE) {
            c.namespace = ns;
        }
        let env = EnvVars::new(ENV_PREFIX, &lookup);
        c.listen = env.listen("LISTEN", c.listen)?;
        if let Some((var, value)) = env.get("CALLS") {
            c.call_recording = match value.trim().to_ascii_lowercase().as_str() {
                "auto" => CallRecording::Auto,
                "off" => CallRecording::Off,
                _ => {
                    return Err(EnvError {
                        var,
                        value,
                        reason: "must be auto or off",
                    }
                    .into());
                }
            };
        }
        c.session_timeout = env.millis("SESSION_TIMEOUT_MS", c.session_timeout, 1)?;
        c.kube_timeout = env.millis("KUBE_TIMEOUT_MS", c.kube_timeout, 1)?;
        c.replay_ttl = env.millis("REPLAY_TTL_MS", c.replay_ttl, 1)?;
        c.replay_capacity = env.count("REPLAY_CAPACITY", c.replay_capacity, 1)?;
        c.media_start_timeout = env.millis("MEDIA_START_TIMEOUT_MS", c.media_start_timeout, 1)?;
        c.media_connect_timeout =
            env.millis("MEDIA_CONNECT_TIMEOUT_MS", c.media_connect_timeout, 1)?;
        c.drain_timeout = env.millis("DRAIN_TIMEOUT_MS", c.drain_timeout, 0)?;
        c.max_body_bytes = env.count("MAX_BODY_BYTES", c.max_body_bytes, 1)?;
        c.request_timeout = env.millis("REQUEST_TIMEOUT_MS", c.request_timeout, 1)?;
        Ok(c)
    }

    /// The media transport of this agent, in the runtime contract's terms.
    pub fn transport(&self) -> Transport {
        match self.component.telephony.transport {
            TelephonyTransport::MediaStreams => Transport::MediaStreams,
            TelephonyTransport::Livekit => Transport::LiveKit,
        }
    }

    /// Base URL of the runtime Service, without a trailing slash.
    pub fn runtime_url(&self) -> &str {
        self.component.endpoints.runtime.trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const YAML: &str = r#"
voiceAgent: support
namespace: shop
persona: {greeting: "Hi", instructions: "Be brief"}
llm: {provider: local}
stt: {}
tts: {}
knowledge: {}
database: false
telephony:
  publicUrl: https://voice.example.com/support/
  twilio:
    authTokenSecretRef: {name: twilio, key: authToken}
runtime: {maxCallsPerPod: 20, drainTimeoutSeconds: 300}
endpoints:
  gateway: http://support-gateway:8080
  runtime: http://support-runtime:8080/
  agent: http://support-agent:8080
  tts: http://support-tts:8080
boundNumbers: ["+15559870000"]
"#;

    fn component() -> ComponentConfig {
        ComponentConfig::from_yaml(YAML).expect("yaml")
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_and_secrets() {
        let c = Config::from_lookup(
            component(),
            env(&[
                ("TWILIO_AUTH_TOKEN", " tw-secret "),
                ("LIVEKIT_API_KEY", "APIkey"),
                ("LIVEKIT_API_SECRET", "lk-secret"),
                ("POD_NAME", "support-gateway-0"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.twilio_auth_token.expose(), "tw-secret");
        assert_eq!(c.namespace, "shop");
        assert_eq!(c.pod_name, "support-gateway-0");
        assert_eq!(c.session_timeout, Duration::from_millis(1500));
        assert_eq!(c.replay_ttl, Duration::from_secs(900));
        assert_eq!(c.transport(), Transport::MediaStreams);
        assert_eq!(c.runtime_url(), "http://support-runtime:8080");
        assert_eq!(
            c.public_url.http_url("/twilio/voice"),
            "https://voice.example.com/support/twilio/voice"
        );
        assert_eq!(
            c.public_url.ws_url("/twilio/media"),
            "wss://voice.example.com/support/twilio/media"
        );
        let printed = format!("{c:?}");
        assert!(!printed.contains("tw-secret") && !printed.contains("lk-secret"));
    }

    #[test]
    fn refusals_name_the_problem() {
        let err = Config::from_lookup(component(), env(&[])).expect_err("no token");
        assert!(err.to_string().starts_with("TWILIO_AUTH_TOKEN"), "{err}");
        let mut livekit = component();
        livekit.telephony.transport = TelephonyTransport::Livekit;
        let err = Config::from_lookup(livekit, env(&[("TWILIO_AUTH_TOKEN", "t")]))
            .expect_err("no livekit key");
        assert!(err.to_string().starts_with("LIVEKIT_API_KEY"), "{err}");
        let err = Config::from_lookup(
            component(),
            env(&[
                ("TWILIO_AUTH_TOKEN", "t"),
                ("VOICE_AGENT_GATEWAY_SESSION_TIMEOUT_MS", "0"),
            ]),
        )
        .expect_err("zero timeout");
        assert!(err.to_string().contains("SESSION_TIMEOUT_MS"), "{err}");
        let err = Config::from_lookup(
            component(),
            env(&[
                ("TWILIO_AUTH_TOKEN", "t"),
                ("VOICE_AGENT_GATEWAY_CALLS", "yes"),
            ]),
        )
        .expect_err("bad mode");
        assert!(err.to_string().contains("auto or off"), "{err}");
        for bad in ["ftp://x", "https://", "https://x/?a=1", "https://u@x", "x"] {
            assert!(PublicUrl::parse(bad).is_none(), "{bad}");
        }
    }
}
