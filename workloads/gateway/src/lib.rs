//! The gateway component of a VoiceAgent.
//!
//! It is the public edge of a phone call: it validates Twilio's signed webhooks
//! (`POST /twilio/voice`, `POST /twilio/status`) and LiveKit's webhook JWTs,
//! creates the `Call` custom resource, opens a session on a runtime pod and
//! answers TwiML, and proxies Twilio Media Streams WebSockets to the runtime pod
//! that holds the session (DESIGN.md §5 "gateway").
//!
//! This crate is a library; `voice-agent gateway` runs it:
//!
//! - [`Config`]: the rendered VoiceAgent config, secrets and limits
//!   ([`Config::from_env`]);
//! - [`State`]: runtime client, Call recorder, LiveKit clients, the answers
//!   of recent calls, metrics ([`State::from_config`] picks the recorder);
//! - [`router`]: the HTTP API with body-limit, timeout and tracing layers;
//! - [`serve`]: the router on a listener until shutdown, then a bounded wait
//!   for proxied calls; [`run`] does all of it from a [`Config`].
//!
//! The modules hold the pure parts: [`signature`] (Twilio signatures, media
//! tokens), [`twiml`], [`form`], [`answers`] (replay map), [`calls`] (Call
//! recording), [`runtime`] (sessions client), [`livekit`] (SIP
//! headers and webhooks), [`exporter`] (Prometheus); [`mod@bench`] measures
//! the voice webhook on one core (`voice-agent bench gateway`),
//! [`bench_media`] the Media Streams proxy (`voice-agent bench
//! gateway-media`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use voice_agent_http::samples::{SamplePusher, SampleSource};
use voice_agent_proto::Component;
use voice_agent_proto::metrics::GAUGE_CONCURRENCY;

pub mod answers;
pub mod api;
pub mod bench;
pub mod bench_media;
pub mod calls;
pub mod config;
pub mod exporter;
pub mod form;
pub mod livekit;
pub mod media;
pub mod runtime;
pub mod signature;
pub mod twiml;

pub use answers::{Answer, Answers, SessionRef};
pub use api::router;
pub use calls::{CallRecorder, KubeCallRecorder, NoCluster};
pub use config::{CallRecording, Config, ConfigError, LiveKitCredentials, PublicUrl, Secret};
pub use exporter::{Exporter, Outcome, Route};
pub use livekit::Webhooks;
pub use media::{MEDIA_URL_PARAMETER, TOKEN_PARAMETER};
pub use runtime::RuntimeClient;

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Gateway;

/// Failures of the service outside request handling.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Registering the Prometheus metrics failed.
    #[error("prometheus registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client cannot be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Everything the handlers share.
pub struct State {
    config: Config,
    exporter: Arc<Exporter>,
    runtime: RuntimeClient,
    recorder: Arc<dyn CallRecorder>,
    webhooks: Option<Webhooks>,
    answers: Answers,
    pusher: SamplePusher,
    ready: AtomicBool,
    in_flight: AtomicUsize,
    proxies: AtomicUsize,
    proxies_changed: Notify,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("config", &self.config)
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}

impl State {
    /// A state recording Calls through `recorder`; LiveKit webhooks are
    /// verified when LiveKit credentials are set; samples go to
    /// `endpoints.metrics` when set. Must be called within a
    /// Tokio runtime (the sample pusher's task).
    pub fn new(config: Config, recorder: Arc<dyn CallRecorder>) -> Result<Self, Error> {
        // reqwest is built with rustls but no provider: pick ring, as every
        // workload does (livekit-api's clients need it too).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = RuntimeClient::new(config.runtime_url(), config.session_timeout)?;
        let webhooks = config
            .livekit
            .as_ref()
            .map(|lk| Webhooks::new(&lk.api_key, lk.api_secret.expose()));
        let pusher = SamplePusher::spawn(
            config.component.endpoints.metrics.clone(),
            SampleSource {
                namespace: config.component.namespace.clone(),
                voice_agent: config.component.voice_agent.clone(),
                component: COMPONENT,
                pod: config.pod_name.clone(),
            },
        );
        Ok(State {
            exporter: Arc::new(Exporter::new()?),
            answers: Answers::new(config.replay_ttl, config.replay_capacity),
            runtime,
            recorder,
            webhooks,
            pusher,
            ready: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            proxies: AtomicUsize::new(0),
            proxies_changed: Notify::new(),
            config,
        })
    }

    /// A state whose Call recorder follows `config.call_recording`: the
    /// cluster when one is found, else none (logged once).
    pub async fn from_config(config: Config) -> Result<Self, Error> {
        let recorder = calls::recorder(
            config.call_recording,
            &config.namespace,
            config.kube_timeout,
        )
        .await;
        Self::new(config, recorder)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics.
    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    pub(crate) fn exporter_arc(&self) -> Arc<Exporter> {
        Arc::clone(&self.exporter)
    }

    /// The runtime sessions client.
    pub fn runtime(&self) -> &RuntimeClient {
        &self.runtime
    }

    /// The Call recorder.
    pub fn recorder(&self) -> Arc<dyn CallRecorder> {
        Arc::clone(&self.recorder)
    }

    /// The answers of recent calls.
    pub fn answers(&self) -> &Answers {
        &self.answers
    }

    pub(crate) fn webhooks(&self) -> Option<&Webhooks> {
        self.webhooks.as_ref()
    }

    pub(crate) fn pusher(&self) -> &SamplePusher {
        &self.pusher
    }

    /// Whether the gateway takes traffic (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the gateway ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Media Streams sockets being proxied now.
    pub fn active_proxies(&self) -> usize {
        self.proxies.load(Ordering::Acquire)
    }

    /// Counts a voice webhook in flight until the guard drops.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.push_concurrency();
        InFlight(self)
    }

    pub(crate) fn proxy_started(&self) {
        self.proxies.fetch_add(1, Ordering::AcqRel);
        self.exporter.media_proxy_add(1);
        self.push_concurrency();
    }

    pub(crate) fn proxy_ended(&self) {
        self.proxies.fetch_sub(1, Ordering::AcqRel);
        self.exporter.media_proxy_add(-1);
        self.push_concurrency();
        self.proxies_changed.notify_waiters();
    }

    /// The gateway's concurrency for the autoscaler: webhooks in flight plus
    /// proxied calls.
    fn push_concurrency(&self) {
        let n = self.in_flight.load(Ordering::Acquire) + self.proxies.load(Ordering::Acquire);
        self.pusher.gauge(GAUGE_CONCURRENCY, n as f64);
    }

    /// Waits until no media stream is proxied, or `limit` passed; returns
    /// the streams still open.
    pub async fn drain(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.proxies_changed.notified();
            let active = self.active_proxies();
            if active == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.active_proxies();
            }
        }
    }
}

/// A voice webhook in flight.
pub(crate) struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.push_concurrency();
    }
}

/// Serves [`router`] on `listener` until `shutdown` completes: readiness
/// turns off at once, in-flight requests finish, then proxied calls get up
/// to `drain_timeout` to end.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    state.set_ready(true);
    let stopping = Arc::clone(&state);
    tracing::info!(
        addr = %listener.local_addr()?,
        transport = state.config().transport().as_str(),
        "gateway serving"
    );
    axum::serve(
        voice_agent_http::nodelay(listener),
        router(Arc::clone(&state)),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        stopping.set_ready(false);
    })
    .await?;
    let left = state.drain(state.config().drain_timeout).await;
    if left > 0 {
        tracing::warn!(
            streams = left,
            "shutting down with media streams still open"
        );
    }
    Ok(())
}

/// Binds `config.listen`, builds the [`State`] and [`serve`]s until
/// `shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen).await?;
    let state = Arc::new(State::from_config(config).await?);
    serve(listener, state, shutdown).await
}
