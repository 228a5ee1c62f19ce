//! Windows, gauge staleness, the series cap and expiry, driven through
//! [`State`] with an injected clock: no sleeping.

mod support;

use support::{
    T0, XorShift, batch, exact_quantile, gauge, latency, metric_lines, metric_value, state,
};
use voice_agent_metrics::{Config, IngestError};
use voice_agent_proto::metrics::{GAUGE_ACTIVE_CALLS, GAUGE_CONCURRENCY};
use voice_agent_proto::{Component, Stage};

const RUNTIME: Component = Component::Runtime;

fn e2e_count(s: &voice_agent_metrics::State, window: u32) -> Option<u64> {
    s.signals("default", "support")
        .component(RUNTIME)
        .and_then(|c| c.window(Stage::E2e, window))
        .map(|w| w.count)
}

#[test]
fn a_sample_leaves_the_short_window_after_6s_and_the_long_after_60s() {
    let (s, clock) = state(Config::default());
    s.ingest(&batch(vec![latency(
        "default", "support", RUNTIME, "e2e", 250.0, T0,
    )]))
    .expect("valid");
    for (now, short, long) in [
        (T0, Some(1), Some(1)),
        (T0 + 5_999, Some(1), Some(1)),
        (T0 + 6_000, None, Some(1)),
        (T0 + 59_999, None, Some(1)),
        (T0 + 60_000, None, None),
    ] {
        clock.set(now);
        assert_eq!(e2e_count(&s, 6), short, "6 s window at T0+{}", now - T0);
        assert_eq!(e2e_count(&s, 60), long, "60 s window at T0+{}", now - T0);
    }
    // Nothing left in any window: the agent has no signals at all.
    assert!(s.signals("default", "support").components.is_empty());
    // Prometheus counts the sample for good.
    let exposition = s.render_metrics();
    assert_eq!(
        metric_value(
            &exposition,
            r#"voice_agent_e2e_seconds_count{component="runtime",namespace="default",voice_agent="support"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn a_sample_late_in_its_second_leaves_up_to_a_second_earlier() {
    // Slots are whole seconds: the window is [now_s - w + 1, now_s].
    let (s, clock) = state(Config::default());
    s.ingest(&batch(vec![latency(
        "default",
        "support",
        RUNTIME,
        "e2e",
        250.0,
        T0 + 999,
    )]))
    .expect("valid");
    clock.set(T0 + 5_999);
    assert_eq!(e2e_count(&s, 6), Some(1));
    clock.set(T0 + 6_000);
    assert_eq!(e2e_count(&s, 6), None);
}

#[test]
fn samples_older_than_the_long_window_count_only_in_prometheus() {
    let (s, _clock) = state(Config::default());
    let old = latency("default", "support", RUNTIME, "e2e", 1_500.0, T0 - 60_001);
    assert_eq!(s.ingest(&batch(vec![old])), Ok(1));
    assert!(s.signals("default", "support").components.is_empty());
    let exposition = s.render_metrics();
    let labels = r#"{component="runtime",namespace="default",voice_agent="support"}"#;
    assert_eq!(
        metric_value(
            &exposition,
            &format!("voice_agent_e2e_seconds_count{labels}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&exposition, &format!("voice_agent_e2e_seconds_sum{labels}")),
        Some(1.5)
    );
}

#[test]
fn future_samples_within_the_skew_count_as_now() {
    let (s, clock) = state(Config::default());
    s.ingest(&batch(vec![latency(
        "default",
        "support",
        RUNTIME,
        "e2e",
        80.0,
        T0 + 5_000,
    )]))
    .expect("5 s ahead is allowed");
    assert_eq!(e2e_count(&s, 6), Some(1));
    clock.set(T0 + 6_000);
    assert_eq!(e2e_count(&s, 6), None, "placed at T0, not T0+5 s");
    let err = s
        .ingest(&batch(vec![latency(
            "default",
            "support",
            RUNTIME,
            "e2e",
            80.0,
            T0 + 11_001,
        )]))
        .expect_err("beyond the skew");
    assert_eq!(err.http_status(), 400);
}

#[test]
fn window_percentiles_match_exact_quantiles_of_the_window() {
    let (s, clock) = state(Config::default());
    let mut rng = XorShift(0xfeed);
    // 90 s of samples, 50 per second; only the last 6 s and 60 s count.
    let mut all: Vec<(i64, f64)> = Vec::new();
    for second in 0..90 {
        let now = T0 + second * 1_000;
        clock.set(now + 999);
        let samples: Vec<_> = (0..50)
            .map(|i| {
                let (at, v) = (now + i * 19, rng.latency_ms());
                all.push((at, v));
                latency("default", "support", RUNTIME, "e2e", v, at)
            })
            .collect();
        s.ingest(&batch(samples)).expect("valid");
    }
    let now = T0 + 89_999;
    let signals = s.signals("default", "support");
    let runtime = signals.component(RUNTIME).expect("runtime");
    for window in [6u32, 60] {
        let oldest = (now / 1_000 - i64::from(window) + 1) * 1_000;
        let mut exact: Vec<f64> = all
            .iter()
            .filter(|(at, _)| *at >= oldest)
            .map(|(_, v)| *v)
            .collect();
        exact.sort_by(f64::total_cmp);
        let w = runtime.window(Stage::E2e, window).expect("window");
        assert_eq!(w.count, exact.len() as u64, "{window} s count");
        for (q, got) in [(0.5, w.p50_ms), (0.95, w.p95_ms), (0.99, w.p99_ms)] {
            let want = exact_quantile(&exact, q);
            let err = (got - want).abs() / want;
            assert!(err <= 0.02, "{window} s p{q}: {got} vs exact {want}");
        }
    }
}

#[test]
fn gauges_go_stale_after_15s_and_are_swept() {
    let (s, clock) = state(Config::default());
    s.ingest(&batch(vec![
        gauge(
            "default",
            "support",
            RUNTIME,
            "p0",
            GAUGE_ACTIVE_CALLS,
            3.0,
            T0,
        ),
        gauge(
            "default",
            "support",
            RUNTIME,
            "p0",
            GAUGE_CONCURRENCY,
            2.0,
            T0,
        ),
        gauge(
            "default",
            "support",
            RUNTIME,
            "p1",
            GAUGE_ACTIVE_CALLS,
            5.0,
            T0 - 10_000,
        ),
        gauge(
            "default",
            "support",
            RUNTIME,
            "p1",
            GAUGE_CONCURRENCY,
            4.0,
            T0 - 10_000,
        ),
        gauge("default", "support", RUNTIME, "p2", "queueDepth", 7.0, T0),
    ]))
    .expect("valid");
    let labels = r#"{component="runtime",namespace="default",voice_agent="support"}"#;
    let calls = format!("voice_agent_active_calls{labels}");
    let concurrency = format!("voice_agent_concurrency{labels}");

    let r = s.signals("default", "support");
    let c = r.component(RUNTIME).expect("runtime");
    // p2 reports only another gauge: a fresh pod with no calls.
    assert_eq!((c.pods, c.active_calls), (3, 8.0));
    assert!((c.active_calls_per_pod - 8.0 / 3.0).abs() < 1e-12);
    assert_eq!(c.concurrency_per_pod, 3.0);
    assert_eq!(c.fresh_at_ms, Some(T0));
    assert!(c.latency.is_empty());
    let exposition = s.render_metrics();
    assert_eq!(metric_value(&exposition, &calls), Some(8.0));
    assert_eq!(metric_value(&exposition, &concurrency), Some(6.0));

    // p1's readings are 15 s old: still fresh. 1 ms later they are not.
    clock.set(T0 + 5_000);
    assert_eq!(s.signals("default", "support").components[0].pods, 3);
    clock.set(T0 + 5_001);
    let r = s.signals("default", "support");
    let c = r.component(RUNTIME).expect("runtime");
    assert_eq!(
        (c.pods, c.active_calls, c.concurrency_per_pod),
        (2, 3.0, 2.0)
    );
    assert_eq!(metric_value(&s.render_metrics(), &calls), Some(3.0));

    clock.set(T0 + 15_001);
    assert!(s.signals("default", "support").components.is_empty());
    let exposition = s.render_metrics();
    assert_eq!(metric_value(&exposition, &calls), None, "label set removed");
    assert_eq!(s.series(), 5, "stale until swept");
    assert_eq!(s.sweep().gauges, 5);
    assert_eq!(s.series(), 0);
    assert_eq!(
        metric_value(&s.render_metrics(), "voice_agent_metrics_series"),
        Some(0.0)
    );
}

#[test]
fn idle_latency_series_are_swept_with_their_label_sets() {
    let (s, clock) = state(Config::default());
    s.ingest(&batch(vec![
        latency("default", "support", RUNTIME, "e2e", 700.0, T0),
        latency("default", "support", Component::Tts, "ttsTtfb", 90.0, T0),
    ]))
    .expect("valid");
    clock.set(T0 + 30_000);
    s.ingest(&batch(vec![latency(
        "default",
        "support",
        Component::Tts,
        "ttsTtfb",
        95.0,
        T0 + 30_000,
    )]))
    .expect("valid");
    assert_eq!(
        metric_lines(&s.render_metrics(), "voice_agent_e2e_seconds_count").len(),
        1
    );

    clock.set(T0 + 59_999);
    assert_eq!(s.sweep().latency_series, 0, "e2e still in its window");
    clock.set(T0 + 60_000);
    assert_eq!(s.sweep().latency_series, 1);
    let exposition = s.render_metrics();
    assert!(
        metric_lines(&exposition, "voice_agent_e2e_seconds").is_empty(),
        "{exposition}"
    );
    assert_eq!(
        metric_lines(&exposition, "voice_agent_tts_ttfb_seconds_count").len(),
        1
    );
    assert_eq!(s.series(), 1);

    clock.set(T0 + 90_000);
    assert_eq!(s.sweep().latency_series, 1);
    assert_eq!(s.series(), 0);
    assert!(s.signals_list(None).items.is_empty());
}

#[test]
fn the_series_cap_refuses_the_whole_batch() {
    let config = Config {
        max_series: 4,
        ..Config::default()
    };
    let (s, _clock) = state(config);
    s.ingest(&batch(vec![
        latency("default", "support", RUNTIME, "e2e", 500.0, T0),
        latency("default", "support", RUNTIME, "eou", 200.0, T0),
        gauge(
            "default",
            "support",
            RUNTIME,
            "p0",
            GAUGE_ACTIVE_CALLS,
            1.0,
            T0,
        ),
    ]))
    .expect("3 of 4 series");
    let before_signals = s.signals_list(None);
    let before_metrics = s.render_metrics();

    // Known series plus two new ones: one too many.
    let err = s
        .ingest(&batch(vec![
            latency("default", "support", RUNTIME, "e2e", 9_000.0, T0),
            gauge(
                "default",
                "support",
                RUNTIME,
                "p0",
                GAUGE_ACTIVE_CALLS,
                9.0,
                T0,
            ),
            latency("default", "other", RUNTIME, "e2e", 100.0, T0),
            latency("default", "other", RUNTIME, "e2e", 110.0, T0),
            gauge(
                "default",
                "other",
                RUNTIME,
                "p9",
                GAUGE_CONCURRENCY,
                2.0,
                T0,
            ),
        ]))
        .expect_err("over the cap");
    assert_eq!(
        err,
        IngestError::SeriesLimit {
            new: 2,
            current: 3,
            max: 4
        }
    );
    assert_eq!(
        (err.http_status(), err.code()),
        (422, "seriesLimitExceeded")
    );
    assert_eq!(s.signals_list(None), before_signals, "nothing applied");
    assert_eq!(s.series(), 3);
    let after_metrics = s.render_metrics();
    let rejected = |e: &str| {
        metric_value(
            e,
            r#"voice_agent_metrics_batches_rejected_total{reason="series_limit"}"#,
        )
    };
    assert_eq!(rejected(&before_metrics), Some(0.0));
    assert_eq!(rejected(&after_metrics), Some(1.0));
    let without_counters = |e: &str| {
        e.lines()
            .filter(|l| !l.starts_with("voice_agent_metrics_batches_rejected_total"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        without_counters(&after_metrics),
        without_counters(&before_metrics)
    );

    // Many samples of one new series count once: exactly at the cap.
    let same: Vec<_> = (0..50)
        .map(|i| latency("default", "other", RUNTIME, "e2e", f64::from(i), T0))
        .collect();
    assert_eq!(s.ingest(&batch(same)), Ok(50));
    assert_eq!(s.series(), 4);
}
