//! The agent's Prometheus metrics.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use voice_agent_proto::Stage;

/// Content type of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets in seconds: 0.5 ms to 10 s (retrieval is sub-ms, a
/// remote LLM seconds).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Routes counted in `voice_agent_agent_requests_total`.
pub const ROUTES: [&str; 4] = [
    "respond",
    "documents_create",
    "documents_list",
    "documents_delete",
];
/// Results counted in `voice_agent_agent_requests_total`.
pub const RESULTS: [&str; 7] = [
    "ok",
    "invalid",
    "not_found",
    "unavailable",
    "upstream",
    "internal",
    "cancelled",
];

/// The registry and every metric the agent exports.
pub struct Exporter {
    registry: Registry,
    /// `voice_agent_retrieval_seconds`.
    pub retrieval: Histogram,
    /// `voice_agent_agent_ttft_seconds`.
    pub ttft: Histogram,
    /// `voice_agent_agent_total_seconds`.
    pub total: Histogram,
    requests: IntCounterVec,
    /// Chunks in the knowledge base.
    pub chunks: IntGauge,
    /// Documents in the knowledge base.
    pub documents: IntGauge,
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
        let hist = |stage: Stage, help: &str| {
            Histogram::with_opts(
                HistogramOpts::new(stage.metric_name(), help)
                    .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            )
        };
        let retrieval = hist(
            Stage::Retrieval,
            "Knowledge retrieval per turn, embedding the query included",
        )?;
        let ttft = hist(Stage::AgentTtft, "LLM time to the first reply text")?;
        let total = hist(
            Stage::AgentTotal,
            "Whole /v1/respond request, from receipt to the stored turn",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "voice_agent_agent_requests_total",
                "Agent API requests by route and result",
            ),
            &["route", "result"],
        )?;
        for route in ROUTES {
            for result in RESULTS {
                requests.with_label_values(&[route, result]);
            }
        }
        let chunks = IntGauge::new("voice_agent_agent_chunks", "Knowledge chunks indexed")?;
        let documents = IntGauge::new("voice_agent_agent_documents", "Knowledge documents stored")?;
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(retrieval.clone()),
            Box::new(ttft.clone()),
            Box::new(total.clone()),
            Box::new(requests.clone()),
            Box::new(chunks.clone()),
            Box::new(documents.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        Ok(Exporter {
            registry,
            retrieval,
            ttft,
            total,
            requests,
            chunks,
            documents,
        })
    }

    /// Counts one request.
    pub fn count(&self, route: &str, result: &str) {
        self.requests.with_label_values(&[route, result]).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on a malformed metric family, which
        // the registry does not produce.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
