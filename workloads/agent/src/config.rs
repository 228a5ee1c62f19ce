//! Configuration of the agent service: the [`ComponentConfig`] the operator
//! renders (file named by `VOICE_AGENT_CONFIG`), plus environment overrides
//! for the listen address, limits and the secrets (database URL, LLM,
//! embedder and Qdrant API keys).

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use voice_agent_api::deploy::{self, ComponentConfig};
use voice_agent_http::env::{EnvError, EnvVars};

pub use crate::embed::openai::EmbedderTimeouts;

/// Prefix of the agent's own environment variables.
pub const ENV_PREFIX: &str = "VOICE_AGENT_AGENT_";

/// Longest accepted utterance, in characters.
pub const MAX_UTTERANCE_CHARS: usize = 2_000;
/// Largest accepted document content, in bytes (UTF-8).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

pub use voice_agent_http::env::Secret;

/// Retrieval settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalConfig {
    /// Chunks retrieved per turn (`VOICE_AGENT_AGENT_TOP_K`, default 3).
    pub top_k: usize,
    /// Least cosine score a chunk needs to be used
    /// (`VOICE_AGENT_AGENT_MIN_SCORE`, default 0.12). Below it the agent
    /// says it does not know.
    pub min_score: f32,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            top_k: 3,
            min_score: 0.12,
        }
    }
}

/// Everything the agent service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`VOICE_AGENT_AGENT_LISTEN`, default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// The rendered VoiceAgent config: persona, LLM, knowledge.
    pub component: ComponentConfig,
    /// PostgreSQL URL (`DATABASE_URL`); in-memory, not durable, when unset.
    pub database_url: Option<Secret>,
    /// LLM API key (`VOICE_AGENT_LLM_API_KEY`), for the `openai` provider.
    pub llm_api_key: Option<Secret>,
    /// Embedder API key (`VOICE_AGENT_EMBEDDER_API_KEY`), for the `openai`
    /// embedder.
    pub embedder_api_key: Option<Secret>,
    /// Qdrant API key (`VOICE_AGENT_QDRANT_API_KEY`), for the `qdrant`
    /// vector store.
    pub qdrant_api_key: Option<Secret>,
    /// Largest accepted request body (`VOICE_AGENT_AGENT_MAX_BODY_BYTES`,
    /// default 4 MiB: a 1 MiB document with JSON escaping fits).
    pub max_body_bytes: usize,
    /// Deadline until the response head (`VOICE_AGENT_AGENT_REQUEST_TIMEOUT_MS`,
    /// default 30 s); a streamed reply's body is bounded by the LLM timeouts.
    pub request_timeout: Duration,
    /// How long a database connection may take to acquire
    /// (`VOICE_AGENT_AGENT_DB_TIMEOUT_MS`, default 3 s); past it, 503.
    pub db_timeout: Duration,
    /// Retrieval settings.
    pub retrieval: RetrievalConfig,
    /// LLM deadlines and retries.
    pub llm: LlmTimeouts,
    /// Deadlines and retries of the `openai` embedder.
    pub embedder: EmbedderTimeouts,
    /// Deadline of one Qdrant call (`VOICE_AGENT_AGENT_QDRANT_TIMEOUT_MS`,
    /// default 5 s).
    pub qdrant_timeout: Duration,
}

/// Deadlines and retries of a remote LLM.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmTimeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// From sending the request to the response head
    /// (`VOICE_AGENT_AGENT_LLM_FIRST_BYTE_TIMEOUT_MS`, default 10 s).
    pub first_byte: Duration,
    /// Longest silence between two stream chunks
    /// (`VOICE_AGENT_AGENT_LLM_IDLE_TIMEOUT_MS`, default 15 s).
    pub idle: Duration,
    /// Attempts before the first byte on 429, 5xx or connect errors
    /// (`VOICE_AGENT_AGENT_LLM_ATTEMPTS`, default 3).
    pub attempts: u32,
    /// First retry delay, doubled per retry (`VOICE_AGENT_AGENT_LLM_BACKOFF_MS`,
    /// default 200 ms); a `Retry-After` up to 2 s is honoured instead.
    pub backoff: Duration,
}

impl Default for LlmTimeouts {
    fn default() -> Self {
        LlmTimeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(15),
            attempts: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file named by `VOICE_AGENT_CONFIG` cannot be loaded.
    #[error(transparent)]
    File(#[from] deploy::LoadError),
    /// An environment variable has an unusable value.
    #[error(transparent)]
    Env(#[from] EnvError),
}

impl Config {
    /// A config with defaults around a rendered component config.
    pub fn new(component: ComponentConfig) -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            component,
            database_url: None,
            llm_api_key: None,
            embedder_api_key: None,
            qdrant_api_key: None,
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            db_timeout: Duration::from_secs(3),
            retrieval: RetrievalConfig::default(),
            llm: LlmTimeouts::default(),
            embedder: EmbedderTimeouts::default(),
            qdrant_timeout: Duration::from_secs(5),
        }
    }

    /// The config file named by `VOICE_AGENT_CONFIG`, with the process
    /// environment's overrides.
    pub fn from_env() -> Result<Self, ConfigError> {
        let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let component = ComponentConfig::load(lookup)?;
        Self::from_lookup(component, lookup)
    }

    /// Defaults around `component`, overridden by `lookup(variable)`.
    pub fn from_lookup(
        component: ComponentConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut c = Config::new(component);
        let env = EnvVars::new(ENV_PREFIX, &lookup);
        c.listen = env.listen("LISTEN", c.listen)?;
        c.database_url = lookup(deploy::env::DATABASE_URL)
            .filter(|v| !v.trim().is_empty())
            .map(Secret::new);
        c.llm_api_key = lookup(deploy::env::LLM_API_KEY)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret::new(v.trim()));
        c.embedder_api_key = lookup(deploy::env::EMBEDDER_API_KEY)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret::new(v.trim()));
        c.qdrant_api_key = lookup(deploy::env::QDRANT_API_KEY)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret::new(v.trim()));
        c.max_body_bytes = env.count("MAX_BODY_BYTES", c.max_body_bytes, 1)?;
        c.request_timeout = env.millis("REQUEST_TIMEOUT_MS", c.request_timeout, 1)?;
        c.db_timeout = env.millis("DB_TIMEOUT_MS", c.db_timeout, 1)?;
        c.retrieval.top_k = env.count("TOP_K", c.retrieval.top_k, 1)?.min(20);
        if let Some((var, value)) = env.get("MIN_SCORE") {
            c.retrieval.min_score = match value.trim().parse::<f32>() {
                Ok(s) if (0.0..=1.0).contains(&s) => s,
                _ => {
                    return Err(EnvError {
                        var,
                        value,
                        reason: "must be a number from 0 to 1",
                    }
                    .into());
                }
            };
        }
        let attempts = |key: &str, default: u32| -> Result<u32, ConfigError> {
            Ok(u32::try_from(env.positive(key, u64::from(default))?).unwrap_or(10))
        };
        c.llm.first_byte = env.millis("LLM_FIRST_BYTE_TIMEOUT_MS", c.llm.first_byte, 1)?;
        c.llm.idle = env.millis("LLM_IDLE_TIMEOUT_MS", c.llm.idle, 1)?;
        c.llm.attempts = attempts("LLM_ATTEMPTS", c.llm.attempts)?;
        c.llm.backoff = env.millis("LLM_BACKOFF_MS", c.llm.backoff, 1)?;
        c.embedder.request = env.millis("EMBEDDER_TIMEOUT_MS", c.embedder.request, 1)?;
        c.embedder.attempts = attempts("EMBEDDER_ATTEMPTS", c.embedder.attempts)?;
        c.embedder.backoff = env.millis("EMBEDDER_BACKOFF_MS", c.embedder.backoff, 1)?;
        c.qdrant_timeout = env.millis("QDRANT_TIMEOUT_MS", c.qdrant_timeout, 1)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn component() -> ComponentConfig {
        crate::testing::component_config()
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let c = Config::from_lookup(component(), env(&[])).expect("defaults");
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert!(c.database_url.is_none());
        assert!(c.llm_api_key.is_none());
        assert_eq!(c.retrieval, RetrievalConfig::default());
        assert_eq!(c.component.voice_agent, "support");
    }

    #[test]
    fn overrides_and_secrets_are_redacted() {
        let c = Config::from_lookup(
            component(),
            env(&[
                ("VOICE_AGENT_AGENT_LISTEN", "127.0.0.1:18080"),
                ("DATABASE_URL", "postgres://u:hunter2@db/x"),
                ("VOICE_AGENT_LLM_API_KEY", "sk-secret"),
                ("VOICE_AGENT_EMBEDDER_API_KEY", "sk-embed-secret"),
                ("VOICE_AGENT_QDRANT_API_KEY", "qdrant-secret"),
                ("VOICE_AGENT_AGENT_EMBEDDER_ATTEMPTS", "5"),
                ("VOICE_AGENT_AGENT_TOP_K", "5"),
                ("VOICE_AGENT_AGENT_MIN_SCORE", "0.3"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 18080)));
        assert_eq!(c.retrieval.top_k, 5);
        assert_eq!(c.retrieval.min_score, 0.3);
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("sk-secret"), "{debug}");
        assert!(!debug.contains("sk-embed-secret"), "{debug}");
        assert!(!debug.contains("qdrant-secret"), "{debug}");
        assert_eq!(c.embedder.attempts, 5);
        assert_eq!(
            c.embedder_api_key.as_ref().map(Secret::expose),
            Some("sk-embed-secret")
        );
        assert_eq!(
            c.qdrant_api_key.as_ref().map(Secret::expose),
            Some("qdrant-secret")
        );
        assert_eq!(
            c.database_url.as_ref().map(Secret::expose),
            Some("postgres://u:hunter2@db/x")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("VOICE_AGENT_AGENT_LISTEN", "localhost"),
            ("VOICE_AGENT_AGENT_TOP_K", "0"),
            ("VOICE_AGENT_AGENT_MIN_SCORE", "2"),
        ] {
            let err = Config::from_lookup(component(), env(&[(key, value)])).expect_err(key);
            assert!(err.to_string().starts_with(key), "{err}");
        }
    }
}
