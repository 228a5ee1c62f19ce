//! The Prometheus side of the tts service, in base units.
//!
//! | Metric | Kind | Labels |
//! |---|---|---|
//! | `voice_agent_tts_ttfb_seconds` | histogram | `provider`, `cache` (`hit`/`miss`) |
//! | `voice_agent_tts_requests_total` | counter | `provider`, `result` ([`Outcome`]) |
//! | `voice_agent_tts_cache_hits_total` | counter | |
//! | `voice_agent_tts_cache_misses_total` | counter | |
//! | `voice_agent_tts_cache_evictions_total` | counter | |
//! | `voice_agent_tts_cache_bytes` | gauge | |
//! | `voice_agent_tts_in_flight` | gauge | syntheses holding a provider slot |

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use voice_agent_proto::Stage;

/// Time-to-first-byte buckets in seconds: 0.1 ms (cache) to 10 s (a slow
/// vendor).
pub const TTFB_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Content-Type of [`Exporter::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How a synthesis request ended, as the `result` label of
/// `voice_agent_tts_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Synthesized and streamed to the end.
    Ok,
    /// Answered from the cache.
    CacheHit,
    /// Refused with 400 (bad text, voice, format, rate or JSON).
    Invalid,
    /// Refused with 503: no synthesis slot within the queue timeout.
    Busy,
    /// The provider is not installed or configured (503).
    Unavailable,
    /// The provider failed before any audio was sent (502).
    ProviderError,
    /// The provider failed after the 200 was sent; the body was aborted.
    Aborted,
    /// The client went away (or the request timed out) before the end.
    Cancelled,
}

impl Outcome {
    /// Every outcome, so all label values exist from the start.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::CacheHit,
        Outcome::Invalid,
        Outcome::Busy,
        Outcome::Unavailable,
        Outcome::ProviderError,
        Outcome::Aborted,
        Outcome::Cancelled,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::CacheHit => "cache_hit",
            Outcome::Invalid => "invalid",
            Outcome::Busy => "busy",
            Outcome::Unavailable => "unavailable",
            Outcome::ProviderError => "provider_error",
            Outcome::Aborted => "aborted",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// The service's metrics in their own registry.
pub struct Exporter {
    registry: Registry,
    provider: &'static str,
    ttfb: HistogramVec,
    requests: IntCounterVec,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_evictions: IntCounter,
    cache_bytes: IntGauge,
    in_flight: IntGauge,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// Registers every metric in a fresh registry, with label values for
    /// `provider` pre-created.
    pub fn new(provider: &'static str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let ttfb = HistogramVec::new(
            HistogramOpts::new(
                Stage::TtsTtfb.metric_name(),
                "Time from request to the first audio byte being ready to send",
            )
            .buckets(TTFB_BUCKETS_SECONDS.to_vec()),
            &["provider", "cache"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "voice_agent_tts_requests_total",
                "Synthesis requests by provider and how they ended",
            ),
            &["provider", "result"],
        )?;
        let cache_hits = IntCounter::new(
            "voice_agent_tts_cache_hits_total",
            "Synthesis requests answered from the phrase cache",
        )?;
        let cache_misses = IntCounter::new(
            "voice_agent_tts_cache_misses_total",
            "Valid synthesis requests not in the phrase cache",
        )?;
        let cache_evictions = IntCounter::new(
            "voice_agent_tts_cache_evictions_total",
            "Phrases evicted from the cache to stay under its byte budget",
        )?;
        let cache_bytes = IntGauge::new(
            "voice_agent_tts_cache_bytes",
            "Bytes held by the phrase cache (audio plus keys)",
        )?;
        let in_flight = IntGauge::new(
            "voice_agent_tts_in_flight",
            "Syntheses holding a provider slot right now",
        )?;
        for cache in ["hit", "miss"] {
            ttfb.with_label_values(&[provider, cache]);
        }
        for outcome in Outcome::ALL {
            requests.with_label_values(&[provider, outcome.as_str()]);
        }
        let collectors: [Box<dyn Collector>; 7] = [
            Box::new(ttfb.clone()),
            Box::new(requests.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(cache_evictions.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(in_flight.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        Ok(Exporter {
            registry,
            provider,
            ttfb,
            requests,
            cache_hits,
            cache_misses,
            cache_evictions,
            cache_bytes,
            in_flight,
        })
    }

    pub(crate) fn observe_ttfb(&self, cache_hit: bool, ttfb: Duration) {
        let cache = if cache_hit { "hit" } else { "miss" };
        self.ttfb
            .with_label_values(&[self.provider, cache])
            .observe(ttfb.as_secs_f64());
    }

    pub(crate) fn count(&self, outcome: Outcome) {
        self.requests
            .with_label_values(&[self.provider, outcome.as_str()])
            .inc();
    }

    /// Requests counted with `outcome` so far.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests
            .with_label_values(&[self.provider, outcome.as_str()])
            .get()
    }

    pub(crate) fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub(crate) fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub(crate) fn cache_evicted(&self, n: usize) {
        self.cache_evictions.inc_by(n as u64);
    }

    pub(crate) fn set_cache_bytes(&self, bytes: usize) {
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn in_flight_add(&self, delta: i64) {
        self.in_flight.add(delta);
    }

    /// Cache hits, misses and evictions counted so far.
    pub fn cache_counts(&self) -> (u64, u64, u64) {
        (
            self.cache_hits.get(),
            self.cache_misses.get(),
            self.cache_evictions.get(),
        )
    }

    /// Syntheses holding a provider slot now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding /metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
