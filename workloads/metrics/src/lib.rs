//! The cluster's metrics service: the autoscaler's source of truth.
//!
//! Runtimes and workers post latency and load samples (`POST /v1/samples`);
//! the service keeps sliding-window quantiles (6 s and 60 s) and per-pod gauges
//! per VoiceAgent and component, answers the operator's `GET /v1/signals`, and
//! exposes Prometheus histograms on `/metrics` (DESIGN.md §5 "metrics").
//!
//! This crate is a library; `voice-agent metrics` runs it:
//!
//! - [`Config`]: limits and listen address, from `VOICE_AGENT_METRICS_*`;
//! - [`State`]: the series store behind a lock, with an injectable [`Clock`];
//! - [`router`]: the HTTP API with body-limit, timeout and tracing layers,
//!   and with `VOICE_AGENT_METRICS_EXTERNAL_METRICS=true` the
//!   [`external`] metrics API for HorizontalPodAutoscalers;
//! - [`run_sweeper`]: the background task expiring stale series;
//! - [`serve`]: all of the above on a listener until shutdown.
//!
//! Everything is in memory: a restart loses at most the last 60 s of
//! windows, which the pods refill within a window's length.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use voice_agent_proto::{Component, SampleBatch, SignalsList, SignalsResponse};

pub mod api;
pub mod bench;
pub mod clock;
pub mod config;
pub mod exporter;
pub mod external;
pub mod loopback;
pub mod selector;
pub mod sketch;
pub mod store;
pub mod tls;
pub mod window;

pub use api::router;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError};
pub use exporter::{Exporter, RejectReason};
pub use sketch::Sketch;
pub use store::{IngestError, Store, SweepStats};
pub use window::SlidingWindow;

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Metrics;

/// How often [`run_sweeper`] expires stale gauges and idle series.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Failures of the service outside request handling.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Registering the Prometheus metrics failed.
    #[error("prometheus registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Everything the handlers share: config, clock, store and exporter.
///
/// The store sits behind one `std` mutex: every operation on it is short
/// and synchronous, and no lock is ever held across an `.await`.
pub struct State {
    config: Config,
    clock: Arc<dyn Clock>,
    exporter: Arc<Exporter>,
    store: Mutex<Store>,
    /// Serializes `/metrics` renders, which reset and refill the load
    /// gauges; two interleaved renders could each see the other's reset.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex even if a panicking thread poisoned it: every mutation of
/// the store is validated before it starts, so a panic cannot leave a batch
/// half applied.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// A state on the system clock.
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A state on `clock` (tests and benchmarks use a [`ManualClock`]).
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let exporter = Arc::new(Exporter::new()?);
        let store = Store::new(&config, Arc::clone(&exporter));
        Ok(State {
            config,
            clock,
            exporter,
            store: Mutex::new(store),
            scrape: Mutex::new(()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The clock's time, Unix epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Applies a batch all or nothing (see [`Store::ingest`]) and counts a
    /// rejection by reason.
    pub fn ingest(&self, batch: &SampleBatch) -> Result<usize, IngestError> {
        let result = {
            let mut store = lock(&self.store);
            store.ingest(batch, self.clock.now_ms())
        };
        if let Err(err) = &result {
            self.reject(err);
        }
        result
    }

    /// Parses a JSON body and applies it like [`State::ingest`].
    pub fn ingest_json(&self, body: &[u8]) -> Result<usize, IngestError> {
        match serde_json::from_slice::<SampleBatch>(body) {
            Ok(batch) => self.ingest(&batch),
            Err(err) => {
                let err = IngestError::Malformed(err.to_string());
                self.reject(&err);
                Err(err)
            }
        }
    }

    /// Counts a refused batch in `voice_agent_metrics_batches_rejected_total`.
    pub fn reject(&self, err: &IngestError) {
        // Debug, not warn: one misbehaving pod must not flood the log.
        tracing::debug!(reason = err.reason().as_str(), error = %err, "batch rejected");
        self.exporter.count_rejected(err.reason());
    }

    /// The signals of one VoiceAgent (empty `components` when unknown).
    pub fn signals(&self, namespace: &str, voice_agent: &str) -> SignalsResponse {
        let now = self.clock.now_ms();
        lock(&self.store).signals(namespace, voice_agent, now)
    }

    /// The signals of every VoiceAgent with data in `namespace`, or in the
    /// cluster when `None`, all computed for the same instant.
    ///
    /// The lock is taken per agent, not for the whole list, so a large
    /// namespace does not stall ingestion; an agent that appears meanwhile
    /// is simply in the next answer.
    pub fn signals_list(&self, namespace: Option<&str>) -> SignalsList {
        let now = self.clock.now_ms();
        let agents = lock(&self.store).agents(namespace);
        let items = agents
            .iter()
            .map(|(ns, va)| lock(&self.store).signals(ns, va, now))
            .filter(|s| !s.components.is_empty())
            .collect();
        SignalsList { items }
    }

    /// Series held now.
    pub fn series(&self) -> usize {
        lock(&self.store).series()
    }

    /// Expires stale gauges and idle series now.
    pub fn sweep(&self) -> SweepStats {
        let now = self.clock.now_ms();
        lock(&self.store).sweep(now)
    }

    /// The Prometheus text exposition, with load gauges computed from the
    /// pods that are fresh now.
    pub fn render_metrics(&self) -> String {
        let _one_at_a_time = lock(&self.scrape);
        let rows = {
            let now = self.clock.now_ms();
            lock(&self.store).load_rows(now)
        };
        self.exporter.set_load(&rows);
        self.exporter.render()
    }
}

/// Sweeps every [`SWEEP_INTERVAL`] until `shutdown` completes. The sweep is
/// synchronous, so the store lock is never held across an `.await` and
/// aborting the task is safe too.
pub async fn run_sweeper(state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticks.tick() => {
                let stats = state.sweep();
                if stats != SweepStats::default() {
                    tracing::debug!(
                        gauges = stats.gauges,
                        latency_series = stats.latency_series,
                        "expired series"
                    );
                }
            }
        }
    }
}

/// Serves [`router`] on `listener`, with the sweeper, until `shutdown`
/// completes; then stops accepting, finishes in-flight requests and stops
/// the sweeper.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_sweeper, stopped) = tokio::sync::watch::channel(());
    let sweeper = tokio::spawn(run_sweeper(Arc::clone(&state), async move {
        let mut stopped = stopped;
        // Err once the sender is dropped: that is the stop signal.
        while stopped.changed().await.is_ok() {}
    }));
    let served = axum::serve(voice_agent_http::nodelay(listener), router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    drop(stop_sweeper);
    // A sweeper panic is a bug, but serving already ended cleanly.
    if let Err(err) = sweeper.await {
        tracing::error!(error = %err, "sweeper task failed");
    }
    Ok(served?)
}
