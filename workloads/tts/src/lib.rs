//! The text-to-speech component of a VoiceAgent.
//!
//! `POST /v1/synthesize` turns one sentence of the agent's reply into audio
//! (PCM16 or mu-law at the requested rate), streamed as it is produced, from
//! espeak-ng locally or a vendor over HTTP, with an LRU cache so that greetings
//! and other repeated phrases start instantly (DESIGN.md §5 "tts").
//!
//! This crate is a library; `voice-agent tts` runs it:
//!
//! - [`Config`]: provider, limits and listen address, from `VOICE_AGENT_TTS_*`;
//! - [`State`]: provider, phrase cache, synthesis slots and metrics;
//! - [`router`]: the HTTP API with body-limit, timeout and tracing layers;
//! - [`serve`]: the provider check, then the router on a listener until
//!   shutdown.
//!
//! Providers ([`provider::Provider`]): `local` runs espeak-ng as a child
//! process per synthesis (text on stdin, WAV streamed from stdout, resampled
//! from 22,050 Hz by [`voice_agent_proto::Resampler`]); `elevenlabs` streams
//! PCM from ElevenLabs' API over HTTPS (rustls with the ring provider).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use voice_agent_proto::{Component, SynthesizeRequest};

pub mod api;
pub mod bench;
pub mod cache;
pub mod config;
pub mod exporter;
pub mod provider;
pub mod synth;
pub mod wav;

pub use api::router;
pub use cache::{CacheKey, PhraseCache};
pub use config::{Config, ConfigError, ProviderKind, Secret};
pub use exporter::{Exporter, Outcome};
pub use provider::{PcmStream, Provider, ProviderError};
pub use synth::{AudioStream, SynthError, Synthesis};

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Tts;

/// Failures of the service outside request handling.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Registering the Prometheus metrics failed.
    #[error("prometheus registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The provider cannot be set up (e.g. the HTTP client).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Locks a mutex even if a panicking thread poisoned it: every cache
/// operation leaves the cache consistent before anything can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the handlers share: config, provider, cache, slots, metrics.
pub struct State {
    config: Config,
    provider: Arc<dyn Provider>,
    exporter: Exporter,
    cache: Mutex<PhraseCache>,
    slots: Arc<Semaphore>,
    ready: AtomicBool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("config", &self.config)
            .field("provider", &self.provider.name())
            .finish_non_exhaustive()
    }
}

impl State {
    /// A state with the provider the config names. Runs nothing yet; see
    /// [`State::check_provider`].
    pub fn new(config: Config) -> Result<Self, Error> {
        let provider: Arc<dyn Provider> = match config.provider {
            ProviderKind::Local => Arc::new(provider::Espeak::new(
                config.espeak_bin.clone(),
                config.voice.clone(),
            )),
            ProviderKind::ElevenLabs => Arc::new(provider::ElevenLabs::new(&config)?),
        };
        Self::with_provider(config, provider)
    }

    /// A state with any provider (tests and embedders).
    pub fn with_provider(config: Config, provider: Arc<dyn Provider>) -> Result<Self, Error> {
        let exporter = Exporter::new(provider.name())?;
        Ok(State {
            cache: Mutex::new(PhraseCache::new(config.cache_bytes)),
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            ready: AtomicBool::new(false),
            exporter,
            provider,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The provider.
    pub fn provider(&self) -> &dyn Provider {
        &*self.provider
    }

    /// The metrics.
    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    /// Whether the provider check has passed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Runs the provider's check (espeak-ng installed and its voices listed;
    /// a vendor key configured) and records readiness.
    pub async fn check_provider(&self) -> Result<String, ProviderError> {
        let result = self.provider.check().await;
        self.ready.store(result.is_ok(), Ordering::Release);
        result
    }

    /// Synthesizes `request`: from the cache, or streaming once the provider
    /// has produced its first audio. See [`synth`] for the order of checks.
    pub async fn synthesize(
        self: &Arc<Self>,
        request: &SynthesizeRequest,
    ) -> Result<Synthesis, SynthError> {
        synth::synthesize(self, request).await
    }

    /// Entries and bytes held by the phrase cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        let cache = lock(&self.cache);
        (cache.len(), cache.used_bytes())
    }

    /// Empties the phrase cache (benchmarks; an operator's big hammer).
    pub fn cache_clear(&self) {
        let mut cache = lock(&self.cache);
        *cache = PhraseCache::new(self.config.cache_bytes);
        self.exporter.set_cache_bytes(0);
    }

    pub(crate) fn cache_budget(&self) -> usize {
        self.config.cache_bytes
    }

    pub(crate) fn cache_get(&self, key: &CacheKey) -> Option<Bytes> {
        let hit = lock(&self.cache).get(key);
        if hit.is_some() {
            self.exporter.cache_hit();
        }
        hit
    }

    pub(crate) fn cache_insert(&self, key: CacheKey, audio: Bytes) {
        let (outcome, used) = {
            let mut cache = lock(&self.cache);
            let outcome = cache.insert(key, audio);
            (outcome, cache.used_bytes())
        };
        if outcome.evicted > 0 {
            self.exporter.cache_evicted(outcome.evicted);
        }
        self.exporter.set_cache_bytes(used);
    }

    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.slots)
    }

    /// The Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        self.exporter.render()
    }
}

/// Checks the provider (logging the result; a failure leaves the pod
/// unready but serving, so `/readyz` can recheck), then serves [`router`] on
/// `listener` until `shutdown` completes, and finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    match state.check_provider().await {
        Ok(summary) => tracing::info!(provider = state.provider.name(), "{summary}"),
        Err(err) => tracing::error!(
            provider = state.provider.name(),
            error = %err,
            "provider check failed; not ready"
        ),
    }
    axum::serve(voice_agent_http::nodelay(listener), router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
