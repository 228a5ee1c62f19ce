//! Tick-by-tick tests of the decision: 2 s ticks, as the operator runs them.

use super::*;

const TICK: i64 = 2_000;

fn policy() -> Policy {
    Policy {
        min: 1,
        max: 20,
        targets: vec![
            (Signal::CallsPerPod, 16.0),
            (Signal::LatencyP95(Stage::E2e), 1200.0),
        ],
        tolerance: 0.1,
        scale_up_window_ms: 0,
        scale_down_window_ms: 300_000,
        panic_threshold: 2.0,
        panic_hold_ms: 60_000,
        stale_after_ms: 10_000,
    }
}

fn obs(at_ms: i64, calls_per_pod: f64, latency: f64) -> Observation {
    Observation {
        at_ms,
        values: vec![
            (
                Signal::CallsPerPod,
                SignalValue {
                    long: calls_per_pod,
                    short: calls_per_pod,
                },
            ),
            (
                Signal::LatencyP95(Stage::E2e),
                SignalValue {
                    long: latency,
                    short: latency,
                },
            ),
        ],
    }
}

/// Runs ticks from `start` for `ticks` ticks with a load function of time
/// giving total calls, and a latency; returns the decisions.
fn run(
    state: &mut ComponentState,
    policy: &Policy,
    start: i64,
    ticks: i64,
    total_calls: impl Fn(i64) -> f64,
    latency: f64,
) -> Vec<Decision> {
    (0..ticks)
        .map(|i| {
            let now = start + i * TICK;
            let per_pod = total_calls(now) / f64::from(state.replicas.max(1));
            decide(state, Some(&obs(now, per_pod, latency)), policy, now)
        })
        .collect()
}

#[test]
fn steady_load_within_tolerance_never_flaps() {
    let p = policy();
    let mut s = ComponentState::new(4);
    // 4 pods × 16 calls ± 8 %: inside the 10 % tolerance.
    let decisions = run(
        &mut s,
        &p,
        0,
        300,
        |t| if (t / TICK) % 2 == 0 { 69.0 } else { 59.0 },
        900.0,
    );
    assert!(
        decisions
            .iter()
            .all(|d| d.desired == 4 && d.reason == Reason::WithinTolerance && d.active)
    );
    assert_eq!(s.last_scale_ms, None);
}

#[test]
fn a_doubling_step_is_decided_in_one_tick_in_panic_mode() {
    let p = policy();
    let mut s = ComponentState::new(4);
    run(&mut s, &p, 0, 10, |_| 64.0, 900.0);
    assert_eq!(s.replicas, 4);
    // Load doubles: 32 calls per pod, twice the target.
    let d = decide(&mut s, Some(&obs(20_000, 32.0, 900.0)), &p, 20_000);
    assert_eq!(d.desired, 8, "{d:?}");
    assert_eq!(d.reason, Reason::PanicScaleUp(Signal::CallsPerPod));
    assert!(d.panic);
}

#[test]
fn a_sustained_step_below_panic_scales_up_within_the_rate_limit() {
    let p = policy();
    let mut s = ComponentState::new(2);
    // 1.5× the target: no panic, plain scale-up to ceil(2 × 1.5) = 3.
    let d = decide(&mut s, Some(&obs(0, 24.0, 900.0)), &p, 0);
    assert_eq!(
        (d.desired, d.reason.clone(), d.panic),
        (3, Reason::ScaleUp(Signal::CallsPerPod), false)
    );
    // A huge spike is capped at max(+100 %, +4) per tick: 3 → 7.
    let d = decide(&mut s, Some(&obs(TICK, 30.0 * 16.0, 900.0)), &p, TICK);
    assert_eq!(d.desired, 7, "{d:?}");
    let d = decide(&mut s, Some(&obs(2 * TICK, 200.0, 900.0)), &p, 2 * TICK);
    assert_eq!(d.desired, 14, "then doubles again: {d:?}");
}

#[test]
fn the_largest_recommendation_wins() {
    let p = policy();
    let mut s = ComponentState::new(4);
    // Calls fine (16/pod) but latency 1.5× the target → 6 pods.
    let d = decide(&mut s, Some(&obs(0, 16.0, 1800.0)), &p, 0);
    assert_eq!(
        (d.desired, d.reason),
        (6, Reason::ScaleUp(Signal::LatencyP95(Stage::E2e)))
    );
}

#[test]
fn a_spike_then_a_drop_does_not_scale_down_before_the_window() {
    let p = policy();
    let mut s = ComponentState::new(2);
    // Spike: 64 calls over 2 pods = 32/pod → panic to 4.
    let d = decide(&mut s, Some(&obs(0, 32.0, 900.0)), &p, 0);
    assert_eq!(d.desired, 4);
    // Load drops to 16 calls in total right after, and latency with it.
    let decisions = run(&mut s, &p, TICK, 160, |_| 16.0, 100.0);
    // While panicking (60 s), no scale-down at all.
    assert!(
        decisions[..29]
            .iter()
            .all(|d| d.desired == 4 && d.reason == Reason::PanicHold),
        "{:?}",
        &decisions[..3]
    );
    // After panic, still held by the 300 s window that contains the spike.
    let first_down = decisions
        .iter()
        .position(|d| d.desired < 4)
        .expect("eventually scales down");
    let t = (first_down as i64 + 1) * TICK;
    assert!(t > 300_000, "scaled down after {t} ms");
    assert!(
        decisions[30..first_down]
            .iter()
            .all(|d| d.reason == Reason::StabilizingScaleDown)
    );
    assert_eq!(
        decisions[first_down].reason,
        Reason::ScaleDown(Signal::CallsPerPod)
    );
    assert_eq!(decisions.last().map(|d| d.desired), Some(1));
}

#[test]
fn missing_or_stale_signals_hold_and_never_scale_down() {
    let p = policy();
    let mut s = ComponentState::new(5);
    let d = decide(&mut s, None, &p, 0);
    assert_eq!(
        (d.desired, d.reason, d.active),
        (5, Reason::NoSignals, false)
    );
    let d = decide(
        &mut s,
        Some(&Observation {
            at_ms: 0,
            values: vec![],
        }),
        &p,
        0,
    );
    assert_eq!((d.desired, d.reason), (5, Reason::NoSignals));
    // A sample 30 s old while the load it reported was low: hold anyway.
    let d = decide(&mut s, Some(&obs(0, 1.0, 100.0)), &p, 30_000);
    assert_eq!(
        (d.desired, d.reason, d.active),
        (5, Reason::StaleSignals, false)
    );
}

#[test]
fn bounds_clamp_and_say_so() {
    let mut p = policy();
    p.max = 6;
    p.min = 3;
    let mut s = ComponentState::new(6);
    let d = decide(&mut s, Some(&obs(0, 30.0, 900.0)), &p, 0);
    assert_eq!((d.desired, d.reason), (6, Reason::AtMax));
    let mut s = ComponentState::new(5);
    let d = decide(&mut s, Some(&obs(0, 30.0, 900.0)), &p, 0);
    assert_eq!(d.desired, 6, "clamped to max but still an increase: {d:?}");
    let mut p = policy();
    p.min = 3;
    p.scale_down_window_ms = 0;
    let mut s = ComponentState::new(3);
    let d = decide(&mut s, Some(&obs(0, 1.0, 100.0)), &p, 0);
    assert_eq!((d.desired, d.reason), (3, Reason::AtMin));
}

#[test]
fn scale_up_stabilization_uses_the_lowest_recommendation() {
    let mut p = policy();
    p.scale_up_window_ms = 10_000;
    let mut s = ComponentState::new(4);
    decide(&mut s, Some(&obs(0, 16.0, 900.0)), &p, 0);
    // A 1.5× blip is not acted on while the window still holds a "4".
    let d = decide(&mut s, Some(&obs(TICK, 24.0, 900.0)), &p, TICK);
    assert_eq!((d.desired, d.reason), (4, Reason::StabilizingScaleUp));
    // Sustained past the window: scale up.
    let decisions = run(&mut s, &p, 2 * TICK, 6, |_| 96.0, 900.0);
    assert!(decisions.iter().any(|d| d.desired == 6), "{decisions:?}");
}

#[test]
fn a_fresh_state_waits_a_whole_window_before_scaling_down() {
    // A new leader sees low load at once; it has no history, so it must not
    // take that one reading for five quiet minutes.
    let p = policy();
    let mut s = ComponentState::new(6);
    let decisions = run(&mut s, &p, 1_000_000, 160, |_| 16.0, 100.0);
    let first_down = decisions
        .iter()
        .position(|d| d.desired < 6)
        .expect("eventually scales down");
    assert_eq!(first_down as i64 * TICK, 300_000, "after one whole window");
    assert!(
        decisions[..first_down]
            .iter()
            .all(|d| d.reason == Reason::StabilizingScaleDown)
    );
    // A zero window scales down on the first reading, as configured.
    let mut p0 = policy();
    p0.scale_down_window_ms = 0;
    let mut s = ComponentState::new(6);
    let d = decide(&mut s, Some(&obs(0, 2.0, 100.0)), &p0, 0);
    assert_eq!(d.desired, 1);
}

#[test]
fn deterministic_for_the_same_inputs() {
    let p = policy();
    let trace = |s: &mut ComponentState| {
        run(
            s,
            &p,
            0,
            400,
            |t| 40.0 + 30.0 * ((t / 20_000) % 3) as f64,
            900.0,
        )
    };
    let a = trace(&mut ComponentState::new(2));
    let b = trace(&mut ComponentState::new(2));
    assert_eq!(a, b);
}

#[test]
fn observations_come_from_the_metrics_service_signals() {
    use voice_agent_proto::metrics::{ComponentSignals, StageWindow};
    let w = |window_seconds, p95_ms| StageWindow {
        stage: Stage::E2e,
        window_seconds,
        count: 10,
        p50_ms: 0.0,
        p95_ms,
        p99_ms: 0.0,
    };
    let signals = ComponentSignals {
        component: Component::Runtime,
        pods: 2,
        active_calls: 20.0,
        active_calls_per_pod: 10.0,
        concurrency_per_pod: 0.0,
        latency: vec![w(6, 2500.0), w(60, 1000.0)],
        fresh_at_ms: Some(1_000),
    };
    let o = Observation::from_signals(&signals, &policy().targets).expect("fresh");
    assert_eq!(o.at_ms, 1_000);
    assert_eq!(
        o.values[0],
        (
            Signal::CallsPerPod,
            SignalValue {
                long: 10.0,
                short: 10.0
            }
        )
    );
    assert_eq!(
        o.values[1],
        (
            Signal::LatencyP95(Stage::E2e),
            SignalValue {
                long: 1000.0,
                short: 2500.0
            }
        )
    );
    // The short window's 2.5 s is over twice the 1.2 s target: panic.
    let mut s = ComponentState::new(2);
    let d = decide(&mut s, Some(&o), &policy(), 1_000);
    assert_eq!(
        d.reason,
        Reason::PanicScaleUp(Signal::LatencyP95(Stage::E2e))
    );
    let none = ComponentSignals {
        fresh_at_ms: None,
        ..signals
    };
    assert!(Observation::from_signals(&none, &policy().targets).is_none());
}
