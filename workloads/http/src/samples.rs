//! Pushing latency and load samples to the cluster's metrics service
//! (`POST /v1/samples`, DESIGN.md §5 "metrics").
//!
//! Recording never waits: samples go into a bounded queue with `try_send`
//! (a full queue drops the sample and counts it) and a background task sends
//! them in batches every [`FLUSH_INTERVAL`]. Gauges (active calls, request
//! concurrency) keep their latest value and are re-sent on every flush, so the
//! metrics service sees them as fresh while the pod lives. Metrics are best
//! effort: a failed batch is logged (at most once a minute) and dropped, never
//! retried into an ever-growing backlog.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use voice_agent_proto::{Component, Sample, SampleBatch, SampleKind, Stage};

/// How often queued samples and gauges are sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Latency samples queued before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most samples per request (the metrics service refuses bigger batches).
pub const MAX_BATCH: usize = 1000;
/// Timeout of one `POST /v1/samples`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Who the samples are about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSource {
    /// Namespace of the VoiceAgent.
    pub namespace: String,
    /// Name of the VoiceAgent.
    pub voice_agent: String,
    /// The reporting component.
    pub component: Component,
    /// The reporting pod.
    pub pod: String,
}

/// Counters of the pusher, for the component's own `/metrics`.
#[derive(Debug, Default)]
pub struct PusherStats {
    /// Samples delivered (202 from the metrics service).
    pub sent: AtomicU64,
    /// Samples dropped: queue full or the request failed.
    pub dropped: AtomicU64,
    /// Failed requests.
    pub failed_requests: AtomicU64,
}

/// A handle for recording samples; cheap to clone.
#[derive(Clone, Debug)]
pub struct SamplePusher {
    inner: Option<Arc<Inner>>,
    stats: Arc<PusherStats>,
}

#[derive(Debug)]
struct Inner {
    source: SampleSource,
    queue: mpsc::Sender<Sample>,
    gauges: Mutex<BTreeMap<String, f64>>,
}

impl SamplePusher {
    /// A pusher that records nothing (no metrics service configured).
    pub fn disabled() -> Self {
        Self {
            inner: None,
            stats: Arc::default(),
        }
    }

    /// Starts the background sender towards `metrics_url` (the service's base
    /// URL). `None` gives a [`disabled`](Self::disabled) pusher. Must be
    /// called within a Tokio runtime. The task ends when every handle is
    /// dropped, after a last flush.
    pub fn spawn(metrics_url: Option<String>, source: SampleSource) -> Self {
        let Some(url) = metrics_url else {
            return Self::disabled();
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let inner = Arc::new(Inner {
            source,
            queue: tx,
            gauges: Mutex::new(BTreeMap::new()),
        });
        let stats = Arc::new(PusherStats::default());
        let endpoint = format!("{}/v1/samples", url.trim_end_matches('/'));
        tokio::spawn(run(
            endpoint,
            rx,
            Arc::downgrade(&inner),
            Arc::clone(&stats),
        ));
        Self {
            inner: Some(inner),
            stats,
        }
    }

    /// Whether samples go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The pusher's counters.
    pub fn stats(&self) -> &PusherStats {
        &self.stats
    }

    /// Records one latency observation of `stage`, in milliseconds.
    pub fn latency(&self, stage: Stage, millis: f64) {
        let Some(inner) = &self.inner else { return };
        if !millis.is_finite() || millis < 0.0 {
            return;
        }
        let sample = inner.sample(SampleKind::Latency, stage.as_str(), millis, now_ms());
        if inner.queue.try_send(sample).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets gauge `name` (e.g. [`voice_agent_proto::metrics::GAUGE_ACTIVE_CALLS`]);
    /// the latest value is sent on every flush.
    pub fn gauge(&self, name: &str, value: f64) {
        let Some(inner) = &self.inner else { return };
        if !value.is_finite() || value < 0.0 {
            return;
        }
        if let Ok(mut gauges) = inner.gauges.lock() {
            gauges.insert(name.to_string(), value);
        }
    }
}

impl Inner {
    fn sample(&self, kind: SampleKind, name: &str, value: f64, at: i64) -> Sample {
        Sample {
            namespace: self.source.namespace.clone(),
            voice_agent: self.source.voice_agent.clone(),
            component: self.source.component,
            pod: self.source.pod.clone(),
            kind,
            name: name.to_string(),
            value,
            at,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn run(
    endpoint: String,
    mut rx: mpsc::Receiver<Sample>,
    inner: std::sync::Weak<Inner>,
    stats: Arc<PusherStats>,
) {
    let client = match crate::client_builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "metrics sample pusher disabled: no HTTP client");
            return;
        }
    };
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Sample> = Vec::new();
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let open = tokio::select! {
            received = rx.recv() => match received {
                Some(sample) => {
                    batch.push(sample);
                    if batch.len() < MAX_BATCH {
                        continue;
                    }
                    true
                }
                None => false,
            },
            _ = ticker.tick() => true,
        };
        // Gauges ride along with every flush, stamped now.
        if let Some(inner) = inner.upgrade()
            && let Ok(gauges) = inner.gauges.lock()
        {
            let at = now_ms();
            for (name, value) in gauges.iter() {
                batch.push(inner.sample(SampleKind::Gauge, name, *value, at));
            }
        }
        if !batch.is_empty() {
            let count = batch.len() as u64;
            let body = SampleBatch {
                samples: std::mem::take(&mut batch),
            };
            match client.post(&endpoint).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    stats.sent.fetch_add(count, Ordering::Relaxed);
                }
                outcome => {
                    stats.dropped.fetch_add(count, Ordering::Relaxed);
                    stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                    let now = tokio::time::Instant::now();
                    if last_warning.is_none_or(|t| now.duration_since(t) > Duration::from_secs(60))
                    {
                        last_warning = Some(now);
                        match outcome {
                            Ok(resp) => {
                                tracing::warn!(status = %resp.status(), %endpoint, "metrics service refused samples")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, %endpoint, "metrics service unreachable; samples dropped")
                            }
                        }
                    }
                }
            }
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::routing::post;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latency_and_gauges_reach_the_metrics_service() {
        let (tx, mut rx) = mpsc::unbounded_channel::<SampleBatch>();
        let app = axum::Router::new().route(
            "/v1/samples",
            post(move |Json(batch): Json<SampleBatch>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(batch);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let pusher = SamplePusher::spawn(
            Some(format!("http://{addr}/")),
            SampleSource {
                namespace: "shop".into(),
                voice_agent: "front-desk".into(),
                component: Component::Runtime,
                pod: "front-desk-runtime-0".into(),
            },
        );
        pusher.latency(Stage::E2e, 812.5);
        pusher.latency(Stage::E2e, f64::NAN); // refused
        pusher.gauge(voice_agent_proto::metrics::GAUGE_ACTIVE_CALLS, 3.0);
        let mut seen_latency = false;
        let mut seen_gauge = false;
        while !(seen_latency && seen_gauge) {
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a batch within 5 s")
                .expect("channel open");
            assert!(batch.validate(now_ms(), MAX_BATCH, 60_000).is_ok());
            for s in batch.samples {
                assert_eq!(s.voice_agent, "front-desk");
                match s.kind {
                    SampleKind::Latency => {
                        assert_eq!((s.name.as_str(), s.value), ("e2e", 812.5));
                        seen_latency = true;
                    }
                    SampleKind::Gauge => {
                        assert_eq!((s.name.as_str(), s.value), ("activeCalls", 3.0));
                        seen_gauge = true;
                    }
                }
            }
        }
        assert_eq!(pusher.stats().dropped.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn disabled_pusher_records_nothing() {
        let pusher = SamplePusher::spawn(
            None,
            SampleSource {
                namespace: "n".into(),
                voice_agent: "a".into(),
                component: Component::Gateway,
                pod: "p".into(),
            },
        );
        assert!(!pusher.is_enabled());
        pusher.latency(Stage::Webhook, 1.0);
        pusher.gauge("activeCalls", 1.0);
    }

    #[tokio::test]
    async fn unreachable_service_drops_and_counts() {
        // A port nobody listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let pusher = SamplePusher::spawn(
            Some(format!("http://{addr}")),
            SampleSource {
                namespace: "n".into(),
                voice_agent: "a".into(),
                component: Component::Agent,
                pod: "p".into(),
            },
        );
        pusher.latency(Stage::AgentTotal, 5.0);
        for _ in 0..50 {
            if pusher.stats().dropped.load(Ordering::Relaxed) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the failed sample was not counted as dropped");
    }
}
