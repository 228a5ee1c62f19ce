//! The runtime component of a VoiceAgent: the live voice loop of each call.
//!
//! A runtime pod holds call sessions (`/api/sessions`), receives the caller's
//! audio over Twilio Media Streams (or a LiveKit room), runs voice activity
//! detection and streaming speech-to-text, decides when the caller's turn has
//! ended, asks the agent service for a reply, streams it sentence by sentence
//! through the TTS service, paces the audio back to the caller, and stops at
//! once when the caller barges in. It drains instead of dropping calls
//! (DESIGN.md §4 "Drain", §5 "runtime").
//!
//! Modules, pure first: [`vad`], [`turn`] (the turn-taking state machine),
//! [`sentence`] (streamed reply → sentences); then the shells: [`stt`]
//! (recognizers), [`media`] (transports), [`clients`] (agent and TTS),
//! [`call`] (the voice loop), [`sessions`] and [`api`].
//!
//! This crate is a library; `voice-agent runtime` runs it.

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use voice_agent_http::samples::{SamplePusher, SampleSource};
use voice_agent_proto::Component;

pub mod api;
pub mod bench;
pub mod bench_calls;
pub mod call;
pub mod calls;
pub mod calls_kube;
pub mod clients;
pub mod config;
pub mod exporter;
pub mod media;
#[cfg(feature = "livekit")]
pub mod media_livekit;
pub mod sentence;
pub mod sessions;
pub mod stt;
pub mod testing;
pub mod turn;
pub mod vad;

pub use api::router;
pub use config::Config;

use clients::Upstreams;
use exporter::Exporter;
use sessions::{EndReason, Registry};
use stt::SttProvider;

/// Whether this build can join LiveKit rooms (the `livekit` feature); without
/// it, sessions with transport `livekit` are refused with 501.
pub const LIVEKIT_TRANSPORT: bool = cfg!(feature = "livekit");

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Runtime;

/// Errors starting the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Metrics registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP clients could not be built.
    #[error(transparent)]
    Client(#[from] clients::ClientError),
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared state of the runtime.
pub struct State {
    /// Configuration.
    pub config: Config,
    /// Sessions of this pod.
    pub registry: Registry,
    /// Agent and TTS clients.
    pub upstreams: Upstreams,
    /// The speech recognizer.
    pub stt: Arc<dyn SttProvider>,
    /// Prometheus metrics.
    pub exporter: Exporter,
    /// Samples for the metrics service.
    pub samples: SamplePusher,
    /// Where call lifecycles are recorded ([`calls::NoCalls`] by default).
    pub calls: Arc<dyn calls::CallSink>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("config", &self.config)
            .field("stt", &self.stt.name())
            .finish_non_exhaustive()
    }
}

impl State {
    /// Builds the state; must be called within a Tokio runtime (it starts
    /// the sample pusher).
    pub fn new(config: Config, stt: Arc<dyn SttProvider>) -> Result<Self, Error> {
        let upstreams =
            Upstreams::new(&config.agent_url, &config.tts_url, config.upstream_timeout)?;
        let samples = SamplePusher::spawn(
            config.metrics_url.clone(),
            SampleSource {
                namespace: config.namespace.clone(),
                voice_agent: config.voice_agent.clone(),
                component: COMPONENT,
                pod: config.pod.clone(),
            },
        );
        Ok(Self {
            registry: Registry::new(config.capacity),
            exporter: Exporter::new(config.capacity)?,
            upstreams,
            stt,
            samples,
            calls: Arc::new(calls::NoCalls),
            config,
        })
    }

    /// Records call lifecycles with `sink` (e.g. Call objects in a cluster).
    pub fn with_calls(mut self, sink: Arc<dyn calls::CallSink>) -> Self {
        self.calls = sink;
        self
    }

    /// Publishes the live session count: the Prometheus gauge and the
    /// `activeCalls` gauge of the metrics service (what the autoscaler and
    /// the drain read).
    pub fn publish_load(&self) {
        let active = self.registry.active();
        self.exporter.sessions.set(i64::from(active));
        self.samples.gauge(
            voice_agent_proto::metrics::GAUGE_ACTIVE_CALLS,
            f64::from(active),
        );
    }

    /// Primes the recognizer with the greeting as the TTS service renders it
    /// for the phone (8 kHz), retrying while the TTS service starts. Returns
    /// whether it did.
    pub async fn warm_up_recognizer(&self) -> bool {
        use futures::StreamExt;
        let greeting = self.config.greeting.trim();
        if greeting.is_empty() {
            return false;
        }
        for attempt in 0..10u32 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            let Ok(stream) = self
                .upstreams
                .synthesize(greeting, self.config.tts_voice.as_deref())
                .await
            else {
                continue;
            };
            let mut stream = Box::pin(stream);
            let mut mulaw = Vec::new();
            let mut failed = false;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => mulaw.extend_from_slice(&bytes),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed || mulaw.is_empty() {
                continue;
            }
            let once = voice_agent_proto::audio::decode_mulaw(&mulaw);
            // Live CMN weighs its prior like ~5 s of audio: give it enough
            // speech (about 15 s) to settle on the line's mean.
            let repeats = (15 * rate_hz() as usize / once.len().max(1)).clamp(1, 20);
            let pcm: Vec<i16> = once
                .iter()
                .copied()
                .cycle()
                .take(once.len() * repeats)
                .collect();
            let stt = Arc::clone(&self.stt);
            let rate = voice_agent_proto::mediastreams::SAMPLE_RATE;
            return tokio::task::spawn_blocking(move || stt.warm_up(&pcm, rate))
                .await
                .is_ok();
        }
        tracing::warn!("could not prime the recognizer: the TTS service did not answer");
        false
    }

    /// Drains: refuses new sessions, waits for live calls to end up to the
    /// drain timeout, then ends the rest (`DrainTimeout`). Returns how many
    /// calls were cut.
    pub async fn drain(&self) -> usize {
        self.registry.set_draining(true);
        self.exporter.draining.set(1);
        let active = self.registry.active();
        if active > 0 {
            tracing::info!(
                active,
                timeout_s = self.config.drain_timeout.as_secs(),
                "draining: waiting for active calls to end"
            );
        }
        let left = self.registry.wait_idle(self.config.drain_timeout).await;
        for session in &left {
            tracing::warn!(session = %session.id, "drain timeout; ending the call");
            self.registry.end(&session.id, EndReason::DrainTimeout);
        }
        left.len()
    }
}

fn rate_hz() -> u32 {
    voice_agent_proto::mediastreams::SAMPLE_RATE
}

/// Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Serves the API on `listener` until `shutdown` completes, then drains
/// (readiness false, no new sessions, live calls finish up to the drain
/// timeout) and stops.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let warm = Arc::clone(&state);
    tokio::spawn(async move { warm.warm_up_recognizer().await });
    let sweeper_state = Arc::clone(&state);
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            sweeper_state
                .registry
                .sweep(sweeper_state.config.ended_retention);
        }
    });
    let drained = Arc::new(tokio::sync::Notify::new());
    let drain_state = Arc::clone(&state);
    let drain_done = Arc::clone(&drained);
    // On shutdown the server keeps serving (media sockets, probes) while the
    // calls drain; it stops accepting only once they are gone.
    let graceful = async move {
        shutdown.await;
        let cut = drain_state.drain().await;
        if cut > 0 {
            tracing::warn!(cut, "calls ended by the drain timeout");
        }
        // Give ended calls a moment to close their sockets.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drain_done.notify_one();
    };
    let server = axum::serve(
        voice_agent_http::nodelay(listener),
        router(Arc::clone(&state)),
    )
    .with_graceful_shutdown(async move { drained.notified().await });
    let result = tokio::select! {
        r = server => r,
        // `graceful` never completes on its own before the server; it only
        // notifies.
        _ = async { graceful.await; std::future::pending::<()>().await } => Ok(()),
    };
    sweeper.abort();
    result.map_err(Error::from)
}
