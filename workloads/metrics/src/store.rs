//! In-memory series: latency windows and per-pod gauges, keyed by namespace,
//! VoiceAgent and component. Every method takes the time as `now_ms`, so
//! windows and expiry are testable without a clock or sleeping.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prometheus::Histogram;
use thiserror::Error;
use voice_agent_proto::metrics::{GAUGE_ACTIVE_CALLS, GAUGE_CONCURRENCY};
use voice_agent_proto::{
    Component, ComponentSignals, ProtoError, SampleBatch, SampleKind, SignalsResponse, Stage,
    StageWindow,
};

use crate::config::Config;
use crate::exporter::{Exporter, LoadRow, RejectReason};
use crate::sketch::Accumulator;
use crate::window::{LONG_WINDOW_SECONDS, SHORT_WINDOW_SECONDS, SlidingWindow};

/// How long a latency series with nothing in its windows is kept, so that
/// Prometheus scrapes still see its final histogram before it goes.
const SERIES_IDLE_MS: i64 = LONG_WINDOW_SECONDS as i64 * 1000;

const COMPONENTS: usize = Component::ALL.len();
const STAGES: usize = Stage::ALL.len();

/// Why a batch was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IngestError {
    /// The body is not a JSON sample batch.
    #[error("malformed sample batch: {0}")]
    Malformed(String),
    /// The body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The `Content-Type` is not JSON.
    #[error("content type {0:?} is not application/json")]
    UnsupportedMediaType(String),
    /// A sample is invalid or the batch has too many samples.
    #[error(transparent)]
    Invalid(#[from] ProtoError),
    /// Accepting the batch would create more series than allowed.
    #[error(
        "batch would add {new} series to {current}, more than the limit of {max}; \
         nothing was applied"
    )]
    SeriesLimit {
        /// Series the batch would create.
        new: usize,
        /// Series held now.
        current: usize,
        /// The configured cap.
        max: usize,
    },
}

impl IngestError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::Malformed(_) => 400,
            IngestError::BodyTooLarge { .. } => 413,
            IngestError::UnsupportedMediaType(_) => 415,
            IngestError::Invalid(e) => e.http_status(),
            IngestError::SeriesLimit { .. } => 422,
        }
    }

    /// The `error.code` of the error body.
    pub fn code(&self) -> &'static str {
        use voice_agent_proto::error::codes;
        match self {
            IngestError::Malformed(_) => codes::INVALID_ARGUMENT,
            IngestError::BodyTooLarge { .. } => codes::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedMediaType(_) => codes::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Invalid(e) => e.code(),
            IngestError::SeriesLimit { .. } => codes::SERIES_LIMIT_EXCEEDED,
        }
    }

    /// The `reason` label of the rejection counter.
    pub fn reason(&self) -> RejectReason {
        match self {
            IngestError::Malformed(_) => RejectReason::Malformed,
            IngestError::BodyTooLarge { .. } => RejectReason::TooLarge,
            IngestError::UnsupportedMediaType(_) => RejectReason::UnsupportedMediaType,
            IngestError::Invalid(ProtoError::TooManySamples { .. }) => RejectReason::TooLarge,
            IngestError::Invalid(_) => RejectReason::Invalid,
            IngestError::SeriesLimit { .. } => RejectReason::SeriesLimit,
        }
    }
}

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Gauge series past their staleness.
    pub gauges: usize,
    /// Latency series with empty windows and no recent samples.
    pub latency_series: usize,
}

/// The latency of one (namespace, voiceAgent, component, stage).
struct LatencySeries {
    window: SlidingWindow,
    /// This series' label set in the stage histogram.
    histogram: Option<Histogram>,
    /// Server time of the last sample, for idle expiry.
    last_ingest_ms: i64,
}

/// The latest value of one gauge of one pod.
#[derive(Debug, Clone, Copy)]
struct Gauge {
    value: f64,
    at_ms: i64,
}

#[derive(Default)]
struct ComponentData {
    /// Indexed by `Stage as usize`; boxed because most stay empty.
    latency: [Option<Box<LatencySeries>>; STAGES],
    /// Pod name -> gauge name -> latest value.
    pods: HashMap<String, HashMap<String, Gauge>>,
    /// Newest `at` of any accepted sample.
    newest_at_ms: Option<i64>,
}

struct Agent {
    /// Kept for label sets of new series, since map keys are not at hand.
    namespace: String,
    name: String,
    /// Indexed by `Component as usize`.
    components: [ComponentData; COMPONENTS],
}

impl Agent {
    fn new(namespace: &str, name: &str) -> Self {
        Agent {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            components: Default::default(),
        }
    }
}

/// All series, with the limits they are held to.
pub struct Store {
    /// Namespace -> VoiceAgent -> data. Nested maps so that lookups by
    /// borrowed `&str` need no key allocation, and one namespace is listed
    /// without scanning the others.
    namespaces: HashMap<String, HashMap<String, Agent>>,
    latency_series: usize,
    gauge_series: usize,
    max_samples: usize,
    max_future_skew_ms: i64,
    staleness_ms: i64,
    max_series: usize,
    exporter: Arc<Exporter>,
    /// Scratch histogram reused by signal queries.
    acc: Accumulator,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("latency_series", &self.latency_series)
            .field("gauge_series", &self.gauge_series)
            .finish_non_exhaustive()
    }
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A borrowed series key, for counting a batch's new series without
/// allocating.
#[derive(PartialEq, Eq, Hash)]
enum NewSeries<'a> {
    Latency(&'a str, &'a str, Component, Stage),
    Gauge(&'a str, &'a str, Component, &'a str, &'a str),
}

impl Store {
    /// An empty store with `config`'s limits, reporting into `exporter`.
    pub fn new(config: &Config, exporter: Arc<Exporter>) -> Self {
        Store {
            namespaces: HashMap::new(),
            latency_series: 0,
            gauge_series: 0,
            max_samples: config.max_samples_per_batch,
            max_future_skew_ms: duration_ms(config.max_future_skew),
            staleness_ms: duration_ms(config.gauge_staleness),
            max_series: config.max_series,
            exporter,
            acc: Accumulator::new(),
        }
    }

    /// Latency plus gauge series held now (counted against the cap).
    pub fn series(&self) -> usize {
        self.latency_series + self.gauge_series
    }

    fn agent(&self, namespace: &str, voice_agent: &str) -> Option<&Agent> {
        self.namespaces.get(namespace)?.get(voice_agent)
    }

    /// Applies a batch all or nothing: validates every sample and checks the
    /// series cap first, and only then changes anything. Returns the number
    /// of samples applied.
    pub fn ingest(&mut self, batch: &SampleBatch, now_ms: i64) -> Result<usize, IngestError> {
        batch.validate(now_ms, self.max_samples, self.max_future_skew_ms)?;
        let current = self.series();
        // A batch creates at most one series per sample, so only a batch
        // that could cross the cap pays for counting its new series.
        if current.saturating_add(batch.samples.len()) > self.max_series {
            let new = self.count_new_series(batch);
            if current + new > self.max_series {
                return Err(IngestError::SeriesLimit {
                    new,
                    current,
                    max: self.max_series,
                });
            }
        }
        for sample in &batch.samples {
            self.apply(sample, now_ms);
        }
        self.exporter.count_samples(batch.samples.len() as u64);
        self.exporter.set_series(self.series());
        Ok(batch.samples.len())
    }

    /// Distinct series of `batch` that do not exist yet.
    fn count_new_series(&self, batch: &SampleBatch) -> usize {
        let mut new = HashSet::new();
        for s in &batch.samples {
            let data = self
                .agent(&s.namespace, &s.voice_agent)
                .map(|a| &a.components[s.component as usize]);
            match s.kind {
                SampleKind::Latency => {
                    // Validation guarantees a stage name.
                    let Ok(stage) = s.name.parse::<Stage>() else {
                        continue;
                    };
                    if data.is_none_or(|d| d.latency[stage as usize].is_none()) {
                        new.insert(NewSeries::Latency(
                            &s.namespace,
                            &s.voice_agent,
                            s.component,
                            stage,
                        ));
                    }
                }
                SampleKind::Gauge => {
                    let exists = data
                        .and_then(|d| d.pods.get(s.pod.as_str()))
                        .is_some_and(|g| g.contains_key(s.name.as_str()));
                    if !exists {
                        new.insert(NewSeries::Gauge(
                            &s.namespace,
                            &s.voice_agent,
                            s.component,
                            &s.pod,
                            &s.name,
                        ));
                    }
                }
            }
        }
        new.len()
    }

    /// Applies one validated sample; cannot fail.
    fn apply(&mut self, s: &voice_agent_proto::Sample, now_ms: i64) {
        // Look up by &str first; allocate keys only for a new namespace or
        // agent.
        let agents = match self.namespaces.get_mut(s.namespace.as_str()) {
            Some(agents) => agents,
            None => self.namespaces.entry(s.namespace.clone()).or_default(),
        };
        let agent = match agents.get_mut(s.voice_agent.as_str()) {
            Some(agent) => agent,
            None => agents
                .entry(s.voice_agent.clone())
                .or_insert_with(|| Agent::new(&s.namespace, &s.voice_agent)),
        };
        let data = &mut agent.components[s.component as usize];
        data.newest_at_ms = Some(data.newest_at_ms.map_or(s.at, |t| t.max(s.at)));
        match s.kind {
            SampleKind::Latency => {
                let Ok(stage) = s.name.parse::<Stage>() else {
                    return;
                };
                let series = data.latency[stage as usize].get_or_insert_with(|| {
                    self.latency_series += 1;
                    Box::new(LatencySeries {
                        window: SlidingWindow::new(),
                        histogram: self.exporter.latency_histogram(
                            stage,
                            &agent.namespace,
                            &agent.name,
                            s.component,
                        ),
                        last_ingest_ms: now_ms,
                    })
                });
                series.last_ingest_ms = now_ms;
                // Too old for the windows still counts for Prometheus.
                series.window.record(s.value, s.at, now_ms);
                if let Some(h) = &series.histogram {
                    h.observe(s.value / 1000.0);
                }
            }
            SampleKind::Gauge => {
                let gauges = match data.pods.get_mut(s.pod.as_str()) {
                    Some(g) => g,
                    None => data.pods.entry(s.pod.clone()).or_default(),
                };
                let new = Gauge {
                    value: s.value,
                    at_ms: s.at,
                };
                match gauges.get_mut(s.name.as_str()) {
                    // Out-of-order delivery: an older reading never
                    // replaces a newer one.
                    Some(g) => {
                        if s.at >= g.at_ms {
                            *g = new;
                        }
                    }
                    None => {
                        gauges.insert(s.name.clone(), new);
                        self.gauge_series += 1;
                    }
                }
            }
        }
    }

    fn fresh(&self, g: &Gauge, now_ms: i64) -> bool {
        now_ms.saturating_sub(g.at_ms) <= self.staleness_ms
    }

    /// The signals of one component, or `None` when it has no fresh gauge
    /// and nothing in its windows.
    fn component_signals(
        &mut self,
        namespace: &str,
        voice_agent: &str,
        component: Component,
        now_ms: i64,
    ) -> Option<ComponentSignals> {
        let staleness_ms = self.staleness_ms;
        let data =
            &self.namespaces.get(namespace)?.get(voice_agent)?.components[component as usize];
        let fresh = |g: &Gauge| now_ms.saturating_sub(g.at_ms) <= staleness_ms;
        let (mut pods, mut calls, mut conc_sum, mut conc_pods) = (0u32, 0.0, 0.0, 0u32);
        for gauges in data.pods.values() {
            let mut any = false;
            for (name, g) in gauges {
                if !fresh(g) {
                    continue;
                }
                any = true;
                if name == GAUGE_ACTIVE_CALLS {
                    calls += g.value;
                } else if name == GAUGE_CONCURRENCY {
                    conc_sum += g.value;
                    conc_pods += 1;
                }
            }
            pods += u32::from(any);
        }
        let mut latency = Vec::new();
        for stage in Stage::ALL {
            let Some(series) = &data.latency[stage as usize] else {
                continue;
            };
            let windows = series.window.percentiles(now_ms, &mut self.acc);
            for (seconds, (count, [p50, p95, p99])) in [SHORT_WINDOW_SECONDS, LONG_WINDOW_SECONDS]
                .into_iter()
                .zip(windows)
            {
                if count > 0 {
                    latency.push(StageWindow {
                        stage,
                        window_seconds: seconds,
                        count,
                        p50_ms: p50,
                        p95_ms: p95,
                        p99_ms: p99,
                    });
                }
            }
        }
        if pods == 0 && latency.is_empty() {
            return None;
        }
        let per = |sum: f64, n: u32| if n == 0 { 0.0 } else { sum / f64::from(n) };
        Some(ComponentSignals {
            component,
            pods,
            active_calls: calls,
            active_calls_per_pod: per(calls, pods),
            concurrency_per_pod: per(conc_sum, conc_pods),
            latency,
            fresh_at_ms: data.newest_at_ms,
        })
    }

    /// The signals of one VoiceAgent; empty `components` when it has none.
    pub fn signals(&mut self, namespace: &str, voice_agent: &str, now_ms: i64) -> SignalsResponse {
        let components = Component::ALL
            .into_iter()
            .filter_map(|c| self.component_signals(namespace, voice_agent, c, now_ms))
            .collect();
        SignalsResponse {
            namespace: namespace.to_owned(),
            voice_agent: voice_agent.to_owned(),
            generated_at_ms: now_ms,
            components,
        }
    }

    /// (namespace, name) of every VoiceAgent held in `namespace` (every
    /// namespace when `None`), sorted.
    pub fn agents(&self, namespace: Option<&str>) -> Vec<(String, String)> {
        let mut keys: Vec<(String, String)> = self
            .namespaces
            .iter()
            .filter(|(ns, _)| namespace.is_none_or(|want| want == ns.as_str()))
            .flat_map(|(ns, agents)| agents.keys().map(move |va| (ns.clone(), va.clone())))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// The signals of every VoiceAgent with data in `namespace` (every
    /// namespace when `None`), ordered by namespace, then name.
    pub fn signals_list(&mut self, namespace: Option<&str>, now_ms: i64) -> Vec<SignalsResponse> {
        self.agents(namespace)
            .iter()
            .map(|(ns, va)| self.signals(ns, va, now_ms))
            .filter(|s| !s.components.is_empty())
            .collect()
    }

    /// Per (namespace, voiceAgent, component): active calls and concurrency
    /// summed over fresh pods, for the Prometheus gauges.
    pub(crate) fn load_rows(&self, now_ms: i64) -> Vec<LoadRow> {
        let mut rows = Vec::new();
        for agents in self.namespaces.values() {
            for agent in agents.values() {
                for component in Component::ALL {
                    let data = &agent.components[component as usize];
                    let (mut calls, mut conc) = (None::<f64>, None::<f64>);
                    for g in data.pods.values() {
                        for (name, v) in g.iter().filter(|(_, v)| self.fresh(v, now_ms)) {
                            let sum = match name.as_str() {
                                GAUGE_ACTIVE_CALLS => &mut calls,
                                GAUGE_CONCURRENCY => &mut conc,
                                _ => continue,
                            };
                            *sum = Some(sum.unwrap_or(0.0) + v.value);
                        }
                    }
                    if calls.is_some() || conc.is_some() {
                        rows.push(LoadRow {
                            namespace: agent.namespace.clone(),
                            voice_agent: agent.name.clone(),
                            component,
                            active_calls: calls,
                            concurrency: conc,
                        });
                    }
                }
            }
        }
        rows
    }

    /// Removes stale gauges, idle latency series (and their Prometheus label
    /// sets), then pods, agents and namespaces left empty.
    pub fn sweep(&mut self, now_ms: i64) -> SweepStats {
        let staleness_ms = self.staleness_ms;
        let exporter = &self.exporter;
        let mut stats = SweepStats::default();
        for agents in self.namespaces.values_mut() {
            for agent in agents.values_mut() {
                for component in Component::ALL {
                    let data = &mut agent.components[component as usize];
                    for gauges in data.pods.values_mut() {
                        let before = gauges.len();
                        gauges.retain(|_, g| now_ms.saturating_sub(g.at_ms) <= staleness_ms);
                        stats.gauges += before - gauges.len();
                    }
                    data.pods.retain(|_, g| !g.is_empty());
                    for stage in Stage::ALL {
                        let slot = &mut data.latency[stage as usize];
                        let idle = slot.as_ref().is_some_and(|s| {
                            s.window.is_empty(now_ms)
                                && now_ms.saturating_sub(s.last_ingest_ms) >= SERIES_IDLE_MS
                        });
                        if idle {
                            *slot = None;
                            stats.latency_series += 1;
                            exporter.remove_latency(
                                stage,
                                &agent.namespace,
                                &agent.name,
                                component,
                            );
                        }
                    }
                    if data.pods.is_empty() && data.latency.iter().all(Option::is_none) {
                        data.newest_at_ms = None;
                    }
                }
            }
            agents.retain(|_, a| a.components.iter().any(|d| d.newest_at_ms.is_some()));
        }
        self.namespaces.retain(|_, agents| !agents.is_empty());
        self.gauge_series -= stats.gauges;
        self.latency_series -= stats.latency_series;
        exporter.set_series(self.series());
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voice_agent_proto::Sample;

    const T0: i64 = 1_700_000_000_000;

    fn store(max_series: usize) -> Store {
        let config = Config {
            max_series,
            ..Config::default()
        };
        Store::new(&config, Arc::new(Exporter::new().expect("exporter")))
    }

    fn sample(
        va: &str,
        component: Component,
        kind: SampleKind,
        name: &str,
        value: f64,
        at: i64,
    ) -> Sample {
        Sample {
            namespace: "default".into(),
            voice_agent: va.into(),
            component,
            pod: format!("{va}-{component}-0"),
            kind,
            name: name.into(),
            value,
            at,
        }
    }

    #[test]
    fn out_of_order_gauges_keep_the_newest() {
        let mut s = store(100);
        let g = |v, at| {
            sample(
                "a",
                Component::Runtime,
                SampleKind::Gauge,
                GAUGE_ACTIVE_CALLS,
                v,
                at,
            )
        };
        s.ingest(
            &SampleBatch {
                samples: vec![g(5.0, T0), g(9.0, T0 - 1_000)],
            },
            T0,
        )
        .expect("valid");
        let sig = s.signals("default", "a", T0);
        assert_eq!(sig.components[0].active_calls, 5.0);
        assert_eq!(s.series(), 1);
    }

    #[test]
    fn sweep_removes_empty_agents_and_namespaces() {
        let mut s = store(100);
        let batch = SampleBatch {
            samples: vec![
                sample(
                    "a",
                    Component::Tts,
                    SampleKind::Latency,
                    "ttsTtfb",
                    80.0,
                    T0,
                ),
                sample(
                    "a",
                    Component::Tts,
                    SampleKind::Gauge,
                    GAUGE_CONCURRENCY,
                    2.0,
                    T0,
                ),
            ],
        };
        s.ingest(&batch, T0).expect("valid");
        assert_eq!(s.sweep(T0 + 15_000), SweepStats::default());
        assert_eq!(
            s.sweep(T0 + 15_001),
            SweepStats {
                gauges: 1,
                latency_series: 0
            }
        );
        assert_eq!(
            s.sweep(T0 + 60_000),
            SweepStats {
                gauges: 0,
                latency_series: 1
            }
        );
        assert_eq!(s.series(), 0);
        assert!(s.namespaces.is_empty());
    }
}
