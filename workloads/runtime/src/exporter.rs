//! The runtime's Prometheus metrics (base units: seconds).

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use voice_agent_proto::Stage;

/// Buckets in seconds: 10 ms to 10 s (turn stages).
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
];

/// Results of `POST /api/sessions`.
pub const SESSION_RESULTS: [&str; 5] = ["created", "replayed", "draining", "full", "unsupported"];
/// End reasons of calls.
pub const END_REASONS: [&str; 7] = [
    "callerHangup",
    "agentHangup",
    "maxDuration",
    "transportError",
    "drainTimeout",
    "deleted",
    "error",
];

/// Every metric the runtime exports.
pub struct Exporter {
    registry: Registry,
    /// `voice_agent_eou_seconds`: end of caller speech → final transcript.
    pub eou: Histogram,
    /// `voice_agent_e2e_seconds`: end of caller speech → first agent audio.
    pub e2e: Histogram,
    /// Upstream stages as the runtime sees them (agentTtft, agentTotal,
    /// ttsTtfb), network included.
    pub upstream: HistogramVec,
    /// Live sessions.
    pub sessions: IntGauge,
    /// Whether the pod is draining (0/1).
    pub draining: IntGauge,
    /// Session requests by result.
    pub session_requests: IntCounterVec,
    /// Ended calls by reason.
    pub calls_ended: IntCounterVec,
    /// Completed caller turns.
    pub turns: IntCounter,
    /// Barge-ins.
    pub interruptions: IntCounter,
    /// Barge-ins that were coughs or backchannels (agent resumed).
    pub false_interruptions: IntCounter,
    /// Audio frames dropped by direction (`stt`, `caller`).
    pub dropped_frames: IntCounterVec,
    /// Max-turn watchdog firings.
    pub watchdog: IntCounter,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Registers every metric.
    pub fn new(capacity: u32) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let hist = |stage: Stage, help: &str| {
            Histogram::with_opts(
                HistogramOpts::new(stage.metric_name(), help)
                    .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            )
        };
        let eou = hist(Stage::Eou, "End of caller speech to final transcript")?;
        let e2e = hist(
            Stage::E2e,
            "End of caller speech to the first agent audio sent to the caller",
        )?;
        let upstream = HistogramVec::new(
            HistogramOpts::new(
                "voice_agent_runtime_upstream_seconds",
                "Agent and TTS stages as seen from the runtime, network included",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["stage"],
        )?;
        let sessions = IntGauge::new("voice_agent_runtime_sessions", "Live call sessions")?;
        let capacity_gauge = IntGauge::new(
            "voice_agent_runtime_capacity_sessions",
            "Sessions this pod accepts",
        )?;
        capacity_gauge.set(i64::from(capacity));
        let draining = IntGauge::new(
            "voice_agent_runtime_draining",
            "1 while the pod drains and takes no new calls",
        )?;
        let session_requests = IntCounterVec::new(
            Opts::new(
                "voice_agent_runtime_session_requests_total",
                "POST /api/sessions by result",
            ),
            &["result"],
        )?;
        for r in SESSION_RESULTS {
            session_requests.with_label_values(&[r]);
        }
        let calls_ended = IntCounterVec::new(
            Opts::new(
                "voice_agent_runtime_calls_ended_total",
                "Ended calls by reason",
            ),
            &["reason"],
        )?;
        for r in END_REASONS {
            calls_ended.with_label_values(&[r]);
        }
        let turns = IntCounter::new("voice_agent_runtime_turns_total", "Completed caller turns")?;
        let interruptions = IntCounter::new(
            "voice_agent_runtime_interruptions_total",
            "Caller barge-ins over agent audio",
        )?;
        let false_interruptions = IntCounter::new(
            "voice_agent_runtime_false_interruptions_total",
            "Barge-ins after which the agent resumed (cough, backchannel)",
        )?;
        let dropped_frames = IntCounterVec::new(
            Opts::new(
                "voice_agent_runtime_dropped_frames_total",
                "Audio frames dropped because a queue was full",
            ),
            &["direction"],
        )?;
        for d in ["stt", "caller"] {
            dropped_frames.with_label_values(&[d]);
        }
        let watchdog = IntCounter::new(
            "voice_agent_runtime_watchdog_total",
            "Caller turns ended by the max-turn watchdog",
        )?;
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(eou.clone()),
            Box::new(e2e.clone()),
            Box::new(upstream.clone()),
            Box::new(sessions.clone()),
            Box::new(capacity_gauge),
            Box::new(draining.clone()),
            Box::new(session_requests.clone()),
            Box::new(calls_ended.clone()),
            Box::new(turns.clone()),
            Box::new(interruptions.clone()),
            Box::new(false_interruptions.clone()),
            Box::new(dropped_frames.clone()),
            Box::new(watchdog.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        Ok(Self {
            registry,
            eou,
            e2e,
            upstream,
            sessions,
            draining,
            session_requests,
            calls_ended,
            turns,
            interruptions,
            false_interruptions,
            dropped_frames,
            watchdog,
        })
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
