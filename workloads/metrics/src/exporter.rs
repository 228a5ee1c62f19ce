//! The Prometheus side: per-stage latency histograms, load gauges and the
//! service's own counters, rendered in the text exposition format.

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use voice_agent_proto::{Component, Stage};

/// Histogram buckets in seconds: 5 ms to 10 s, the span of voice latencies.
pub const LATENCY_BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Labels of the latency histograms and load gauges.
const SERIES_LABELS: [&str; 3] = ["namespace", "voice_agent", "component"];

/// Why a batch was refused, as the `reason` label of
/// `voice_agent_metrics_batches_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a JSON sample batch.
    Malformed,
    /// Body over the byte limit or too many samples.
    TooLarge,
    /// A sample failed validation.
    Invalid,
    /// New series would exceed the series cap.
    SeriesLimit,
    /// A `Content-Type` other than JSON.
    UnsupportedMediaType,
}

impl RejectReason {
    /// Every reason, so all label values exist from the start.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::Malformed,
        RejectReason::TooLarge,
        RejectReason::Invalid,
        RejectReason::SeriesLimit,
        RejectReason::UnsupportedMediaType,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::Invalid => "invalid",
            RejectReason::SeriesLimit => "series_limit",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
        }
    }
}

/// The registry and every metric the service exports.
pub struct Exporter {
    registry: Registry,
    /// One histogram per stage, indexed by `Stage as usize`.
    latency: Vec<HistogramVec>,
    active_calls: GaugeVec,
    concurrency: GaugeVec,
    samples: IntCounter,
    rejected: IntCounterVec,
    series: IntGauge,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let latency = Stage::ALL
            .into_iter()
            .map(|stage| {
                let opts = HistogramOpts::new(
                    stage.metric_name(),
                    format!("Latency of the {stage} stage, as reported by the pods"),
                )
                .buckets(LATENCY_BUCKETS_SECONDS.to_vec());
                HistogramVec::new(opts, &SERIES_LABELS)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let active_calls = GaugeVec::new(
            Opts::new(
                "voice_agent_active_calls",
                "Calls held right now, summed over the component's fresh pods",
            ),
            &SERIES_LABELS,
        )?;
        let concurrency = GaugeVec::new(
            Opts::new(
                "voice_agent_concurrency",
                "Requests in flight right now, summed over the component's fresh pods",
            ),
            &SERIES_LABELS,
        )?;
        let samples = IntCounter::new(
            "voice_agent_metrics_samples_total",
            "Samples accepted by the metrics service",
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "voice_agent_metrics_batches_rejected_total",
                "Sample batches refused as a whole, by reason",
            ),
            &["reason"],
        )?;
        let series = IntGauge::new(
            "voice_agent_metrics_series",
            "Latency and gauge series held by the metrics service",
        )?;
        for reason in RejectReason::ALL {
            rejected.with_label_values(&[reason.as_str()]);
        }
        let collectors: Vec<Box<dyn Collector>> = latency
            .iter()
            .map(|h| Box::new(h.clone()) as Box<dyn Collector>)
            .chain([
                Box::new(active_calls.clone()) as Box<dyn Collector>,
                Box::new(concurrency.clone()),
                Box::new(samples.clone()),
                Box::new(rejected.clone()),
                Box::new(series.clone()),
            ])
            .collect();
        for c in collectors {
            registry.register(c)?;
        }
        Ok(Exporter {
            registry,
            latency,
            active_calls,
            concurrency,
            samples,
            rejected,
            series,
        })
    }

    /// The histogram of one latency series; the handle is kept by the
    /// series so observing skips the label lookup.
    pub(crate) fn latency_histogram(
        &self,
        stage: Stage,
        namespace: &str,
        voice_agent: &str,
        component: Component,
    ) -> Option<Histogram> {
        self.latency
            .get(stage as usize)?
            .get_metric_with_label_values(&[namespace, voice_agent, component.as_str()])
            .ok()
    }

    /// Drops the label set of an expired latency series.
    pub(crate) fn remove_latency(
        &self,
        stage: Stage,
        namespace: &str,
        voice_agent: &str,
        component: Component,
    ) {
        if let Some(vec) = self.latency.get(stage as usize) {
            // Err means the label set was never created; nothing to remove.
            let _ = vec.remove_label_values(&[namespace, voice_agent, component.as_str()]);
        }
    }

    pub(crate) fn count_samples(&self, n: u64) {
        self.samples.inc_by(n);
    }

    pub(crate) fn count_rejected(&self, reason: RejectReason) {
        self.rejected.with_label_values(&[reason.as_str()]).inc();
    }

    pub(crate) fn set_series(&self, n: usize) {
        self.series.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Replaces the load gauges with `rows` of (namespace, voiceAgent,
    /// component, active calls, concurrency); a `None` leaves that gauge
    /// out. Resetting first drops the label sets of agents that went stale.
    pub(crate) fn set_load(&self, rows: &[LoadRow]) {
        self.active_calls.reset();
        self.concurrency.reset();
        for row in rows {
            let labels = [
                row.namespace.as_str(),
                row.voice_agent.as_str(),
                row.component.as_str(),
            ];
            if let Some(v) = row.active_calls {
                self.active_calls.with_label_values(&labels).set(v);
            }
            if let Some(v) = row.concurrency {
                self.concurrency.with_label_values(&labels).set(v);
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on invalid metric data, which the
        // registry refuses at registration.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding /metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Load gauges of one component, summed over its fresh pods.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadRow {
    pub(crate) namespace: String,
    pub(crate) voice_agent: String,
    pub(crate) component: Component,
    pub(crate) active_calls: Option<f64>,
    pub(crate) concurrency: Option<f64>,
}

/// Content-Type of [`Exporter::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
