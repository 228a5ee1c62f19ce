//! Configuration of the tts service, from `VOICE_AGENT_TTS_*` environment
//! variables with defaults.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use voice_agent_http::env::EnvVars;

/// Prefix of every environment variable the service reads.
pub const ENV_PREFIX: &str = "VOICE_AGENT_TTS_";

/// Default voice of the `local` provider.
pub const DEFAULT_LOCAL_VOICE: &str = "en-us";
/// Default voice of the `elevenlabs` provider ("Rachel", a premade voice).
pub const DEFAULT_ELEVENLABS_VOICE: &str = "21m00Tcm4TlvDq8ikWAM";
/// Default ElevenLabs model: the low-latency one.
pub const DEFAULT_ELEVENLABS_MODEL: &str = "eleven_flash_v2_5";
/// Default ElevenLabs API base URL.
pub const DEFAULT_ELEVENLABS_BASE_URL: &str = "https://api.elevenlabs.io";

/// Which engine synthesizes speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProviderKind {
    /// espeak-ng, run as a child process (Debian package `espeak-ng`).
    #[default]
    Local,
    /// ElevenLabs' streaming text-to-speech API over HTTPS.
    ElevenLabs,
}

impl ProviderKind {
    /// The configuration value and metric label (`local`, `elevenlabs`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::ElevenLabs => "elevenlabs",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = ();

    /// Parses `local` or `elevenlabs` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [ProviderKind::Local, ProviderKind::ElevenLabs]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(())
    }
}

pub use voice_agent_http::env::Secret;

/// Limits, addresses and provider settings of the tts service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen (`VOICE_AGENT_TTS_LISTEN`, default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// The engine (`VOICE_AGENT_TTS_PROVIDER`: `local` or `elevenlabs`,
    /// default `local`).
    pub provider: ProviderKind,
    /// Voice when a request names none (`VOICE_AGENT_TTS_VOICE`; default
    /// `en-us` for `local`, a premade voice id for `elevenlabs`).
    pub voice: String,
    /// The vendor's API base URL (`VOICE_AGENT_TTS_BASE_URL`, default
    /// `https://api.elevenlabs.io`); unused by `local`.
    pub base_url: String,
    /// The vendor's model (`VOICE_AGENT_TTS_MODEL`, default
    /// `eleven_flash_v2_5`); unused by `local`.
    pub model: String,
    /// The vendor's API key (`VOICE_AGENT_TTS_API_KEY`); required by
    /// `elevenlabs`, never logged.
    pub api_key: Secret,
    /// The espeak-ng executable, a name on `PATH` or a path
    /// (`VOICE_AGENT_TTS_ESPEAK_BIN`, default `espeak-ng`).
    pub espeak_bin: String,
    /// Longest accepted text in characters (`VOICE_AGENT_TTS_MAX_TEXT_CHARS`,
    /// default 2,000).
    pub max_text_chars: usize,
    /// Largest accepted request body in bytes
    /// (`VOICE_AGENT_TTS_MAX_BODY_BYTES`, default 64 KiB).
    pub max_body_bytes: usize,
    /// Byte budget of the phrase cache; 0 disables it
    /// (`VOICE_AGENT_TTS_CACHE_BYTES`, default 32 MiB).
    pub cache_bytes: usize,
    /// Syntheses running at once (espeak-ng processes or vendor streams)
    /// (`VOICE_AGENT_TTS_MAX_CONCURRENT`, default 8).
    pub max_concurrent: usize,
    /// How long a request waits for a synthesis slot before it is refused
    /// with 503 (`VOICE_AGENT_TTS_QUEUE_TIMEOUT_MS`, default 2 s).
    pub queue_timeout: Duration,
    /// Longest wait for the provider's next audio, the first included; a
    /// stall beyond it fails the synthesis
    /// (`VOICE_AGENT_TTS_PROVIDER_TIMEOUT_MS`, default 10 s).
    pub provider_timeout: Duration,
    /// Deadline from request to response headers, i.e. to the first audio
    /// (`VOICE_AGENT_TTS_REQUEST_TIMEOUT_MS`, default 30 s). The streamed
    /// body is bounded by `provider_timeout` per chunk instead.
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            provider: ProviderKind::Local,
            voice: DEFAULT_LOCAL_VOICE.to_owned(),
            base_url: DEFAULT_ELEVENLABS_BASE_URL.to_owned(),
            model: DEFAULT_ELEVENLABS_MODEL.to_owned(),
            api_key: Secret::default(),
            espeak_bin: "espeak-ng".to_owned(),
            max_text_chars: 2_000,
            max_body_bytes: 64 * 1024,
            cache_bytes: 32 * 1024 * 1024,
            max_concurrent: 8,
            queue_timeout: Duration::from_secs(2),
            provider_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A configuration value that cannot be used (its `value` is empty for a
/// missing required variable; secrets are never echoed).
pub use voice_agent_http::env::EnvError as ConfigError;

/// Whether `voice` is a syntactically acceptable voice name:
/// `^[a-zA-Z0-9_+-]{1,40}$`. Providers check further that it exists.
pub fn is_valid_voice_name(voice: &str) -> bool {
    (1..=40).contains(&voice.len())
        && voice
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
}

impl Config {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Defaults overridden by `lookup(variable name)`; testable without
    /// touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let env = EnvVars::new(ENV_PREFIX, lookup);
        let get = |key: &str| env.get(key);
        c.listen = env.listen("LISTEN", c.listen)?;
        if let Some((var, value)) = get("PROVIDER") {
            c.provider = value.parse().map_err(|()| ConfigError {
                var,
                value,
                reason: "must be local or elevenlabs",
            })?;
        }
        c.voice = match c.provider {
            ProviderKind::Local => DEFAULT_LOCAL_VOICE,
            ProviderKind::ElevenLabs => DEFAULT_ELEVENLABS_VOICE,
        }
        .to_owned();
        if let Some((var, value)) = get("VOICE") {
            let voice = value.trim();
            if !is_valid_voice_name(voice) {
                return Err(ConfigError {
                    var,
                    value,
                    reason: "must be 1-40 characters of a-z, A-Z, 0-9, _, + and -",
                });
            }
            c.voice = voice.to_owned();
        }
        if let Some((var, value)) = get("BASE_URL") {
            let url = value.trim().trim_end_matches('/');
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|host| host.is_empty() || host.contains(char::is_whitespace)) {
                return Err(ConfigError {
                    var,
                    value,
                    reason: "must be an http:// or https:// URL",
                });
            }
            c.base_url = url.to_owned();
        }
        if let Some((var, value)) = get("MODEL") {
            let model = value.trim();
            if model.is_empty() {
                return Err(ConfigError {
                    var,
                    value,
                    reason: "must not be empty",
                });
            }
            c.model = model.to_owned();
        }
        if let Some((_, value)) = get("API_KEY") {
            c.api_key = Secret::new(value.trim());
        }
        if let Some((var, value)) = get("ESPEAK_BIN") {
            let bin = value.trim();
            if bin.is_empty() {
                return Err(ConfigError {
                    var,
                    value,
                    reason: "must not be empty",
                });
            }
            c.espeak_bin = bin.to_owned();
        }
        c.max_text_chars = env.count("MAX_TEXT_CHARS", c.max_text_chars, 1)?;
        c.max_body_bytes = env.count("MAX_BODY_BYTES", c.max_body_bytes, 1)?;
        c.cache_bytes = env.count("CACHE_BYTES", c.cache_bytes, 0)?;
        c.max_concurrent = env.count("MAX_CONCURRENT", c.max_concurrent, 1)?;
        c.queue_timeout = env.millis("QUEUE_TIMEOUT_MS", c.queue_timeout, 0)?;
        c.provider_timeout = env.millis("PROVIDER_TIMEOUT_MS", c.provider_timeout, 1)?;
        c.request_timeout = env.millis("REQUEST_TIMEOUT_MS", c.request_timeout, 1)?;
        if c.provider == ProviderKind::ElevenLabs && c.api_key.is_empty() {
            return Err(ConfigError {
                var: env.name("API_KEY"),
                value: String::new(),
                reason: "required when VOICE_AGENT_TTS_PROVIDER=elevenlabs",
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let c = Config::from_lookup(env(&[])).expect("defaults");
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.provider, ProviderKind::Local);
        assert_eq!(c.voice, "en-us");
        assert_eq!(c.max_text_chars, 2_000);
        assert_eq!(c.cache_bytes, 32 * 1024 * 1024);
        assert_eq!(c.max_concurrent, 8);
        assert_eq!(c.espeak_bin, "espeak-ng");
    }

    #[test]
    fn overrides() {
        let c = Config::from_lookup(env(&[
            ("LISTEN", "127.0.0.1:18080"),
            ("PROVIDER", "ElevenLabs"),
            ("BASE_URL", "http://127.0.0.1:9/"),
            ("MODEL", "eleven_turbo_v2_5"),
            ("API_KEY", " sk-123 "),
            ("MAX_TEXT_CHARS", "500"),
            ("MAX_BODY_BYTES", "4096"),
            ("CACHE_BYTES", "0"),
            ("MAX_CONCURRENT", "2"),
            ("QUEUE_TIMEOUT_MS", "0"),
            ("PROVIDER_TIMEOUT_MS", "1500"),
            ("REQUEST_TIMEOUT_MS", "5000"),
        ]))
        .expect("valid");
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 18080)));
        assert_eq!(c.provider, ProviderKind::ElevenLabs);
        assert_eq!(c.voice, DEFAULT_ELEVENLABS_VOICE);
        assert_eq!(c.base_url, "http://127.0.0.1:9");
        assert_eq!(c.model, "eleven_turbo_v2_5");
        assert_eq!(c.api_key.expose(), "sk-123");
        assert_eq!(c.max_text_chars, 500);
        assert_eq!(c.max_body_bytes, 4096);
        assert_eq!(c.cache_bytes, 0);
        assert_eq!(c.max_concurrent, 2);
        assert_eq!(c.queue_timeout, Duration::ZERO);
        assert_eq!(c.provider_timeout, Duration::from_millis(1500));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("LISTEN", "localhost"),
            ("PROVIDER", "polly"),
            ("VOICE", "en us"),
            ("VOICE", "../../etc/passwd"),
            ("BASE_URL", "ftp://x"),
            ("BASE_URL", "https://"),
            ("MAX_CONCURRENT", "0"),
            ("MAX_TEXT_CHARS", "-1"),
            ("CACHE_BYTES", "32MiB"),
            ("ESPEAK_BIN", " "),
        ] {
            let err = Config::from_lookup(env(&[(key, value)])).expect_err(key);
            assert_eq!(err.var, format!("{ENV_PREFIX}{key}"));
            assert!(err.to_string().starts_with(&err.var), "{err}");
        }
    }

    #[test]
    fn elevenlabs_needs_a_key_and_the_key_is_never_printed() {
        let err = Config::from_lookup(env(&[("PROVIDER", "elevenlabs")])).expect_err("no key");
        assert_eq!(err.var, "VOICE_AGENT_TTS_API_KEY");
        let c = Config::from_lookup(env(&[
            ("PROVIDER", "elevenlabs"),
            ("API_KEY", "sk-very-secret"),
        ]))
        .expect("valid");
        let printed = format!("{c:?}");
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn voice_names() {
        for ok in ["en-us", "en-us+f3", "21m00Tcm4TlvDq8ikWAM", "a_b"] {
            assert!(is_valid_voice_name(ok), "{ok}");
        }
        for bad in ["", "en us", "en/us", "x".repeat(41).as_str(), "é", "-v;rm"] {
            assert!(!is_valid_voice_name(bad), "{bad}");
        }
    }
}
