//! The autoscaler's decision (DESIGN.md §4 "Autoscaler"): a pure,
//! deterministic function of the signal history kept in [`ComponentState`],
//! the latest [`Observation`], and the [`Policy`] derived from the spec.
//! No clock and no I/O: the loop that reads `GET /v1/signals` and writes
//! replicas, and `voice-agent-operator simulate`, both call [`decide`] once
//! per tick.
//!
//! Per signal the recommendation is `ceil(current × value / target)`; the
//! largest wins; a ratio within ±10 % of 1 keeps the current replicas.
//! Scale-up is limited to max(+100 %, +4 pods) per tick. When a signal's
//! short (6 s) window reaches twice its target the component panics: it
//! scales up at once, ignoring the scale-up stabilization window, and does
//! not scale down until 60 s after its last panic increase. Scale-down uses
//! the highest recommendation of the scale-down stabilization window (300 s
//! by default), as HPA v2 does, so a brief dip never removes pods; a state
//! that has not yet watched the signals for a whole window (a new leader)
//! does not scale down either. Missing or stale signals hold the current
//! replicas.
//!
//! A runtime scale-down does not take effect at once: [`drain`] plans the
//! drain of the pods to remove first.

pub mod drain;
pub mod live;
pub mod simulate;

use std::collections::VecDeque;
use std::fmt;

use voice_agent_api::VoiceAgent;
use voice_agent_proto::metrics::ComponentSignals;
use voice_agent_proto::{Component, Stage};

/// A signal the autoscaler scales on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Active calls per runtime pod.
    CallsPerPod,
    /// In-flight requests per pod.
    ConcurrencyPerPod,
    /// 95th percentile latency of a stage, in milliseconds.
    LatencyP95(Stage),
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signal::CallsPerPod => f.write_str("callsPerPod"),
            Signal::ConcurrencyPerPod => f.write_str("concurrencyPerPod"),
            Signal::LatencyP95(stage) => write!(f, "{}P95Ms", stage.as_str()),
        }
    }
}

/// The signals a component scales on, each with its target.
pub fn targets(va: &VoiceAgent, c: Component) -> Vec<(Signal, f64)> {
    let t = &va.spec.autoscaling.targets;
    let f = f64::from;
    match c {
        Component::Runtime => vec![
            (
                Signal::CallsPerPod,
                f(t.effective_calls_per_pod(va.spec.components.runtime.max_calls_per_pod)),
            ),
            (Signal::LatencyP95(Stage::E2e), f(t.turn_latency_p95_ms)),
        ],
        Component::Gateway => vec![
            (
                Signal::LatencyP95(Stage::Webhook),
                f(t.gateway_latency_p95_ms),
            ),
            (Signal::ConcurrencyPerPod, f(t.gateway_concurrency_per_pod)),
        ],
        Component::Agent => vec![
            (
                Signal::LatencyP95(Stage::AgentTtft),
                f(t.agent_latency_p95_ms),
            ),
            (Signal::ConcurrencyPerPod, f(t.agent_concurrency_per_pod)),
        ],
        Component::Tts => vec![
            (Signal::LatencyP95(Stage::TtsTtfb), f(t.tts_latency_p95_ms)),
            (Signal::ConcurrencyPerPod, f(t.tts_concurrency_per_pod)),
        ],
        Component::Metrics => Vec::new(),
    }
}

/// How one component scales.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Fewest replicas.
    pub min: i32,
    /// Most replicas.
    pub max: i32,
    /// The signals and their targets.
    pub targets: Vec<(Signal, f64)>,
    /// Ratios within `1 ± tolerance` keep the current replicas.
    pub tolerance: f64,
    /// Scale-up stabilization window, milliseconds.
    pub scale_up_window_ms: i64,
    /// Scale-down stabilization window, milliseconds.
    pub scale_down_window_ms: i64,
    /// A short-window value at `panic_threshold × target` starts panic mode.
    pub panic_threshold: f64,
    /// Panic mode lasts this long after the last panic increase, milliseconds.
    pub panic_hold_ms: i64,
    /// Signals older than this are stale, milliseconds.
    pub stale_after_ms: i64,
}

impl Policy {
    /// The policy of component `c` of `va`.
    pub fn for_component(va: &VoiceAgent, c: Component) -> Self {
        let (min, max) = crate::render::bounds(va, c);
        let behavior = &va.spec.autoscaling.behavior;
        Self {
            min,
            max,
            targets: targets(va, c),
            tolerance: 0.1,
            scale_up_window_ms: i64::from(behavior.scale_up.stabilization_window_seconds) * 1000,
            scale_down_window_ms: i64::from(behavior.scale_down.stabilization_window_seconds)
                * 1000,
            panic_threshold: 2.0,
            panic_hold_ms: 60_000,
            stale_after_ms: 10_000,
        }
    }
}

/// One reading of a component's signals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// When the newest sample was taken, Unix epoch milliseconds.
    pub at_ms: i64,
    /// Per signal: the value over the long (60 s) window and over the short
    /// (6 s) window, which drives panic mode.
    pub values: Vec<(Signal, SignalValue)>,
}

/// A signal's value over the two windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignalValue {
    /// Over the long window (60 s): what the replicas follow.
    pub long: f64,
    /// Over the short window (6 s): what panic mode watches.
    pub short: f64,
}

impl Observation {
    /// The observation of `signals` for the given signal kinds; `None` when
    /// the metrics service has no sample for the component yet.
    pub fn from_signals(signals: &ComponentSignals, wanted: &[(Signal, f64)]) -> Option<Self> {
        let at_ms = signals.fresh_at_ms?;
        let values = wanted
            .iter()
            .filter_map(|(signal, _)| {
                let value = match signal {
                    // Gauges are current values: one reading for both windows.
                    Signal::CallsPerPod => SignalValue {
                        long: signals.active_calls_per_pod,
                        short: signals.active_calls_per_pod,
                    },
                    Signal::ConcurrencyPerPod => SignalValue {
                        long: signals.concurrency_per_pod,
                        short: signals.concurrency_per_pod,
                    },
                    Signal::LatencyP95(stage) => {
                        let long = signals.window(*stage, 60).filter(|w| w.count > 0)?;
                        let short = signals.window(*stage, 6).filter(|w| w.count > 0);
                        SignalValue {
                            long: long.p95_ms,
                            short: short.map_or(long.p95_ms, |w| w.p95_ms),
                        }
                    }
                };
                Some((*signal, value))
            })
            .collect();
        Some(Self { at_ms, values })
    }
}

/// Why the autoscaler chose its replicas. The CamelCase names appear in the
/// VoiceAgent status, Events and the `reason` metric label.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// The metrics service has no samples for the component.
    NoSignals,
    /// The newest sample is older than the staleness limit.
    StaleSignals,
    /// Every signal is within the tolerance of its target.
    WithinTolerance,
    /// A signal is above its target.
    ScaleUp(Signal),
    /// A signal's short window reached the panic threshold.
    PanicScaleUp(Signal),
    /// Load fell below the targets for the whole stabilization window.
    ScaleDown(Signal),
    /// Load rose, but a lower recommendation is still inside the scale-up window.
    StabilizingScaleUp,
    /// Load fell, but a higher recommendation is still inside the window.
    StabilizingScaleDown,
    /// Load fell, but panic mode forbids scaling down.
    PanicHold,
    /// The recommendation is above `maxReplicas`.
    AtMax,
    /// The recommendation is below `minReplicas`.
    AtMin,
}

impl Reason {
    /// The stable name.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::NoSignals => "NoSignals",
            Reason::StaleSignals => "StaleSignals",
            Reason::WithinTolerance => "WithinTolerance",
            Reason::ScaleUp(_) => "ScaleUp",
            Reason::PanicScaleUp(_) => "PanicScaleUp",
            Reason::ScaleDown(_) => "ScaleDown",
            Reason::StabilizingScaleUp => "StabilizingScaleUp",
            Reason::StabilizingScaleDown => "StabilizingScaleDown",
            Reason::PanicHold => "PanicHold",
            Reason::AtMax => "AtMax",
            Reason::AtMin => "AtMin",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ScaleUp(s) | Reason::PanicScaleUp(s) | Reason::ScaleDown(s) => {
                write!(f, "{} ({s})", self.name())
            }
            _ => f.write_str(self.name()),
        }
    }
}

/// The decision of one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The replicas to have.
    pub desired: i32,
    /// Why.
    pub reason: Reason,
    /// Whether the signals were usable (`ScalingActive`).
    pub active: bool,
    /// Whether the component is in panic mode.
    pub panic: bool,
}

/// What the autoscaler remembers about one component between ticks.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentState {
    /// The current replicas.
    pub replicas: i32,
    /// Raw recommendations of recent ticks (time, replicas), for the
    /// stabilization windows.
    recommendations: VecDeque<(i64, i32)>,
    /// Panic mode lasts until this time.
    panic_until_ms: Option<i64>,
    /// When replicas last changed.
    pub last_scale_ms: Option<i64>,
    /// The first tick with usable signals: scale-down waits until the
    /// history spans the whole scale-down window.
    observing_since_ms: Option<i64>,
}

impl ComponentState {
    /// The state of a component running `replicas` pods.
    pub fn new(replicas: i32) -> Self {
        Self {
            replicas,
            recommendations: VecDeque::new(),
            panic_until_ms: None,
            last_scale_ms: None,
            observing_since_ms: None,
        }
    }
}

/// Decides the replicas of one component for the tick at `now_ms`, and
/// records the tick in `state`.
pub fn decide(
    state: &mut ComponentState,
    observation: Option<&Observation>,
    policy: &Policy,
    now_ms: i64,
) -> Decision {
    let current = state.replicas.max(1);
    let hold = |reason| Decision {
        desired: state.replicas,
        reason,
        active: false,
        panic: false,
    };
    let Some(obs) = observation.filter(|o| !o.values.is_empty()) else {
        return hold(Reason::NoSignals);
    };
    if now_ms - obs.at_ms > policy.stale_after_ms {
        return hold(Reason::StaleSignals);
    }

    // Per-signal recommendations; the largest wins.
    let mut best: Option<(i32, Signal)> = None;
    let mut panic_signal = None;
    for (signal, target) in &policy.targets {
        let Some((_, value)) = obs.values.iter().find(|(s, _)| s == signal) else {
            continue;
        };
        if *target <= 0.0 || !value.long.is_finite() || !value.short.is_finite() {
            continue;
        }
        let ratio = value.long / target;
        let raw = if (ratio - 1.0).abs() <= policy.tolerance {
            current
        } else {
            ceil_i32(f64::from(current) * ratio)
        };
        if best.is_none_or(|(r, _)| raw > r) {
            best = Some((raw, *signal));
        }
        if value.short >= policy.panic_threshold * target && panic_signal.is_none() {
            panic_signal = Some((*signal, ceil_i32(f64::from(current) * value.short / target)));
        }
    }
    let Some((mut raw, signal)) = best else {
        return hold(Reason::NoSignals);
    };

    // Panic: scale up at once on the short window.
    if let Some((_, urgent)) = panic_signal {
        raw = raw.max(urgent);
    }
    let since = *state.observing_since_ms.get_or_insert(now_ms);
    state.recommendations.push_back((now_ms, raw));
    let keep = policy.scale_up_window_ms.max(policy.scale_down_window_ms);
    while state
        .recommendations
        .front()
        .is_some_and(|(t, _)| now_ms - t > keep)
    {
        state.recommendations.pop_front();
    }
    let in_window = |w: i64| {
        state
            .recommendations
            .iter()
            .filter(move |(t, _)| now_ms - t <= w)
            .map(|(_, r)| *r)
    };

    let panicking_now = panic_signal.is_some() && raw > current;
    let mut panic = state.panic_until_ms.is_some_and(|until| now_ms < until);
    let (mut desired, mut reason) = if raw > current {
        let stabilized = if panicking_now {
            raw
        } else {
            in_window(policy.scale_up_window_ms).min().unwrap_or(raw)
        };
        let limit = (current * 2).max(current + 4);
        let up = stabilized.min(limit);
        if up > current {
            let reason = match panic_signal {
                Some((s, _)) if panicking_now => Reason::PanicScaleUp(s),
                _ => Reason::ScaleUp(signal),
            };
            (up, reason)
        } else {
            (current, Reason::StabilizingScaleUp)
        }
    } else if raw < current {
        if panic {
            (current, Reason::PanicHold)
        } else {
            let mut stabilized = in_window(policy.scale_down_window_ms).max().unwrap_or(raw);
            // Without a whole window of history (a new leader, a restart),
            // the recommendations before it are unknown: assume they were
            // the current replicas rather than scale down on one reading.
            if now_ms - since < policy.scale_down_window_ms {
                stabilized = stabilized.max(current);
            }
            if stabilized < current {
                (stabilized, Reason::ScaleDown(signal))
            } else {
                (current, Reason::StabilizingScaleDown)
            }
        }
    } else {
        (current, Reason::WithinTolerance)
    };

    if desired > policy.max {
        desired = policy.max;
        if desired <= current {
            reason = Reason::AtMax;
        }
    }
    if desired < policy.min {
        desired = policy.min;
        if desired >= current {
            reason = Reason::AtMin;
        }
    }
    if panicking_now && desired > current {
        state.panic_until_ms = Some(now_ms + policy.panic_hold_ms);
        panic = true;
    }
    if desired != state.replicas {
        state.last_scale_ms = Some(now_ms);
    }
    state.replicas = desired;
    Decision {
        desired,
        reason,
        active: true,
        panic,
    }
}

fn ceil_i32(x: f64) -> i32 {
    // Ratios of finite values; saturate rather than wrap.
    let c = x.ceil();
    if c >= f64::from(i32::MAX) {
        i32::MAX
    } else if c <= 0.0 {
        0
    } else {
        c as i32
    }
}

#[cfg(test)]
mod tests;
