//! The agent component of a VoiceAgent: what to say next.
//!
//! `POST /v1/respond` takes the caller's utterance and the conversation
//! history, retrieves the most relevant knowledge chunks (an embedded index
//! or Qdrant), asks the LLM (an OpenAI-compatible endpoint or the built-in
//! retrieval-grounded responder) and answers with the reply, its citations and
//! a latency breakdown, as JSON or as a server-sent event stream. It also
//! ingests knowledge documents and keeps history in Postgres (DESIGN.md §5
//! "agent").
//!
//! This crate is a library; `voice-agent agent` runs it:
//!
//! - [`Config`]: the rendered component config plus environment overrides;
//! - [`State`]: store, embedder, vector store, LLM and metrics, built by
//!   [`State::new`] (or [`State::from_component_config`] in dev mode);
//! - [`router`]: the HTTP API with body-limit, timeout and tracing layers;
//! - [`serve`]: the router on a listener until shutdown.
//!
//! The pieces are behind traits: [`Store`] ([`PgStore`], [`MemoryStore`]),
//! [`Embedder`] ([`LocalEmbedder`], [`OpenAiEmbedder`]), [`VectorStore`]
//! ([`EmbeddedIndex`], [`QdrantStore`]) and [`Llm`] ([`LocalResponder`],
//! [`OpenAiLlm`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::net::TcpListener;
use voice_agent_api::deploy::ComponentConfig;
use voice_agent_api::voiceagent::{EmbedderProvider, LlmProvider, VectorStoreType};
use voice_agent_proto::Component;

pub mod api;
pub mod bench;
pub mod chunk;
pub mod config;
pub mod embed;
pub mod error;
pub mod exporter;
pub mod knowledge;
pub mod llm;
pub mod respond;
pub mod store;
pub mod testing;
pub mod text;
pub mod vector;

pub use api::router;
pub use config::{Config, ConfigError, Secret};
pub use embed::{Embedder, LocalEmbedder, OpenAiEmbedder, OpenAiEmbedderSettings};
pub use error::AgentError;
pub use exporter::Exporter;
pub use llm::{Llm, LlmEvent, LlmRequest, LocalResponder, OpenAiLlm};
pub use store::{MemoryStore, PgStore, Scope, Store, StoreError};
pub use vector::{EmbeddedIndex, QdrantSettings, QdrantStore, VectorStore};

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Agent;

/// Failures of the service outside request handling.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be reached or migrated at start.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The LLM client could not be built.
    #[error(transparent)]
    Llm(#[from] llm::LlmError),
    /// The embedder could not be built (or its dimension learned).
    #[error(transparent)]
    Embed(#[from] embed::EmbedError),
    /// The vector store could not be reached or prepared at start.
    #[error(transparent)]
    Vector(#[from] vector::VectorError),
    /// Loading the knowledge base at start failed.
    #[error("loading knowledge: {0}")]
    Knowledge(String),
    /// A configured provider that this build does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// Registering the Prometheus metrics failed.
    #[error("prometheus registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The parts a [`State`] is made of; tests and dev mode may swap any.
#[derive(Debug, Clone)]
pub struct Parts {
    /// History and documents.
    pub store: Arc<dyn Store>,
    /// Text to vectors.
    pub embedder: Arc<dyn Embedder>,
    /// Vector search.
    pub vectors: Arc<dyn VectorStore>,
    /// Replies.
    pub llm: Arc<dyn Llm>,
}

/// Everything the handlers share.
pub struct State {
    config: Config,
    scope: Scope,
    parts: Parts,
    exporter: Exporter,
    /// Serializes knowledge writes so that the database and the vector
    /// store see them in the same order.
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("scope", &self.scope)
            .field("store", &self.parts.store.kind())
            .field("vectors", &self.parts.vectors.name())
            .field("llm", &self.parts.llm.name())
            .finish_non_exhaustive()
    }
}

/// Now, Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh id such as `doc-5f3a9c0e12d4b7a1`, unique within the process
/// and very likely across processes (time, process id and a counter, hashed).
pub(crate) fn fresh_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{nanos}:{}:{n}", std::process::id()).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}-{h:016x}")
}

impl State {
    /// Builds the service from its config: connects to Postgres (or keeps
    /// everything in memory when no URL is set, logging that this is not
    /// durable), builds the embedder, vector store and LLM the config
    /// names, loads the index and ingests inline knowledge sources.
    pub async fn new(config: Config) -> Result<Self, Error> {
        let scope = Scope {
            namespace: config.component.namespace.clone(),
            voice_agent: config.component.voice_agent.clone(),
        };
        let store: Arc<dyn Store> = match &config.database_url {
            Some(url) => {
                let store =
                    PgStore::connect(url.expose(), scope.clone(), config.db_timeout).await?;
                tracing::info!(component = "agent", "store: postgres (durable)");
                Arc::new(store)
            }
            None => {
                tracing::warn!(
                    component = "agent",
                    "store: in memory, not durable: history and documents are lost on restart \
                     (set DATABASE_URL for PostgreSQL)"
                );
                Arc::new(MemoryStore::new())
            }
        };
        let embedder = build_embedder(&config).await?;
        let vectors = build_vector_store(&config, embedder.dimensions()).await?;
        let llm = build_llm(&config)?;
        Self::with_parts(
            config,
            Parts {
                store,
                embedder,
                vectors,
                llm,
            },
        )
        .await
    }

    /// Dev mode: the service for `component`, on Postgres when
    /// `database_url` is given (else in memory), with every other setting at
    /// its default and the API keys from `VOICE_AGENT_LLM_API_KEY`,
    /// `VOICE_AGENT_EMBEDDER_API_KEY` and `VOICE_AGENT_QDRANT_API_KEY`.
    pub async fn from_component_config(
        component: ComponentConfig,
        database_url: Option<String>,
    ) -> Result<Self, Error> {
        let mut config = Config::new(component);
        config.database_url = database_url
            .filter(|u| !u.trim().is_empty())
            .map(Secret::new);
        let key = |var: &str| {
            std::env::var(var)
                .ok()
                .filter(|k| !k.trim().is_empty())
                .map(|k| Secret::new(k.trim()))
        };
        config.llm_api_key = key(voice_agent_api::deploy::env::LLM_API_KEY);
        config.embedder_api_key = key(voice_agent_api::deploy::env::EMBEDDER_API_KEY);
        config.qdrant_api_key = key(voice_agent_api::deploy::env::QDRANT_API_KEY);
        Self::new(config).await
    }

    /// A service from ready-made parts: loads the vector index from the
    /// store (embedded index only) and ingests the inline knowledge sources
    /// whose content changed.
    pub async fn with_parts(config: Config, parts: Parts) -> Result<Self, Error> {
        let scope = Scope {
            namespace: config.component.namespace.clone(),
            voice_agent: config.component.voice_agent.clone(),
        };
        let state = State {
            config,
            scope,
            parts,
            exporter: Exporter::new()?,
            writes: tokio::sync::Mutex::new(()),
        };
        state.load_index().await?;
        state.ingest_sources().await?;
        Ok(state)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The VoiceAgent served.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The parts.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The metrics.
    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    /// Checks that a request names the VoiceAgent served; 404 otherwise.
    pub fn check_voice_agent(&self, name: &str) -> Result<(), AgentError> {
        if name == self.scope.voice_agent {
            Ok(())
        } else {
            Err(AgentError::NotFound(format!(
                "voiceAgent {name:?} is not served here (this agent serves {:?})",
                self.scope.voice_agent
            )))
        }
    }

    /// Ready when the store answers.
    pub async fn ready(&self) -> Result<(), AgentError> {
        self.parts.store.ping().await.map_err(AgentError::from)
    }
}

/// The embedder the config names; the `openai` one learns its dimension
/// from the endpoint when the model is not one of OpenAI's own.
async fn build_embedder(config: &Config) -> Result<Arc<dyn Embedder>, Error> {
    let spec = &config.component.knowledge.embedder;
    Ok(match spec.provider {
        EmbedderProvider::Local => Arc::new(LocalEmbedder::default()),
        EmbedderProvider::Openai => {
            if config.embedder_api_key.is_none() {
                tracing::warn!(
                    component = "agent",
                    "embedder: openai without an API key ({} is unset); requests are sent \
                     without one",
                    voice_agent_api::deploy::env::EMBEDDER_API_KEY
                );
            }
            let settings = OpenAiEmbedderSettings {
                api_key: config.embedder_api_key.clone(),
                timeouts: config.embedder.clone(),
                ..OpenAiEmbedderSettings::new(
                    spec.base_url
                        .clone()
                        .unwrap_or_else(|| embed::openai::DEFAULT_BASE_URL.to_owned()),
                    spec.model
                        .clone()
                        .unwrap_or_else(|| embed::openai::DEFAULT_MODEL.to_owned()),
                )
            };
            let embedder = OpenAiEmbedder::connect(settings).await?;
            tracing::info!(
                component = "agent",
                url = %embedder.url(),
                model = %embedder.name(),
                dimensions = embedder.dimensions(),
                "embedder: openai-compatible"
            );
            Arc::new(embedder)
        }
    })
}

/// The vector store the config names, for vectors of `dimensions`.
async fn build_vector_store(
    config: &Config,
    dimensions: usize,
) -> Result<Arc<dyn VectorStore>, Error> {
    let spec = &config.component.knowledge.vector_store;
    Ok(match spec.type_ {
        VectorStoreType::Embedded => Arc::new(EmbeddedIndex::new(dimensions)),
        VectorStoreType::Qdrant => {
            let Some(qdrant) = &spec.qdrant else {
                return Err(Error::Unsupported(
                    "knowledge.vectorStore.type 'qdrant' requires the knowledge.vectorStore.qdrant \
                     block"
                        .into(),
                ));
            };
            let settings = QdrantSettings {
                url: qdrant.url.clone(),
                collection: qdrant.collection.clone(),
                api_key: config.qdrant_api_key.clone(),
                timeout: config.qdrant_timeout,
                namespace: config.component.namespace.clone(),
            };
            let store = QdrantStore::connect(settings, dimensions).await?;
            tracing::info!(
                component = "agent",
                url = %qdrant.url,
                collection = %store.collection(),
                dimensions,
                "vector store: qdrant"
            );
            Arc::new(store)
        }
    })
}

/// The LLM the config names.
fn build_llm(config: &Config) -> Result<Arc<dyn Llm>, Error> {
    let spec = &config.component.llm;
    Ok(match spec.provider {
        LlmProvider::Local => Arc::new(LocalResponder::new(&config.component.persona)),
        LlmProvider::Openai => {
            if config.llm_api_key.is_none() {
                tracing::warn!(
                    component = "agent",
                    "llm: openai without an API key ({} is unset); requests are sent without one",
                    voice_agent_api::deploy::env::LLM_API_KEY
                );
            }
            let settings = llm::OpenAiSettings {
                base_url: spec
                    .base_url
                    .clone()
                    .unwrap_or_else(|| llm::openai::DEFAULT_BASE_URL.to_owned()),
                model: spec
                    .model
                    .clone()
                    .unwrap_or_else(|| llm::openai::DEFAULT_MODEL.to_owned()),
                api_key: config.llm_api_key.clone(),
                temperature: spec.temperature,
                max_tokens: spec.max_tokens,
                instructions: config.component.persona.instructions.clone(),
                timeouts: config.llm.clone(),
            };
            tracing::info!(
                component = "agent",
                base_url = %settings.base_url,
                model = %settings.model,
                "llm: openai-compatible"
            );
            Arc::new(OpenAiLlm::new(settings)?)
        }
    })
}

/// Serves [`router`] on `listener` until `shutdown` completes; then stops
/// accepting and finishes in-flight requests (streamed replies included).
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    axum::serve(voice_agent_http::nodelay(listener), router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
