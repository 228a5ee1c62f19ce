//! The Prometheus side of the gateway, in base units.
//!
//! | Metric | Kind | Labels |
//! |---|---|---|
//! | `voice_agent_gateway_requests_total` | counter | `route`, `result` ([`Outcome`]) |
//! | `voice_agent_gateway_webhook_seconds` | histogram | `result`: voice webhook arrival to TwiML ready |
//! | `voice_agent_gateway_runtime_sessions_total` | counter | `result`: `opened`, `no_capacity`, `error` |
//! | `voice_agent_gateway_calls_recorded_total` | counter | `result`: `created`, `exists`, `error` |
//! | `voice_agent_gateway_media_proxies` | gauge | Media Streams sockets proxied right now |
//! | `voice_agent_gateway_media_frames_total` | counter | `direction`: `inbound` (Twilio → runtime), `outbound` |

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Content-Type of [`Exporter::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Webhook latency buckets in seconds: 1 ms to 10 s.
pub const WEBHOOK_BUCKETS_SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0,
];

/// A route, as the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /twilio/voice`.
    TwilioVoice,
    /// `POST /twilio/status`.
    TwilioStatus,
    /// `GET /twilio/media`.
    TwilioMedia,
    /// `POST /livekit/webhook`.
    LiveKitWebhook,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 4] = [
        Route::TwilioVoice,
        Route::TwilioStatus,
        Route::TwilioMedia,
        Route::LiveKitWebhook,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Route::TwilioVoice => "twilio_voice",
            Route::TwilioStatus => "twilio_status",
            Route::TwilioMedia => "twilio_media",
            Route::LiveKitWebhook => "livekit_webhook",
        }
    }
}

/// How a request ended, as the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled.
    Ok,
    /// A replayed voice webhook answered from memory.
    Replay,
    /// A call to a number not bound to this agent (`<Reject/>`).
    Rejected,
    /// No runtime took the call; the caller heard an apology.
    NoCapacity,
    /// The call could not be connected for another reason.
    Failed,
    /// Missing or bad signature, JWT or media token.
    Unauthorized,
    /// Malformed request.
    Invalid,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Replay,
        Outcome::Rejected,
        Outcome::NoCapacity,
        Outcome::Failed,
        Outcome::Unauthorized,
        Outcome::Invalid,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Replay => "replay",
            Outcome::Rejected => "rejected",
            Outcome::NoCapacity => "no_capacity",
            Outcome::Failed => "failed",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Invalid => "invalid",
        }
    }
}

/// The gateway's metrics in their own registry.
pub struct Exporter {
    registry: Registry,
    requests: IntCounterVec,
    webhook: HistogramVec,
    sessions: IntCounterVec,
    calls: IntCounterVec,
    media_proxies: IntGauge,
    media_frames: IntCounterVec,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Registers every metric in a fresh registry, label values pre-created.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "voice_agent_gateway_requests_total",
                "Requests by route and how they ended",
            ),
            &["route", "result"],
        )?;
        let webhook = HistogramVec::new(
            HistogramOpts::new(
                "voice_agent_gateway_webhook_seconds",
                "Time from a voice webhook's arrival to its TwiML answer",
            )
            .buckets(WEBHOOK_BUCKETS_SECONDS.to_vec()),
            &["result"],
        )?;
        let sessions = IntCounterVec::new(
            Opts::new(
                "voice_agent_gateway_runtime_sessions_total",
                "Runtime session requests by result",
            ),
            &["result"],
        )?;
        let calls = IntCounterVec::new(
            Opts::new(
                "voice_agent_gateway_calls_recorded_total",
                "Call resources the gateway tried to create, by result",
            ),
            &["result"],
        )?;
        let media_proxies = IntGauge::new(
            "voice_agent_gateway_media_proxies",
            "Media Streams WebSockets proxied to a runtime right now",
        )?;
        let media_frames = IntCounterVec::new(
            Opts::new(
                "voice_agent_gateway_media_frames_total",
                "WebSocket frames proxied, by direction (inbound: Twilio to runtime)",
            ),
            &["direction"],
        )?;
        for route in Route::ALL {
            for outcome in Outcome::ALL {
                requests.with_label_values(&[route.as_str(), outcome.as_str()]);
            }
        }
        for r in ["opened", "no_capacity", "error"] {
            sessions.with_label_values(&[r]);
        }
        for r in ["created", "exists", "error"] {
            calls.with_label_values(&[r]);
        }
        for d in ["inbound", "outbound"] {
            media_frames.with_label_values(&[d]);
        }
        let collectors: [Box<dyn Collector>; 6] = [
            Box::new(requests.clone()),
            Box::new(webhook.clone()),
            Box::new(sessions.clone()),
            Box::new(calls.clone()),
            Box::new(media_proxies.clone()),
            Box::new(media_frames.clone()),
        ];
        for c in collectors {
            registry.register(c)?;
        }
        Ok(Exporter {
            registry,
            requests,
            webhook,
            sessions,
            calls,
            media_proxies,
            media_frames,
        })
    }

    /// Counts one request.
    pub fn request(&self, route: Route, outcome: Outcome) {
        self.requests
            .with_label_values(&[route.as_str(), outcome.as_str()])
            .inc();
    }

    /// Requests counted so far for `route` and `outcome`.
    pub fn requests(&self, route: Route, outcome: Outcome) -> u64 {
        self.requests
            .with_label_values(&[route.as_str(), outcome.as_str()])
            .get()
    }

    /// Records a voice webhook's handling time.
    pub fn webhook(&self, outcome: Outcome, elapsed: Duration) {
        self.webhook
            .with_label_values(&[outcome.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a runtime session request (`opened`, `no_capacity`, `error`).
    pub fn session(&self, result: &str) {
        self.sessions.with_label_values(&[result]).inc();
    }

    /// Counts a Call create (`created`, `exists`, `error`).
    pub fn call_recorded(&self, result: &str) {
        self.calls.with_label_values(&[result]).inc();
    }

    /// Media proxies running now.
    pub fn media_proxies(&self) -> i64 {
        self.media_proxies.get()
    }

    pub(crate) fn media_proxy_add(&self, delta: i64) {
        self.media_proxies.add(delta);
    }

    /// Counts one proxied frame; `inbound` is Twilio → runtime.
    pub(crate) fn media_frame(&self, inbound: bool) {
        self.media_frames
            .with_label_values(&[if inbound { "inbound" } else { "outbound" }])
            .inc();
    }

    /// Frames proxied so far in one direction.
    pub fn media_frames(&self, inbound: bool) -> u64 {
        self.media_frames
            .with_label_values(&[if inbound { "inbound" } else { "outbound" }])
            .get()
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
