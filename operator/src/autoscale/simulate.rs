//! `voice-agent-operator simulate`: replays a signal trace through the same
//! [`decide`](super::decide) the operator runs, tick by tick, for capacity
//! planning and as the autoscaler's test harness.
//!
//! A trace is CSV, one sample per line: `time_s,component,signal,value`.
//! Blank lines and `#` comments are ignored, and so is a first line starting
//! with `time`. Components are `gateway`, `runtime`, `agent`, `tts`. Signals:
//!
//! - `activeCalls`: calls in progress over all of the component's pods
//!   (divided by the simulated replicas, so scaling up relieves the load);
//! - `concurrency`: in-flight requests over all pods (divided likewise);
//! - `<stage>P95Ms` (`e2eP95Ms`, `webhookP95Ms`, `agentTtftP95Ms`,
//!   `ttsTtfbP95Ms`, ...): a 95th percentile latency measured with the
//!   replicas the simulation had when the sample took effect. Scaling from
//!   there scales it by `replicas then / replicas now` (latency is modelled
//!   as proportional to load per pod), so added pods relieve it as they do in
//!   a real deployment; without that, a trace's latency would never fall and
//!   every tick would multiply the replicas again.
//!
//! A value holds until the next sample of the same component and signal.
//! As in the metrics service's signals, load gauges are current values, and
//! a latency has a short (6 s) and a long (60 s) window: here the means of
//! its per-tick values over those spans.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write;
use std::str::FromStr;

use thiserror::Error;
use voice_agent_api::VoiceAgent;
use voice_agent_proto::{Component, Stage};

use super::{ComponentState, Observation, Policy, Reason, Signal, SignalValue, decide};
use crate::render::COMPONENTS;

/// A trace line that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// What a trace sample measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Measure {
    ActiveCalls,
    Concurrency,
    Latency(Stage),
}

/// One sample of a trace.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    at_ms: i64,
    component: Component,
    measure: Measure,
    value: f64,
}

fn parse_measure(name: &str) -> Option<Measure> {
    match name {
        "activeCalls" => Some(Measure::ActiveCalls),
        "concurrency" => Some(Measure::Concurrency),
        _ => {
            let stage = name.strip_suffix("P95Ms")?;
            Stage::from_str(stage).ok().map(Measure::Latency)
        }
    }
}

/// Parses a trace, refusing the first bad line with its number.
fn parse(trace: &str) -> Result<Vec<Sample>, TraceError> {
    let mut samples = Vec::new();
    let mut seen_data = false;
    for (i, raw) in trace.lines().enumerate() {
        let line = i + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if !seen_data && text.to_ascii_lowercase().starts_with("time") {
            seen_data = true;
            continue;
        }
        seen_data = true;
        let err = |message: String| TraceError { line, message };
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        let [time, component, signal, value] = fields[..] else {
            return Err(err(format!(
                "expected 4 fields `time_s,component,signal,value`, found {}",
                fields.len()
            )));
        };
        let seconds: f64 = time
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && *t >= 0.0 && *t <= 31_536_000.0)
            .ok_or_else(|| {
                err(format!(
                    "time {time:?} is not a number of seconds between 0 and one year"
                ))
            })?;
        let component = Component::from_str(component)
            .ok()
            .filter(|c| COMPONENTS.contains(c))
            .ok_or_else(|| {
                err(format!(
                    "unknown component {component:?} (gateway, runtime, agent, tts)"
                ))
            })?;
        let measure = parse_measure(signal).ok_or_else(|| {
            err(format!(
                "unknown signal {signal:?} (activeCalls, concurrency, or <stage>P95Ms such as e2eP95Ms)"
            ))
        })?;
        let value: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| err(format!("value {value:?} is not a finite number >= 0")))?;
        let at_ms = (seconds * 1000.0).round() as i64;
        if let Some(prev) = samples.last().map(|s: &Sample| s.at_ms)
            && at_ms < prev
        {
            return Err(err(format!(
                "time {time} goes backwards (samples must be in time order)"
            )));
        }
        samples.push(Sample {
            at_ms,
            component,
            measure,
            value,
        });
    }
    if samples.is_empty() {
        return Err(TraceError {
            line: trace.lines().count().max(1),
            message: "the trace has no samples".into(),
        });
    }
    Ok(samples)
}

/// One tick of one component.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Simulated time, milliseconds.
    pub at_ms: i64,
    /// The component.
    pub component: Component,
    /// Replicas before this tick.
    pub previous: i32,
    /// Replicas after this tick.
    pub replicas: i32,
    /// Why.
    pub reason: Reason,
    /// Whether replicas changed on this tick.
    pub changed: bool,
}

/// A finished simulation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Simulation {
    /// Every tick of every component that has samples.
    pub rows: Vec<Row>,
}

/// Options of a simulation.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tick interval, milliseconds (the operator ticks every 2 s).
    pub tick_ms: i64,
    /// Simulated time to run until, milliseconds; default: the last sample
    /// plus the scale-down window plus a minute, so scale-down shows.
    pub until_ms: Option<i64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tick_ms: 2_000,
            until_ms: None,
        }
    }
}

/// Replays `trace` for the VoiceAgent `va`.
pub fn simulate(va: &VoiceAgent, trace: &str, options: &Options) -> Result<Simulation, TraceError> {
    let samples = parse(trace)?;
    let components: Vec<Component> = COMPONENTS
        .into_iter()
        .filter(|c| samples.iter().any(|s| s.component == *c))
        .collect();
    let policies: HashMap<Component, Policy> = components
        .iter()
        .map(|c| (*c, Policy::for_component(va, *c)))
        .collect();
    let last = samples.last().map_or(0, |s| s.at_ms);
    let down_window = policies
        .values()
        .map(|p| p.scale_down_window_ms)
        .max()
        .unwrap_or(0);
    let until = options.until_ms.unwrap_or(last + down_window + 60_000);
    let tick = options.tick_ms.max(100);

    let mut states: HashMap<Component, ComponentState> = policies
        .iter()
        .map(|(c, p)| (*c, ComponentState::new(p.min)))
        .collect();
    // Value and the replicas when it took effect (latencies scale with them).
    let mut current: BTreeMap<(Component, Measure), (f64, f64)> = BTreeMap::new();
    let mut history: HashMap<(Component, Measure), VecDeque<(i64, f64)>> = HashMap::new();
    let mut next = 0;
    let mut rows = Vec::new();
    let mut now = 0;
    while now <= until {
        while next < samples.len() && samples[next].at_ms <= now {
            let s = &samples[next];
            let replicas = states.get(&s.component).map_or(1, |st| st.replicas.max(1));
            current.insert((s.component, s.measure), (s.value, f64::from(replicas)));
            next += 1;
        }
        for c in &components {
            let (Some(state), Some(policy)) = (states.get_mut(c), policies.get(c)) else {
                continue;
            };
            let replicas = f64::from(state.replicas.max(1));
            let mut values = Vec::new();
            for ((comp, measure), (value, replicas_then)) in
                current.range((*c, Measure::ActiveCalls)..)
            {
                if comp != c {
                    break;
                }
                let (signal, per_tick) = match measure {
                    Measure::ActiveCalls => (Signal::CallsPerPod, value / replicas),
                    Measure::Concurrency => (Signal::ConcurrencyPerPod, value / replicas),
                    Measure::Latency(stage) => {
                        (Signal::LatencyP95(*stage), value * replicas_then / replicas)
                    }
                };
                if !matches!(measure, Measure::Latency(_)) {
                    values.push((
                        signal,
                        SignalValue {
                            long: per_tick,
                            short: per_tick,
                        },
                    ));
                    continue;
                }
                let h = history.entry((*c, *measure)).or_default();
                h.push_back((now, per_tick));
                while h.front().is_some_and(|(t, _)| now - t >= 60_000) {
                    h.pop_front();
                }
                let mean = |span: i64| {
                    let (sum, n) = h
                        .iter()
                        .filter(|(t, _)| now - t < span)
                        .fold((0.0, 0u32), |(s, n), (_, v)| (s + v, n + 1));
                    if n == 0 { per_tick } else { sum / f64::from(n) }
                };
                values.push((
                    signal,
                    SignalValue {
                        long: mean(60_000),
                        short: mean(6_000),
                    },
                ));
            }
            let observation = (!values.is_empty()).then_some(Observation { at_ms: now, values });
            let before = state.replicas;
            let d = decide(state, observation.as_ref(), policy, now);
            rows.push(Row {
                at_ms: now,
                component: *c,
                previous: before,
                replicas: d.desired,
                reason: d.reason,
                changed: d.desired != before,
            });
        }
        now += tick;
    }
    Ok(Simulation { rows })
}

impl Simulation {
    /// Every tick as CSV: `time_s,component,replicas,reason,changed`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("time_s,component,replicas,reason,changed\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{}",
                fmt_seconds(r.at_ms),
                r.component.as_str(),
                r.replicas,
                r.reason,
                r.changed
            );
        }
        out
    }

    /// The changes, one line each, and a summary per component.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>8}  {:<8} {:>8}  reason",
            "time", "component", "replicas"
        );
        for r in self.rows.iter().filter(|r| r.changed) {
            let _ = writeln!(
                out,
                "{:>7}s  {:<8} {:>3} → {:<3}  {}",
                fmt_seconds(r.at_ms),
                r.component.as_str(),
                r.previous,
                r.replicas,
                r.reason
            );
        }
        out.push('\n');
        for c in COMPONENTS {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.component == c).collect();
            if rows.is_empty() {
                continue;
            }
            let peak = rows.iter().map(|r| r.replicas).max().unwrap_or(0);
            let changes = rows.iter().filter(|r| r.changed).count();
            let end = rows.last().map_or(0, |r| r.replicas);
            let _ = writeln!(
                out,
                "{:<8} peak {peak} replicas, {changes} changes, ends at {end}",
                c.as_str()
            );
        }
        out
    }

    /// Milliseconds from `from_ms` until the component first exceeds
    /// `replicas`, if it does.
    pub fn reaction_ms(&self, component: Component, from_ms: i64, replicas: i32) -> Option<i64> {
        self.rows
            .iter()
            .find(|r| r.component == component && r.at_ms >= from_ms && r.replicas > replicas)
            .map(|r| r.at_ms - from_ms)
    }
}

fn fmt_seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}", ms / 1000)
    } else {
        format!("{:.1}", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> VoiceAgent {
        serde_yaml_ng::from_str(
            r#"
apiVersion: voiceagent.io/v1alpha1
kind: VoiceAgent
metadata: {name: sim}
spec:
  persona: {greeting: Hi}
  telephony:
    publicUrl: https://x.example.com
    twilio: {authTokenSecretRef: {name: t, key: k}}
  components:
    runtime: {minReplicas: 2, maxReplicas: 20, maxCallsPerPod: 20}
"#,
        )
        .expect("valid")
    }

    #[test]
    fn malformed_traces_are_refused_with_the_line_number() {
        let va = agent();
        let cases = [
            (
                "time_s,component,signal,value\n0,runtime,activeCalls\n",
                2,
                "expected 4 fields",
            ),
            (
                "0,runtime,activeCalls,10\n# ok\nx,runtime,activeCalls,1\n",
                3,
                "not a number of seconds",
            ),
            ("0,database,activeCalls,1\n", 1, "unknown component"),
            ("0,runtime,callsPerMinute,1\n", 1, "unknown signal"),
            ("0,runtime,activeCalls,-3\n", 1, "finite number >= 0"),
            ("0,runtime,activeCalls,NaN\n", 1, "finite number >= 0"),
            (
                "5,runtime,activeCalls,1\n4,runtime,activeCalls,1\n",
                2,
                "goes backwards",
            ),
            ("0,runtime,bogusP95Ms,1\n", 1, "unknown signal"),
            ("# nothing\n\n", 2, "no samples"),
        ];
        for (trace, line, needle) in cases {
            let err = simulate(&va, trace, &Options::default()).expect_err(trace);
            assert_eq!(err.line, line, "{trace}: {err}");
            assert!(err.to_string().contains(needle), "{trace}: {err}");
        }
    }

    #[test]
    fn a_load_step_is_answered_within_one_tick_and_released_after_the_window() {
        let va = agent(); // runtime target: 16 calls per pod (80 % of 20)
        let trace = "time_s,component,signal,value\n0,runtime,activeCalls,30\n0,runtime,e2eP95Ms,800\n60,runtime,activeCalls,120\n180,runtime,activeCalls,20\n180,runtime,e2eP95Ms,300\n";
        let sim = simulate(&va, trace, &Options::default()).expect("runs");
        // Before the step: 30 calls on 2 pods = 15/pod, within tolerance.
        assert!(
            sim.rows
                .iter()
                .filter(|r| r.at_ms < 60_000)
                .all(|r| r.replicas == 2)
        );
        // The step to 120 calls (60/pod) panics at the first tick at or after it.
        let reaction = sim
            .reaction_ms(Component::Runtime, 60_000, 2)
            .expect("scales up");
        assert!(reaction <= 2_000, "reacted after {reaction} ms");
        let at_step = sim.rows.iter().find(|r| r.at_ms == 60_000).expect("tick");
        assert_eq!(at_step.reason.name(), "PanicScaleUp");
        // It settles at ceil(120 / 16) = 8 pods.
        let before_drop = sim.rows.iter().rfind(|r| r.at_ms < 180_000).expect("tick");
        assert_eq!(before_drop.replicas, 8);
        // After the drop, nothing leaves before the 300 s window has passed.
        let first_down = sim
            .rows
            .iter()
            .find(|r| r.at_ms >= 180_000 && r.replicas < 8)
            .expect("scales down");
        assert!(
            first_down.at_ms - 180_000 >= 240_000,
            "scaled down {} ms after the drop",
            first_down.at_ms - 180_000
        );
        assert_eq!(sim.rows.last().map(|r| r.replicas), Some(2));
        let text = sim.to_text();
        assert!(text.contains("PanicScaleUp (callsPerPod)"), "{text}");
        let csv = sim.to_csv();
        assert!(
            csv.starts_with(
                "time_s,component,replicas,reason,changed\n0,runtime,2,WithinTolerance,false\n"
            ),
            "{csv}"
        );
    }

    #[test]
    fn latency_alone_can_drive_a_component() {
        let va = agent();
        let trace = "0,tts,ttsTtfbP95Ms,200\n30,tts,ttsTtfbP95Ms,400\n";
        let sim = simulate(
            &va,
            trace,
            &Options {
                tick_ms: 2_000,
                until_ms: Some(60_000),
            },
        )
        .expect("runs");
        let at = sim.rows.iter().find(|r| r.changed).expect("scales");
        assert_eq!(at.component, Component::Tts);
        assert!(at.at_ms >= 30_000);
        assert!(
            sim.rows.iter().all(|r| r.component == Component::Tts),
            "only components in the trace"
        );
    }
}
