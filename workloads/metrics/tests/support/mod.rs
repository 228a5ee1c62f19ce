//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;

use voice_agent_metrics::{Config, ManualClock, State};
use voice_agent_proto::{Component, Sample, SampleBatch, SampleKind};

/// A time on a whole second, so window edges are easy to reason about.
pub const T0: i64 = 1_700_000_000_000;

/// xorshift64: deterministic pseudo-random numbers without the rand crate.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A voice-latency-like distribution in ms: log-normal around 300 ms
    /// with a slow tail (5 % around 2 s) and a few sub-millisecond values.
    pub fn latency_ms(&mut self) -> f64 {
        match self.next() % 100 {
            0..=4 => 2_000.0 * (0.5 * self.normal()).exp(),
            5 => 0.2 * self.unit(),
            _ => 300.0 * (0.6 * self.normal()).exp(),
        }
    }
}

/// Exact nearest-rank quantile, the sketch's definition: the value of
/// 1-based rank `ceil(q n)`.
pub fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

pub fn latency(
    ns: &str,
    va: &str,
    component: Component,
    stage: &str,
    value: f64,
    at: i64,
) -> Sample {
    Sample {
        namespace: ns.into(),
        voice_agent: va.into(),
        component,
        pod: format!("{va}-{component}-0"),
        kind: SampleKind::Latency,
        name: stage.into(),
        value,
        at,
    }
}

pub fn gauge(
    ns: &str,
    va: &str,
    component: Component,
    pod: &str,
    name: &str,
    value: f64,
    at: i64,
) -> Sample {
    Sample {
        namespace: ns.into(),
        voice_agent: va.into(),
        component,
        pod: pod.into(),
        kind: SampleKind::Gauge,
        name: name.into(),
        value,
        at,
    }
}

pub fn batch(samples: Vec<Sample>) -> SampleBatch {
    SampleBatch { samples }
}

/// A state on a manual clock showing [`T0`].
pub fn state(config: Config) -> (Arc<State>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let state = State::with_clock(config, clock.clone()).expect("state");
    (Arc::new(state), clock)
}

/// The sample lines of an exposition that start with `prefix`.
pub fn metric_lines<'a>(exposition: &'a str, prefix: &str) -> Vec<&'a str> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .collect()
}

/// The value of the sample line with exactly this name and label text.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}
